"""Linear CKA that autograd can differentiate, for inputs that require grad.

The fast roads (:mod:`pyred.gram`, :mod:`pyred.sample_gram`) work on detached
data: native kernels reading raw pointers, buffers reused along chains of
nested subsets, sums accumulated in place. When X or the target requires grad
(and grad mode is on), :func:`pyred.subset_cka` and :func:`pyred.linear_cka`
take this road instead: the same algebra written in plain differentiable
torch, one subset at a time -- the feature-space form (d x d Grams) for
``route="features"``, the sample-space form (n x n Grams) for
``route="samples"`` -- in float64, on inputs centred and multiplied by a
constant power of two (exact; CKA does not see it), so the gradient is
autograd's own.
"""

from __future__ import annotations

from typing import Any

import torch

from .numerics import input_exponent, ldexp, ratio, require_finite
from .ops.arrays import float_matrix
from .sample_gram import unbiased_hsic
from .subsets import Subsets

F64 = torch.float64


def wants_grad(*arrays: Any) -> bool:
    """True when grad mode is on and one of the arrays is a torch tensor that requires grad."""
    return torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in arrays)


def _centred(t: torch.Tensor, name: str) -> torch.Tensor:
    """t (n, d) validated like every CKA input (float_matrix checks a detached view), then as float64,
    centred per column and multiplied by a constant power of two; still attached to t's graph."""
    float_matrix(t, name)  # shape, dtype and NaN/Inf errors name the argument
    z = t.to(F64)
    z = z - z.mean(0)
    return ldexp(z, -input_exponent(z, F64))


def _feature_hsic(za: torch.Tensor, zb: torch.Tensor, n: int, debiased: bool) -> torch.Tensor:
    """HSIC of two centred blocks of the same samples in feature space: ||za^T zb||_F^2, or with
    ``debiased`` the unbiased estimator of Song et al. (2012) up to the factor that cancels in CKA,
    ||za^T zb||^2 - n/(n-2) u_a.u_b + (sum u_a)(sum u_b)/((n-1)(n-2)), u the per-sample squared norms."""
    xy = (za.T @ zb).square().sum()
    if not debiased:
        return xy
    ua, ub = za.square().sum(1), zb.square().sum(1)
    return xy - n / (n - 2) * (ua @ ub) + ua.sum() * ub.sum() / ((n - 1) * (n - 2))


def _sample_hsic(K: torch.Tensor, L: torch.Tensor, debiased: bool) -> torch.Tensor:
    """HSIC of two n x n Grams of centred features (biased: <K, L>_F; the factor 1/(n-1)^2 cancels)."""
    return unbiased_hsic(K, L) if debiased else (K * L).sum()


def subset_cka(X: torch.Tensor, subsets: Subsets, target: torch.Tensor | None, debiased: bool,
               route: str) -> torch.Tensor:
    """(K,) float64 tensor with autograd history: CKA(X[:, S_k], target) (target: the full X when None).

    X: (n, d) float tensor; target: (n, e) or None; route: "features" or "samples" (which form of
    the algebra to differentiate; both give the same values as the fast roads up to rounding).
    """
    z = _centred(X, "X")
    n = z.shape[0]
    if n < 2 or (debiased and n <= 3):
        raise ValueError(f"X: {'debiased' if debiased else 'linear'} CKA needs at least {4 if debiased else 2} "
                         f"samples, got n={n}")
    if target is not None and target.shape[0] != n:
        raise ValueError(f"target: expected {n} samples (rows) like X, got {target.shape[0]}")
    w = z if target is None else _centred(target, "target")
    lists = [s.to(z.device) for s in subsets]
    if route == "features":
        tt = _feature_hsic(w, w, n, debiased)
        pairs = [(_feature_hsic(zs, w, n, debiased), _feature_hsic(zs, zs, n, debiased))
                 for zs in (z[:, s] for s in lists)]
    else:
        L = w @ w.T
        tt = _sample_hsic(L, L, debiased)
        pairs = []
        for s in lists:
            K = z[:, s] @ z[:, s].T
            pairs.append((_sample_hsic(K, L, debiased), _sample_hsic(K, K, debiased)))
    if not pairs:
        return torch.zeros(0, dtype=F64, device=z.device)
    num = torch.stack([p[0] for p in pairs])
    den = torch.stack([p[1] for p in pairs])
    return require_finite(ratio(num, den, tt), "subset_cka")
