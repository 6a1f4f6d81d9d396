"""The paper's image transforms, and per-image seeded augmentation.

* ``eval_transform(size, mean, std)``: Resize(size, bilinear) -> CenterCrop(size)
  -> ToTensor -> Normalize (the reference code's test transform, no 256-resize).
* ``train_transform(size, mean, std)``: RandomResizedCrop(size, scale 0.08-1) ->
  RandomHorizontalFlip -> ColorJitter(0.25, 0.25, 0.25) -> RandomRotation(2 deg)
  -> ToTensor -> Normalize (the reference code's probe-training augmentation).
* ``normalization(backbone, which)``: the (mean, std) to normalise with -- the
  backbone's own pre-training statistics ("model", the default), ImageNet's
  ("imagenet": what the reference code used for every IN-1k model, including the
  AugReg ViTs trained with 0.5/0.5 -- a likely bug kept as an option), 0.5/0.5
  ("half"), or an explicit pair.
* :class:`SeededImages`: ``views`` augmented passes over a dataset where the
  augmentation of image i in pass v is drawn under a seed fixed by (seed, v, i)
  -- so the same image gets the same crop whatever the batch order, the worker
  count or the process, and ``extract_features(..., views=V)`` caches exactly the
  augmentations that the first V epochs of a ``FeatureStream`` with that seed see.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
NORMALIZATIONS = ("model", "imagenet", "half")


def normalization(backbone: Any, which: Any = "model") -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel for ``backbone`` (see the module docstring)."""
    if isinstance(which, str):
        if which not in NORMALIZATIONS:
            raise ValueError(f"normalization: expected one of {NORMALIZATIONS} or a (mean, std) pair, got {which!r}")
        if which == "imagenet":
            return IMAGENET
        if which == "half":
            return HALF
        model = getattr(backbone, "model", None)
        if model is None or not hasattr(model, "pretrained_cfg"):  # a wrapped module carries no statistics
            raise ValueError("normalization: 'model' needs a pyred.Backbone (it reads the timm model's pretrained "
                             "config); pass 'imagenet', 'half' or (mean, std)")
        import timm.data

        cfg = timm.data.resolve_data_config({}, model=model)  # type: ignore[attr-defined,no-untyped-call]  # timm: implicit re-export, untyped
        return tuple(float(v) for v in cfg["mean"]), tuple(float(v) for v in cfg["std"])
    try:
        mean, std = which
        mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    except (TypeError, ValueError):
        raise ValueError(f"normalization: expected one of {NORMALIZATIONS} or a (mean, std) pair of 3 numbers "
                         f"each, got {which!r}") from None
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"normalization: expected 3 means and 3 positive stds, got {which!r}")
    return mean, std


def eval_transform(size: int = 224, mean: Sequence[float] = IMAGENET[0],
                   std: Sequence[float] = IMAGENET[1]) -> Any:
    """Resize(size) -> CenterCrop(size) -> ToTensor -> Normalize(mean, std), for PIL images."""
    from torchvision import transforms as T

    return T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BILINEAR), T.CenterCrop(size),
                      T.ToTensor(), T.Normalize(mean, std)])


def train_transform(size: int = 224, mean: Sequence[float] = IMAGENET[0],
                    std: Sequence[float] = IMAGENET[1]) -> Any:
    """The paper's probe-training augmentation, for PIL images (see the module docstring)."""
    from torchvision import transforms as T

    return T.Compose([T.RandomResizedCrop(size, scale=(0.08, 1.0)), T.RandomHorizontalFlip(),
                      T.ColorJitter(0.25, 0.25, 0.25), T.RandomRotation(2), T.ToTensor(), T.Normalize(mean, std)])


def describe(kind: str, size: int, mean: Sequence[float], std: Sequence[float]) -> str:
    """A string that identifies ``eval_transform``/``train_transform`` with these settings (cache keys)."""
    what = {"eval": "Resize CenterCrop", "paper": "RandomResizedCrop(0.08-1) Flip ColorJitter(0.25x3) Rotation(2)"}
    return f"{what[kind]} size={size} ToTensor Normalize(mean={list(mean)}, std={list(std)})"


def image_seed(seed: int, view: int, index: int) -> int:
    """The seed of image ``index``'s augmentation in pass ``view`` (a 63-bit mix of the three)."""
    h = np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        for v in (seed, view, index):
            h = (h ^ np.uint64(v & 0xFFFFFFFFFFFFFFFF)) * np.uint64(0xBF58476D1CE4E5B9)
            h ^= h >> np.uint64(31)
    return int(h) & 0x7FFFFFFFFFFFFFFF


class SeededImages(torch.utils.data.Dataset[tuple[Any, Any]]):
    """``views`` passes over ``dataset`` through ``transform``, each image's randomness seeded.

    Item j is (transform(image i), label i) with v, i = divmod(j, n), drawn under
    ``image_seed(seed, v, i)``; ``item((v, i))`` gives the same by pair. ``targets``:
    the labels tiled ``views`` times. The CPU generator is forked per item, so
    nothing else's random state moves.
    """

    def __init__(self, dataset: Any, transform: Callable[[Any], Any] | None, seed: int, views: int = 1) -> None:
        self.dataset = dataset.with_transform(None) if hasattr(dataset, "with_transform") else dataset
        self.transform, self.seed, self.views = transform, int(seed), int(views)
        self.n = len(dataset)
        base = np.asarray(dataset.targets, dtype=np.int64)
        self.targets = np.tile(base, self.views)
        self.classes = list(dataset.classes)
        self.name, self.split = getattr(dataset, "name", type(dataset).__name__), getattr(dataset, "split", "?")

    def __len__(self) -> int:
        return self.n * self.views

    def __getitem__(self, key: Any) -> tuple[Any, Any]:
        v, i = key if isinstance(key, tuple) else divmod(int(key), self.n)
        image, label = self.dataset[int(i)]
        if self.transform is not None:
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(image_seed(self.seed, int(v), int(i)))
                image = self.transform(image)
        return image, label

    def describe(self) -> str:
        return f"{self.name}/{self.split} ({self.n} images x {self.views} views, {len(self.classes)} classes)"
