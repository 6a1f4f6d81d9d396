"""The paper's models and recipe defaults, as data (Nanda et al. 2023; the reference code's scripts).

* ``DATASETS``: per downstream dataset, the probe's weight decay and batch size.
* ``MODELS``: per backbone of the paper, the timm architecture and pretrained tag,
  the width d of the probed layer, its normalisation (and the one the reference
  code used, where they differ), the checkpoint's source and format, the
  training schedule (epochs / StepLR step) and the fraction grid and seeds of its
  scripts.
* ``recipe_defaults(model, dataset)``: the "sgd" options the paper used for that
  pair -- what a sweep starts from before the user's own options override it.
* ``fraction_grid(model)``: the fraction grid of the model's scripts.

A model is found by its key here (``resnet50_l2_eps3``), or -- for the models whose
weights are timm's own -- by its timm name (``resnet50.a1_in1k``, or ``resnet50`` when
timm's default tag is the paper's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..backbones import Backbone

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

SALMAN = "github.com/microsoft/robust-models-transfer (Salman et al. 2020)"
AUGREG = "gs://vit_models/augreg/ (Steiner et al. 2021, AugReg)"
MRL = "github.com/RAIVNLab/MRL (Kusupati et al. 2022), resnet50 model zoo"
AUTHORS = ("trained by the paper's authors with deep-learning-base; not published -- ask the authors "
           "(Nanda et al. 2023)")


@dataclass(frozen=True)
class PaperModel:
    """One backbone of the paper, by its key (what ``models = [...]`` and ``pyred paper`` name it).

    ``timm_name``: architecture[.tag] for ``pyred.Backbone``. ``checkpoint``: "timm" when timm's own
    pretrained tag is the paper's weights, else the file the reference loaded (its name, or a path
    relative to ``--weights-dir``), published at ``source``, with ``sha256`` where known.
    ``normalization``: the statistics the checkpoint was trained with ("imagenet" or "half" = 0.5/0.5);
    ``paper_normalization``: what the reference code normalised with (the IN-1k AugReg ViTs differ) --
    a study's default for this key. ``reference``: the reference scripts' (--model, checkpoint file or
    config) that name it.
    """

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
    source: str = "timm"
    sha256: str | None = None
    reference: tuple[str, str | None] = ("", None)

    @property
    def arch(self) -> str:
        return self.timm_name.split(".")[0]

    @property
    def needs_file(self) -> bool:
        """True when the weights are a file to give (timm does not download them)."""
        return self.checkpoint != "timm"

    @property
    def file_name(self) -> str | None:
        return None if not self.needs_file else self.checkpoint


def _timm(key: str, timm_name: str, dim: int, pretraining: str, epochs: int, step: int, grid: tuple[float, ...],
          ref: str, norm: str = "imagenet", seeds: tuple[int, ...] = (1, 2, 3, 4, 5)) -> PaperModel:
    return PaperModel(key, timm_name, dim, pretraining, "timm", "timm", norm, norm, epochs, step, grid, seeds,
                      reference=(ref, None))


def _file(key: str, arch: str, dim: int, pretraining: str, file: str, fmt: str, source: str, epochs: int,
          step: int, grid: tuple[float, ...], ref: str, norm: str = "imagenet", paper_norm: str = "imagenet",
          ref_file: str | None = None) -> PaperModel:
    return PaperModel(key, arch, dim, pretraining, file, fmt, norm, paper_norm, epochs, step, grid, source=source,
                      reference=(ref, ref_file or file.rsplit("/", 1)[-1]))


def _robust(key: str, arch: str, dim: int, file: str, epochs: int, step: int, grid: tuple[float, ...],
            what: str = "adversarial l2 eps=3") -> PaperModel:
    return _file(key, arch, dim, f"IN-1k, {what} (Salman et al. 2020)", file, "robustness", SALMAN, epochs, step,
                 grid, arch)


def _lightning(key: str, what: str, folder: str, epoch: int, config: str) -> PaperModel:
    return _file(key, "resnet50", 2048, f"IN-1k, CE, {what} (the authors' own training)",
                 f"{folder}/epoch={epoch}-topk=1.ckpt", "lightning", AUTHORS, 20, 3, MAIN_GRID, "resnet50",
                 ref_file=config)


_FF = {k: _file(f"resnet50_ff{k}", f"resnet50_ff{k}", k, f"IN-1k, CE, fixed {k}-unit feature layer (MRL repo)",
                f"r50_mrl0_e0_ff{k}.pt", "MRL", MRL, 50, 10, MAIN_GRID, f"resnet50_ff{k}")
       for k in (8, 16, 32, 64, 128, 256, 512, 1024, 2048)}
_DROP = "resnet50drop_rate_{r}_bs_256_seed_420_lr_0.01_opt_sgd_step_500.0_warmup_1000_gradclip_1.0"
_DROP_EPOCH = {"0.1": 84, "0.5": 79}
_DECOV = "resnet50_bs_256_seed_420_lr_0.01_opt_sgd_step_500.0_warmup_1000_gradclip_1.0_decov_0.0001"

MODELS: dict[str, PaperModel] = {m.key: m for m in (
    _timm("resnet18_nonrob", "resnet18.tv_in1k", 512, "IN-1k, CE", 50, 10, RESNET18_GRID, "resnet18"),
    _timm("resnet50_nonrob", "resnet50.a1_in1k", 2048, "IN-1k, RSB A1 (BCE)", 100, 20, MAIN_GRID, "resnet50"),
    _timm("vgg16_bn_nonrob", "vgg16_bn.tv_in1k", 4096, "IN-1k, CE", 50, 10, VGG_VIT1K_GRID, "vgg16_bn"),
    _file("wide_resnet50_2_nonrob", "wide_resnet50_2", 2048, "IN-1k, CE (Salman et al. 2020, eps=0)",
          "wideresnet-50-2-nonrob.ckpt", "robustness", SALMAN, 50, 10, MAIN_GRID, "wide_resnet50_2"),
    _file("wide_resnet50_4_nonrob", "wide_resnet50_4", 2048, "IN-1k, CE (Salman et al. 2020, eps=0)",
          "wideresnet-50-4-nonrob.ckpt", "robustness", SALMAN, 50, 10, MAIN_GRID, "wide_resnet50_4"),
    _file("vit_s16_in1k", "vit_small_patch16_224", 384, "IN-1k, AugReg",
          "S_16-i1k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0.npz", "augreg npz", AUGREG, 50, 10,
          VGG_VIT1K_GRID, "vit_small_patch16_224", norm="half"),
    _file("vit_s32_in1k", "vit_small_patch32_224", 384, "IN-1k, AugReg",
          "S_32-i1k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0.npz", "augreg npz", AUGREG, 50, 10,
          VGG_VIT1K_GRID, "vit_small_patch32_224", norm="half"),
    PaperModel("vit_s16_in21k", "vit_small_patch16_224.augreg_in21k", 384, "IN-21k, AugReg", "timm", "timm", "half",
               "half", 100, 20, VIT21K_GRID, tuple(range(1, 11)), source=AUGREG + ", as timm's augreg_in21k tag",
               reference=("vit_small_patch16_224", "S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0.npz")),
    PaperModel("vit_s32_in21k", "vit_small_patch32_224.augreg_in21k", 384, "IN-21k, AugReg", "timm", "timm", "half",
               "half", 100, 20, VIT21K_GRID, tuple(range(1, 11)), source=AUGREG + ", as timm's augreg_in21k tag",
               reference=("vit_small_patch32_224", "S_32-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0.npz")),
    _robust("resnet18_l2_eps3", "resnet18", 512, "resnet-18-l2-eps3.ckpt", 50, 10, RESNET18_GRID),
    _robust("resnet50_l2_eps3", "resnet50", 2048, "resnet-50-l2-eps3.ckpt", 100, 20, MAIN_GRID),
    _robust("wide_resnet50_2_l2_eps3", "wide_resnet50_2", 2048, "wideresnet-50-2-l2-eps3.ckpt", 50, 10, MAIN_GRID),
    _robust("wide_resnet50_4_l2_eps3", "wide_resnet50_4", 2048, "wideresnet-50-4-l2-eps3.ckpt", 50, 10, MAIN_GRID),
    _robust("vgg16_bn_l2_eps3", "vgg16_bn", 4096, "vgg16_bn_l2_eps3.ckpt", 50, 10, VGG_VIT1K_GRID),
    _robust("resnet50_linf_eps4", "resnet50", 2048, "linf/eps4/r50.ckpt", 50, 10, MAIN_GRID,
            "adversarial linf eps=4/255"),
    _file("resnet50_mrl", "resnet50_mrl", 2048, "IN-1k, Matryoshka (MRL repo)", "r50_mrl1_e0_ff2048.pt", "MRL",
          MRL, 50, 10, MAIN_GRID, "resnet50_mrl"),
    *_FF.values(),
    *(_lightning(f"resnet50_droprate_{r}", f"dropout {r} on the penultimate layer", _DROP.format(r=r),
                 _DROP_EPOCH.get(r, 48), f"resnet50_drop_rate_0{r[-1]}.yaml")
      for r in ("0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8")),
    _lightning("resnet50_decov_1e-4", "DeCov 1e-4 on the penultimate layer", _DECOV, 48, "resnet50_decov_01.yaml"),
)}


def by_reference(model: str, checkpoint_or_config: str | None) -> PaperModel:
    """The key of the reference scripts' ``--model`` with its checkpoint file (or config file)."""
    for m in MODELS.values():
        if m.reference == (model, checkpoint_or_config):
            return m
    raise KeyError(f"no paper model for the reference's --model {model} with {checkpoint_or_config}")


def find(model: str) -> PaperModel | None:
    """The paper's entry for ``model``: by key; else the entry whose weights are timm's own under this timm
    name (an untagged name meaning timm's default tag). Any other name is not the paper's model, whatever its
    architecture -- ``vit_small_patch16_224.augreg_in1k`` from timm was trained otherwise than the paper's
    file, ``resnet18`` is timm's a1_in1k, not the paper's tv_in1k -- so it gets no paper grid or schedule;
    the key (``vit_s16_in1k`` with its file, ``resnet18_nonrob``) does."""
    if model in MODELS:
        return MODELS[model]
    if "." not in model:
        import timm

        tags = timm.list_pretrained(f"{model}.*")
        model = tags[0] if tags else model  # timm's default tag comes first
    for m in MODELS.values():
        if not m.needs_file and m.timm_name == model:
            return m
    return None


def backbone(key: str, weights: str | None = None, **kwargs: Any) -> Backbone:
    """``pyred.Backbone`` for the paper's model ``key`` (see MODELS): timm's own pretrained tag where the
    paper's checkpoint is one, else ``weights`` = the downloaded checkpoint file (its source is named in
    the error when missing). ``kwargs`` go to Backbone (layer, pool, ...)."""
    from ..backbones import Backbone

    if key not in MODELS:
        from .._checks import did_you_mean

        raise ValueError(f"key: {key!r} is not one of the paper's models{did_you_mean(key, MODELS)}; "
                         f"expected one of {sorted(MODELS)}")
    m = MODELS[key]
    if m.needs_file and weights is None and kwargs.get("pretrained", True):
        raise ValueError(f"weights: {key!r} needs the checkpoint {m.checkpoint} ({m.checkpoint_format} format, "
                         f"from {m.source}), which timm does not download; pass weights= the local file")
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
