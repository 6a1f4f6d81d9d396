"""A study's configuration: its schema, its validation, and its identity.

``load_config(path, **overrides)`` reads a TOML file (or takes the built-in
default), applies command-line overrides and validates everything -- types,
ranges, unknown keys (with a close-match hint), recipe options, model and
dataset names, the features files -- before any work starts.

``identity(cfg)`` is the canonical form of everything that changes the
numbers (the grid, methods, recipe and every option after defaults, CKA
settings, models with the digests of their features and weights files,
datasets), and ``config_id(cfg)`` its digest: the key under which the results
database keeps a configuration's rows. Settings that only change how the work
runs (output folder, device, batch size, cache folder, head chunks, report)
are not part of it.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from .. import _checks as check
from .._files import digest, sha256_file
from .errors import ConfigError
from .npz import check_features_file

PAPER_FRACTIONS = (0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 0.9)
POOLS = ("avg", "cls", "flatten")
# How probes see the training images: "features" -- clean features extracted once (cached);
# "views" -- V augmented views per image extracted once (cached), the cheap approximation;
# "paper" -- the paper's own: freshly augmented images through the backbone at every step.
PROTOCOLS = ("features", "views", "paper")
NORMALIZATIONS = ("model", "imagenet", "half")


@dataclass(frozen=True)
class ModelSpec:
    """One model of a study: a timm name (pretrained, or ``weights`` from a local file), or a label
    for precomputed ``features`` (.npz with X_train, y_train, X_test, y_test[, X_val, y_val, class_names])."""

    name: str
    features: str | None = None
    pretrained: bool = True
    weights: str | None = None
    layer: str = "penultimate"
    pool: str = "avg"

    @classmethod
    def parse(cls, raw: Any, where: str) -> "ModelSpec":
        if isinstance(raw, str):
            return cls(raw)
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: a model is a timm name or a table, got {raw!r}")
        _unknown(raw, [f.name for f in dataclasses.fields(cls)], where)
        if "name" not in raw:
            raise ConfigError(f"{where}: a model table needs a name, got {raw!r}")
        spec = cls(**raw)
        _guard(lambda: check.string(spec.name, f"{where}.name"))
        for key in ("features", "weights"):
            if getattr(spec, key) is not None:
                _guard(lambda: check.string(getattr(spec, key), f"{where}.{key}"))
        _guard(lambda: check.boolean(spec.pretrained, f"{where}.pretrained"))
        _guard(lambda: check.string(spec.layer, f"{where}.layer"))
        _guard(lambda: check.choice(spec.pool, f"{where}.pool", POOLS))
        return spec


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of a study: a registered name (``pyred.datasets.available()``), with ``root`` the folder
    that holds it where the loader needs one ("folder": root/<split>/<class>/<image>)."""

    name: str
    root: str | None = None

    @classmethod
    def parse(cls, raw: Any, where: str) -> "DatasetSpec":
        if isinstance(raw, DatasetSpec):
            return raw
        if isinstance(raw, str):
            return cls(raw)
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: a dataset is a name or a table {{ name = ..., root = ... }}, got {raw!r}")
        _unknown(raw, [f.name for f in dataclasses.fields(cls)], where)
        if "name" not in raw:
            raise ConfigError(f"{where}: a dataset table needs a name, got {raw!r}")
        spec = cls(**raw)
        _guard(lambda: check.string(spec.name, f"{where}.name"))
        if spec.root is not None:
            _guard(lambda: check.string(spec.root, f"{where}.root"))
        return spec

    @property
    def label(self) -> str:
        """The dataset's name in results and reports (with its folder when it has one)."""
        return self.name if self.root is None else f"{self.name}@{self.root}"

    def identity(self) -> Any:
        """The name alone (as before tables existed, so those configurations keep their ids), or the
        name and the folder's absolute path."""
        return self.name if self.root is None else {"name": self.name, "root": os.path.abspath(self.root)}


@dataclass(frozen=True)
class StudyConfig:
    """A study: models x datasets x methods x fractions x seeds, through CKA and probes.

    The fields below ``full_layer_seed`` only change how the work runs, not its numbers.
    """

    models: tuple  # of ModelSpec
    datasets: tuple  # of DatasetSpec
    fractions: tuple | None = None  # None: each model's grid from pyred.paper (PAPER_FRACTIONS by default)
    seeds: tuple = (1, 2, 3, 4, 5)
    methods: tuple = ("random",)
    recipe: str = "sgd"
    recipe_options: dict = field(default_factory=dict)
    protocol: str = "features"
    views: int = 5
    image_size: int | None = None  # None: "features" uses the model's own eval transform, the others 224
    normalization: str = "model"
    amp: bool = False  # the backbone under autocast (bfloat16 on the CPU, float16 on CUDA)
    cka: bool = True
    cka_samples: int = 1000
    cka_debiased: bool = False
    full_layer_seed: int = 2
    out: str = "pyred-run"
    device: str | None = None
    batch_size: int | None = None
    cache_dir: str | None = None
    head_chunks: int = 1
    num_workers: int = 0  # DataLoader workers decoding (and, on the CPU, augmenting) images
    report: bool = True

    def fractions_for(self, model: str) -> tuple:
        """The fraction grid for ``model``: the configured one, else the paper's for that model."""
        from ..paper import fraction_grid

        return self.fractions if self.fractions is not None else fraction_grid(model, PAPER_FRACTIONS)

    def options_for(self, model: str, dataset: str) -> dict:
        """The recipe options for (model, dataset): the user's over the paper's defaults for the pair."""
        from ..paper import resolve_options

        return resolve_options(model, getattr(dataset, "name", dataset), self.recipe, self.recipe_options)

    def eval_size(self) -> int | None:
        """The paper's Resize + CenterCrop size for clean images, or None for the model's own transform."""
        return self.image_size if self.image_size is not None or self.protocol == "features" else 224

    def settings(self) -> dict:
        """Everything, as plain data (for the runs table)."""
        d = dataclasses.asdict(self)
        d["models"] = [dataclasses.asdict(m) for m in self.models]
        return d


RUN_ONLY = ("out", "device", "batch_size", "cache_dir", "head_chunks", "num_workers", "report")
KEYS = [f.name for f in dataclasses.fields(StudyConfig)]


def default_config() -> StudyConfig:
    """The built-in default: offline pretrained EfficientNet-Lite0 on scikit-learn's digits,
    the paper's fraction grid, 5 seeds plus the full layer, every stage."""
    return StudyConfig(models=(ModelSpec("tf_efficientnet_lite0"),), datasets=(DatasetSpec("digits"),))


def load_config(path: str | None = None, **overrides: Any) -> StudyConfig:
    """A validated StudyConfig from a TOML file (or the default) and command-line overrides.

    Overrides (None: not given): models (timm names), datasets, data_root (the folder of every dataset
    given without one), features (an .npz path), fractions, seeds, recipe, device, out, epochs (sgd
    epochs), protocol, views, image_size, num_workers, amp. Relative paths in the TOML file (features,
    weights, dataset roots, out, cache_dir) are relative to the file's folder; those of overrides to the
    working directory.
    """
    raw: dict = {}
    source = "the default"
    if path is not None:
        raw, source = _anchored(_read_toml(path), os.path.dirname(os.path.abspath(path))), str(path)
    raw = dict(raw)
    epochs = overrides.pop("epochs", None)
    data_root = overrides.pop("data_root", None)
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "features":
            raw["models"] = [{"name": os.path.splitext(os.path.basename(value))[0], "features": value}]
            raw["datasets"] = ["features"]
        else:
            raw[key] = list(value) if isinstance(value, (list, tuple)) else value
    if epochs is not None:
        options = raw.get("recipe_options", {})
        if not isinstance(options, dict):
            raise ConfigError(f"recipe_options: expected a table, got {options!r}")
        raw["recipe_options"] = {**options, "epochs": epochs}
    cfg = parse(raw, source, validate_now=data_root is None)
    if data_root is not None:
        cfg = dataclasses.replace(cfg, datasets=tuple(d if d.root is not None else DatasetSpec(d.name, data_root)
                                                      for d in cfg.datasets))
        validate(cfg)
    return cfg


def _anchored(raw: Any, folder: str) -> Any:
    """The TOML document with its relative paths made relative to ``folder`` (the file's own)."""
    if not isinstance(raw, dict):
        return raw

    def at(p):
        return os.path.join(folder, os.path.expanduser(p)) if isinstance(p, str) else p

    raw = dict(raw)
    for key in ("out", "cache_dir"):
        if key in raw:
            raw[key] = at(raw[key])
    for key, fields in (("models", ("features", "weights")), ("datasets", ("root",))):
        if isinstance(raw.get(key), list):
            raw[key] = [{**e, **{f: at(e[f]) for f in fields if f in e}} if isinstance(e, dict) else e
                        for e in raw[key]]
    return raw


def parse(raw: dict, source: str = "config", validate_now: bool = True) -> StudyConfig:
    """Builds and validates a StudyConfig from a plain mapping (a parsed TOML document)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config: expected a table of settings, got {type(raw).__name__}")
    _unknown(raw, KEYS, f"config ({source})")
    base = default_config()
    models_raw = raw.get("models")
    if models_raw is None:
        models = base.models
    else:
        if not isinstance(models_raw, list):
            raise ConfigError(f"models: expected a list of models, got {models_raw!r}")
        models = tuple(ModelSpec.parse(m, f"models[{i}]") for i, m in enumerate(models_raw))
    datasets = raw.get("datasets")
    if datasets is None:
        datasets = ["features"] if models and all(m.features for m in models) else list(base.datasets)
    datasets = tuple(DatasetSpec.parse(d, f"datasets[{i}]") for i, d in enumerate(_list(datasets, "datasets")))
    values = {k: raw[k] for k in KEYS if k in raw and k not in ("models", "datasets")}
    cfg = dataclasses.replace(base, models=models, datasets=datasets, **_typed(values))
    if validate_now:
        validate(cfg)
    return cfg


def _typed(values: dict) -> dict:
    """Checks each scalar or list setting's type and range; returns them in canonical form."""
    out = {}
    for key, v in values.items():
        if key == "fractions":
            out[key] = tuple(_guard(lambda f=f: check.number(f, "fractions", min=0, max=1)) for f in _list(v, key))
        elif key == "seeds":
            out[key] = tuple(_guard(lambda s=s: check.integer(s, "seeds", min=0)) for s in _list(v, key))
        elif key == "methods":
            out[key] = _strings(v, key)
        elif key in ("recipe", "out"):
            out[key] = _guard(lambda: check.string(v, key))
        elif key in ("device", "cache_dir"):
            out[key] = None if v is None else _guard(lambda: check.string(v, key))
        elif key in ("cka", "cka_debiased", "report", "amp"):
            out[key] = _guard(lambda: check.boolean(v, key))
        elif key == "protocol":
            out[key] = _guard(lambda: check.choice(v, key, PROTOCOLS))
        elif key == "normalization":
            out[key] = _guard(lambda: check.choice(v, key, NORMALIZATIONS))
        elif key == "views":
            out[key] = _guard(lambda: check.integer(v, key, min=1))
        elif key == "image_size":
            out[key] = None if v is None else _guard(lambda: check.integer(v, key, min=8))
        elif key == "cka_samples":
            out[key] = _guard(lambda: check.integer(v, key, min=2))
        elif key in ("full_layer_seed", "num_workers"):
            out[key] = _guard(lambda: check.integer(v, key, min=0))
        elif key in ("head_chunks",):
            out[key] = _guard(lambda: check.integer(v, key, min=1))
        elif key == "batch_size":
            out[key] = _guard(lambda: check.optional_integer(v, key, min=1))
        elif key == "recipe_options":
            if not isinstance(v, dict):
                raise ConfigError(f"recipe_options: expected a table ([recipe_options] in TOML), got {v!r}")
            out[key] = dict(v)
    return out


def validate(cfg: StudyConfig) -> None:
    """Raises ConfigError (one line) for anything that would fail later."""
    from ..probes import RECIPES
    from .methods import METHODS

    if not cfg.models:
        raise ConfigError("models: the study has no model")
    names = None
    for m in cfg.models:
        if m.features:
            check_features_file(m.features)
        else:
            if names is None:
                import timm

                names = set(timm.list_models())
            arch = m.name.partition(".")[0]
            if arch not in names:
                close = check.did_you_mean(arch, names)
                raise ConfigError(f"model: {m.name!r} is not a timm model{close} (see timm.list_models())")
            from ..backbones import check_model_name

            _guard(lambda: check_model_name(m.name), "model")
            if m.weights is not None and not os.path.isfile(m.weights):
                raise ConfigError(f"weights: no such file {m.weights}")
    if not cfg.datasets:
        raise ConfigError("datasets: the study has no dataset")
    names = [d.name for d in cfg.datasets]
    for d in cfg.datasets:
        if d.name == "features":
            continue
        from .. import datasets as ds

        if d.name not in ds.available():
            raise ConfigError(f"dataset: unknown {d.name!r}{check.did_you_mean(d.name, ds.available())}; "
                              f"available: {ds.available()}")
        if d.root is not None and not os.path.isdir(d.root):
            raise ConfigError(f"datasets: {d.name}'s root {d.root} is not a folder")
        if d.name == "folder" and d.root is None:
            raise ConfigError("datasets: 'folder' needs its root: datasets = [{ name = \"folder\", root = \"DIR\" }] "
                              "in the TOML, or --data-root DIR (DIR/<split>/<class>/<image>)")
    if "features" in names and not all(m.features for m in cfg.models):
        raise ConfigError("datasets: 'features' goes with --features/.npz models only")
    if any(m.features for m in cfg.models) and names != ["features"]:
        raise ConfigError("datasets: models given as features files take datasets = [\"features\"]")
    check_device(cfg.device)
    if cfg.fractions is not None and not cfg.fractions:
        raise ConfigError("fractions: the grid is empty")
    if cfg.views != 5 and cfg.protocol != "views":
        raise ConfigError(f"views: only protocol 'views' uses views (protocol is {cfg.protocol!r}); set "
                          "protocol = \"views\" or drop views")
    if cfg.protocol != "features":
        if any(m.features for m in cfg.models):
            raise ConfigError(f"protocol: {cfg.protocol!r} runs the backbone on images; models given as features "
                              "files take protocol = \"features\"")
        if cfg.protocol == "paper":
            if cfg.recipe != "sgd":
                raise ConfigError(f"recipe: protocol 'paper' trains on a stream of augmented batches, which only "
                                  f"'sgd' reads; got recipe {cfg.recipe!r}")
            with_views = [m for m in cfg.methods if METHODS[m].needs_train_features] if all(
                m in METHODS for m in cfg.methods) else []
            if with_views:
                raise ConfigError(f"methods: {with_views} fit a basis on the training features, which protocol "
                                  "'paper' never holds; use protocol 'features' or 'views'")
    if not cfg.seeds:
        raise ConfigError("seeds: no seed given")
    if not cfg.methods:
        raise ConfigError("methods: no method given")
    for m in cfg.methods:
        if m not in METHODS:
            raise ConfigError(f"methods: unknown {m!r}{check.did_you_mean(m, METHODS)}; expected some of "
                              f"{list(METHODS)}")
    if cfg.recipe not in RECIPES:
        raise ConfigError(f"recipe: unknown {cfg.recipe!r}{check.did_you_mean(cfg.recipe, RECIPES)}; expected one of "
                          f"{sorted(RECIPES)}")
    if "init_seeds" in cfg.recipe_options:
        raise ConfigError("recipe_options: init_seeds is set per head by the study (from its method, fraction "
                          "and seed); remove it")
    _guard(lambda: RECIPES[cfg.recipe].parse_options(cfg.recipe_options), "recipe_options")
    if cfg.recipe_options.get("cuda_graphs") is True and not str(cfg.device or "cpu").startswith(("cuda", "gpu")):
        raise ConfigError(f"recipe_options: cuda_graphs replays the probe step as CUDA graphs, which needs device = "
                          f"\"cuda\"; the device is {cfg.device or 'cpu'!r}")
    if cfg.cka_debiased and cfg.cka_samples < 4:
        raise ConfigError(f"cka_samples: the debiased estimator needs at least 4 samples, got {cfg.cka_samples}")
    out = os.path.abspath(cfg.out)
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, f".pyred-write-test-{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as exc:
        raise ConfigError(f"out: cannot write to {out} ({exc.strerror or exc})") from None


# -- identity ----------------------------------------------------------------------------------
def identity(cfg: StudyConfig) -> dict:
    """Everything that changes the study's numbers, in canonical form (plain data, sorted where
    order does not matter, recipe options with their defaults filled in -- run-only ones such as
    ``cuda_graphs`` left out --, file digests)."""
    from ..probes import RECIPES

    recipe = RECIPES[cfg.recipe]
    options = recipe.identity_options(cfg.recipe_options)
    models = []
    for m in cfg.models:
        entry = {"name": m.name, "layer": m.layer, "pool": m.pool}
        if m.features:
            entry["features_sha256"] = sha256_file(m.features)
        else:
            entry["pretrained"] = m.pretrained
            entry["weights_sha256"] = sha256_file(m.weights) if m.weights else None
        models.append(entry)
    grids = {m.name: sorted(set(cfg.fractions_for(m.name))) for m in cfg.models}
    one_grid = len({tuple(g) for g in grids.values()}) == 1
    out = {
        "models": models,
        "datasets": [d.identity() for d in cfg.datasets],
        "fractions": next(iter(grids.values())) if one_grid else grids,
        "seeds": sorted(set(cfg.seeds)),
        "methods": sorted(set(cfg.methods)),
        "full_layer_seed": cfg.full_layer_seed,
        "recipe": cfg.recipe,
        "recipe_options": options,
        "cka": {"enabled": cfg.cka, "samples": cfg.cka_samples, "debiased": cfg.cka_debiased} if cfg.cka else None,
    }
    # The paper's per-(model, dataset) defaults, where they change an option (absent otherwise, so a
    # configuration that the table does not touch keeps the id it had before the table existed).
    pairs = {}
    for m in cfg.models:
        for d in cfg.datasets:
            resolved = recipe.identity_options(cfg.options_for(m.name, d.name))
            if resolved != options:
                pairs[f"{m.name}|{d.label}"] = resolved
    if pairs:
        out["recipe_options_by_pair"] = pairs
    if cfg.amp:  # (absent when off, so earlier configurations keep their ids)
        out["amp"] = True
    if cfg.protocol != "features" or cfg.image_size is not None:
        out["protocol"] = {"name": cfg.protocol, "image_size": cfg.eval_size(), "normalization": cfg.normalization}
        if cfg.protocol == "views":
            out["protocol"]["views"] = cfg.views
    return out


def describe_protocol(ident: dict) -> str:
    """The protocol of a configuration's identity, for people (the report's heading, ``pyred runs``)."""
    p = ident.get("protocol")
    amp = ", AMP" if ident.get("amp") else ""
    if not p:
        return f"features (clean features extracted once; the model's own eval transform{amp})"
    how = (f"{p['image_size']} px" + ("" if p["normalization"] == "model" else f", {p['normalization']} normalisation")
           + amp)
    if p["name"] == "features":
        return f"features (clean features extracted once; Resize + CenterCrop, {how})"
    if p["name"] == "views":
        return f"views ({p['views']} augmented views per training image, extracted once; {how})"
    return f"paper (freshly augmented training images through the backbone at every step; {how})"


def config_id(ident: dict) -> str:
    """The short digest that keys a configuration in the results database."""
    return digest(ident, 12)


def check_device(device: str | None) -> None:
    """ConfigError unless ``device`` is None, "cpu", or a CUDA device this machine has."""
    if device is None:
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device: {device!r} is not a device; expected cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device: {device!r}: pyred runs on cpu or cuda (cuda:N)")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device: {device!r}, but torch sees no CUDA device on this machine (torch "
                              f"{torch.__version__}); use --device cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ConfigError(f"device: {device!r}, but this machine has {count} CUDA device(s): cuda:0 to "
                              f"cuda:{count - 1}")


# -- helpers -----------------------------------------------------------------------------------
def _read_toml(path: str) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            text = f.read()
        if not text.strip():
            raise ConfigError(f"config: {path} is empty; give some settings, or run without a config file for the "
                              "built-in default")
        return tomllib.loads(text.decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config: no such file {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config: {path} is a directory, expected a TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config: {path} is not valid TOML ({exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config: {path} is not a text (TOML) file") from None
    except OSError as exc:
        raise ConfigError(f"config: {path} cannot be read ({exc.strerror or exc})") from None


def _guard(fn, prefix: str | None = None):
    """fn(), with a ValueError/TypeError from a check turned into a ConfigError."""
    try:
        return fn()
    except (ValueError, TypeError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{prefix}: {exc}" if prefix else str(exc)) from None


def _unknown(raw: dict, known: list, where: str) -> None:
    _guard(lambda: check.unknown_keys(raw, known, where))


def _list(v: Any, key: str) -> list:
    if isinstance(v, (str, bytes, dict)) or not isinstance(v, (list, tuple)):
        raise ConfigError(f"{key}: expected a list, got {v!r}")
    return list(v)


def _strings(v: Any, key: str) -> tuple:
    return tuple(_guard(lambda s=s: check.string(s, key)) for s in _list(v, key))
