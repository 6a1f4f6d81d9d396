"""Full-batch multinomial logistic regression for K heads in one objective.

scikit-learn's convention: head k minimises C * sum_i CE_i + ||W_k||^2 / 2 (the
intercept unpenalised); the K heads are independent terms of one sum, solved
together by L-BFGS with a strong-Wolfe line search (scaled by 1/n, which leaves
the minimiser unchanged).
"""

from __future__ import annotations

import math

import torch

from ..ops.heads import features_major, forward_xt, weight_grad_xt
from ..subsets import Subsets
from .data import ProbeData
from ..progress import progress_bar

DEFAULTS = dict(C=1.0, max_iter=100, tol=1e-6, dtype=None)


def train_lbfgs(data: ProbeData, subsets: Subsets, seed: int, progress: bool, backend: str, **options):
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"recipe 'lbfgs': unknown options {sorted(unknown)}; expected some of {sorted(DEFAULTS)}")
    o = {**DEFAULTS, **options}
    if isinstance(o["C"], bool) or not isinstance(o["C"], (int, float)) or not math.isfinite(o["C"]) or o["C"] <= 0:
        raise ValueError(f"C: expected a positive number (inverse L2 strength), got {o['C']!r}")
    if isinstance(o["max_iter"], bool) or not isinstance(o["max_iter"], int) or o["max_iter"] < 1:
        raise ValueError(f"max_iter: expected a positive integer, got {o['max_iter']!r}")
    dtype = {None: data.X.dtype, "float32": torch.float32, "float64": torch.float64}.get(o["dtype"], o["dtype"])
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype: expected None, 'float32' or 'float64', got {o['dtype']!r}")
    X, y = data.X.to(dtype), data.y
    n, d = X.shape
    K, Cn = len(subsets), data.num_classes
    S = subsets.to(X.device)
    XT = features_major(X)
    W = torch.zeros(S.nnz, Cn, dtype=dtype, device=X.device, requires_grad=True)
    b = torch.zeros(K, Cn, dtype=dtype, device=X.device, requires_grad=True)
    penalty = 1.0 / (o["C"] * n)
    onehot = torch.nn.functional.one_hot(y, Cn).to(dtype)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=o["max_iter"], tolerance_grad=o["tol"],
                            tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")
    bar = progress_bar(range(1), progress, desc=f"lbfgs: {K} heads", unit="solve")
    evals = [0]

    def closure():
        evals[0] += 1
        with torch.no_grad():
            logits = forward_xt(XT, S.indices, S.offsets, W, backend) + b[:, None, :]
            logp = torch.log_softmax(logits, dim=-1)
            loss = -(logp * onehot).sum() / n + 0.5 * penalty * (W * W).sum()
            G = (logp.exp() - onehot) / n
            W.grad = weight_grad_xt(XT, S.indices, S.offsets, G.contiguous(), backend) + penalty * W
            b.grad = G.sum(1)
        return loss

    for _ in bar:
        opt.step(closure)
    return dict(weights=W.detach(), biases=b.detach(), options={**o, "function_evals": evals[0]})
