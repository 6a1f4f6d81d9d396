"""The CPU kernels behind RBF-kernel CKA: statistics of exp(-scale * D) from a linear Gram.

For an n x n linear Gram K (float64, CPU; only its entries on and above the
diagonal are read) the squared distances are D_ab = max(0, K_aa + K_bb - 2 K_ab).
``upper_distance_ranks`` selects order statistics of the n(n-1)/2 values D_ab,
a < b (the median bandwidth needs one or two); ``rbf_upper_sums`` gives the sums
over a < b of g = exp(-scale * D_ab), of g M_ab and of g^2, and g's row sums --
everything an RBF CKA needs, without forming the n x n kernel matrix.
``rbf_median_sums`` does both for Kornblith et al.'s bandwidth (sigma times the
median of all n^2 squared distances) in one call. They run in pyred._C;
``available`` says whether they can run on a tensor.
"""

from __future__ import annotations

from typing import Any

import torch

from .dispatch import cpu_kernels


def available(K: torch.Tensor) -> bool:
    """True when the native kernels can take K: a CPU tensor, and pyred._C loaded with them."""
    module = cpu_kernels()
    return K.device.type == "cpu" and module is not None and hasattr(module, "rbf_upper_sums")


def _square(K: torch.Tensor, name: str) -> torch.Tensor:
    if K.dim() != 2 or K.shape[0] != K.shape[1] or K.dtype != torch.float64 or K.device.type != "cpu":
        raise ValueError(f"{name}: expected an (n, n) float64 CPU tensor, got {tuple(K.shape)} {K.dtype} "
                         f"on {K.device}")
    return K.contiguous()


def upper_distance_ranks(K: torch.Tensor, ranks: list[int]) -> list[float]:
    """The ranks-th smallest (1-based, in [1, n(n-1)/2]) squared distances D_ab, a < b, of the
    linear Gram K ((n, n) float64 CPU, n >= 2). Exact; NaN where K holds a NaN."""
    K = _square(K, "K")
    n = K.shape[0]
    m = n * (n - 1) // 2
    bad = [r for r in ranks if not 1 <= int(r) <= m]
    if bad:
        raise ValueError(f"ranks: expected ranks in [1, {m}] for n = {n}, got {bad[0]}")
    return list(cpu_kernels().upper_distance_ranks(K=K.data_ptr(), K_count=K.numel(), n=n,
                                                   ranks=[int(r) for r in ranks]))


def _sums_call(name: str, K: torch.Tensor, M: torch.Tensor | None, **value: float) -> tuple[Any, ...]:
    """pyred._C.<name>(K, M, the bandwidth ``value`` by its name) -> (its scalars..., rows): checks K and M,
    allocates rows."""
    K = _square(K, "K")
    n = K.shape[0]
    if M is not None:
        M = _square(M, "M")
        if M.shape != K.shape:
            raise ValueError(f"M: expected shape {tuple(K.shape)} like K, got {tuple(M.shape)}")
    rows = torch.empty(n, dtype=torch.float64)
    scalars = getattr(cpu_kernels(), name)(
        K=K.data_ptr(), K_count=K.numel(), n=n, M=0 if M is None else M.data_ptr(),
        M_count=0 if M is None else M.numel(), rows=rows.data_ptr(), rows_count=n, **value)
    return (*scalars, rows)


def rbf_upper_sums(K: torch.Tensor, scale: float, M: torch.Tensor | None = None
                   ) -> tuple[float, float, float, torch.Tensor]:
    """With g_ab = exp(-scale * D_ab) for a < b (scale >= 0), from the linear Gram K ((n, n) float64 CPU):
    (sum g M_ab (0.0 without M), sum g, sum g^2, rows) with rows (n,) float64, rows[a] = sum_{b != a} g_ab.
    M: (n, n) float64 CPU; only its entries above the diagonal are read. Deterministic."""
    return _sums_call("rbf_upper_sums", K, M, scale=float(scale))


def rbf_median_sums(K: torch.Tensor, sigma: float, M: torch.Tensor | None = None
                    ) -> tuple[float, float, float, float, torch.Tensor]:
    """(median, sum g M_ab, sum g, sum g^2, rows) over a < b with g_ab = exp(-D_ab / (2 sigma^2 median)):
    median is numpy.median of all n^2 squared distances (the zero diagonal included) of the linear Gram K
    ((n, n) float64 CPU); the sums and rows as in :func:`rbf_upper_sums` -- all 0 when median is 0 (no
    variance). sigma > 0; M as in :func:`rbf_upper_sums`."""
    return _sums_call("rbf_median_sums", K, M, sigma=float(sigma))
