"""Features computed on the fly: augmented images through a frozen backbone, batch by batch.

``FeatureStream(backbone, dataset)`` is the paper's probe-training input: each
pass over it is one epoch of shuffled, freshly augmented images run through the
backbone under ``torch.no_grad()``, yielding ``(X, y)`` with X the layer's
(B, d) features on the device. ``train_probes(stream, None, subsets)`` trains K
heads on it with one backbone forward per batch for all K -- the reference code
ran the backbone once per head -- and never holds the training set's features,
so it also serves layers far too wide to cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from . import _checks as check
from . import device_augment
from .module_backbone import module_device
from .splits import split_train_val
from .transforms import SeededImages, describe, eval_transform, normalization, train_transform

AUGMENTS = ("paper",)


class FeatureStream:
    """An iterable over (X, y) batches of a backbone's features on augmented images; one pass, one epoch.

    Args:
      backbone: a :class:`pyred.Backbone` (or any module mapping (B, 3, H, W) float
        images to (B, d) features); it is moved to ``device`` and kept in eval mode.
      dataset: a :class:`pyred.datasets.LabeledImages` (PIL images with ``targets``,
        ``classes``, ``name``, ``split``).
      augment: "paper" (RandomResizedCrop(image_size, 0.08-1), flip,
        ColorJitter(0.25, 0.25, 0.25), RandomRotation(2 deg)); None for the clean eval
        transform (Resize + CenterCrop to image_size); or a callable PIL image ->
        (3, H, W) float tensor, applied as is.
      batch_size: images per batch (the last batch may be smaller unless ``drop_last``).
      device: where the backbone runs and X lives; the backbone's device when None.
      num_workers: DataLoader worker processes for decoding and augmenting.
      seed: the epoch order is ``torch.randperm(n)`` drawn from a generator seeded
        with ``seed``, one permutation per pass (the same order ``train_probes`` draws
        for arrays under the same seed); image i's augmentation in epoch e is drawn
        under a seed fixed by (seed, e, i), so it does not depend on batching or workers.
      shuffle: False keeps the dataset order every epoch.
      image_size: the crop / resize size (the paper: 224).
      normalization: "model" (the backbone's pre-training mean/std), "imagenet",
        "half" (0.5/0.5) or (mean, std).
      amp: autocast the backbone (bfloat16 on the CPU, float16 on CUDA);
        ``channels_last``: None for "on CUDA".
      augment_on: "auto" ("device" for augment="paper" on CUDA, else "cpu"), "cpu"
        (PIL transforms in the DataLoader) or "device": the CPU only decodes and
        draws each image's parameters (the same draws as the CPU road), and the
        batch is cropped, flipped, jittered and rotated on the device
        (:mod:`pyred.device_augment`) -- so the CPU does not throttle a GPU. Images
        of different sizes in one batch are resized to the batch's largest height
        and width first (crop boxes are fractions of the image, so they keep their
        content); ``load_size`` resizes every image to load_size x load_size on the
        CPU instead (to cap the transfer for large images).
      dtype: the dtype of X (float32; float64 for exact comparisons).
      num_classes: C; ``len(dataset.classes)`` when None. Every label must be in [0, C).
      projection: a (d, k) matrix (array or tensor): the stream yields ``features @ projection``
        (k columns: a PCA basis, a random projection) instead of the d features.

    Attributes: ``n`` (images per epoch), ``dim`` (d, the width the stream yields: for a custom
    ``augment``, measured on the first image), ``num_classes``, ``device``,
    ``dtype``, ``batch_size``, ``epoch`` (passes started), ``last_pass`` (images,
    seconds and images/s of the latest complete pass). ``len(stream)``: batches per epoch.
    """

    def __init__(self, backbone: Any, dataset: Any, *, augment: str | Callable[..., Any] | None = "paper",
                 batch_size: int = 256, device: Any = None, num_workers: int = 0, seed: int = 0,
                 shuffle: bool = True, image_size: int = 224, normalization: Any = "model", amp: bool = False,
                 channels_last: bool | None = None, dtype: torch.dtype = torch.float32, drop_last: bool = False,
                 num_classes: int | None = None, augment_on: str = "auto", load_size: int | None = None,
                 projection: Any = None):
        if not isinstance(backbone, torch.nn.Module):
            raise TypeError(f"backbone: expected a torch module (a pyred.Backbone), got {type(backbone).__name__}")
        for attr in ("targets", "classes"):
            if not hasattr(dataset, attr):
                raise TypeError(f"dataset: expected a pyred.datasets.LabeledImages (missing .{attr}); build one "
                                "with pyred.datasets.load(...)")
        if not (augment is None or callable(augment) or (isinstance(augment, str) and augment in AUGMENTS)):
            raise TypeError(f"augment: expected 'paper', None (the clean eval transform) or a callable "
                            f"transform, got {augment!r}")
        self.batch_size = check.integer(batch_size, "batch_size", min=1)
        self.num_workers = check.integer(num_workers, "num_workers", min=0)
        self.seed = check.integer(seed, "seed", min=0)
        self.shuffle = check.boolean(shuffle, "shuffle")
        self.image_size = check.integer(image_size, "image_size", min=1)
        self.amp, self.drop_last = check.boolean(amp, "amp"), check.boolean(drop_last, "drop_last")
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype: expected a floating torch dtype, got {dtype!r}")
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else module_device(backbone)
        self.channels_last = self.device.type == "cuda" if channels_last is None else check.boolean(
            channels_last, "channels_last")
        self.augment, self._normalization = augment, normalization
        self.mean, self.std = _normalization(backbone, normalization, augment)
        check.choice(augment_on, "augment_on", ("auto", "cpu", "device"))
        if augment_on == "auto":  # a GPU is fed by augmenting on it; a CPU runs PIL in the loader
            augment_on = "device" if self.device.type == "cuda" and augment == "paper" else "cpu"
        self.augment_on = augment_on
        self.load_size = check.optional_integer(load_size, "load_size", min=1)
        if augment_on == "device" and augment != "paper":
            raise ValueError(f"augment_on: 'device' applies the paper's augmentation on the device; it needs "
                             f"augment='paper', got augment={augment!r}")
        transform: Any  # what SeededImages applies to each PIL image
        if augment == "paper" and augment_on == "device":
            transform, self.transform_id = (device_augment.RawImage(self.load_size), describe(
                "paper", self.image_size, self.mean, self.std) + f" on the device (load_size={self.load_size})")
        elif augment == "paper":
            transform, self.transform_id = (train_transform(self.image_size, self.mean, self.std),
                                            describe("paper", self.image_size, self.mean, self.std))
        elif augment is None:
            transform, self.transform_id = (eval_transform(self.image_size, self.mean, self.std),
                                            describe("eval", self.image_size, self.mean, self.std))
        else:
            transform, self.transform_id = augment, f"custom:{getattr(augment, '__name__', type(augment).__name__)}"
        self.dataset = dataset
        targets = np.asarray(dataset.targets)
        self.n = len(targets)
        self.num_classes = (len(dataset.classes) if num_classes is None
                            else check.integer(num_classes, "num_classes", min=2))
        if targets.dtype.kind not in "iu":
            raise TypeError(f"dataset: labels must be integers, got dtype {targets.dtype}")
        if self.n and (int(targets.min()) < 0 or int(targets.max()) >= self.num_classes):
            bad = int(targets.min()) if int(targets.min()) < 0 else int(targets.max())
            raise ValueError(f"dataset: label {bad} is outside the stream's {self.num_classes} classes [0, "
                             f"{self.num_classes}) (dataset.classes has {len(dataset.classes)} names; pass "
                             "num_classes= to widen)")
        if len(self) == 0:
            why = "it holds no images" if self.n == 0 else f"drop_last with {self.n} images < batch_size={batch_size}"
            raise ValueError(f"dataset: a FeatureStream needs at least one batch per epoch, but {why}")
        self._items = SeededImages(dataset, transform, self.seed)
        self.backbone = backbone.to(self.device).eval()
        if self.channels_last:
            self.backbone = self.backbone.to(memory_format=torch.channels_last)
        self._param_dtype = next((p.dtype for p in backbone.parameters()), torch.float32)
        self._order = torch.Generator().manual_seed(self.seed)
        self.epoch = 0
        self.last_pass: dict[str, float] | None = None
        self.projection: torch.Tensor | None = None
        self.dim = self._width()
        self._project(projection)

    def _project(self, projection: Any) -> None:
        """Makes the stream yield ``features @ projection`` (k columns) when one is given."""
        if projection is None:
            return
        P = torch.as_tensor(projection)
        if P.dim() != 2 or P.shape[0] != self.dim or not P.is_floating_point():
            raise ValueError(f"projection: expected a floating ({self.dim}, k) matrix for the backbone's "
                             f"{self.dim} features, got {P.dtype} {tuple(P.shape)}")
        self.projection = P.to(self.device, self.dtype)
        self.dim = int(P.shape[1])

    def _width(self) -> int:
        """d, the width of the features the stream yields. The paper's and the clean transforms make
        image_size x image_size images, so a blank one tells; a custom transform may make any size, so
        one real image through it does (a flattened layer's width follows the image size)."""
        custom = callable(self.augment) and not isinstance(self.augment, str)
        if custom:
            image, _ = self._items[(0, 0)]
            if not isinstance(image, torch.Tensor) or image.dim() != 3:
                raise TypeError(f"augment: the transform must turn each image into a (3, H, W) tensor; it made "
                                f"{type(image).__name__} {tuple(getattr(image, 'shape', ()))}")
            probe, what = image[None], f"the custom transform's {tuple(image.shape[1:])} images"
        else:
            probe = torch.zeros(1, 3, self.image_size, self.image_size)
            what = f"{self.image_size}x{self.image_size} images"
        probe = probe.to(self.device, self._param_dtype)
        try:
            return int(self._forward(probe).shape[1])
        except (AssertionError, RuntimeError, ValueError) as exc:
            where = "augment" if custom else "image_size"
            raise ValueError(f"{where}: the backbone cannot run on {what} ({type(exc).__name__}: {exc})") from exc

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch: (X (B, d) ``dtype`` on ``device``, y (B,) int64 on ``device``) per batch."""
        order = torch.randperm(self.n, generator=self._order) if self.shuffle else torch.arange(self.n)
        epoch = self.epoch
        self.epoch += 1
        return self._pass(order, epoch)

    def collect(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass in dataset order, whole: X (n, d), y (n,) on ``device`` (for validation and test sets).
        Does not advance the epoch order; augmentation (if any) is that of epoch 0."""
        Xs, ys = [], []
        for X, y in self._pass(torch.arange(self.n), 0, drop_last=False):
            Xs.append(X)
            ys.append(y)
        return torch.cat(Xs), torch.cat(ys)

    def split(self, fraction: float = 0.1, seed: int = 0) -> tuple[FeatureStream, FeatureStream]:
        """(train, validation) streams over the fixed-seed 90/10 split of the dataset
        (``pyred.splits.split_train_val``, as for arrays); validation is clean and unshuffled."""
        if self.n < 2:
            raise ValueError(f"dataset: need at least 2 images to split off validation images, got {self.n}")
        tr, va = split_train_val(self.n, fraction, seed)
        return (self.with_dataset(subset(self.dataset, tr.numpy())),
                self.with_dataset(subset(self.dataset, va.numpy()), augment=None, shuffle=False))

    def with_dataset(self, dataset: Any, **changes: Any) -> FeatureStream:
        """A stream with this one's settings over another dataset (``changes`` override settings)."""
        if changes.get("augment", self.augment) != "paper":
            changes.setdefault("augment_on", "cpu")
        settings = dict(augment=self.augment, batch_size=self.batch_size, device=self.device,
                        num_workers=self.num_workers, seed=self.seed, shuffle=self.shuffle,
                        image_size=self.image_size, normalization=self._normalization, amp=self.amp,
                        channels_last=self.channels_last, dtype=self.dtype, drop_last=self.drop_last,
                        num_classes=self.num_classes, augment_on=self.augment_on, load_size=self.load_size,
                        projection=self.projection)
        settings.update(changes)
        return FeatureStream(self.backbone, dataset, **settings)

    def _forward(self, images: torch.Tensor) -> torch.Tensor:
        dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        with torch.no_grad(), torch.autocast(self.device.type, dtype=dtype, enabled=self.amp):
            out: torch.Tensor = self.backbone(images)
        out = out.flatten(1).to(self.dtype)
        return out if self.projection is None else out @ self.projection

    def _pass(self, order: torch.Tensor, epoch: int,
              drop_last: bool | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        drop_last = self.drop_last if drop_last is None else drop_last
        keys = [(epoch, int(i)) for i in order.tolist()]
        batches = [keys[s:s + self.batch_size] for s in range(0, len(keys), self.batch_size)]
        if drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        collate = _collate_raw if self.augment_on == "device" else None
        loader = torch.utils.data.DataLoader(self._items, batch_sampler=batches, num_workers=self.num_workers,
                                             pin_memory=self.device.type == "cuda", collate_fn=collate)
        start, seen = time.perf_counter(), 0
        for x, y in loader:
            if self.augment_on == "device":  # (uint8 images, parameters) -> augmented on the device
                raw, params = x
                x = device_augment.apply(raw.to(self.device, non_blocking=True), params, self.image_size,
                                         self.mean, self.std)
            if not isinstance(x, torch.Tensor) or x.dim() != 4:
                raise TypeError(f"augment: the transform must turn each image into a (3, H, W) tensor; a batch "
                                f"came out as {type(x).__name__} {tuple(getattr(x, 'shape', ()))}")
            x = x.to(self.device, non_blocking=True).to(self._param_dtype)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            X = self._forward(x)
            seen += len(y)
            yield X, y.to(self.device, torch.int64, non_blocking=True)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # once per epoch, so images/s counts the work itself
        seconds = time.perf_counter() - start
        self.last_pass = {"images": seen, "seconds": seconds, "images_per_s": seen / max(seconds, 1e-9)}

    def __repr__(self) -> str:
        return (f"FeatureStream({getattr(self.backbone, 'name', type(self.backbone).__name__)}, "
                f"{getattr(self.dataset, 'name', '?')}/{getattr(self.dataset, 'split', '?')}: {self.n} images, "
                f"d={self.dim}, C={self.num_classes}, augment={self.augment!r}, batch_size={self.batch_size}, "
                f"{self.device})")


def _collate_raw(items: Sequence[tuple[tuple[torch.Tensor, torch.Tensor], Any]]
                 ) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    """((images (B, 3, H, W), parameters (B, P)), labels (B,)) for the device road: uint8 images when
    they share one size, else float images in [0, 1] resized (bilinear) to the largest H and W."""
    sizes = {tuple(img.shape) for (img, _), _ in items}
    if len(sizes) == 1:
        images = torch.stack([img for (img, _), _ in items])
    else:
        H, W = max(s[1] for s in sizes), max(s[2] for s in sizes)
        images = torch.cat([torch.nn.functional.interpolate(img[None].float() / 255, size=(H, W), mode="bilinear",
                                                            align_corners=False, antialias=True)
                            for (img, _), _ in items])
    params = torch.stack([p for (_, p), _ in items])
    return (images, params), torch.tensor([label for _, label in items], dtype=torch.int64)


def is_stream(x: Any) -> bool:
    return isinstance(x, FeatureStream)


def subset(dataset: Any, idx: np.ndarray) -> Any:
    """The images ``idx`` of ``dataset``, keeping its labels, classes, name and split."""
    if hasattr(dataset, "subset") and hasattr(dataset, "source"):  # LabeledImages: stays one
        return dataset.subset(idx)
    return _Subset(dataset, idx)


class _Subset(torch.utils.data.Dataset[Any]):
    def __init__(self, dataset: Any, idx: Any) -> None:
        self.dataset, self.idx = dataset, np.asarray(idx, dtype=np.int64)
        self.targets = np.asarray(dataset.targets)[self.idx]
        self.classes = list(dataset.classes)
        self.name, self.split = getattr(dataset, "name", "dataset"), getattr(dataset, "split", "?")

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i: int) -> Any:
        return self.dataset[int(self.idx[i])]


def _normalization(backbone: Any, which: Any, augment: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if callable(augment) and not isinstance(augment, str):
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # a custom transform normalises itself
    return normalization(backbone, which)


