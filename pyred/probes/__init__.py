"""Batched linear probes: K heads on K neuron subsets, trained at once."""

from __future__ import annotations

from typing import Any

from .. import _checks as check
from ..ops.reductions import _check_backend
from ..subsets import Subsets, as_subsets
from . import lbfgs, ridge, sgd
from .data import prepare
from .recipe import Recipe
from .result import ProbeEvaluation, ProbeResult

RECIPES: dict[str, Recipe] = {r.name: r for r in (sgd.RECIPE, lbfgs.RECIPE, ridge.RECIPE)}


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
    r = RECIPES[check.choice(recipe, "recipe", RECIPES)]
    _check_backend(backend)
    seed = check.integer(seed, "seed", min=0)
    options = r.parse_options(recipe_options)
    data = prepare(X_train, y_train, X_val, y_val, num_classes, device, r.needs_validation)
    S = as_subsets(subsets, data.X.shape[1])
    if len(S) == 0:
        raise ValueError("subsets: expected at least one subset (one probe head per subset), got 0")
    if seed + len(S) - 1 > check.INT64_MAX:
        raise ValueError(f"seed: head k is initialised under seed + k, which must stay below 2**63; got seed={seed} "
                         f"for {len(S)} heads")
    out = r.train(data, S, options, seed, progress, backend)
    options = out.pop("options")
    return ProbeResult(subsets=S, num_classes=data.num_classes, recipe=recipe, options=options, **out)


__all__ = ["ProbeEvaluation", "ProbeResult", "RECIPES", "Recipe", "train_probes"]
