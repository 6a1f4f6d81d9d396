"""Where the weights of K heads live, and how a batch meets them.

Three layouts compute the same heads:
  * ``GatheredHeads``: weights packed (nnz, C); the gathered kernels touch only
    the m_k features of each head (useful work: 2 B sum_k m_k C per pass).
  * ``MaskedHeads``: one dense (d, K C) weight with zero rows off each subset;
    one GEMM each way (work: 2 B d K C per pass, at GEMM speed).
  * ``GroupedHeads``: weights packed (nnz, C); heads of equal size are one
    batched GEMM on their gathered columns (useful work only, at batched-GEMM
    speed, for one gather of B x nnz values per pass) -- the GEMM-shaped road
    for GPUs, where cuBLAS does the multiplying.
``choose_layout`` picks by the fraction of the dense work that is useful,
against the speed ratio of the two measured in ``benchmarks/`` (see there).
"""

from __future__ import annotations

from typing import Any, TypeAlias, cast

import torch

from ..ops.dispatch import cpu_simd
from ..ops.heads import features_major, forward_xt, weight_grad_xt
from ..subsets import Subsets

# Density (useful share of the masked GEMM's work) below which the gathered kernels beat one dense
# masked GEMM, by device and, on the CPU, by the SIMD level of the kernels: the gathered kernels do only
# the useful work but at lower speed than a GEMM. Set from the crossover that
# benchmarks/test_probe_speed.py::test_layout_crossover measures (numbers in benchmarks/RESULTS.md).
# CUDA: no layout has been timed on a GPU yet, so "auto" keeps cuBLAS's masked GEMM there;
# benchmarks/gpu_check.sh measures the crossover to set it from.
GATHERED_BELOW: dict[str, dict[str, float] | float] = {"cpu": {"avx512f": 0.35, "avx2": 0.4, "baseline": 0.0},
                                                      "cuda": 0.0}
LAYOUTS = ("gathered", "masked", "grouped")
Layout: TypeAlias = "GatheredHeads | MaskedHeads | GroupedHeads"  # what make_layout returns


def density(subsets: Subsets, d: int) -> float:
    """sum_k m_k / (d K): the useful share of the masked dense work."""
    return subsets.nnz / max(1, d * len(subsets))


def gathered_below(device: Any) -> float:
    """The density below which the gathered layout is faster on ``device`` (see GATHERED_BELOW)."""
    kind = torch.device(device).type
    if kind == "cpu":
        return cast("dict[str, float]", GATHERED_BELOW["cpu"]).get(cpu_simd() or "baseline", 0.0)
    return cast(float, GATHERED_BELOW["cuda"])


# The masked layout holds a dense (d, K C) weight, four times over (weights, momentum, best, gradient);
# past this many bytes for one copy, or past WIDE_D features, "auto" takes a layout whose memory is
# O(nnz C) -- the road for wide layers (a flattened conv map, d in the hundreds of thousands): on the
# CPU the gathered kernels; on CUDA the grouped layout (cuBLAS batched GEMMs on gathered columns,
# split along the features under a gather budget), made of torch's own CUDA ops, until pyred's CUDA
# head kernels have run and been timed on a GPU (benchmarks/gpu_check.sh).
MASKED_MAX_BYTES = 256 * 2**20
WIDE_D = 65536  # wider layers (flattened maps) never take the masked layout
WIDE_LAYOUT = {"cpu": "gathered", "cuda": "grouped"}


def choose_layout(subsets: Subsets, d: int, device: torch.device, num_classes: int | None = None,
                  itemsize: int = 4) -> str:
    """The layout "auto" takes for these subsets of d features on ``device``: "masked", "gathered" or,
    for wide layers on CUDA, "grouped" (see GATHERED_BELOW, MASKED_MAX_BYTES and WIDE_LAYOUT)."""
    if d > WIDE_D or (num_classes is not None and d * len(subsets) * num_classes * itemsize > MASKED_MAX_BYTES):
        return WIDE_LAYOUT.get(torch.device(device).type, "gathered")
    return "gathered" if density(subsets, d) < gathered_below(device) else "masked"


class GatheredHeads:
    """Packed (nnz, C) weights; a batch is carried features-major (d, B).

    Inside, each head's rows follow its features in ascending order (the native kernels then walk
    the features once, block by block, for all heads: see csrc/cpu/heads.cpp); ``from_packed`` and
    ``to_packed`` convert from and to the order of ``subsets.indices``.
    """

    name = "gathered"

    def __init__(self, subsets: Subsets, d: int, backend: str = "auto") -> None:
        self.S, self.d, self.backend = subsets, d, backend
        self.row_head = torch.repeat_interleave(torch.arange(len(subsets), device=subsets.device),
                                                subsets.offsets.diff())
        # rows sorted by (head, feature); heads stay contiguous, so offsets and row_head still hold
        self.order = torch.argsort(self.row_head * max(1, d) + subsets.indices, stable=True)
        self.indices = subsets.indices[self.order]

    def from_packed(self, W: torch.Tensor) -> torch.Tensor:
        return W[self.order]

    def to_packed(self, W: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(W)
        out[self.order] = W
        return out

    def batch(self, X: torch.Tensor) -> torch.Tensor:
        return features_major(X)

    def logits(self, XT: torch.Tensor, W: torch.Tensor) -> torch.Tensor:  # (K, B, C)
        return forward_xt(XT, self.indices, self.S.offsets, W, self.backend)

    def weight_grad(self, XT: torch.Tensor, G: torch.Tensor) -> torch.Tensor:  # (nnz, C)
        return weight_grad_xt(XT, self.indices, self.S.offsets, G.contiguous(), self.backend)

    def copy_heads(self, dst: torch.Tensor, src: torch.Tensor, heads: torch.Tensor) -> None:
        """dst[weights of head k] = src[...] where heads[k] (a (K,) bool mask)."""
        rows = heads[self.row_head]
        dst[rows] = src[rows]


class MaskedHeads:
    """Dense (d, K, C) weights, zero off each head's subset; a batch stays (B, d)."""

    name = "masked"

    def __init__(self, subsets: Subsets, d: int) -> None:
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

    def batch(self, X: torch.Tensor) -> torch.Tensor:
        return X

    def logits(self, X: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        d, K, C = W.shape
        return (X @ W.reshape(d, K * C)).reshape(X.shape[0], K, C).permute(1, 0, 2)

    def weight_grad(self, X: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
        K, B, C = G.shape
        dense = (X.T @ G.permute(1, 0, 2).reshape(B, K * C)).reshape(self.d, K, C)
        return dense.mul_(self.mask)

    def copy_heads(self, dst: torch.Tensor, src: torch.Tensor, heads: torch.Tensor) -> None:
        dst[:, heads] = src[:, heads]


class GroupedHeads:
    """Packed (nnz, C) weights; heads of equal size m form a group whose logits are one batched GEMM
    (G, B, m) x (G, m, C) on the group's gathered columns. A batch stays (B, d).

    A gather holds at most ``max_gather`` values: groups are cut into fewer heads, and heads too
    wide for that are split along their features (split-k: partial products summed), so memory
    stays O(max_gather + B K C) for layers of any width.
    """

    name = "grouped"

    def __init__(self, subsets: Subsets, d: int, max_gather: int = 1 << 24) -> None:
        self.S, self.d, self.max_gather = subsets, d, max_gather
        dev = subsets.device
        self.row_head = torch.repeat_interleave(torch.arange(len(subsets), device=dev), subsets.offsets.diff())
        by_size: dict[int, list[int]] = {}
        for k, m in enumerate(subsets.sizes.tolist()):
            if m:
                by_size.setdefault(m, []).append(k)
        off = subsets.offsets.cpu()
        # (heads (G,), packed positions (G, m), feature indices (G, m))
        self.groups: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        for m, ks in sorted(by_size.items()):
            per = max(1, max_gather // (m * 256))  # heads per group, for a 256-row batch
            for i in range(0, len(ks), per):
                part = torch.tensor(ks[i:i + per])
                pos = (off[part][:, None] + torch.arange(m)[None, :]).to(dev)
                self.groups.append((part.to(dev), pos, subsets.indices[pos]))

    def _slices(self, G: int, m: int, B: int) -> list[tuple[int, int]]:
        """Column ranges of a group's heads such that one gather holds at most max_gather values."""
        step = max(1, self.max_gather // max(1, G * B))
        return [(j, min(m, j + step)) for j in range(0, m, step)]

    def from_packed(self, W: torch.Tensor) -> torch.Tensor:
        return W.clone()

    def to_packed(self, W: torch.Tensor) -> torch.Tensor:
        return W

    def batch(self, X: torch.Tensor) -> torch.Tensor:
        return X

    def logits(self, X: torch.Tensor, W: torch.Tensor) -> torch.Tensor:  # (K, B, C)
        out = X.new_zeros(len(self.S), X.shape[0], W.shape[1])  # empty heads: zero logits (bias only)
        for heads, pos, idx in self.groups:
            acc: torch.Tensor | None = None
            for a, b in self._slices(len(heads), idx.shape[1], X.shape[0]):
                part = torch.bmm(X[:, idx[:, a:b]].permute(1, 0, 2), W[pos[:, a:b]])  # (G, B, m') x (G, m', C)
                acc = part if acc is None else acc.add_(part)
            out[heads] = cast(torch.Tensor, acc)  # groups hold heads of m >= 1 features: at least one slice
        return out

    def weight_grad(self, X: torch.Tensor, G: torch.Tensor) -> torch.Tensor:  # (nnz, C)
        dW = G.new_empty(self.S.nnz, G.shape[2])
        for heads, pos, idx in self.groups:
            Gh = G[heads]
            for a, b in self._slices(len(heads), idx.shape[1], X.shape[0]):
                dW[pos[:, a:b]] = torch.bmm(X[:, idx[:, a:b]].permute(1, 2, 0), Gh)  # (G, m', B) x (G, B, C)
        return dW

    def copy_heads(self, dst: torch.Tensor, src: torch.Tensor, heads: torch.Tensor) -> None:
        rows = heads[self.row_head]
        dst[rows] = src[rows]


def make_layout(name: str, subsets: Subsets, d: int, backend: str = "auto") -> Layout:
    if name == "gathered":
        return GatheredHeads(subsets, d, backend)
    if name == "masked":
        return MaskedHeads(subsets, d)
    if name == "grouped":
        return GroupedHeads(subsets, d)
    raise ValueError(f"layout: expected one of {('auto',) + LAYOUTS}, got {name!r}")
