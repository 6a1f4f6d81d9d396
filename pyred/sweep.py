"""The sweep runner: models x datasets x fractions x seeds through every stage.

Stages: extract (cached) -> CKA -> probes -> analysis -> report. Work is cut
into units (one CKA unit and a few probe-head chunks per model x dataset x
layer x method); a unit's results and its "finished" record land in the
database in one transaction, and a re-run skips finished units. Under
``torchrun`` the units are shared out across ranks (gloo on CPU, NCCL on GPU)
and rank 0 writes the database.
"""

from __future__ import annotations

import dataclasses
import os
import platform
from typing import Any

import numpy as np
import torch

from .store import ResultStore

PAPER_FRACTIONS = [0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 0.9]
# random: the paper's random subsets; first: neurons 0..k-1 (MRL); pca / pca-bottom: the top / bottom k
# principal directions (exact, fitted on the training features); randproj / randproj-uniform: k columns of
# a Gaussian (or the authors' non-negative uniform) random projection per seed.
METHODS = ("random", "first", "pca", "pca-bottom", "randproj", "randproj-uniform")


class ConfigError(ValueError):
    """A bad sweep configuration, found before any work starts."""


@dataclasses.dataclass
class ModelSpec:
    name: str  # a timm model name, or a label for precomputed features
    features: str | None = None  # .npz with X_train, y_train, X_test, y_test[, class_names]
    pretrained: bool = True
    weights: str | None = None
    layer: str = "penultimate"
    pool: str = "avg"


@dataclasses.dataclass
class SweepConfig:
    models: list
    datasets: list
    fractions: list
    seeds: list
    out: str = "pyred-run"
    methods: list = dataclasses.field(default_factory=lambda: ["random"])
    recipe: str = "sgd"
    recipe_options: dict = dataclasses.field(default_factory=dict)
    cka: bool = True
    cka_samples: int = 1000
    cka_debiased: bool = False
    full_layer_seed: int = 2
    device: str | None = None
    batch_size: int | None = None
    cache_dir: str | None = None
    head_chunks: int = 1
    report: bool = True

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["models"] = [dataclasses.asdict(m) for m in self.models]
        return d


def default_config(out: str = "pyred-run") -> SweepConfig:
    """The built-in default: offline pretrained EfficientNet-Lite0 on scikit-learn's digits,
    the paper's fraction grid, 5 seeds plus the full layer, every stage."""
    return SweepConfig(models=[ModelSpec("tf_efficientnet_lite0")], datasets=["digits"],
                       fractions=list(PAPER_FRACTIONS), seeds=[1, 2, 3, 4, 5], out=out)


def load_config(path: str | None = None, **overrides: Any) -> SweepConfig:
    """A SweepConfig from a TOML file (or the default), with command-line overrides; validated."""
    if path is None:
        cfg = default_config()
    else:
        try:
            import tomllib
        except ImportError:  # Python 3.10
            import tomli as tomllib
        try:
            with open(path, "rb") as f:
                raw = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"config: no such file {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config: {path} is not valid TOML ({exc})") from None
        cfg = _from_dict(raw, path)
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "models":
            cfg.models = [ModelSpec(m) for m in value]
        elif key == "features":
            cfg.models = [ModelSpec(os.path.splitext(os.path.basename(value))[0], features=value)]
            cfg.datasets = ["features"]
        else:
            setattr(cfg, key, value)
    validate(cfg)
    return cfg


def _from_dict(raw: dict, path: str) -> SweepConfig:
    known = {f.name for f in dataclasses.fields(SweepConfig)}
    unknown = set(raw) - known - {"model", "dataset", "cka_settings"}
    if unknown:
        raise ConfigError(f"config: unknown keys {sorted(unknown)} in {path}; expected some of {sorted(known)}")
    raw = dict(raw)
    models = []
    for m in raw.pop("models", []):
        if isinstance(m, str):
            models.append(ModelSpec(m))
        elif isinstance(m, dict):
            try:
                models.append(ModelSpec(**m))
            except TypeError as exc:
                raise ConfigError(f"config: bad model entry {m!r} ({exc})") from None
        else:
            raise ConfigError(f"config: a model is a timm name or a table, got {m!r}")
    base = default_config()
    cfg = SweepConfig(models=models or base.models, datasets=raw.pop("datasets", base.datasets),
                      fractions=raw.pop("fractions", base.fractions), seeds=raw.pop("seeds", base.seeds))
    for k, v in raw.items():
        setattr(cfg, k, v)
    if all(m.features for m in cfg.models) and "datasets" not in raw:
        cfg.datasets = ["features"]
    return cfg


def validate(cfg: SweepConfig) -> None:
    """Raises ConfigError (one line) for anything that would fail later."""
    import timm

    from . import datasets as ds
    from .probes import RECIPES

    if not cfg.models:
        raise ConfigError("models: the sweep has no model")
    names = set(timm.list_models())
    for m in cfg.models:
        if m.features:
            if not os.path.isfile(m.features):
                raise ConfigError(f"features: no such file {m.features}")
        elif m.name not in names:
            raise ConfigError(f"model: {m.name!r} is not a timm model (see timm.list_models())")
    if not cfg.datasets:
        raise ConfigError("datasets: the sweep has no dataset")
    for d in cfg.datasets:
        if d != "features" and d not in ds.available():
            raise ConfigError(f"dataset: unknown {d!r}; available: {ds.available()}")
    if "features" in cfg.datasets and not all(m.features for m in cfg.models):
        raise ConfigError("datasets: 'features' goes with --features/.npz models only")
    if not cfg.fractions:
        raise ConfigError("fractions: the grid is empty")
    for f in cfg.fractions:
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f <= 1:
            raise ConfigError(f"fractions: {f!r} is outside [0, 1]")
    if not cfg.seeds:
        raise ConfigError("seeds: no seed given")
    for s in cfg.seeds:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ConfigError(f"seeds: {s!r} is not a non-negative integer")
    for m in cfg.methods:
        if m not in METHODS:
            raise ConfigError(f"methods: unknown {m!r}; expected some of {METHODS}")
    if cfg.recipe not in RECIPES:
        raise ConfigError(f"recipe: unknown {cfg.recipe!r}; expected one of {sorted(RECIPES)}")
    if not isinstance(cfg.head_chunks, int) or cfg.head_chunks < 1:
        raise ConfigError(f"head_chunks: expected a positive integer, got {cfg.head_chunks!r}")
    out = os.path.abspath(cfg.out)
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, ".pyred-write-test")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as exc:
        raise ConfigError(f"out: cannot write to {out} ({exc.strerror or exc})") from None


# -- running -----------------------------------------------------------------------------------
def _dist(device: str | None):
    """(rank, world size, group initialised here?) -- torchrun sets WORLD_SIZE and friends.
    NCCL when the sweep runs on CUDA devices, gloo otherwise (CPU sweeps on a GPU machine too)."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, False
    if not dist.is_initialized():
        on_gpu = bool(device) and str(device).startswith(("cuda", "gpu")) and torch.cuda.is_available()
        backend = "nccl" if on_gpu else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        dist.init_process_group(backend)
        return dist.get_rank(), dist.get_world_size(), True
    return dist.get_rank(), dist.get_world_size(), False


def run(cfg: SweepConfig, progress: bool = True) -> str:
    """Runs every stage of the sweep; returns the output folder (which holds results.sqlite)."""
    import torch.distributed as dist

    rank, world, owns_group = _dist(cfg.device)
    if world > 1 and cfg.device in ("cuda", "gpu") and torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", rank)) % torch.cuda.device_count()
        torch.cuda.set_device(local)
        cfg = dataclasses.replace(cfg, device=f"cuda:{local}")  # one GPU per rank
    if world > 1 and cfg.head_chunks < world:
        cfg = dataclasses.replace(cfg, head_chunks=world)  # enough probe units for every rank
    out = os.path.abspath(cfg.out)
    store = ResultStore(os.path.join(out, "results.sqlite")) if rank == 0 else None
    try:
        if store is not None:
            store.log_run(cfg.to_dict(), versions())
        finished = store.finished() if store is not None else set()
        if world > 1:
            box = [finished]
            dist.broadcast_object_list(box, src=0)
            finished = box[0]
        for model in cfg.models:
            for dataset in cfg.datasets:
                data = _features(cfg, model, dataset, rank, world, progress and rank == 0)
                units = _units(cfg, model, dataset, data)
                mine = [u for i, u in enumerate(units) if i % world == rank and u["id"] not in finished]
                results = [(u["id"], u["fields"], _run_unit(cfg, u, data, progress and rank == 0)) for u in mine]
                if world > 1:
                    gathered = [None] * world if rank == 0 else None
                    dist.gather_object(results, gathered, dst=0)
                    if rank == 0:
                        results = [r for part in gathered for r in part]
                if store is not None:
                    for unit_id, fields, rows in results:
                        store.commit_unit(unit_id, rows, fields)
        if world > 1:
            dist.barrier()
        if rank == 0:
            from .report import analyse, write_report

            analyse(out)
            if cfg.report:
                write_report(out)
    finally:
        if store is not None:
            store.close()
        if owns_group:
            dist.destroy_process_group()
    return out


def versions() -> dict:
    import timm

    from . import __version__, native_info

    info = native_info()
    return {"pyred": __version__, "torch": torch.__version__, "timm": timm.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "cuda_kernels": info["cuda_device_usable"],
            "cpu_kernels": info["cpu_module"]}


def _features(cfg: SweepConfig, model: ModelSpec, dataset: str, rank: int, world: int, progress: bool) -> dict:
    """Train / val / test features of one model on one dataset (rank 0 extracts, the others read the cache)."""
    if model.features:
        z = np.load(model.features, allow_pickle=False)
        missing = [k for k in ("X_train", "y_train", "X_test", "y_test") if k not in z]
        if missing:
            raise ConfigError(f"features: {model.features} lacks arrays {missing}")
        names = [str(c) for c in z["class_names"]] if "class_names" in z else None
        return dict(model=model.name, dataset=dataset, layer=model.layer, X_train=z["X_train"], y_train=z["y_train"],
                    X_val=None, y_val=None, X_test=z["X_test"], y_test=z["y_test"], class_names=names)
    import torch.distributed as dist

    from . import datasets
    from .backbones import Backbone
    from .features import extract_features

    cache = cfg.cache_dir or os.path.join(os.path.abspath(cfg.out), "cache")
    out = {}
    for turn in range(2 if world > 1 else 1):  # rank 0 fills the cache first; the others then hit it
        if world > 1 and turn != (0 if rank == 0 else 1):
            dist.barrier()
            continue
        bb = Backbone(model.name, pretrained=model.pretrained, weights=model.weights, layer=model.layer,
                      pool=model.pool)
        for split in ("train", "val", "test"):
            fs = extract_features(bb, datasets.load(dataset, split), batch_size=cfg.batch_size, device=cfg.device,
                                  cache_dir=cache, progress=progress)
            out[split] = fs
        if world > 1:
            dist.barrier()
    return dict(model=model.name, dataset=dataset, layer=model.layer, X_train=out["train"].X,
                y_train=out["train"].y, X_val=out["val"].X, y_val=out["val"].y, X_test=out["test"].X,
                y_test=out["test"].y, class_names=out["test"].class_names)


def _plans(cfg: SweepConfig, d: int, method: str) -> list[tuple]:
    """[(view, Subsets)] for one method: the features a probe reads (None: the layer itself) and the subsets."""
    from .subsets import Subsets, draw_subsets

    all_fracs = sorted(set(cfg.fractions) | {1.0})
    if method == "random":
        grid = draw_subsets(d, cfg.fractions, cfg.seeds)
        if 1.0 not in cfg.fractions:
            grid = Subsets.concat([grid, draw_subsets(d, [1.0], [cfg.full_layer_seed])])
        return [(None, grid)]
    if method == "first":
        return [(None, draw_subsets(d, all_fracs, mode="first"))]
    if method == "pca":
        return [(("pca",), draw_subsets(d, all_fracs, mode="first"))]
    if method == "pca-bottom":
        ks = [int(f * d) for f in all_fracs]
        S = Subsets.from_lists([list(range(d - k, d)) for k in ks], d=d)
        S.fractions = torch.tensor(all_fracs, dtype=torch.float64)
        return [(("pca",), S)]
    kind = "uniform" if method == "randproj-uniform" else "gaussian"
    plans = []
    for seed in cfg.seeds:
        S = draw_subsets(d, all_fracs, mode="first")
        S.seeds = torch.full((len(S),), int(seed), dtype=torch.int64)
        plans.append((("randproj", int(seed), kind), S))
    return plans


def _view(data: dict, view, split: str) -> np.ndarray:
    """The features of ``split`` as ``view`` sees them (float32)."""
    X = np.asarray(data[f"X_{split}"])
    if view is None:
        return X
    if view[0] == "pca":
        if "_pca" not in data:
            from .analysis import PCABasis

            data["_pca"] = PCABasis(np.asarray(data["X_train"], dtype=np.float64)).components
        return (X @ data["_pca"]).astype(np.float32)
    from .analysis import random_projection

    key = ("_randproj",) + view[1:]
    if key not in data:
        data[key] = random_projection(X.shape[1], X.shape[1], view[1], view[2])
    return (X @ data[key]).astype(np.float32)


def _units(cfg: SweepConfig, model: ModelSpec, dataset: str, data: dict) -> list[dict]:
    d = data["X_train"].shape[1]
    base = f"{model.name}|{dataset}|{model.layer}"
    units = []
    for method in cfg.methods:
        for p, (view, S) in enumerate(_plans(cfg, d, method)):
            tag = f"{base}|{method}" + (f"|seed{view[1]}" if view and view[0] == "randproj" else "")
            if cfg.cka:
                units.append(dict(id=f"{tag}|cka", kind="cka", method=method, view=view, subsets=S,
                                  heads=range(len(S)), fields=("cka",)))
            bounds = np.linspace(0, len(S), min(cfg.head_chunks, len(S)) + 1).astype(int)
            for c in range(len(bounds) - 1):
                units.append(dict(id=f"{tag}|probes|{c}/{len(bounds) - 1}", kind="probes", method=method, view=view,
                                  subsets=S, heads=range(bounds[c], bounds[c + 1]), fields=("accuracy", "per_class")))
    return units


def _run_unit(cfg: SweepConfig, unit: dict, data: dict, progress: bool) -> list[dict]:
    from .cka import subset_cka
    from .probes import train_probes
    from .probes.layouts import choose_layout

    S, view = unit["subsets"], unit["view"]
    heads = list(unit["heads"])
    rows = [dict(model=data["model"], dataset=data["dataset"], layer=data["layer"], method=unit["method"],
                 fraction=float(S.fractions[k]), seed=int(S.seeds[k]), k=int(S.sizes[k])) for k in heads]
    if unit["kind"] == "cka":
        n = cfg.cka_samples
        X = torch.as_tensor(np.array(data["X_test"][:n]))  # a writable copy of the first n test samples
        Z = X if view is None else torch.as_tensor(_view(data, view, "test")[:n])
        if cfg.device:
            X, Z = X.to(cfg.device), Z.to(cfg.device)
        # CKA of each subset of the view with the full layer itself
        values = subset_cka(Z, S, target=None if view is None else X, debiased=cfg.cka_debiased).cpu().numpy()
        for r, k in zip(rows, heads):
            r["cka"] = float(values[k])
        return rows
    part = S[heads[0]:heads[-1] + 1]
    options = dict(cfg.recipe_options)
    if cfg.recipe == "sgd":
        # Same initial weights and layout whatever the chunking: head k is seeded by its place in the grid.
        options.setdefault("init_seeds", [int(k) for k in heads])
        options.setdefault("layout", choose_layout(S, data["X_train"].shape[1],
                                                   torch.device(cfg.device or "cpu")))
    res = train_probes(_view(data, view, "train"), np.asarray(data["y_train"]), part, recipe=cfg.recipe,
                       X_val=None if data["X_val"] is None else _view(data, view, "val"),
                       y_val=None if data["y_val"] is None else np.asarray(data["y_val"]),
                       device=cfg.device, progress=progress, **options)
    ev = res.evaluate(_view(data, view, "test"), np.asarray(data["y_test"]))
    for j, r in enumerate(rows):
        r["accuracy"] = float(ev.accuracy[j])
        r["per_class"] = [None if np.isnan(v) else float(v) for v in np.asarray(ev.per_class_accuracy[j])]
    return rows
