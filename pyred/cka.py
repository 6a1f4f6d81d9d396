"""Linear CKA of whole layers and of many neuron subsets at once.

Every function goes through :class:`pyred.GramStats`: one centred Gram (and, for
the debiased estimator, one fourth-moment Gram) of the layer, then gathered
sums over the subsets -- never a per-subset copy of the features.
"""

from __future__ import annotations

from typing import Any

from .gram import GramStats
from .ops.arrays import float_matrix
from .subsets import Subsets, as_subsets


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
    return GramStats.from_features(X, Y, debiased=debiased, chunk_size=chunk_size, target_name="Y").cka()


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
    subsets = as_subsets(subsets, _width(X))
    return GramStats.from_features(X, target, debiased=debiased, chunk_size=chunk_size).subset_cka(subsets)


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
    return GramStats.from_features(X, debiased=debiased, chunk_size=chunk_size).subset_pair_cka(a, b)


def _width(X: Any) -> int:
    """X's number of columns, for any input ``float_matrix`` accepts (arrays, tensors, nested lists)."""
    shape = getattr(X, "shape", None)
    if shape is None or len(shape) != 2:
        shape = float_matrix(X, "X", check_finite=False)[0].shape  # raises the precise error if not 2-D
    return int(shape[1])
