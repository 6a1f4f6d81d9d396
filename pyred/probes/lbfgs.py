"""Full-batch multinomial logistic regression for K heads in one objective.

scikit-learn's convention: head k minimises C * sum_i CE_i + ||W_k||^2 / 2 (the
intercept unpenalised); the K heads are independent terms of one sum, solved
together by L-BFGS with a strong-Wolfe line search (:mod:`pyred.probes.minimize`;
the objective scaled by 1/n, which leaves
the minimiser unchanged). The weights live in the layout the cost rule picks
(gathered, or masked dense -- the masked gradient keeps them on each subset).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import cast

import torch

from .. import _checks as check
from ..numerics import absmax, exponent, ldexp
from ..progress import progress_bar
from ..subsets import Subsets
from .data import ProbeData
from .layouts import LAYOUTS, choose_layout, make_layout
from .minimize import lbfgs
from .recipe import Recipe, TrainedHeads


@dataclass(frozen=True)
class LBFGSOptions:
    """C: inverse L2 strength (scikit-learn's); max_iter, tol: L-BFGS limits; dtype: None (the
    features' own), "float32" or "float64"."""

    C: float = 1.0
    max_iter: int = 100
    tol: float = 1e-6
    dtype: str | None = None
    layout: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "C", check.number(self.C, "C", min=0, min_exclusive=True))
        object.__setattr__(self, "max_iter", check.integer(self.max_iter, "max_iter", min=1))
        object.__setattr__(self, "tol", check.number(self.tol, "tol", min=0))
        if self.dtype is not None:
            check.choice(self.dtype, "dtype", ("float32", "float64"))
        check.choice(self.layout, "layout", ("auto",) + LAYOUTS)


def unit_scale(X: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(X 2^-E, E) with E the binary exponent of X's root mean square: a copy of X whose entries are
    of order 1, multiplied exactly (only the exponent changes)."""
    E = exponent(absmax(X)) or 0
    Z = ldexp(X.clone(), -E, inplace=True)  # max |Z| in [0.5, 1): its squares cannot overflow
    rms = float(torch.linalg.vector_norm(Z, dtype=torch.float64)) / math.sqrt(max(1, Z.numel()))
    e = exponent(rms) or 0
    return ldexp(Z, -e, inplace=True), E + e


def train_lbfgs(data: ProbeData, subsets: Subsets, opts: LBFGSOptions, seed: int, progress: bool,
                backend: str) -> TrainedHeads:
    dtype = {None: cast(torch.Tensor, data.X).dtype, "float32": torch.float32, "float64": torch.float64}[opts.dtype]
    # Solved on X 2^-E, entries of order 1, for W 2^E with the penalty times 2^-2E: the same minimiser
    # exactly, but L-BFGS's first steps (scaled by the gradient) stay finite at any feature scale.
    X, E = unit_scale(cast(torch.Tensor, data.X).to(dtype))
    y = cast(torch.Tensor, data.y)
    n, d = X.shape
    K, Cn = len(subsets), data.num_classes
    S = subsets.to(X.device)
    layout = choose_layout(S, d, X.device) if opts.layout == "auto" else opts.layout
    heads = make_layout(layout, S, d, backend)
    batch = heads.batch(X)
    W0 = heads.from_packed(torch.zeros(S.nnz, Cn, dtype=dtype, device=X.device))
    nw = W0.numel()
    try:
        penalty = math.ldexp(1.0 / (opts.C * n), -2 * E)
        fixed_w = False
    except OverflowError:  # features below ~1e-150 (float64): the penalty alone decides, W = 0
        penalty, fixed_w = 0.0, True
    onehot = torch.nn.functional.one_hot(y, Cn).to(dtype)
    evals = [0]

    def fg(x: torch.Tensor) -> tuple[float, torch.Tensor]:
        """The objective and its gradient at x = [W (flattened), b (flattened)]."""
        evals[0] += 1
        W, b = x[:nw].view_as(W0), x[nw:].view(K, Cn)
        logits = heads.logits(batch, W) + b[:, None, :]
        logp = torch.log_softmax(logits, dim=-1)
        loss = -(logp * onehot).sum() / n + 0.5 * penalty * (W * W).sum()
        G = (logp.exp() - onehot) / n
        gw = torch.zeros_like(W) if fixed_w else heads.weight_grad(batch, G) + penalty * W  # masked: 0 off subsets
        return float(loss), torch.cat([gw.flatten(), G.sum(1).flatten()])

    bar = progress_bar(range(1), progress, desc=f"lbfgs: {K} heads", unit="solve")
    x = torch.zeros(nw + K * Cn, dtype=dtype, device=X.device)
    for _ in bar:
        x = lbfgs(fg, x, max_iter=opts.max_iter, tol_grad=opts.tol, tol_change=1e-12, history=20).x
    weights = ldexp(heads.to_packed(x[:nw].view_as(W0)).contiguous(), -E, inplace=True)
    return TrainedHeads(weights, x[nw:].view(K, Cn).clone(), dataclasses.replace(opts, layout=layout),
                        function_evals=evals[0])


RECIPE = Recipe("lbfgs", LBFGSOptions, needs_validation=False, train=train_lbfgs)
