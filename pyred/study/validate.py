"""Checks a whole study configuration before any work starts, one part at a time.

Each check raises :class:`ConfigError` with one line naming the setting and
what was expected: the models (timm names, tags, weights and features files),
the datasets, the device, the grid, the protocol, the recipe and its options,
the CKA settings, and whether the output folder can be written.
"""

from __future__ import annotations

import os

from .. import _checks as check
from .errors import ConfigError
from .npz import check_features_file
from .schema import DatasetSpec, ModelSpec, StudyConfig


def validate(cfg: StudyConfig) -> None:
    """Raises ConfigError (one line) for anything that would fail later; creates ``cfg.out``."""
    if cfg.paper is not None:
        check_paper_files(cfg)
    check_models(cfg.models)
    check_datasets(cfg.datasets, cfg.models)
    check_device(cfg.device)
    check_grid(cfg)
    check_protocol(cfg)
    check_recipe(cfg)
    if cfg.cka_debiased and cfg.cka_samples < 4:
        raise ConfigError(f"cka_samples: the debiased estimator needs at least 4 samples, got {cfg.cka_samples}")
    ensure_writable(cfg.out)


def check_models(models: tuple[ModelSpec, ...]) -> None:
    if not models:
        raise ConfigError("models: the study has no model")
    names: set[str] | None = None
    missing: list[str] = []
    for m in models:
        if m.features:
            check_features_file(m.features)
            continue
        if m.is_hf:
            _check_hf(m)
            continue
        if m.is_module:  # a backbone object given to run(); checked there
            if m.weights is not None or m.pretrained is not True or m.pool != "avg":
                raise ConfigError(f"model: {m.name} is the backbone object given to run(backbones=...); weights, "
                                  "pretrained and pool are the object's own")
            continue
        if m.pool in ("mean", "last"):
            raise ConfigError(f"model: pool {m.pool!r} pools tokens over an attention mask, which only hf: models "
                              f"have; {m.name} takes 'avg', 'cls' or 'flatten'")
        if names is None:
            import timm

            from ..architectures import register

            register()
            names = set(timm.list_models())
        arch = m.timm_name.partition(".")[0]
        if arch not in names:
            close = check.did_you_mean(arch, names)
            raise ConfigError(f"model: {m.name!r} is not a timm model{close} (see timm.list_models()) nor a key of "
                              "pyred.paper.MODELS")
        from ..backbones import check_model_name

        try:
            check_model_name(m.timm_name)
        except ValueError as exc:
            raise ConfigError(f"model: {exc}") from None
        if m.weights is not None and not os.path.isfile(m.weights):
            missing.append(f"{m.weights}" + (f" ({_paper_file(m.name)})" if m.paper_key else ""))
        elif m.weights is None and m.paper_key and m.pretrained and _needs_file(m.name):
            missing.append(f"{m.name}: weights = its checkpoint {_paper_file(m.name)} (or --weights-dir DIR "
                           "holding it)")
    if missing:
        raise ConfigError(f"weights: {len(missing)} checkpoint file(s) missing: " + "; ".join(dict.fromkeys(missing)))


def _check_hf(m: ModelSpec) -> None:
    try:
        from ..hf import require_transformers

        require_transformers()
    except ModuleNotFoundError as exc:
        raise ConfigError(f"model: {m.name}: {exc}") from None
    path = m.name[3:]
    if not path:
        raise ConfigError("model: 'hf:' needs a model name or folder after it, e.g. hf:./tiny-bert")
    if path.startswith((".", "/", "~")) and not os.path.isdir(os.path.expanduser(path)):
        raise ConfigError(f"model: {m.name}: no model folder {path}")
    if m.weights is not None:
        raise ConfigError(f"weights: {m.name} loads the weights of its folder or hub name; drop weights")


def check_paper_files(cfg: StudyConfig) -> None:
    """Under ``paper``: every checkpoint file and dataset the experiment needs is there -- else one ConfigError
    listing all that are missing (before any work)."""
    missing = missing_files(cfg.models, cfg.datasets)
    if missing:
        raise ConfigError(f"paper {cfg.paper}: {len(missing)} file(s) missing: " + "; ".join(missing))


def missing_files(models: tuple[ModelSpec, ...], datasets: tuple[DatasetSpec, ...]) -> list[str]:
    """The checkpoint files and datasets of ``models`` / ``datasets`` that are not there, one line each."""
    out = []
    for m in models:
        if m.features or not m.paper_key or not m.pretrained or not _needs_file(m.name):
            continue
        if m.weights is None:
            out.append(f"{m.name}: weights = its checkpoint {_paper_file(m.name)} (or --weights-dir DIR holding it)")
        elif not os.path.isfile(m.weights):
            out.append(f"{m.weights} ({m.name}: {_paper_file(m.name)})")
    for d in datasets:
        why = dataset_missing(d)
        if why:
            out.append(why)
    return list(dict.fromkeys(out))


def dataset_missing(d: DatasetSpec) -> str | None:
    """Why dataset ``d`` cannot be read (without downloading), or None when it can."""
    from .. import datasets as registry

    try:
        registry.load(d.name, "test", root=d.root)
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as exc:
        return f"dataset {d.name} under {d.root or 'its default folder'}: {str(exc).splitlines()[0]}"
    return None


def _needs_file(key: str) -> bool:
    from ..paper import MODELS

    return MODELS[key].needs_file


def _paper_file(key: str) -> str:
    from ..paper import MODELS

    m = MODELS[key]
    return f"{m.checkpoint}, {m.checkpoint_format} format, from {m.source}"


def check_datasets(datasets: tuple[DatasetSpec, ...], models: tuple[ModelSpec, ...]) -> None:
    from .. import datasets as registry

    if not datasets:
        raise ConfigError("datasets: the study has no dataset")
    for d in datasets:
        if d.name == "features":
            continue
        if d.name not in registry.available():
            raise ConfigError(f"dataset: unknown {d.name!r}{check.did_you_mean(d.name, registry.available())}; "
                              f"available: {registry.available()}")
        if d.root is not None and not os.path.isdir(d.root):
            raise ConfigError(f"datasets: {d.name}'s root {d.root} is not a folder")
        if d.name in ("folder", "text-folder") and d.root is None:
            raise ConfigError(f"datasets: '{d.name}' needs its root: datasets = [{{ name = \"{d.name}\", root = "
                              "\"DIR\" }] in the TOML, or --data-root DIR (DIR/<split>/<class>/<item>)")
    names = [d.name for d in datasets]
    texts = "text-folder" in names
    if texts and (len(set(names)) > 1 or not all(m.is_hf or m.is_module for m in models)):
        raise ConfigError("datasets: text-folder goes with hf: models only, and image datasets with image models; "
                          "make a study of each")
    if any(m.is_hf for m in models) and not texts:
        raise ConfigError("datasets: hf: models read texts (text-folder); image datasets need timm models or "
                          "features files")
    if "features" in names and not all(m.features for m in models):
        raise ConfigError("datasets: 'features' goes with --features/.npz models only")
    if any(m.features for m in models) and names != ["features"]:
        raise ConfigError("datasets: models given as features files take datasets = [\"features\"]")


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


def check_grid(cfg: StudyConfig) -> None:
    from .methods import METHODS

    if cfg.fractions is not None and not cfg.fractions:
        raise ConfigError("fractions: the grid is empty")
    if cfg.sizes is not None:
        if not cfg.sizes:
            raise ConfigError("sizes: the grid is empty")
        if cfg.fractions is not None and cfg.paper is None:
            raise ConfigError("sizes: give fractions or sizes (absolute subset sizes), not both")
    if not cfg.seeds:
        raise ConfigError("seeds: no seed given")
    if not cfg.methods:
        raise ConfigError("methods: no method given")
    for m in cfg.methods:
        if m not in METHODS:
            raise ConfigError(f"methods: unknown {m!r}{check.did_you_mean(m, METHODS)}; expected some of "
                              f"{list(METHODS)}")


def check_protocol(cfg: StudyConfig) -> None:
    if cfg.views != 5 and cfg.protocol != "views":
        raise ConfigError(f"views: only protocol 'views' uses views (protocol is {cfg.protocol!r}); set "
                          "protocol = \"views\" or drop views")
    if cfg.protocol != "paper":
        for key, default in (("val_augment", "clean"), ("stream_seeds", "shared")):
            if getattr(cfg, key) != default:
                raise ConfigError(f"{key}: {getattr(cfg, key)!r} applies to protocol 'paper' (a stream of augmented "
                                  f"images), not {cfg.protocol!r}")
    if (cfg.protocol != "features" or cfg.image_size is not None) and any(m.is_module for m in cfg.models):
        raise ConfigError("protocol: module: models bring their own transform; they take protocol = \"features\" "
                          "without image_size")
    if cfg.protocol != "features" and (any(m.is_hf for m in cfg.models)
                                       or any(d.name == "text-folder" for d in cfg.datasets)):
        raise ConfigError(f"protocol: {cfg.protocol!r} augments images; texts (hf: models, text-folder) take "
                          "protocol = \"features\"")
    if cfg.protocol == "features":
        return
    if any(m.features for m in cfg.models):
        raise ConfigError(f"protocol: {cfg.protocol!r} runs the backbone on images; models given as features "
                          "files take protocol = \"features\"")
    if cfg.protocol == "paper":
        if cfg.recipe != "sgd":
            raise ConfigError(f"recipe: protocol 'paper' trains on a stream of augmented batches, which only "
                              f"'sgd' reads; got recipe {cfg.recipe!r}")


def check_recipe(cfg: StudyConfig) -> None:
    from ..probes import RECIPES

    if cfg.recipe not in RECIPES:
        raise ConfigError(f"recipe: unknown {cfg.recipe!r}{check.did_you_mean(cfg.recipe, RECIPES)}; expected one of "
                          f"{sorted(RECIPES)}")
    if "init_seeds" in cfg.recipe_options:
        raise ConfigError("recipe_options: init_seeds is set per head by the study (from its method, fraction "
                          "and seed); remove it")
    try:
        RECIPES[cfg.recipe].parse_options(cfg.recipe_options)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"recipe_options: {exc}") from None
    if cfg.recipe_options.get("cuda_graphs") is True and not str(cfg.device or "cpu").startswith("cuda"):
        raise ConfigError(f"recipe_options: cuda_graphs replays the probe step as CUDA graphs, which needs device = "
                          f"\"cuda\"; the device is {cfg.device or 'cpu'!r}")


def ensure_writable(out: str) -> None:
    """Creates the study folder ``out`` if needed, and checks a file can be written there."""
    folder = os.path.abspath(out)
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, f".pyred-write-test-{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as exc:
        raise ConfigError(f"out: cannot write to {folder} ({exc.strerror or exc})") from None
