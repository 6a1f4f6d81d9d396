"""Batched linear probes: K heads on K neuron subsets, trained at once."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, cast

import torch

from .. import _checks as check
from ..numerics import absmax
from ..ops.dispatch import check_backend
from ..stream import is_stream
from ..subsets import Subsets, as_subsets
from . import lbfgs, ridge, sgd
from .data import LabeledFeatures, ProbeData, prepare
from .recipe import Recipe, TrainedHeads
from .result import ProbeEvaluation, ProbeResult

RECIPES: dict[str, Recipe] = {r.name: r for r in (sgd.RECIPE, lbfgs.RECIPE, ridge.RECIPE)}


def train_probes(X_train: Any, y_train: Any, subsets: Subsets | Any, *, recipe: str = "sgd", X_val: Any = None,
                 y_val: Any = None, num_classes: int | None = None, seed: int = 0, device: Any = None,
                 progress: bool = True, backend: str = "auto", **recipe_options: Any) -> ProbeResult:
    """Trains one linear probe per neuron subset, all K at once.

    Args:
      X_train: (n, d) float features (torch CPU/CUDA, numpy or cupy); y_train:
        (n,) integer labels in [0, num_classes). Or a :class:`pyred.FeatureStream`
        with ``y_train=None`` ("sgd" only): every epoch is one pass over the stream
        (augmented images through the backbone, one forward per batch for all K
        heads), in the stream's order and batch size. Or a
        :class:`pyred.FeatureSet` with ``y_train=None`` (e.g. V augmented views per
        image from ``extract_features(..., views=V)``); its 90/10 split, when no
        validation set is given, keeps each image's views on one side.
      subsets: K subsets of [0, d) (:func:`pyred.draw_subsets` or index lists);
        head k reads only ``X[:, subsets[k]]``. An empty subset is a bias-only probe.
      recipe: "sgd" (the paper's: cross-entropy, SGD lr 0.1, momentum 0.9,
        weight decay 5e-4, batch 256, StepLR x0.1 every 20 of 100 epochs,
        validation every 5 epochs and best-validation selection per head);
        "lbfgs" (full-batch multinomial logistic regression, scikit-learn's C);
        "ridge" (closed-form ridge to one-hot targets, alpha per head on validation).
      X_val, y_val: validation data (arrays, or a FeatureStream as X_val with
        y_val=None: a clean one is passed once and kept, an augmented one ("sgd" on a
        stream) is passed anew at every evaluation, as the reference validated); when absent, "sgd"
        and "ridge" split off a fixed-seed 10 % of the training set (the
        reference code's 90/10 split; for a stream, 10 % of its images, validated clean).
      num_classes: C; max label + 1 when None.
      seed: "sgd": the minibatch order's seed (a FeatureStream's order comes from its own
        seed); head k is initialised as
        ``torch.nn.Linear(m_k, C)`` under seed + k (or ``init_seeds[k]``).
      device: where to train; X_train's device when None.
      progress: show a progress bar (tqdm).
      backend: "auto", "native" or "torch" for the gathered kernels.
      **recipe_options: "sgd": epochs=100, lr=0.1, momentum=0.9,
        weight_decay=5e-4, batch_size=256, lr_step=None (epochs // 5 rounded: the paper's
        20 of 100 and 10 of 50), lr_gamma=0.1,
        eval_every=5, layout="auto"|"gathered"|"masked"|"grouped", init_seeds=None,
        cuda_graphs=False (True on a CUDA device: each step replayed as a CUDA graph, same numbers);
        "lbfgs": C=1.0, max_iter=100, tol=1e-6, dtype=None|"float64";
        "ridge": alphas=(1e-2, ..., 1e5).

    Returns:
      :class:`ProbeResult` with the packed weights (nnz, C), biases (K, C), the
      validation history and the selected epoch per head, and ``diverged`` (K,)
      (with a RuntimeWarning when any head's loss went NaN/Inf); ``.evaluate(X, y)``
      gives accuracy (K,), per-class accuracy (K, C) and predictions (K, n).
    """
    r = RECIPES[check.choice(recipe, "recipe", RECIPES)]
    check_backend(backend)
    seed = check.integer(seed, "seed", min=0)
    options = r.parse_options(recipe_options)
    groups = None
    if isinstance(X_train, LabeledFeatures):  # a FeatureSet (maybe of augmented views): its X and y
        if y_train is not None:
            raise ValueError("y_train: a FeatureSet carries its own labels; pass None")
        groups = X_train.image_index
        X_train, y_train = X_train.X, X_train.y
    if is_stream(X_train):
        if not r.streams:
            raise ValueError(f"recipe: {recipe!r} trains on the whole training set at once, so it cannot read a "
                             f"FeatureStream; use recipe='sgd' (or extract_features and pass the arrays)")
        if "batch_size" in recipe_options and int(recipe_options["batch_size"]) != X_train.batch_size:
            raise ValueError(f"batch_size: the stream yields batches of {X_train.batch_size}; set the batch size "
                             f"on the FeatureStream, not here (got batch_size={recipe_options['batch_size']})")
        options = dataclasses.replace(options, batch_size=X_train.batch_size)  # what the result reports
    data = prepare(X_train, y_train, X_val, y_val, num_classes, device, r.needs_validation, groups=groups)
    S = as_subsets(subsets, data.dim)
    if len(S) == 0:
        raise ValueError("subsets: expected at least one subset (one probe head per subset), got 0")
    if seed + len(S) - 1 > check.INT64_MAX:
        raise ValueError(f"seed: head k is initialised under seed + k, which must stay below 2**63; got seed={seed} "
                         f"for {len(S)} heads")
    trained = r.train(data, S, options, seed, progress, backend)
    result = ProbeResult(**vars(trained), subsets=S, num_classes=data.num_classes, recipe=recipe)
    if bool(cast(torch.Tensor, result.diverged).any()):  # set by ProbeResult.__post_init__
        warnings.warn(divergence_message(result, data), RuntimeWarning, stacklevel=2)
    return result


def divergence_message(result: ProbeResult, data: ProbeData) -> str:
    """What to tell a user whose heads diverged: how many, what it means for their numbers, the likely cause."""
    count, K = int(cast(torch.Tensor, result.diverged).sum()), len(result)
    scale = "" if data.X is None else f", largest |feature| {absmax(data.X):.3g}"
    if result.recipe == "sgd":
        cause = (f"a learning rate too large for the features' scale (lr={result.options.lr}{scale}): lower "
                 "lr, or scale the features (e.g. divide them by their standard deviation)")
    else:
        cause = f"features at the edge of the floating-point range{scale}"
    return (f"train_probes: {count} of {K} heads diverged (their training loss became NaN or infinite, or their "
            f"weights are not finite); ProbeResult.diverged says which, and evaluate() gives a head accuracy NaN "
            f"unless it kept weights from before it diverged. Likely cause: {cause}")


__all__ = ["ProbeEvaluation", "ProbeResult", "RECIPES", "Recipe", "TrainedHeads", "train_probes"]
