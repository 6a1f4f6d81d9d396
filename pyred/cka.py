"""Linear CKA of whole layers and of many neuron subsets at once.

Every function goes through :class:`pyred.GramStats`: one centred Gram (and, for
the debiased estimator, one fourth-moment Gram) of the layer, then gathered
sums over the subsets -- never a per-subset copy of the features.
"""

from __future__ import annotations

from typing import Any

from .gram import GramStats, default_chunk_rows
from .ops.arrays import float_matrix
from .subsets import Subsets, as_subsets


def _stats(X: Any, Y: Any, debiased: bool, chunk_size: int | None, names=("X", "target")) -> GramStats:
    x, kind = float_matrix(X, names[0], check_finite=False)
    y = None
    if Y is not None:
        y, _ = float_matrix(Y, names[1], check_finite=False)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"{names[1]}: expected {x.shape[0]} samples (rows) like {names[0]}, got {y.shape[0]}")
        if y.device != x.device:
            raise ValueError(f"{names[1]}: expected the same device as {names[0]} ({x.device}), got {y.device}")
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"{names[0]}: linear CKA needs at least 2 samples, got {n}")
    if debiased and n <= 3:
        raise ValueError(f"{names[0]}: debiased CKA needs at least 4 samples, got n={n}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size: expected a positive integer or None, got {chunk_size!r}")
    rows = chunk_size or default_chunk_rows(x.shape[1] + (y.shape[1] if y is not None else 0))
    # Whole-array means as shifts, so the chunk products are of centred data;
    # computing them also checks every value for NaN/Inf (design.md).
    stats = GramStats(x.shape[1], None if y is None else y.shape[1], debiased=debiased)
    stats._start(x, y, kind, check_finite=True, names=names)
    for s in range(0, n, rows):
        stats.update(x[s:s + rows], None if y is None else y[s:s + rows], check_finite=False)
    return stats


def linear_cka(X: Any, Y: Any, debiased: bool = False, *, chunk_size: int | None = None) -> float:
    """Linear CKA between two representations of the same n samples.

    Args:
      X: (n, d) float array (torch CPU/CUDA, numpy or cupy); Y: (n, e), same kind/device.
      debiased: False for the biased HSIC estimator (the paper's, Kornblith et
        al. 2019); True for the unbiased HSIC estimator (Song et al. 2012), n >= 4.
      chunk_size: samples per Gram chunk (default: about 256 MB of float32).

    Returns:
      CKA as a Python float; 0.0 when either side has no variance.
    """
    return _stats(X, Y, debiased, chunk_size, ("X", "Y")).cka()


def subset_cka(X: Any, subsets: Subsets | Any, target: Any = None, debiased: bool = False, *,
               chunk_size: int | None = None) -> Any:
    """CKA of each neuron subset of X with a target representation.

    Args:
      X: (n, d) float features (torch CPU/CUDA, numpy or cupy).
      subsets: K subsets of [0, d): a :class:`pyred.Subsets` or a sequence of index lists.
      target: (n, e) features of the same samples, or None for the full layer X
        (the paper's "part vs whole").
      debiased: unbiased HSIC estimator instead of the paper's biased one.
      chunk_size: samples per Gram chunk.

    Returns:
      (K,) float64 array of X's kind and device: CKA(X[:, S_k], target). An
      empty subset (k = 0) or one without variance gets 0.0.
    """
    x_width = _width(X)
    subsets = as_subsets(subsets, x_width)
    return _stats(X, target, debiased, chunk_size).subset_cka(subsets)


def subset_pair_cka(X: Any, subsets_a: Subsets | Any, subsets_b: Subsets | Any, debiased: bool = False, *,
                    chunk_size: int | None = None) -> Any:
    """CKA between pairs of neuron subsets of one layer: CKA(X[:, A_k], X[:, B_k]).

    Args:
      X: (n, d) float features; subsets_a, subsets_b: K subsets each.
      debiased, chunk_size: as in :func:`subset_cka`.

    Returns:
      (K,) float64 array of X's kind and device.
    """
    d = _width(X)
    a = as_subsets(subsets_a, d, "subsets_a")
    b = as_subsets(subsets_b, d, "subsets_b")
    if len(a) != len(b):
        raise ValueError(f"subsets_b: expected {len(a)} subsets (as many as subsets_a), got {len(b)}")
    return _stats(X, None, debiased, chunk_size).subset_pair_cka(a, b)


def _width(X: Any) -> int:
    shape = getattr(X, "shape", None)
    if shape is None or len(shape) != 2:
        float_matrix(X, "X", check_finite=False)  # raises the precise error
    return int(X.shape[1])
