"""The ways to train K probes without pyred's kernels, in plain torch.

``train_heads_one_by_one``: each head an ``nn.Linear`` on ``X[:, S_k]`` with
torch's SGD and StepLR, the same minibatch order and best-validation rule as
the "sgd" recipe -- the reference code's way, minus the backbone. Tests use it
as the independent oracle for the batched trainer.
``train_heads_masked_dense``: all heads as one dense (d, K C) weight whose rows
off each subset are masked to zero, one GEMM each way under autograd.
Benchmarks time both against pyred.
"""

from __future__ import annotations

import torch


def _linear(m: int, num_classes: int, seed: int) -> torch.nn.Linear:
    """``nn.Linear(m, C)`` as torch initialises it under ``seed`` (the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return torch.nn.Linear(m, num_classes)


def train_heads_one_by_one(X, y, X_val, y_val, subsets, num_classes, *, seed=0, init_seeds=None, epochs=100,
                           lr=0.1, momentum=0.9, weight_decay=5e-4, batch_size=256, lr_step=20, lr_gamma=0.1,
                           eval_every=5):
    """Returns [((W (m, C), b (C,)) of the selected epoch, selected epoch (1-based)) for each subset]."""
    X, y, X_val, y_val = (torch.as_tensor(a) for a in (X, y, X_val, y_val))
    seeds = init_seeds if init_seeds is not None else [seed + k for k in range(len(subsets))]
    out = []
    for k, S in enumerate(subsets):
        S = torch.as_tensor(S, dtype=torch.int64, device=X.device)
        head = _linear(len(S), num_classes, seeds[k]).to(X.device, X.dtype)
        opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=lr_step, gamma=lr_gamma)
        order_gen = torch.Generator().manual_seed(seed)
        best, best_acc, best_epoch = None, -1.0, -1
        for epoch in range(epochs):
            order = torch.randperm(len(X), generator=order_gen).to(X.device)
            for s in range(0, len(X), batch_size):
                idx = order[s:s + batch_size]
                loss = torch.nn.functional.cross_entropy(head(X[idx][:, S]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            sched.step()
            if (epoch + 1) % eval_every == 0:
                with torch.no_grad():
                    acc = (head(X_val[:, S]).argmax(1) == y_val).double().mean().item()
                if acc > best_acc:
                    best_acc, best_epoch = acc, epoch + 1
                    best = (head.weight.detach().T.clone(), head.bias.detach().clone())
        out.append((best, best_epoch))
    return out


def train_heads_masked_dense(X, y, X_val, y_val, subsets, num_classes, *, seed=0, init_seeds=None, epochs=100,
                             lr=0.1, momentum=0.9, weight_decay=5e-4, batch_size=256, lr_step=20, lr_gamma=0.1,
                             eval_every=5):
    """Same recipe and initialisation as above; returns the same list of (weights, epoch) per head."""
    X, y, X_val, y_val = (torch.as_tensor(a) for a in (X, y, X_val, y_val))
    K, d, C = len(subsets), X.shape[1], num_classes
    seeds = init_seeds if init_seeds is not None else [seed + k for k in range(K)]
    W = torch.zeros(d, K, C, dtype=X.dtype, device=X.device)
    mask = torch.zeros(d, K, 1, dtype=X.dtype, device=X.device)
    b = torch.zeros(K, C, dtype=X.dtype, device=X.device)
    for k, S in enumerate(subsets):
        S = torch.as_tensor(S, dtype=torch.int64, device=X.device)
        head = _linear(len(S), C, seeds[k])
        W[S, k] = head.weight.detach().T.to(X.device, X.dtype)
        b[k] = head.bias.detach().to(X.device, X.dtype)
        mask[S, k] = 1
    W.requires_grad_(True)
    b.requires_grad_(True)
    opt = torch.optim.SGD([W, b], lr=lr, momentum=momentum, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=lr_step, gamma=lr_gamma)
    order_gen = torch.Generator().manual_seed(seed)
    best_acc = torch.full((K,), -1.0, dtype=torch.float64)
    best_W, best_b, best_epoch = W.detach().clone(), b.detach().clone(), [-1] * K

    def logits(Xb):
        return (Xb @ (W * mask).reshape(d, K * C)).reshape(len(Xb), K, C) + b

    for epoch in range(epochs):
        order = torch.randperm(len(X), generator=order_gen).to(X.device)
        for s in range(0, len(X), batch_size):
            idx = order[s:s + batch_size]
            out = logits(X[idx])  # (B, K, C); each head's loss is its own batch mean
            loss = torch.nn.functional.cross_entropy(out.reshape(-1, C), y[idx].repeat_interleave(K),
                                                     reduction="sum") / len(idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        if (epoch + 1) % eval_every == 0:
            with torch.no_grad():
                acc = (logits(X_val).argmax(2) == y_val[:, None]).double().mean(0).cpu()
                better = acc > best_acc
                best_acc = torch.where(better, acc, best_acc)
                best_W[:, better] = W.detach()[:, better]
                best_b[better] = b.detach()[better]
                best_epoch = [epoch + 1 if bt else e for bt, e in zip(better.tolist(), best_epoch)]
    return [((best_W[torch.as_tensor(S, dtype=torch.int64, device=X.device), k], best_b[k]), best_epoch[k])
            for k, S in enumerate(subsets)]
