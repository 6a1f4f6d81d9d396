"""The paper's probe recipe, for K heads at once: minibatch SGD on cross-entropy.

Every head follows exactly the steps it would take alone -- torch's SGD
(momentum, weight decay on weight and bias, no dampening), StepLR per epoch,
one shared minibatch order -- so a head trained alone with the same seeds ends
with the same weights (tests/test_probes.py checks this against plain torch).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch

from .. import _checks as check
from ..progress import progress_bar
from ..subsets import Subsets
from .cuda_graphs import GraphedStep
from .data import ProbeData
from .layouts import LAYOUTS, Layout, choose_layout, make_layout
from .recipe import Recipe, TrainedHeads
from .result import finite_heads


@dataclass(frozen=True)
class SGDOptions:
    """The paper's recipe (reference code defaults): SGD with momentum on cross-entropy, StepLR per
    epoch, validation every ``eval_every`` epochs, best-validation weights per head.
    ``lr_step``: epochs per x``lr_gamma`` step; None keeps the paper's ratio (20 of 100, 10 of 50):
    max(1, round(epochs / 5)), so ``epochs`` alone scales the schedule.
    ``init_seeds``: one seed per head for its ``nn.Linear`` initialisation (default: seed + k).
    ``cuda_graphs``: replay each step as a CUDA graph (CUDA devices only; the same kernels, so the same
    numbers -- a run-only option, outside a study's identity). Off by default: not yet timed on a GPU."""

    epochs: int = 100
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    lr_step: int | None = None
    lr_gamma: float = 0.1
    eval_every: int = 5
    layout: str = "auto"
    init_seeds: tuple[int, ...] | None = None
    cuda_graphs: bool = False

    def __post_init__(self) -> None:
        if self.lr_step is None:
            epochs = check.integer(self.epochs, "epochs", min=1)
            object.__setattr__(self, "lr_step", max(1, round(epochs / 5)))
        for key in ("epochs", "batch_size", "lr_step", "eval_every"):
            object.__setattr__(self, key, check.integer(getattr(self, key), key, min=1))
        for key in ("lr", "momentum", "weight_decay", "lr_gamma"):
            object.__setattr__(self, key, check.number(getattr(self, key), key, min=0))
        check.choice(self.layout, "layout", ("auto",) + LAYOUTS)
        object.__setattr__(self, "cuda_graphs", check.boolean(self.cuda_graphs, "cuda_graphs"))
        if self.init_seeds is not None:
            seeds = tuple(check.integer(s, "init_seeds", min=0) for s in self.init_seeds)
            object.__setattr__(self, "init_seeds", seeds)


def init_heads(subsets: Subsets, num_classes: int, seeds: Sequence[int], dtype: torch.dtype,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed (nnz, C) weights and (K, C) biases as ``torch.nn.Linear(m_k, C)`` draws them under seeds[k]."""
    Ws: list[torch.Tensor] = []
    bs: list[torch.Tensor] = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
        for m, s in zip(subsets.sizes.tolist(), seeds):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(s))
                lin = torch.nn.Linear(m, num_classes)
            Ws.append(lin.weight.detach().T)
            bs.append(lin.bias.detach())
    W = torch.cat(Ws).to(device, dtype) if Ws else torch.zeros(0, num_classes, dtype=dtype, device=device)
    return W.contiguous(), torch.stack(bs).to(device, dtype)


def train_sgd(data: ProbeData, subsets: Subsets, opts: SGDOptions, seed: int, progress: bool,
              backend: str) -> TrainedHeads:
    Xv, yv = data.X_val, data.y_val
    validated = Xv is not None or data.val_stream is not None
    device, dtype, d = data.device, data.dtype, data.dim
    K, C = len(subsets), data.num_classes
    S = subsets.to(device)
    seeds = [seed + k for k in range(K)] if opts.init_seeds is None else [int(s) for s in opts.init_seeds]
    if len(seeds) != K:
        raise ValueError(f"init_seeds: expected {K} seeds (one per head), got {len(seeds)}")
    layout_name = (choose_layout(S, d, device, C, torch.finfo(dtype).bits // 8) if opts.layout == "auto"
                   else opts.layout)
    heads = make_layout(layout_name, S, d, backend)

    W0, b = init_heads(subsets, C, seeds, dtype, device)
    W = heads.from_packed(W0)
    params = [W, b]
    best = [W.clone(), b.clone()]
    best_acc = torch.full((K,), -1.0, dtype=torch.float64, device=device)
    selected = torch.full((K,), -1, dtype=torch.int64)
    val_hist, eval_epochs, loss_hist = [], [], torch.zeros(K, opts.epochs, dtype=torch.float64)
    order_gen = torch.Generator().manual_seed(seed)
    bs = opts.batch_size
    loss_sum = torch.zeros(K, dtype=torch.float64, device=device)
    step = SGDStep(heads, params, opts.weight_decay, opts.momentum, loss_sum)
    run_step = GraphedStep(step, device) if opts.cuda_graphs else step

    stream = data.stream
    desc = (f"sgd: {K} heads ({layout_name}{', CUDA graphs' if opts.cuda_graphs else ''})"
            f"{' on a stream' if stream is not None else ''}")
    bar = progress_bar(range(opts.epochs), progress, desc=desc, unit="epoch")
    diverged = torch.zeros(K, dtype=torch.bool, device=device)  # the loss went NaN/Inf at some point
    postfix: dict[str, Any] = {}
    for epoch in bar:
        lr = opts.lr * opts.lr_gamma ** (epoch // opts.lr_step)
        loss_sum.zero_()
        n = 0
        batches = stream if stream is not None else array_batches(cast(torch.Tensor, data.X),
                                                                  cast(torch.Tensor, data.y), bs, order_gen)
        for Xb, yb in batches:
            n += len(yb)
            run_step(Xb, yb, lr)
            del Xb, yb  # a wide layer's batch is large: free it before the next one is computed
        loss_hist[:, epoch] = (loss_sum / max(n, 1)).cpu()
        diverged |= ~torch.isfinite(loss_sum)
        if stream is not None and stream.last_pass:
            postfix["img_per_s"] = f"{stream.last_pass['images_per_s']:.0f}"
        if validated and (epoch + 1) % opts.eval_every == 0:
            # a head without finite weights has no accuracy (argmax of NaN logits is class 0): NaN, never selected
            ok = finite_heads(heads.to_packed(params[0]), params[1], S)
            acc = torch.where(ok, _val_accuracy(heads, params, Xv, yv, data.val_stream), float("nan"))
            val_hist.append(acc.cpu())
            eval_epochs.append(epoch + 1)
            better = acc > best_acc  # strict: ties keep the earlier epoch
            if bool(better.any()):
                heads.copy_heads(best[0], params[0], better)
                best[1][better] = params[1][better]
                best_acc = torch.where(better, acc, best_acc)
                selected[better.cpu()] = epoch + 1
            postfix["mean_val_acc"] = f"{float(acc[ok].mean()) if bool(ok.any()) else float('nan'):.3f}"
        if bool(diverged.any()):
            postfix["diverged"] = int(diverged.sum())
        if postfix and progress:
            bar.set_postfix(postfix)
    if not validated or not eval_epochs:
        best = params  # no validation: the last epoch's weights
    weights, biases = heads.to_packed(best[0]).contiguous(), best[1]
    # A head with validation whose every evaluation was non-finite kept its initial weights: it has none.
    unusable = (selected < 0).to(device) if validated and eval_epochs else torch.zeros_like(diverged)
    unusable |= ~finite_heads(weights, biases, S)
    if bool(unusable.any()):
        weights[torch.repeat_interleave(unusable, S.sizes.to(device))] = float("nan")
        biases[unusable] = float("nan")
    return TrainedHeads(weights, biases, dataclasses.replace(opts, layout=layout_name), selected_epoch=selected,
                        val_accuracy=torch.stack(val_hist, 1) if val_hist else None, eval_epochs=eval_epochs,
                        train_loss=loss_hist, init_seeds=torch.tensor(seeds, dtype=torch.int64),
                        diverged=diverged | unusable)


def _plan_layout(plan: Subsets, d: int, device: torch.device, num_classes: int) -> str:
    return choose_layout(plan, d, device, num_classes)


RECIPE = Recipe("sgd", SGDOptions, needs_validation=True, train=train_sgd, streams=True, run_only=("cuda_graphs",),
                seeded_heads=True, layout=_plan_layout)


class SGDStep:
    """One minibatch step of K heads, in place: logits, cross-entropy, gradients and torch.optim.SGD's
    update (momentum, weight decay on weight and bias, no dampening, no Nesterov) of ``params`` = [W, b].

    ``step(X, y, lr)``: X (B, d) features and y (B,) int64 labels on the heads' device, lr a Python float.
    Adds each head's summed cross-entropy into ``loss_sum`` ((K,) float64). Written so that a CUDA graph
    can capture it (see :mod:`pyred.probes.cuda_graphs`): no host synchronisation, no shape that depends
    on values (the target logits are gathered and scattered, not indexed), state changed in place only.
    """

    def __init__(self, heads: Layout, params: list[torch.Tensor], weight_decay: float, momentum: float,
                 loss_sum: torch.Tensor) -> None:
        self.heads, self.params, self.wd, self.mom, self.loss_sum = heads, params, weight_decay, momentum, loss_sum
        # momentum buffers: the first step's gradients (as torch.optim.SGD)
        self.bufs: list[torch.Tensor | None] = [None, None]

    def __call__(self, X: torch.Tensor, y: torch.Tensor, lr: float) -> None:
        heads, params = self.heads, self.params
        B = y.shape[0]
        batch = heads.batch(X)
        z = heads.logits(batch, params[0]).add_(params[1][:, None, :])
        G, lse = softmax_and_logsumexp(z)
        target = y.view(1, B, 1).expand(z.shape[0], B, 1)
        self.loss_sum += (lse - z.gather(2, target).squeeze(2)).sum(1, dtype=torch.float64)  # cross-entropy per head
        G.scatter_(2, target, G.gather(2, target).sub_(1.0))
        G /= B  # d(mean cross-entropy)/d(logits)
        grads = [heads.weight_grad(batch, G), G.sum(1)]
        del batch
        for i, (p, g) in enumerate(zip(params, grads)):
            if self.wd:
                g = g.add(p, alpha=self.wd)
            if self.mom:
                if self.bufs[i] is None:
                    self.bufs[i] = g.clone()
                else:
                    cast(torch.Tensor, self.bufs[i]).mul_(self.mom).add_(g)
                g = cast(torch.Tensor, self.bufs[i])
            p.add_(g, alpha=-lr)


def array_batches(X: torch.Tensor, y: torch.Tensor, batch_size: int,
                  order_gen: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of (X[idx], y[idx]) minibatches in the order ``torch.randperm(n, generator=order_gen)``."""
    order = torch.randperm(X.shape[0], generator=order_gen).to(X.device)
    for start in range(0, X.shape[0], batch_size):
        idx = order[start:start + batch_size]
        yield X[idx], y[idx]


def softmax_and_logsumexp(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(z) and logsumexp(z) over the last (class) axis of (K, B, C) logits.

    Written out because torch's fused kernels are slow for a last axis of ~10
    classes (the K heads' logits of a minibatch: benchmarks/test_probe_speed.py).
    """
    m = z.amax(-1, keepdim=True)
    e = (z - m).exp_()
    s = e.sum(-1, keepdim=True)
    return e.div_(s), (s.log_() + m).squeeze(-1)


def _val_accuracy(heads: Layout, params: list[torch.Tensor], Xv: torch.Tensor | None, yv: torch.Tensor | None,
                  val_stream: Any) -> torch.Tensor:
    """(K,) validation accuracy: on the kept arrays, or on a fresh (augmented) pass of ``val_stream``."""
    if val_stream is None:
        return accuracy(heads, params, cast(torch.Tensor, Xv), cast(torch.Tensor, yv))
    correct, n = None, 0
    for Xb, yb in val_stream:
        part = accuracy(heads, params, Xb, yb) * len(yb)
        correct = part if correct is None else correct + part
        n += len(yb)
    return cast(torch.Tensor, correct) / max(1, n)


def accuracy(heads: Layout, params: list[torch.Tensor], X: torch.Tensor, y: torch.Tensor,
             chunk: int = 4096) -> torch.Tensor:
    """(K,) float64 accuracy of every head on (X, y)."""
    correct = torch.zeros(params[1].shape[0], dtype=torch.float64, device=X.device)
    for s in range(0, X.shape[0], chunk):
        logits = heads.logits(heads.batch(X[s:s + chunk]), params[0]) + params[1][:, None, :]
        correct += (logits.argmax(-1) == y[s:s + chunk][None, :]).sum(1)
    return correct / max(1, X.shape[0])
