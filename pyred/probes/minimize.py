"""L-BFGS with a strong-Wolfe line search, on one flat tensor (Nocedal & Wright, Numerical Optimization,
2nd ed.: Algorithm 7.4 for the two-loop recursion, Algorithms 3.5-3.6 for the line search).

Written here rather than taken from ``torch.optim.LBFGS`` because constructing any torch optimizer imports
torch's compiler stack (``torch._dynamo``) on the first call, which costs more than a small probe problem's
whole solve.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch

Objective = Callable[[torch.Tensor], tuple[float, torch.Tensor]]  # x -> (f(x), gradient)
Point = tuple[float, float, float, torch.Tensor]  # (t, f, f', gradient) of a line-search step

# Wolfe conditions: sufficient decrease (C1) and curvature (C2), the usual quasi-Newton constants.
C1, C2 = 1e-4, 0.9


@dataclass
class Solution:
    x: torch.Tensor
    f: float
    iterations: int
    evaluations: int


def lbfgs(fg: Objective, x0: torch.Tensor, *, max_iter: int = 100,
          tol_grad: float = 1e-6, tol_change: float = 1e-12, history: int = 20) -> Solution:
    """Minimises f from x0. ``fg(x)`` returns (f(x) as a float, its gradient: a tensor shaped like x).

    Stops after ``max_iter`` iterations, when max |gradient| <= tol_grad, or when a step or the change of
    f falls below tol_change; never evaluates fg more than 1.25 max_iter times.
    """
    x = x0.clone()
    f, g = fg(x)
    evals, budget = 1, max(1, int(max_iter * 1.25))
    S: list[torch.Tensor] = []
    Y: list[torch.Tensor] = []
    rho: list[float] = []
    it = 0
    while it < max_iter and float(g.abs().max()) > tol_grad and evals < budget:
        it += 1
        d = _direction(g, S, Y, rho)
        gtd = float(g.flatten() @ d.flatten())
        if gtd > -tol_change:  # not a descent direction any more (rounding): done
            break
        t = min(1.0, 1.0 / float(g.abs().sum())) if it == 1 else 1.0
        t, f_new, g_new, used = _strong_wolfe(fg, x, d, t, f, g, gtd, budget - evals)
        evals += used
        step = d * t
        dy = g_new - g
        ys = float(dy.flatten() @ step.flatten())
        if ys > 1e-10:  # keep the pair only while the curvature is positive (the update stays positive definite)
            if len(S) == history:
                S.pop(0), Y.pop(0), rho.pop(0)
            S.append(step)
            Y.append(dy)
            rho.append(1.0 / ys)
        x = x + step
        change = abs(f_new - f)
        f, g = f_new, g_new
        if float(step.abs().max()) <= tol_change or change < tol_change:
            break
    return Solution(x, f, it, evals)


def _direction(g: torch.Tensor, S: list[torch.Tensor], Y: list[torch.Tensor], rho: list[float]) -> torch.Tensor:
    """-H g by the two-loop recursion, H the L-BFGS inverse Hessian (initial scaling s.y / y.y)."""
    q = -g
    alpha: list[float] = []
    for s, y, r in zip(reversed(S), reversed(Y), reversed(rho)):
        a = r * float(s.flatten() @ q.flatten())
        alpha.append(a)
        q = q - a * y
    if S:
        q = q * (1.0 / (rho[-1] * float(Y[-1].flatten() @ Y[-1].flatten())))
    for (s, y, r), a in zip(zip(S, Y, rho), reversed(alpha)):
        b = r * float(y.flatten() @ q.flatten())
        q = q + (a - b) * s
    return q


def _strong_wolfe(fg: Objective, x: torch.Tensor, d: torch.Tensor, t: float, f0: float, g0: torch.Tensor, gtd0: float,
                  budget: int, max_steps: int = 25) -> tuple[float, float, torch.Tensor, int]:
    """A step length t along d meeting the strong Wolfe conditions (or the best found within the budget):
    returns (t, f(x + t d), its gradient, evaluations used)."""
    used = 0
    t_prev, f_prev, gtd_prev, g_prev = 0.0, f0, gtd0, g0
    best = (0.0, f0, g0)
    for i in range(max_steps):
        if used >= budget:
            break
        f, g = fg(x + t * d)
        used += 1
        gtd = float(g.flatten() @ d.flatten())
        if f < best[1]:
            best = (t, f, g)
        if f > f0 + C1 * t * gtd0 or (i > 0 and f >= f_prev):
            return _zoom(fg, x, d, (t_prev, f_prev, gtd_prev, g_prev), (t, f, gtd, g), f0, gtd0, budget - used,
                         used, best)
        if abs(gtd) <= -C2 * gtd0:
            return t, f, g, used
        if gtd >= 0:
            return _zoom(fg, x, d, (t, f, gtd, g), (t_prev, f_prev, gtd_prev, g_prev), f0, gtd0, budget - used,
                         used, best)
        t_prev, f_prev, gtd_prev, g_prev = t, f, gtd, g
        t = _cubic_min(t_prev, f_prev, gtd_prev, t * 10, None, None, lo=t * 1.01, hi=t * 10)
    t, f, g = best
    return t, f, g, used


def _zoom(fg: Objective, x: torch.Tensor, d: torch.Tensor, lo: Point, hi: Point, f0: float, gtd0: float, budget: int,
          used: int, best: tuple[float, float, torch.Tensor],
          max_steps: int = 25) -> tuple[float, float, torch.Tensor, int]:
    """Algorithm 3.6: shrinks [lo, hi] (lo: the lower f) until a step meets the strong Wolfe conditions."""
    for _ in range(max_steps):
        if budget <= 0 or abs(hi[0] - lo[0]) * float(d.abs().max()) < 1e-12:
            break
        a, b = sorted((lo[0], hi[0]))
        t = _cubic_min(lo[0], lo[1], lo[2], hi[0], hi[1], hi[2], lo=a + 0.1 * (b - a), hi=b - 0.1 * (b - a))
        f, g = fg(x + t * d)
        used += 1
        budget -= 1
        gtd = float(g.flatten() @ d.flatten())
        if f < best[1]:
            best = (t, f, g)
        if f > f0 + C1 * t * gtd0 or f >= lo[1]:
            hi = (t, f, gtd, g)
        else:
            if abs(gtd) <= -C2 * gtd0:
                return t, f, g, used
            if gtd * (hi[0] - lo[0]) >= 0:
                hi = lo
            lo = (t, f, gtd, g)
    t, f, g = best
    return t, f, g, used


def _cubic_min(t1: float, f1: float, g1: float, t2: float, f2: float | None, g2: float | None, lo: float,
               hi: float) -> float:
    """The minimiser of the cubic through (t1, f1, f'=g1) and (t2, f2, f'=g2), kept in [lo, hi]; the middle of
    [lo, hi] when there is no second point or the cubic has no minimum there."""
    if f2 is None:
        return min(max(2 * t1, lo), hi)
    d1 = g1 + cast(float, g2) - 3 * (f1 - f2) / (t1 - t2)
    disc = d1 * d1 - g1 * cast(float, g2)
    if disc < 0:
        return 0.5 * (lo + hi)
    d2 = disc ** 0.5 * (1 if t2 >= t1 else -1)
    denominator = cast(float, g2) - g1 + 2 * d2
    if denominator == 0:
        return 0.5 * (lo + hi)
    t = t2 - (t2 - t1) * (cast(float, g2) + d2 - d1) / denominator
    return min(max(t, lo), hi) if t == t else 0.5 * (lo + hi)
