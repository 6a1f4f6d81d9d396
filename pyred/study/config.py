"""A study's configuration, read and checked: ``load_config(path, **overrides)``.

It reads a TOML file (or takes the built-in default), applies command-line
overrides, turns every setting into its typed form (:mod:`pyred.study.schema`)
and checks the whole configuration (:mod:`pyred.study.validate`) -- types,
ranges, unknown keys (with a close-match hint), recipe options, model and
dataset names, the features files, the device -- before any work starts.
A configuration's identity (what changes its numbers) and id are in
:mod:`pyred.study.identity`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, cast

from .errors import ConfigError
from .schema import FIELDS, DatasetSpec, ModelSpec, StudyConfig, as_list, default_config, unknown_keys
from .validate import validate

__all__ = ["DatasetSpec", "ModelSpec", "StudyConfig", "default_config", "load_config", "parse"]


def load_config(path: str | None = None, **overrides: Any) -> StudyConfig:
    """A validated StudyConfig from a TOML file (or the default) and command-line overrides.

    Overrides (None: not given): models (timm names), layers (for every model given: names, or "all"),
    datasets, data_root (the folder of every dataset
    given without one), features (an .npz path), fractions, seeds, recipe, device, out, epochs (sgd
    epochs), protocol, views, image_size, num_workers, amp. Relative paths in the TOML file (features,
    weights, dataset roots, out, cache_dir) are relative to the file's folder; those of overrides to the
    working directory.
    """
    raw: dict[str, Any] = {}
    source = "the default"
    if path is not None:
        raw, source = _anchored(_read_toml(path), os.path.dirname(os.path.abspath(path))), str(path)
    raw = dict(raw)
    epochs = overrides.pop("epochs", None)
    data_root = overrides.pop("data_root", None)
    layers = overrides.pop("layers", None)
    if layers is not None:
        if overrides.get("models") is None:
            raise ConfigError("layers: --layers applies to the models given with --model; give --model too")
        overrides["models"] = [{"name": m, "layers": layers if layers == "all" else list(layers)}
                               for m in overrides["models"]]
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "features":
            raw["models"] = [{"name": os.path.splitext(os.path.basename(value))[0], "features": value}]
            raw["datasets"] = ["features"]
        elif key == "models":
            raw[key] = list(value)
        else:
            raw[key] = list(value) if isinstance(value, (list, tuple)) else value
    if epochs is not None:
        options = raw.get("recipe_options", {})
        if not isinstance(options, dict):
            raise ConfigError(f"recipe_options: expected a table, got {options!r}")
        raw["recipe_options"] = {**options, "epochs": epochs}
    if data_root is not None and raw.get("datasets") is not None:  # the folder of every dataset given without one
        raw["datasets"] = [_with_root(d, data_root) for d in as_list(raw["datasets"], "datasets")]
    return parse(raw, source)


def _with_root(entry: Any, root: str) -> Any:
    """A raw dataset entry (a name or a table) with ``root`` unless it has one."""
    if isinstance(entry, str):
        return {"name": entry, "root": root}
    if isinstance(entry, dict) and "root" not in entry:
        return {**entry, "root": root}
    return entry


def _anchored(raw: Any, folder: str) -> Any:
    """The TOML document with its relative paths made relative to ``folder`` (the file's own)."""
    if not isinstance(raw, dict):
        return raw

    def at(p: Any) -> Any:
        return os.path.join(folder, os.path.expanduser(p)) if isinstance(p, str) else p

    raw = dict(raw)
    for key in ("out", "cache_dir", "weights_dir", "data_dir"):
        if key in raw:
            raw[key] = at(raw[key])
    for key, fields in (("models", ("features", "weights")), ("datasets", ("root",))):
        if isinstance(raw.get(key), list):
            raw[key] = [{**e, **{f: at(e[f]) for f in fields if f in e}} if isinstance(e, dict) else e
                        for e in raw[key]]
    if isinstance(raw.get("models"), list):  # hf:./folder and hf:../folder are relative to the file too
        raw["models"] = [_anchor_hf(e, at) for e in raw["models"]]
    return raw


def _anchor_hf(entry: Any, at: Any) -> Any:
    name = entry.get("name") if isinstance(entry, dict) else entry
    if not (isinstance(name, str) and name.startswith(("hf:./", "hf:../"))):
        return entry
    anchored = "hf:" + os.path.normpath(at(name[3:]))
    return {**entry, "name": anchored} if isinstance(entry, dict) else anchored


def parse(raw: dict[str, Any], source: str = "config") -> StudyConfig:
    """Builds and validates a StudyConfig from a plain mapping (a parsed TOML document)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config: expected a table of settings, got {type(raw).__name__}")
    unknown_keys(raw, list(FIELDS), f"config ({source})")
    if raw.get("paper") is not None:
        raw = _paper_experiment(raw)
    base = default_config()
    models_raw = raw.get("models")
    if models_raw is None:
        models = base.models
    else:
        if not isinstance(models_raw, list):
            raise ConfigError(f"models: expected a list of models, got {models_raw!r}")
        models = tuple(ModelSpec.parse(m, f"models[{i}]{sub}") for i, entry in enumerate(models_raw)
                       for sub, m in _each_layer(entry, f"models[{i}]"))
    datasets = raw.get("datasets")
    if datasets is None:
        datasets = ["features"] if models and all(m.features for m in models) else list(base.datasets)
    datasets = tuple(DatasetSpec.parse(d, f"datasets[{i}]") for i, d in enumerate(as_list(datasets, "datasets")))
    values = {k: FIELDS[k].metadata["parse"](v, k) for k, v in raw.items() if k not in ("models", "datasets")}
    cfg = dataclasses.replace(base, models=models, datasets=datasets, **values)
    cfg = _with_weights_dir(cfg)
    validate(cfg)
    return cfg


def _each_layer(entry: Any, where: str) -> list[tuple[str, Any]]:
    """A model entry with ``layers = [...]`` (or "all": every hidden state of an hf: model) as one entry per
    layer, in order (their results share one forward pass per split)."""
    if not isinstance(entry, dict) or "layers" not in entry:
        return [("", entry)]
    if "layer" in entry:
        raise ConfigError(f"{where}: give layer or layers, not both")
    layers = entry["layers"]
    if layers == "all":
        name = entry.get("name", "")
        if not isinstance(name, str) or not name.startswith("hf:"):
            raise ConfigError(f"{where}.layers: 'all' means every hidden state of an hf: model; list the layers "
                              f"of {name!r}")
        layers = [f"hidden_states[{k}]" for k in range(_hidden_states(name[3:], where))]
    layers = as_list(layers, f"{where}.layers")
    if not layers or len(set(map(str, layers))) != len(layers):
        raise ConfigError(f"{where}.layers: expected distinct layer names, got {entry['layers']!r}")
    rest = {k: v for k, v in entry.items() if k != "layers"}
    return [(f".layers[{j}]", {**rest, "layer": layer}) for j, layer in enumerate(layers)]


def _hidden_states(path: str, where: str) -> int:
    """L + 1 for the transformers model at ``path`` (its config only)."""
    try:
        from ..hf import require_transformers

        transformers = require_transformers()
        path = os.path.expanduser(path)
        cfg = transformers.AutoConfig.from_pretrained(path, local_files_only=os.path.isdir(path))
    except (ModuleNotFoundError, OSError, ValueError) as exc:
        raise ConfigError(f"{where}: cannot read the config of hf:{path} ({str(exc).splitlines()[0]})") from None
    if not isinstance(getattr(cfg, "num_hidden_layers", None), int):
        raise ConfigError(f"{where}.layers: hf:{path}'s config does not say how many layers it has; list them")
    return int(cfg.num_hidden_layers) + 1


def _paper_experiment(raw: dict[str, Any]) -> dict[str, Any]:
    """The raw settings of ``paper = NAME``: the experiment's models (one per model key and layer, with its
    reference normalisation) and datasets (under ``data_dir``), protocol "paper" unless given."""
    from ..paper.experiments import select

    for key in ("models", "datasets", "fractions", "sizes", "seeds", "methods"):
        if raw.get(key) is not None:
            raise ConfigError(f"{key}: paper = {raw['paper']!r} sets the models, datasets, grids, seeds and methods "
                              f"of its runs; leave {key} out (recipe_options, device and the like may be given)")
    if raw.get("recipe", "sgd") != "sgd":
        raise ConfigError(f"recipe: the paper's experiments train probes with 'sgd', got {raw['recipe']!r}")
    try:
        runs = [r for e in select(raw["paper"]) for r in e.runs]
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    from ..paper import MODELS

    models = {(r.model, r.layer, r.pool): {"name": r.model, "layer": r.layer, "pool": r.pool,
                                           "normalization": MODELS[r.model].paper_normalization} for r in runs}
    data_dir = raw.get("data_dir")
    datasets = {r.dataset: r.dataset if data_dir is None else {"name": r.dataset, "root": data_dir} for r in runs}
    return {**raw, "models": list(models.values()), "datasets": list(datasets.values()),
            "protocol": raw.get("protocol", "paper")}


def _with_weights_dir(cfg: StudyConfig) -> StudyConfig:
    """Paper keys whose checkpoint is a file, given without ``weights``, look for it under ``weights_dir``."""
    if cfg.weights_dir is None:
        return cfg
    from ..paper import MODELS

    models = tuple(dataclasses.replace(m, weights=os.path.join(cfg.weights_dir, MODELS[m.paper_key].checkpoint))
                   if m.paper_key and MODELS[m.paper_key].needs_file and m.weights is None else m
                   for m in cfg.models)
    return dataclasses.replace(cfg, models=models)


# -- helpers -----------------------------------------------------------------------------------
def _read_toml(path: str) -> dict[str, Any]:
    try:
        import tomllib  # type: ignore[import-not-found,unused-ignore]  # standard from 3.11; mypy checks as 3.10
    except ImportError:  # Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            text = f.read()
        if not text.strip():
            raise ConfigError(f"config: {path} is empty; give some settings, or run without a config file for the "
                              "built-in default")
        return cast("dict[str, Any]", tomllib.loads(text.decode("utf-8")))
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
