"""The paper's experiments by name: one per reference script, and the groups that make its figures.

``EXPERIMENTS[stem]`` is the script ``scripts/<stem>.sh`` of the reference code (nvedant07/diffused-redundancy
at ae5569f), transcribed as data (``reference_scripts.json``, written by :mod:`pyred.paper.transcribe`) and
resolved into pyred's terms: each :class:`Run` is one (paper model key, dataset, layer) with its mode,
fraction grid (or absolute sizes), seeds and probe recipe -- the reference's epochs, StepLR step and batch
size from the script, its weight decay (the downstream dataset's in ``finetuning.py``; the source
dataset's, 1e-4, in ``finetuning_on_middle_layers.py``), its validation cadence (every 5 epochs; every
epoch for middle layers) and its validation transform.

``GROUPS`` gather experiments by the paper's figures. Two kinds of scripts are not experiments here:
``train_scratch_*`` train networks from scratch (pyred probes frozen backbones) and ``pca_*`` only fit the
principal components that the ``-pca`` runs read (pyred fits them inside those runs); ``SKIPPED`` says so.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .models import DATASETS, MODELS, by_reference

REFERENCE = "nvedant07/diffused-redundancy@ae5569f"
# the reference's dataset names -> pyred's
DATASET_NAMES = {"cifar10": "cifar10", "cifar100": "cifar100", "flowers": "flowers102",
                 "oxford-iiit-pets": "oxford-pets", "imagenet": "imagenet", "places365": "places365"}
# the reference's --mode -> pyred's method
MODES = {"random": "random", "first": "first", "pca": "pca", "pca-least": "pca-bottom",
         "randproj": "randproj-uniform"}
# finetuning_on_middle_layers.py: intermediate_layer_names() of a timm ResNet-50 -- every bottleneck's output
# (its act3), then the global pool; the features are the flattened map (the pool's: the penultimate layer)
RESNET50_BLOCKS = tuple(f"layer{s + 1}.{b}" for s, n in enumerate((3, 4, 6, 3)) for b in range(n))
MIDDLE_LAYER_WEIGHT_DECAY = 1e-4  # the source dataset's (ImageNet) parameters, on every downstream dataset
# the reference validated on its 10 % split of the training set; for these datasets that split kept the
# training augmentation (its setattr on a Subset changed nothing); Flowers has its own clean val split
TRAIN_AUGMENTED_VAL = ("cifar10", "cifar100", "oxford-pets")
SKIPPED = {"train_scratch_": "trains a network from scratch; pyred probes frozen pretrained backbones",
           "pca_": "only fits the principal components that the -pca / -pca-least runs read; pyred fits them "
                   "inside those runs"}


@dataclass(frozen=True)
class Run:
    """One (model, dataset, layer) of an experiment: probes on ``fractions`` (or absolute ``sizes``) x
    ``seeds`` with the reference's recipe. ``full_layer_seeds``: the script's own full-layer runs."""

    model: str  # a key of pyred.paper.MODELS
    dataset: str  # pyred's dataset name
    layer: str  # "penultimate" or a module name
    pool: str
    method: str
    fractions: tuple[float, ...] | None
    sizes: tuple[int, ...] | None
    seeds: tuple[int, ...]
    epochs: int
    lr_step: int
    batch_size: int
    weight_decay: float
    eval_every: int
    val_augment: str  # "reference" (the training augmentation) or "clean"
    full_layer_seeds: tuple[int, ...] = ()

    def recipe_options(self) -> dict[str, Any]:
        return dict(epochs=self.epochs, lr_step=self.lr_step, batch_size=self.batch_size,
                    weight_decay=self.weight_decay, eval_every=self.eval_every)

    @property
    def normalization(self) -> str:
        return MODELS[self.model].paper_normalization

    def grid(self) -> str:
        values = self.fractions if self.fractions is not None else self.sizes
        return ("k=" if self.sizes is not None else "") + ",".join(f"{v:g}" for v in values or ())


@dataclass(frozen=True)
class Experiment:
    name: str  # the script's stem
    module: str  # the reference's entry point: finetuning or finetuning_on_middle_layers
    runs: tuple[Run, ...]

    @property
    def script(self) -> str:
        return f"{REFERENCE} scripts/{self.name}.sh"

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(g for g, (_, member) in GROUPS.items() if member(self))

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.model for r in self.runs))

    @property
    def datasets(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.dataset for r in self.runs))


def _layer(module: str, index: int | None) -> tuple[str, str]:
    if index is None or index == len(RESNET50_BLOCKS):
        return "penultimate", "avg"
    if module != "finetuning_on_middle_layers":
        raise ValueError(f"--layers {index} outside finetuning_on_middle_layers")
    return RESNET50_BLOCKS[index], "flatten"


def _runs(module: str, block: dict[str, Any], full: dict[tuple[str, str | None], list[int]]) -> list[Run]:
    key = by_reference(block["model"], block["checkpoint"] or block["config"]).key
    out = []
    for ref_ds in block["datasets"]:
        ds = DATASET_NAMES[ref_ds]
        middle = module == "finetuning_on_middle_layers"
        for index in block["layers"]:
            layer, pool = _layer(module, index)
            sizes = tuple(block["num_features"]) if "num_features" in block else None
            fractions = tuple(float(f) for f in block["fractions"]) if "fractions" in block else None
            out.append(Run(key, ds, layer, pool, MODES[block["mode"]], fractions, sizes, tuple(block["seeds"]),
                           block["epochs"], block["step_lr"], block["batch_size"],
                           MIDDLE_LAYER_WEIGHT_DECAY if middle else DATASETS[ds].weight_decay, 1 if middle else 5,
                           "reference" if ds in TRAIN_AUGMENTED_VAL else "clean",
                           tuple(full.get((ref_ds, layer), ()))))
    return out


def _experiment(name: str, blocks: list[dict[str, Any]]) -> Experiment:
    module = blocks[0]["module"]
    full: dict[tuple[str, str | None], list[int]] = {}
    for b in blocks:
        if "full_layer" in b:
            layers = {_layer(module, i)[0] for other in blocks if "layers" in other for i in other["layers"]}
            for ds, seed in b["full_layer"]:
                for layer in layers or {"penultimate"}:
                    full.setdefault((ds, layer), []).append(seed)
    runs = [r for b in blocks if "full_layer" not in b for r in _runs(module, b, full)]
    for b in blocks:  # full-layer runs of a model and dataset the script probes no subset of: runs of their own
        if "full_layer" not in b:
            continue
        key = by_reference(b["model"], b["checkpoint"] or b["config"]).key
        for ds, seed in b["full_layer"]:
            if not any(r.model == key and r.dataset == DATASET_NAMES[ds] for r in runs):
                alone = dict(b, datasets=[ds], fractions=[1.0], seeds=[seed], layers=[None])
                runs += _runs(module, alone, {})
    return Experiment(name, module, tuple(runs))


@lru_cache(maxsize=1)
def _table() -> dict[str, list[dict[str, Any]]]:
    with open(os.path.join(os.path.dirname(__file__), "reference_scripts.json")) as f:
        return json.load(f)  # type: ignore[no-any-return]


def skipped() -> dict[str, str]:
    """{script stem: why it is not an experiment here}."""
    return {name: why for name in _table() for prefix, why in SKIPPED.items() if name.startswith(prefix)}


@lru_cache(maxsize=1)
def experiments() -> dict[str, Experiment]:
    """{script stem: Experiment} for every reference script that probes a pretrained backbone."""
    gone = skipped()
    return {name: _experiment(name, blocks) for name, blocks in sorted(_table().items()) if name not in gone}


def _robust(e: Experiment) -> bool:
    return any("_l2_" in m or "_linf_" in m for m in e.models)


def _main(e: Experiment) -> bool:
    plain = not any(t in e.name for t in ("morefracs", "-pca", "randproj", "decov", "droprate", "-ff", "mrl",
                                          "width", "wresnet50_4", "imagenet21k", "linfeps4"))
    return (e.name.startswith("finetuning_imagenet-") and plain
            and all(d in ("cifar10", "cifar100", "flowers102", "oxford-pets") for d in e.datasets))


GROUPS: dict[str, tuple[str, Callable[[Experiment], bool]]] = {
    "main": ("Table 1: every IN-1k backbone's penultimate layer on CIFAR10/100, Flowers, Pets", _main),
    "robust": ("adversarially trained backbones (l2 eps=3, linf eps=4)", _robust),
    "vit": ("Vision Transformers (IN-1k and IN-21k AugReg)", lambda e: "vit" in e.name),
    "width": ("Fig. 5 (layer width): ResNet-50 width x1, x2, x4",
              lambda e: "width" in e.name or "wresnet50" in e.name),
    "mrl": ("Fig. 5's fixed-feature ResNet-50s; Matryoshka first-k against random-k (Fig. 7, appendix Fig. 9)",
            lambda e: "mrl" in e.name or "-ff" in e.name),
    "pca": ("PCA, least-PCA and random projections against random subsets",
            lambda e: any(t in e.name for t in ("-pca", "randproj"))),
    "layerwise": ("diffused redundancy across ResNet-50's layers", lambda e: e.name.startswith("layerwise_")),
    "morefracs": ("the denser fraction grid", lambda e: "morefracs" in e.name),
    "dropout": ("ResNet-50s trained with dropout 0.1-0.8", lambda e: "droprate" in e.name),
    "decov": ("ResNet-50 trained with DeCov", lambda e: "decov" in e.name),
    "ensembles": ("more heads (seeds 6-30) for ensembles", lambda e: e.name.startswith("more_heads_")),
    "imagenet": ("ImageNet-1k as the downstream task", lambda e: "imagenet" in e.datasets),
    "places365": ("Places365 as the downstream task", lambda e: "places365" in e.datasets),
}


def select(name: str) -> list[Experiment]:
    """The experiments of ``name``: an experiment (a script's stem) or a group. ValueError otherwise."""
    table = experiments()
    if name in table:
        return [table[name]]
    if name in GROUPS:
        return [e for e in table.values() if GROUPS[name][1](e)]
    if name in skipped():
        raise ValueError(f"paper: {name} is not an experiment here: the script {skipped()[name]}")
    from .._checks import did_you_mean

    raise ValueError(f"paper: {name!r} is neither an experiment nor a group{did_you_mean(name, [*table, *GROUPS])}; "
                     f"groups: {', '.join(GROUPS)} (pyred paper list shows every experiment)")
