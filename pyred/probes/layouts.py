"""Where the weights of K heads live, and how a batch meets them.

Two layouts compute the same heads:
  * ``GatheredHeads``: weights packed (nnz, C); the gathered kernels touch only
    the m_k features of each head (useful work: 2 B sum_k m_k C per pass).
  * ``MaskedHeads``: one dense (d, K C) weight with zero rows off each subset;
    one GEMM each way (work: 2 B d K C per pass, at GEMM speed).
``choose_layout`` picks by the fraction of the dense work that is useful,
against the speed ratio of the two measured in ``benchmarks/`` (see there).
"""

from __future__ import annotations

import torch

from .. import _native
from ..ops.heads import features_major, forward_xt, weight_grad_xt
from ..subsets import Subsets

# Density below which the gathered kernels win, by device (and, on the CPU, by the
# SIMD level of the kernels' clones). Measured by
# benchmarks/test_probe_speed.py::test_layout_crossover (RESULTS.md):
# * AVX-512 (the first 2-core dev VM): gathered 1.58x faster at density 0.1, 1.06x
#   at 0.3, 0.90x at 0.5 -- the switch sits between 0.3 and 0.5;
# * AVX2 only (an AMD EPYC 2-core VM): the masked layout (one GEMM at BLAS speed)
#   wins at every density, 1.6x at 0.1 and 3.3x at 0.3 -- never gathered.
# CUDA: the gathered CUDA kernels are simple and not yet timed on a GPU, so
# cuBLAS keeps everything short of very sparse grids there.
GATHERED_BELOW = {"cpu": {"avx512f": 0.35, "avx2": 0.0, "baseline": 0.0}, "cuda": 0.1}
LAYOUTS = ("gathered", "masked")


def density(subsets: Subsets, d: int) -> float:
    """sum_k m_k / (d K): the useful share of the masked dense work."""
    return subsets.nnz / max(1, d * len(subsets))


def gathered_below(device) -> float:
    """The density below which the gathered layout is faster on ``device`` (see GATHERED_BELOW)."""
    kind = torch.device(device).type
    if kind == "cpu":
        return GATHERED_BELOW["cpu"].get(_native.cpu_simd() or "baseline", 0.0)
    return GATHERED_BELOW["cuda"]


def choose_layout(subsets: Subsets, d: int, device: torch.device) -> str:
    return "gathered" if density(subsets, d) < gathered_below(device) else "masked"


class GatheredHeads:
    """Packed (nnz, C) weights; a batch is carried features-major (d, B)."""

    name = "gathered"

    def __init__(self, subsets: Subsets, d: int, backend: str = "auto"):
        self.S, self.d, self.backend = subsets, d, backend
        self.row_head = torch.repeat_interleave(torch.arange(len(subsets), device=subsets.device),
                                                subsets.offsets.diff())

    def from_packed(self, W: torch.Tensor) -> torch.Tensor:
        return W.clone()

    def to_packed(self, W: torch.Tensor) -> torch.Tensor:
        return W

    def batch(self, X: torch.Tensor):
        return features_major(X)

    def logits(self, XT, W) -> torch.Tensor:  # (K, B, C)
        return forward_xt(XT, self.S.indices, self.S.offsets, W, self.backend)

    def weight_grad(self, XT, G) -> torch.Tensor:  # (nnz, C)
        return weight_grad_xt(XT, self.S.indices, self.S.offsets, G.contiguous(), self.backend)

    def copy_heads(self, dst: torch.Tensor, src: torch.Tensor, heads: torch.Tensor) -> None:
        """dst[weights of head k] = src[...] where heads[k] (a (K,) bool mask)."""
        rows = heads[self.row_head]
        dst[rows] = src[rows]


class MaskedHeads:
    """Dense (d, K, C) weights, zero off each head's subset; a batch stays (B, d)."""

    name = "masked"

    def __init__(self, subsets: Subsets, d: int):
        self.S, self.d, K = subsets, d, len(subsets)
        self.row_head = torch.repeat_interleave(torch.arange(K, device=subsets.device), subsets.offsets.diff())
        self.mask = torch.zeros(d, K, 1, dtype=torch.bool, device=subsets.device)
        self.mask[subsets.indices, self.row_head] = True

    def from_packed(self, W: torch.Tensor) -> torch.Tensor:
        dense = W.new_zeros(self.d, len(self.S), W.shape[1])
        dense[self.S.indices, self.row_head] = W
        return dense

    def to_packed(self, W: torch.Tensor) -> torch.Tensor:
        return W[self.S.indices, self.row_head]

    def batch(self, X: torch.Tensor):
        return X

    def logits(self, X, W) -> torch.Tensor:
        d, K, C = W.shape
        return (X @ W.reshape(d, K * C)).reshape(X.shape[0], K, C).permute(1, 0, 2)

    def weight_grad(self, X, G) -> torch.Tensor:
        K, B, C = G.shape
        dense = (X.T @ G.permute(1, 0, 2).reshape(B, K * C)).reshape(self.d, K, C)
        return dense.mul_(self.mask)

    def copy_heads(self, dst: torch.Tensor, src: torch.Tensor, heads: torch.Tensor) -> None:
        dst[:, heads] = src[:, heads]


def make_layout(name: str, subsets: Subsets, d: int, backend: str = "auto"):
    if name == "gathered":
        return GatheredHeads(subsets, d, backend)
    if name == "masked":
        return MaskedHeads(subsets, d)
    raise ValueError(f"layout: expected one of {('auto',) + LAYOUTS}, got {name!r}")
