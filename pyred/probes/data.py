"""Validated training data for the probes: features, integer labels, splits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, cast, runtime_checkable

import torch

from .. import _checks as check
from ..ops.arrays import float_matrix, to_torch
from ..splits import split_groups, split_train_val
from ..stream import is_stream


@runtime_checkable
class LabeledFeatures(Protocol):
    """Features with their labels and, per row, the image it comes from (a :class:`pyred.FeatureSet`, whose
    rows may be several augmented views of each image)."""

    X: Any
    y: Any

    @property
    def image_index(self) -> Any: ...


@dataclass
class ProbeData:
    """Training (and validation) arrays on the compute device.

    X: (n, d) float; y: (n,) int64 in [0, num_classes). X_val / y_val likewise
    (None when the recipe needs no validation split).
    """

    X: torch.Tensor | None
    y: torch.Tensor | None
    X_val: torch.Tensor | None
    y_val: torch.Tensor | None
    num_classes: int
    kind: str
    stream: Any = None  # a FeatureStream in place of X / y (then X and y are None)
    val_stream: Any = None  # an augmented FeatureStream in place of X_val / y_val: a fresh pass per evaluation

    @property
    def dim(self) -> int:
        return self.stream.dim if self.stream is not None else int(cast(torch.Tensor, self.X).shape[1])

    @property
    def device(self) -> torch.device:
        return self.stream.device if self.stream is not None else cast(torch.Tensor, self.X).device

    @property
    def dtype(self) -> torch.dtype:
        return self.stream.dtype if self.stream is not None else cast(torch.Tensor, self.X).dtype


def labels(y: Any, n: int, name: str, device: Any) -> torch.Tensor:
    """(n,) int64 labels; raises on floats that are not whole numbers, wrong length or rank."""
    t, _ = to_torch(y, name)
    if t.dim() != 1:
        raise ValueError(f"{name}: expected a 1-D array of class labels, got shape {tuple(t.shape)}")
    if t.shape[0] != n:
        raise ValueError(f"{name}: expected {n} labels (one per sample), got {t.shape[0]}")
    if t.is_floating_point():
        if not bool(torch.isfinite(t).all()) or not bool((t == t.round()).all()):
            raise TypeError(f"{name}: labels must be integers, got non-integer values of dtype {t.dtype}")
    elif t.dtype in (torch.bool, torch.uint64) or t.is_complex():
        # uint64 values past 2**63 - 1 would wrap to negative int64 labels
        raise TypeError(f"{name}: labels must be integers of a signed type or uint8/16/32, got dtype {t.dtype}")
    t = t.to(device=device, dtype=torch.int64)
    if t.numel() and int(t.min()) < 0:
        raise ValueError(f"{name}: label {int(t.min())} is negative; labels are class indices in [0, num_classes)")
    return t


def check_label_range(y: torch.Tensor, num_classes: int, name: str) -> None:
    if y.numel() == 0:
        return
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_classes:
        bad = lo if lo < 0 else hi
        raise ValueError(f"{name}: label {bad} is outside [0, {num_classes}) (num_classes={num_classes})")


def prepare_stream(stream: Any, y_train: Any, X_val: Any, y_val: Any, num_classes: Any, device: Any,
                   need_val: bool) -> ProbeData:
    """Training data from a FeatureStream: validation from arrays, from a clean stream (one pass, kept), from
    an augmented stream (a fresh pass at every evaluation), or from the stream's own 90/10 split."""
    if y_train is not None:
        raise ValueError("y_train: a FeatureStream carries its own labels; pass None")
    want = torch.device(device) if device is not None else stream.device
    if want.type != stream.device.type or None not in (want.index, stream.device.index) and \
            want.index != stream.device.index:  # "cuda" and "cuda:0" may name one device
        raise ValueError(f"device: the stream computes on {stream.device}; build the FeatureStream with "
                         f"device={device!r} instead")
    if num_classes is not None and check.integer(num_classes, "num_classes") != stream.num_classes:
        raise ValueError(f"num_classes: the stream has {stream.num_classes} classes, got num_classes={num_classes}")
    if (X_val is None) != (y_val is None) and not is_stream(X_val):
        raise ValueError("X_val and y_val: give both, a FeatureStream as X_val (and y_val=None), or neither")
    if is_stream(X_val):
        if y_val is not None:
            raise ValueError("y_val: a FeatureStream given as X_val carries its own labels; pass None")
        if X_val.dim != stream.dim:
            raise ValueError(f"X_val: the validation stream has {X_val.dim} features, the training stream {stream.dim}")
        if X_val.augment is not None:  # augmented validation: new draws at every evaluation, as the reference's
            return ProbeData(None, None, None, None, stream.num_classes, "torch", stream, X_val)
        Xv, yv = X_val.collect()
    elif X_val is not None:
        Xv, _ = float_matrix(X_val, "X_val")
        if Xv.shape[1] != stream.dim:
            raise ValueError(f"X_val: expected {stream.dim} features like the stream, got {Xv.shape[1]}")
        yv = labels(y_val, Xv.shape[0], "y_val", stream.device)
    elif need_val:
        stream, val = stream.split(0.1, 0)
        Xv, yv = val.collect()
    else:
        Xv = yv = None
    if Xv is not None:
        Xv = Xv.to(stream.device, stream.dtype)
        check_label_range(yv, stream.num_classes, "y_val")
    return ProbeData(None, None, Xv, yv, stream.num_classes, "torch", stream)


def prepare(X_train: Any, y_train: Any, X_val: Any, y_val: Any, num_classes: Any, device: Any, need_val: bool,
            split_seed: int = 0, groups: Any = None) -> ProbeData:
    """Validates the inputs and moves them to ``device`` (X's device when None).
    ``groups`` (n,): rows that must stay on one side of the 90/10 split (an image's views)."""
    if is_stream(X_train):
        return prepare_stream(X_train, y_train, X_val, y_val, num_classes, device, need_val)
    X, kind = float_matrix(X_train, "X_train")
    device = torch.device(device) if device is not None else X.device
    X = X.to(device)
    n = X.shape[0]
    y = labels(y_train, n, "y_train", device)
    if (X_val is None) != (y_val is None):
        raise ValueError("X_val and y_val: give both or neither")
    Xv: torch.Tensor | None
    yv: torch.Tensor | None
    if X_val is not None:
        Xv, _ = float_matrix(X_val, "X_val")
        if Xv.shape[1] != X.shape[1]:
            raise ValueError(f"X_val: expected {X.shape[1]} features like X_train, got {Xv.shape[1]}")
        Xv = Xv.to(device, X.dtype)
        yv = labels(y_val, Xv.shape[0], "y_val", device)
    elif need_val:
        if n < 2:
            raise ValueError(f"X_train: need at least 2 samples to split off validation data, got {n}")
        tr, va = split_train_val(n, 0.1, split_seed) if groups is None else split_groups(groups, 0.1, split_seed)
        tr, va = tr.to(device), va.to(device)
        X, y, Xv, yv = X[tr], y[tr], X[va], y[va]
    else:
        Xv = yv = None
    if num_classes is None:
        num_classes = int(y.max()) + 1 if y.numel() else 0
        if yv is not None and yv.numel():
            num_classes = max(num_classes, int(yv.max()) + 1)
    num_classes = check.integer(num_classes, "num_classes")
    if num_classes < 2:
        raise ValueError(f"num_classes: a probe needs at least 2 classes, got {num_classes}")
    check_label_range(y, num_classes, "y_train")
    if yv is not None:
        check_label_range(yv, num_classes, "y_val")
    if y.numel() and int(torch.unique(y).numel()) < 2:
        raise ValueError("y_train: all training labels are the same class; a probe needs at least 2 classes")
    return ProbeData(X, y, Xv, yv, int(num_classes), kind)
