"""Neuron subsets: K index lists stored flat (CSR), drawn the paper's way or given.

``draw_subsets`` reproduces the reference code's rule exactly: for seed s,
``torch.manual_seed(s)`` then a CPU ``torch.randperm(d)``; the subset of
fraction f is its first ``int(f * d)`` entries. Subsets of one seed are
therefore nested prefixes of one permutation.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal, overload

import numpy as np
import torch

from . import _checks as check

_MODES = ("random", "first")


class Subsets:
    """K index lists over the features of a width-``d`` layer.

    Attributes:
      indices: (nnz,) int64 tensor, the lists one after another (on ``device``).
      offsets: (K + 1,) int64 tensor, list k is ``indices[offsets[k]:offsets[k+1]]``.
      sizes: (K,) int64 CPU tensor, the length of each list.
      fractions: (K,) float64 CPU tensor, the fraction each list was drawn for
        (``size / d`` for user lists when ``d`` is known, else NaN).
      seeds: (K,) int64 CPU tensor, the seed each list was drawn with (-1: none).
      d: the layer width the lists index into, or None when not given.
      max_index: the largest index in any list (-1 when all lists are empty).

    Lists are validated once, at construction: indices are non-negative, below
    ``d`` when it is given, and unique inside each list.
    """

    def __init__(self, indices: Any, offsets: Any, *, d: int | None = None, fractions: Any = None,
                 seeds: Any = None) -> None:
        indices, offsets = torch.as_tensor(indices), torch.as_tensor(offsets)
        d = None if d is None else _check_width(d)
        indices, offsets, max_index = _validate_csr(indices, offsets, d)
        self._set(indices, offsets, d, offsets.diff().cpu(), max_index, fractions, seeds)

    @classmethod
    def _trusted(cls, indices: torch.Tensor, offsets: torch.Tensor, d: int | None, sizes: torch.Tensor,
                 max_index: int, fractions: Any = None, seeds: Any = None) -> Subsets:
        """Built from parts already known to be valid (pyred's own constructors): no checks, no copies."""
        self = cls.__new__(cls)
        self._set(indices, offsets, d, sizes, max_index, fractions, seeds)
        return self

    def _set(self, indices: torch.Tensor, offsets: torch.Tensor, d: int | None, sizes: torch.Tensor, max_index: int,
             fractions: Any, seeds: Any) -> None:
        self.indices, self.offsets, self.d = indices, offsets, d
        self._sizes = sizes
        self.max_index = int(max_index)
        K = len(sizes)
        self._fractions = _per_list(fractions, K, torch.float64, "fractions",
                                    default=(sizes.double() / d) if d else float("nan"))
        self._seeds = _per_list(seeds, K, torch.int64, "seeds", default=-1)

    @property
    def sizes(self) -> torch.Tensor:
        return self._sizes

    @property
    def fractions(self) -> torch.Tensor:
        return self._fractions

    @property
    def seeds(self) -> torch.Tensor:
        return self._seeds

    def with_metadata(self, *, fractions: Any = None, seeds: Any = None) -> Subsets:
        """The same lists, with the per-list ``fractions`` and/or ``seeds`` replaced ((K,) each)."""
        return Subsets._trusted(self.indices, self.offsets, self.d, self._sizes, self.max_index,
                                self._fractions if fractions is None else fractions,
                                self._seeds if seeds is None else seeds)

    # -- construction ----------------------------------------------------------------
    @classmethod
    def from_lists(cls, lists: Iterable[Sequence[int] | torch.Tensor | np.ndarray], d: int | None = None) -> Subsets:
        """Builds subsets from a sequence of index lists (lists, arrays or tensors)."""
        if isinstance(lists, Subsets):
            return lists
        if isinstance(lists, (str, bytes)) or not isinstance(lists, Iterable):
            raise TypeError(f"subsets: expected a Subsets or a sequence of index lists, got {type(lists).__name__}")
        parts = []
        for k, lst in enumerate(lists):
            a = np.asarray(lst.cpu() if isinstance(lst, torch.Tensor) else lst)
            if a.ndim != 1:
                if a.ndim == 0:
                    raise TypeError(f"subsets[{k}]: expected a list of indices, got a scalar ({a!r})")
                raise ValueError(f"subsets[{k}]: expected a 1-D list of indices, got shape {a.shape}")
            if a.size and a.dtype.kind not in "iu":
                if a.dtype.kind == "f" and np.all(a == np.round(a)):
                    pass
                else:
                    raise TypeError(f"subsets[{k}]: indices must be integers, got dtype {a.dtype}")
            parts.append(a.astype(np.int64, copy=False))
        sizes = np.array([len(p) for p in parts], dtype=np.int64)
        offsets = np.zeros(len(parts) + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        flat = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        return cls(torch.from_numpy(flat), torch.from_numpy(offsets), d=d)

    @classmethod
    def concat(cls, parts: Sequence[Subsets]) -> Subsets:
        """Joins subsets one after another (all on one device)."""
        if not parts:
            raise ValueError("concat: expected at least one Subsets")
        devices = {p.device for p in parts}
        if len(devices) > 1:
            raise ValueError(f"concat: subsets live on different devices {devices}")
        widths = {p.d for p in parts if p.d is not None}
        d = widths.pop() if len(widths) == 1 else None
        nnz = [p.nnz for p in parts]
        shift = torch.tensor(np.concatenate([[0], np.cumsum(nnz)[:-1]]), dtype=torch.int64)
        offsets = torch.cat([parts[0].offsets[:1]] + [p.offsets[1:] + s.to(p.device) for p, s in zip(parts, shift)])
        return cls._trusted(torch.cat([p.indices for p in parts]), offsets, d, torch.cat([p.sizes for p in parts]),
                            max(p.max_index for p in parts), torch.cat([p.fractions for p in parts]),
                            torch.cat([p.seeds for p in parts]))

    # -- access ----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.sizes)

    @overload
    def __getitem__(self, k: slice) -> Subsets: ...

    @overload
    def __getitem__(self, k: int) -> torch.Tensor: ...

    def __getitem__(self, k: int | slice) -> torch.Tensor | Subsets:
        """An int gives list k as an int64 tensor; a slice gives a Subsets."""
        if isinstance(k, slice):
            ks = list(range(len(self))[k])
            part = Subsets.from_lists([self[i].cpu() for i in ks], d=self.d)
            return part.with_metadata(fractions=self.fractions[ks], seeds=self.seeds[ks]).to(self.device)
        if not isinstance(k, numbers.Integral):
            raise TypeError(f"Subsets indices must be integers or slices, got {type(k).__name__}")
        K = len(self)
        if not -K <= k < K:
            raise IndexError(f"subset {k} out of range for {K} subsets")
        k %= K
        return self.indices[int(self.offsets[k]):int(self.offsets[k + 1])]

    def __iter__(self) -> Iterator[torch.Tensor]:
        return (self[k] for k in range(len(self)))

    @property
    def device(self) -> torch.device:
        return self.indices.device

    @property
    def nnz(self) -> int:
        return int(self.indices.numel())

    @property
    def max_size(self) -> int:
        return int(self.sizes.max()) if len(self) else 0

    def to(self, device: torch.device | str | int) -> Subsets:
        """The same subsets with ``indices`` and ``offsets`` on ``device`` (metadata stays on the CPU)."""
        device = torch.device(device)
        if device == self.device:
            return self
        return Subsets._trusted(self.indices.to(device), self.offsets.to(device), self.d, self._sizes,
                                self.max_index, self._fractions, self._seeds)

    def check_width(self, d: int, name: str = "subsets") -> None:
        """Raises IndexError unless every index is below ``d`` (and ``self.d``, if set, equals it)."""
        if self.d is not None and self.d != d:
            raise ValueError(f"{name}: drawn for a layer of width {self.d}, used on width {d}")
        if self.max_index >= d:
            raise IndexError(f"{name}: index {self.max_index} is out of range for width {d}")

    def __repr__(self) -> str:
        sizes = self.sizes.tolist()
        shown = sizes if len(sizes) <= 8 else sizes[:4] + ["..."] + sizes[-3:]
        return f"Subsets(K={len(self)}, d={self.d}, sizes={shown}, device={self.device})"


def draw_subsets(d: int, fractions: Sequence[float] | None = None, seeds: Sequence[int] = (1, 2, 3, 4, 5), *,
                 mode: Literal["random", "first"] = "random", sizes: Sequence[int] | None = None) -> Subsets:
    """Draws neuron subsets of a width-``d`` layer, as the paper's reference code does.

    Args:
      d: layer width (int >= 1).
      fractions: fractions f in [0, 1]; subset size k = int(f * d) (truncation,
        so small f may give k = 0, a bias-only probe in the paper). 1.0 is the full layer.
      seeds: integer seeds. ``mode="random"``: for seed s, ``torch.manual_seed(s)``
        then CPU ``torch.randperm(d)`` (computed on a private generator, so the
        global RNG is untouched); the subset is its first k entries, so the
        subsets of one seed are nested.
      mode: "random", or "first" (neurons 0..k-1, the paper's MRL runs; seeds
        are ignored and there is one subset per fraction, with seed -1).
      sizes: absolute sizes k instead of ``fractions`` (0 <= k <= d).

    Returns:
      Subsets with K = len(fractions) * len(seeds) lists for "random" (ordered by
      fraction, then seed) or K = len(fractions) for "first"; ``fractions`` and
      ``seeds`` record what each list was drawn with.
    """
    d = _check_width(d)
    if mode not in _MODES:
        raise ValueError(f"mode: expected one of {_MODES}, got {mode!r}")
    if (fractions is None) == (sizes is None):
        raise ValueError("give exactly one of fractions= or sizes=")
    if fractions is not None:
        fracs = _as_list(fractions, "fractions")
        fracs = [check.number(f, "fractions", min=0, max=1) for f in fracs]
        ks = [int(f * d) for f in fracs]  # the reference code truncates
    else:
        ks = [check.integer(k, "sizes", min=0, max=d) for k in _as_list(sizes, "sizes")]
        fracs = [k / d for k in ks]
    if not ks:
        raise ValueError("fractions/sizes: expected at least one value, got an empty grid")

    lists, f_out, s_out = [], [], []
    if mode == "first":
        for f, k in zip(fracs, ks):
            lists.append(torch.arange(k, dtype=torch.int64))
            f_out.append(f)
            s_out.append(-1)
    else:
        seed_list = _as_list(seeds, "seeds")
        if not seed_list:
            raise ValueError("seeds: expected at least one seed, got an empty list")
        perms = {}
        for s in seed_list:
            s = check.integer(s, "seeds", min=0)
            if s not in perms:
                perms[s] = torch.randperm(d, generator=torch.Generator().manual_seed(int(s)))
        seed_list = [int(s) for s in seed_list]
        for f, k in zip(fracs, ks):
            for s in seed_list:
                lists.append(perms[s][:k])
                f_out.append(f)
                s_out.append(int(s))
    sizes_t = torch.tensor([len(x) for x in lists], dtype=torch.int64)
    offsets = torch.zeros(len(lists) + 1, dtype=torch.int64)
    torch.cumsum(sizes_t, 0, out=offsets[1:])
    flat = torch.cat(lists) if lists else torch.zeros(0, dtype=torch.int64)
    return Subsets._trusted(flat, offsets, d, sizes_t, int(flat.max()) if flat.numel() else -1,
                            torch.tensor(f_out, dtype=torch.float64), torch.tensor(s_out, dtype=torch.int64))


def as_subsets(subsets: Subsets | Any, d: int, name: str = "subsets") -> Subsets:
    """A Subsets checked against width ``d`` (index lists are converted)."""
    if not isinstance(subsets, Subsets):
        subsets = Subsets.from_lists(subsets, d=d)
    subsets.check_width(d, name)
    return subsets


# -- helpers -----------------------------------------------------------------------------
def _check_width(d: Any) -> int:
    return check.integer(d, "d (the layer width)", min=1)


def _as_list(values: Any, name: str) -> list[Any]:
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{name}: expected a sequence of numbers, got a string")
    if isinstance(values, (numbers.Number, np.generic)):
        return [values.item() if isinstance(values, np.generic) else values]
    if isinstance(values, (torch.Tensor, np.ndarray)):
        return list(np.asarray(values.cpu() if isinstance(values, torch.Tensor) else values).reshape(-1).tolist())
    try:
        return [v.item() if isinstance(v, np.generic) else v for v in values]
    except TypeError as exc:
        raise TypeError(f"{name}: expected a sequence of numbers, got {type(values).__name__}") from exc


def _per_list(values: Any, K: int, dtype: torch.dtype, name: str, default: torch.Tensor | float) -> torch.Tensor:
    if values is None:
        if isinstance(default, torch.Tensor):
            return default.to(dtype)
        return torch.full((K,), default, dtype=dtype)
    t = torch.as_tensor(values, dtype=dtype).reshape(-1).cpu()
    if t.numel() != K:
        raise ValueError(f"{name}: expected {K} values (one per subset), got {t.numel()}")
    return t


def _validate_csr(indices: torch.Tensor, offsets: torch.Tensor, d: int | None
                  ) -> tuple[torch.Tensor, torch.Tensor, int]:
    if indices.dim() != 1 or offsets.dim() != 1:
        raise ValueError(f"subsets: indices and offsets must be 1-D, got shapes {tuple(indices.shape)} "
                         f"and {tuple(offsets.shape)}")
    if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
        raise TypeError(f"subsets: indices must be integers, got dtype {indices.dtype}")
    if offsets.is_floating_point() or offsets.is_complex() or offsets.dtype == torch.bool:
        raise TypeError(f"subsets: offsets must be integers, got dtype {offsets.dtype}")
    if offsets.device != indices.device:
        raise ValueError("subsets: indices and offsets must be on the same device")
    indices = indices.to(torch.int64).contiguous()
    offsets = offsets.to(torch.int64).contiguous()
    off = offsets.cpu()
    if off.numel() < 1 or int(off[0]) != 0 or int(off[-1]) != indices.numel():
        raise ValueError(f"subsets: offsets must start at 0 and end at the number of indices "
                         f"({indices.numel()}), got {off.tolist()[:3]}...{off.tolist()[-3:]}")
    sizes = off.diff()
    if bool((sizes < 0).any()):
        k = int((sizes < 0).nonzero()[0])
        raise ValueError(f"subsets: offsets must be non-decreasing, but offsets[{k + 1}] < offsets[{k}]")
    idx = indices.cpu()
    if idx.numel() == 0:
        return indices, offsets, -1
    lo, hi = int(idx.min()), int(idx.max())
    if lo < 0:
        p = int((idx < 0).nonzero()[0])
        raise IndexError(f"subsets: index {lo} at position {p} is negative; indices must be in [0, d)")
    if d is not None and hi >= d:
        raise IndexError(f"subsets: index {hi} is out of range for width d={d}")
    # Duplicates inside one list: unique (list id, index) pairs must number nnz.
    list_id = torch.repeat_interleave(torch.arange(len(sizes)), sizes)
    keys = list_id * (hi + 1) + idx
    if torch.unique(keys).numel() != idx.numel():
        sorted_keys, _ = torch.sort(keys)
        dup = sorted_keys[1:][sorted_keys[1:] == sorted_keys[:-1]][0]
        raise ValueError(f"subsets: list {int(dup) // (hi + 1)} contains index {int(dup) % (hi + 1)} "
                         "more than once; indices must be unique within a subset")
    return indices, offsets, hi
