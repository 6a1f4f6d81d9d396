"""Batched linear probes: K heads on K neuron subsets, trained at once."""

from __future__ import annotations

from typing import Any

from ..ops.reductions import _check_backend
from ..subsets import Subsets, as_subsets
from .data import prepare
from .lbfgs import train_lbfgs
from .result import ProbeEvaluation, ProbeResult
from .ridge import train_ridge
from .sgd import train_sgd

RECIPES = {"sgd": train_sgd, "lbfgs": train_lbfgs, "ridge": train_ridge}
_NEEDS_VAL = {"sgd": True, "lbfgs": False, "ridge": True}


def train_probes(X_train: Any, y_train: Any, subsets: Subsets | Any, *, recipe: str = "sgd", X_val: Any = None,
                 y_val: Any = None, num_classes: int | None = None, seed: int = 0, device: Any = None,
                 progress: bool = True, backend: str = "auto", **recipe_options) -> ProbeResult:
    """Trains one linear probe per neuron subset, all K at once.

    Args:
      X_train: (n, d) float features (torch CPU/CUDA, numpy or cupy); y_train:
        (n,) integer labels in [0, num_classes).
      subsets: K subsets of [0, d) (:func:`pyred.draw_subsets` or index lists);
        head k reads only ``X[:, subsets[k]]``. An empty subset is a bias-only probe.
      recipe: "sgd" (the paper's: cross-entropy, SGD lr 0.1, momentum 0.9,
        weight decay 5e-4, batch 256, StepLR x0.1 every 20 of 100 epochs,
        validation every 5 epochs and best-validation selection per head);
        "lbfgs" (full-batch multinomial logistic regression, scikit-learn's C);
        "ridge" (closed-form ridge to one-hot targets, alpha per head on validation).
      X_val, y_val: validation data; when absent, "sgd" and "ridge" split off a
        fixed-seed 10 % of the training set (the reference code's 90/10 split).
      num_classes: C; max label + 1 when None.
      seed: "sgd": the minibatch order's seed; head k is initialised as
        ``torch.nn.Linear(m_k, C)`` under seed + k (or ``init_seeds[k]``).
      device: where to train; X_train's device when None.
      progress: show a progress bar (tqdm).
      backend: "auto", "native" or "torch" for the gathered kernels.
      **recipe_options: "sgd": epochs=100, lr=0.1, momentum=0.9,
        weight_decay=5e-4, batch_size=256, lr_step=20, lr_gamma=0.1,
        eval_every=5, layout="auto"|"gathered"|"masked", init_seeds=None;
        "lbfgs": C=1.0, max_iter=100, tol=1e-6, dtype=None|"float64";
        "ridge": alphas=(1e-2, ..., 1e5).

    Returns:
      :class:`ProbeResult` with the packed weights (nnz, C), biases (K, C), the
      validation history and the selected epoch per head; ``.evaluate(X, y)``
      gives accuracy (K,), per-class accuracy (K, C) and predictions (K, n).
    """
    if recipe not in RECIPES:
        raise ValueError(f"recipe: expected one of {sorted(RECIPES)}, got {recipe!r}")
    _check_backend(backend)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    data = prepare(X_train, y_train, X_val, y_val, num_classes, device, _NEEDS_VAL[recipe])
    S = as_subsets(subsets, data.X.shape[1])
    out = RECIPES[recipe](data, S, seed, progress, backend, **recipe_options)
    options = out.pop("options")
    return ProbeResult(subsets=S, num_classes=data.num_classes, recipe=recipe, options=options, **out)


__all__ = ["ProbeEvaluation", "ProbeResult", "RECIPES", "train_probes"]
