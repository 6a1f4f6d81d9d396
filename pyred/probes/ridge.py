"""Closed-form ridge probes for K heads from one Gram matrix.

Head k regresses centred one-hot targets on its centred features:
W_k = (C[S,S] + alpha I)^-1 (X^T Y)[S, :] with C = Xc^T Xc, intercept
b_k = mean(Y) - mean(X)[S] W_k. The Gram and the cross products come from one
pass of :class:`pyred.GramStats` (float64); each head's alpha is the first of
the grid with the best validation accuracy. Heads of equal size are solved
together by batched Cholesky factorisations of the gathered blocks C[S, S].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch

from .. import _checks as check
from ..gram import GramStats
from ..progress import progress_bar
from ..subsets import Subsets
from .data import ProbeData
from .recipe import Recipe, TrainedHeads


@dataclass(frozen=True)
class RidgeOptions:
    """alphas: the penalty grid; each head keeps the first with the best validation accuracy."""

    alphas: tuple[float, ...] = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5)

    def __post_init__(self) -> None:
        if isinstance(self.alphas, (str, bytes)) or not hasattr(self.alphas, "__iter__"):
            raise TypeError(f"alphas: expected a list of penalties >= 0, got {self.alphas!r}")
        alphas = tuple(check.number(a, "alphas", min=0) for a in self.alphas)
        if not alphas:
            raise ValueError("alphas: expected a non-empty list of penalties >= 0, got an empty one")
        object.__setattr__(self, "alphas", alphas)


def train_ridge(data: ProbeData, subsets: Subsets, opts: RidgeOptions, seed: int, progress: bool,
                backend: str) -> TrainedHeads:
    alphas = list(opts.alphas)
    X, y = cast(torch.Tensor, data.X), cast(torch.Tensor, data.y)
    n, d = X.shape
    K, Cn = len(subsets), data.num_classes
    dev = X.device
    Y = torch.nn.functional.one_hot(y, Cn).to(X.dtype)
    stats = GramStats(d, Cn).update(X, Y, check_finite=False)
    mom = stats.moments()
    mu = X.mean(0, dtype=torch.float64)
    ybar = Y.mean(0, dtype=torch.float64)
    Cxx, XY = mom.C, cast(torch.Tensor, mom.Cxy)  # float64 (d, d), (d, C)

    sizes = subsets.sizes.tolist()
    W = torch.zeros(subsets.nnz, Cn, dtype=torch.float64, device=dev)
    B = ybar.expand(K, Cn).clone()
    chosen = torch.full((K,), float("nan"), dtype=torch.float64)
    offsets = subsets.offsets.tolist()
    groups: dict[int, list[int]] = {}
    for k, m in enumerate(sizes):
        groups.setdefault(m, []).append(k)
    bar = progress_bar(sorted(groups.items()), progress, desc=f"ridge: {K} heads", unit="size")
    for m, ks in bar:
        if m == 0:
            continue  # intercept only
        idx = torch.stack([subsets[k] for k in ks]).to(dev)  # (G, m)
        A = Cxx[idx[:, :, None], idx[:, None, :]]  # (G, m, m) gathered blocks C[S, S]
        R = XY[idx]  # (G, m, C)
        eye = torch.eye(m, dtype=torch.float64, device=dev)
        best = torch.full((len(ks),), -1.0, dtype=torch.float64, device=dev)
        best_W = torch.zeros_like(R)
        best_alpha = torch.zeros(len(ks), dtype=torch.float64)
        for alpha in alphas:
            Wa = solve(A, R, alpha, eye)  # (G, m, C)
            acc = _val_accuracy(data, idx, Wa, mu, ybar) if data.X_val is not None else torch.zeros(len(ks), device=dev)
            better = acc > best
            best = torch.where(better, acc, best)
            best_W[better] = Wa[better]
            best_alpha[better.cpu()] = alpha
        for g, k in enumerate(ks):
            W[offsets[k]:offsets[k + 1]] = best_W[g]
            B[k] = ybar - mu[idx[g]] @ best_W[g]
            chosen[k] = best_alpha[g]
    return TrainedHeads(W.to(X.dtype), B.to(X.dtype), opts, alpha=chosen)


RECIPE = Recipe("ridge", RidgeOptions, needs_validation=True, train=train_ridge)


def solve(A: torch.Tensor, R: torch.Tensor, alpha: float, eye: torch.Tensor) -> torch.Tensor:
    """(A + alpha I)^-1 R for a batch of symmetric PSD blocks, by Cholesky; falls back to
    a least-squares solve for a block that is singular (alpha = 0 on rank-deficient features)."""
    L, info = torch.linalg.cholesky_ex(A + alpha * eye)
    if bool((info == 0).all()):
        return torch.cholesky_solve(R, L)
    return cast(torch.Tensor, torch.linalg.lstsq(A + alpha * eye, R).solution)


def _val_accuracy(data: ProbeData, idx: torch.Tensor, W: torch.Tensor, mu: torch.Tensor,
                  ybar: torch.Tensor) -> torch.Tensor:
    Xv = cast(torch.Tensor, data.X_val).to(torch.float64)
    out = torch.empty(idx.shape[0], dtype=torch.float64, device=Xv.device)
    for g in range(idx.shape[0]):
        Xs = Xv[:, idx[g]] - mu[idx[g]]
        pred = (Xs @ W[g] + ybar).argmax(1)
        out[g] = (pred == cast(torch.Tensor, data.y_val)).double().mean()
    return out
