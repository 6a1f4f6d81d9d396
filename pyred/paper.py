"""The paper's recipe and models, as data (Nanda et al. 2023; the reference code's scripts).

* ``DATASETS``: per downstream dataset, the probe's weight decay and batch size.
* ``MODELS``: per backbone of the paper, the timm architecture and pretrained tag,
  the width d of the probed layer, its normalisation (and the one the reference
  code used, where they differ), the checkpoint's source and format, the
  training schedule (epochs / StepLR step) and the fraction grid and seeds of its
  scripts.
* ``recipe_defaults(model, dataset)``: the "sgd" options the paper used for that
  pair -- what a sweep starts from before the user's own options override it.
* ``fraction_grid(model)``: the fraction grid of the model's scripts.

A model is found by its key here, by its timm name (``resnet50.a1_in1k``), or by
its timm architecture (``resnet50``, any tag).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backbones import Backbone

MAIN_GRID = (0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 0.9)
RESNET18_GRID = (0.005, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 0.9)
VGG_VIT1K_GRID = (0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 0.9)
VIT21K_GRID = (0.005, 0.05, 0.1, 0.2, 0.5, 0.9)


@dataclass(frozen=True)
class DatasetDefaults:
    weight_decay: float
    batch_size: int = 256


DATASETS: dict[str, DatasetDefaults] = {
    "cifar10": DatasetDefaults(5e-4),
    "cifar100": DatasetDefaults(5e-4),
    "flowers102": DatasetDefaults(1e-4),
    "oxford-pets": DatasetDefaults(1e-4),
    "imagenet": DatasetDefaults(1e-4, 512),
    "places365": DatasetDefaults(5e-4, 1024),
}

SALMAN = "Salman et al. 2020 release (github.com/microsoft/robust-models-transfer), file "
AUGREG = "gs://vit_models/augreg/"  # Steiner et al. 2021 (AugReg)


@dataclass(frozen=True)
class PaperModel:
    """One backbone of the paper. ``timm_name``: architecture.tag for ``pyred.Backbone``;
    ``checkpoint``: where its weights come from ("timm" for timm's own pretrained tag, else a
    file to pass as ``weights=``, in ``checkpoint_format``); ``normalization``: the statistics
    the checkpoint was trained with ("imagenet" or "half" = 0.5/0.5); ``paper_normalization``:
    what the reference code normalised with (differs for the IN-1k AugReg ViTs)."""

    key: str
    timm_name: str
    dim: int
    pretraining: str
    checkpoint: str
    checkpoint_format: str
    normalization: str
    paper_normalization: str
    epochs: int
    lr_step: int
    fractions: tuple[float, ...]
    seeds: tuple[int, ...] = (1, 2, 3, 4, 5)

    @property
    def arch(self) -> str:
        return self.timm_name.split(".")[0]


def _robust(key: str, arch: str, dim: int, file: str, epochs: int, step: int, grid: tuple[float, ...]) -> PaperModel:
    return PaperModel(key, arch, dim, "IN-1k, adversarial (Salman et al. 2020)", SALMAN + file, "robustness",
                      "imagenet", "imagenet", epochs, step, grid)


MODELS: dict[str, PaperModel] = {m.key: m for m in (
    PaperModel("resnet18", "resnet18.tv_in1k", 512, "IN-1k, CE", "timm", "timm", "imagenet", "imagenet", 50, 10,
               RESNET18_GRID),
    PaperModel("resnet50", "resnet50.a1_in1k", 2048, "IN-1k, RSB A1 (BCE)", "timm", "timm", "imagenet", "imagenet",
               100, 20, MAIN_GRID),
    PaperModel("wide_resnet50_2", "wide_resnet50_2", 2048, "IN-1k, CE (Salman et al. eps=0)",
               SALMAN + "wideresnet-50-2-nonrob.ckpt", "robustness", "imagenet", "imagenet", 50, 10, MAIN_GRID),
    PaperModel("vgg16_bn", "vgg16_bn.tv_in1k", 4096, "IN-1k, CE", "timm", "timm", "imagenet", "imagenet", 50, 10,
               VGG_VIT1K_GRID),
    PaperModel("vit_small_patch16_224", "vit_small_patch16_224.augreg_in1k", 384, "IN-1k, AugReg",
               AUGREG + "S_16-i1k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0.npz", "augreg npz", "half",
               "imagenet", 50, 10, VGG_VIT1K_GRID),
    PaperModel("vit_small_patch32_224", "vit_small_patch32_224", 384, "IN-1k, AugReg",
               AUGREG + "S_32-i1k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0.npz", "augreg npz", "half",
               "imagenet", 50, 10, VGG_VIT1K_GRID),
    PaperModel("vit_small_patch16_224_in21k", "vit_small_patch16_224.augreg_in21k", 384, "IN-21k, AugReg", "timm",
               "timm", "half", "half", 100, 20, VIT21K_GRID, tuple(range(1, 11))),
    PaperModel("vit_small_patch32_224_in21k", "vit_small_patch32_224.augreg_in21k", 384, "IN-21k, AugReg", "timm",
               "timm", "half", "half", 100, 20, VIT21K_GRID, tuple(range(1, 11))),
    _robust("resnet18_l2_eps3", "resnet18", 512, "resnet-18-l2-eps3.ckpt", 50, 10, RESNET18_GRID),
    _robust("resnet50_l2_eps3", "resnet50", 2048, "resnet-50-l2-eps3.ckpt", 100, 20, MAIN_GRID),
    _robust("wide_resnet50_2_l2_eps3", "wide_resnet50_2", 2048, "wideresnet-50-2-l2-eps3.ckpt", 50, 10, MAIN_GRID),
    _robust("vgg16_bn_l2_eps3", "vgg16_bn", 4096, "vgg16_bn_l2_eps3.ckpt", 50, 10, VGG_VIT1K_GRID),
    _robust("resnet50_linf_eps4", "resnet50", 2048, "linf/eps4/r50.ckpt", 50, 10, MAIN_GRID),
)}


def find(model: str) -> PaperModel | None:
    """The paper's entry for ``model``: by key, by timm name, or by architecture (first match)."""
    if model in MODELS:
        return MODELS[model]
    for m in MODELS.values():
        if m.timm_name == model:
            return m
    arch = model.split(".")[0]
    for m in MODELS.values():
        if m.key == arch or m.arch == arch:
            return m
    return None


def backbone(key: str, weights: str | None = None, **kwargs: Any) -> Backbone:
    """``pyred.Backbone`` for the paper's model ``key`` (see MODELS): timm's own pretrained tag where the
    paper's checkpoint is one, else ``weights`` = the downloaded checkpoint file (its source is named in
    the error when missing). ``kwargs`` go to Backbone (layer, pool, ...)."""
    from .backbones import Backbone

    if key not in MODELS:
        from ._checks import did_you_mean

        raise ValueError(f"key: {key!r} is not one of the paper's models{did_you_mean(key, MODELS)}; "
                         f"expected one of {sorted(MODELS)}")
    m = MODELS[key]
    if m.checkpoint != "timm" and weights is None and kwargs.get("pretrained", True):
        raise ValueError(f"weights: {key!r} comes from {m.checkpoint} ({m.checkpoint_format} format), which "
                         f"timm does not download; pass weights= the local file")
    return Backbone(m.timm_name, weights=weights, **kwargs)


def recipe_defaults(model: str, dataset: str) -> dict[str, Any]:
    """The paper's "sgd" options for ``model`` on ``dataset`` (weight decay and batch size from the
    dataset, epochs and step from the model's script family); {} where the paper has no entry."""
    out: dict[str, Any] = {}
    m = find(model)
    if m is not None:
        out.update(epochs=m.epochs, lr_step=m.lr_step)
    ds = DATASETS.get(dataset)
    if ds is not None:
        out.update(weight_decay=ds.weight_decay, batch_size=ds.batch_size)
    return out


def resolve_options(model: str, dataset: str, recipe: str, user: dict[str, Any]) -> dict[str, Any]:
    """The user's recipe options over the paper's defaults for (model, dataset). Giving ``epochs``
    without ``lr_step`` drops the table's step too, so the schedule scales with the epochs
    (lr_step = epochs / 5, the paper's ratio) instead of keeping a step meant for another length."""
    if recipe != "sgd":
        return dict(user)
    base = recipe_defaults(model, dataset)
    if "epochs" in user and "lr_step" not in user:
        base.pop("lr_step", None)
    return {**base, **user}


def fraction_grid(model: str, default: tuple[float, ...] = MAIN_GRID) -> tuple[float, ...]:
    m = find(model)
    return m.fractions if m is not None else default
