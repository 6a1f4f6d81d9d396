"""The trained heads of a batch of probes, and their evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..ops.arrays import float_matrix, from_torch
from ..ops.heads import features_major, forward_xt
from ..subsets import Subsets
from .data import check_label_range, labels
from .recipe import TrainedHeads


@dataclass
class ProbeEvaluation:
    """accuracy: (K,) float64; per_class_accuracy: (K, C) float64 (NaN for a class
    absent from the test labels); predictions: (K, n_test) int64. Arrays of the
    kind (torch/numpy/cupy) of the test features."""

    accuracy: Any
    per_class_accuracy: Any
    predictions: Any


@dataclass(kw_only=True)
class ProbeResult(TrainedHeads):
    """K linear heads, head k reading the features ``subsets[k]``: a recipe's :class:`TrainedHeads` with
    what they read.

    weights: (nnz, C) packed, rows in the order of ``subsets.indices`` (head k
      owns rows ``subsets.offsets[k]:subsets.offsets[k+1]``; row j of head k
      weighs feature ``subsets[k][j]``), the selected (best-validation) weights.
    biases: (K, C).
    subsets, num_classes, recipe: what was trained; options: the recipe's options dataclass as run
      (defaults and "auto" choices such as the layout resolved; e.g. ``options.layout``).
    selected_epoch: (K,) int64, the epoch (1-based) whose weights were kept
      (sgd: best validation accuracy, the first such epoch on ties; -1 when
      there was no validation); val_accuracy: (K, E) float64 validation
      accuracy at ``eval_epochs`` (E evaluations); train_loss: (K, epochs) mean
      cross-entropy per epoch (sgd); alpha: (K,) chosen ridge penalty (ridge).
    init_seeds: (K,) the seed each head's initialisation was drawn under (sgd).
    diverged: (K,) bool, True for a head whose training loss became NaN or infinite (or whose
      final weights are not finite). Such a head keeps the weights of its best evaluation from before
      the divergence when it had one; otherwise its weights are NaN and ``evaluate`` gives it a NaN
      accuracy -- never the accuracy of random or broken weights.
    function_evals: objective evaluations of the solve (lbfgs).
    """

    subsets: Subsets
    num_classes: int
    recipe: str

    def __post_init__(self) -> None:
        if self.diverged is None:
            self.diverged = ~finite_heads(self.weights, self.biases, self.subsets.to(self.weights.device))

    def __len__(self) -> int:
        return len(self.subsets)

    def head(self, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(features (m,), weight (m, C), bias (C,)) of head k."""
        b, e = int(self.subsets.offsets[k]), int(self.subsets.offsets[k + 1])
        return self.subsets[k], self.weights[b:e], self.biases[k]

    def logits(self, X: Any, batch_size: int = 4096) -> Any:
        """(K, n, C) logits of every head on X (n, d)."""
        x, kind = float_matrix(X, "X")
        return from_torch(self._logits(x.to(self.weights.device, self.weights.dtype), batch_size), kind)

    def _logits(self, x: torch.Tensor, batch_size: int) -> torch.Tensor:
        if x.shape[1] != _width(self.subsets, x):
            raise ValueError(f"X: expected {self.subsets.d} features, got {x.shape[1]}")
        S = self.subsets.to(x.device)
        parts = [forward_xt(features_major(x[s:s + batch_size]), S.indices, S.offsets, self.weights)
                 for s in range(0, x.shape[0], batch_size)]
        return torch.cat(parts, dim=1) + self.biases[:, None, :]

    def evaluate(self, X_test: Any, y_test: Any = None, batch_size: int = 4096) -> ProbeEvaluation:
        """Accuracy, per-class accuracy and predictions of every head on a test set.

        X_test: (n, d) float features; y_test: (n,) integer labels in [0, C). Or a
        :class:`pyred.FeatureStream` with y_test=None: its features, one pass in dataset order.
        A head whose weights are not finite (see ``diverged``) gets accuracy NaN, per-class
        accuracies NaN and predictions -1.
        """
        from ..stream import is_stream

        if is_stream(X_test):
            if y_test is not None:
                raise ValueError("y_test: a FeatureStream carries its own labels; pass None")
            X_test, y_test = X_test.collect()
        elif y_test is None:
            raise ValueError("y_test: expected (n,) labels for X_test (None only with a FeatureStream)")
        x, kind = float_matrix(X_test, "X_test")
        x = x.to(self.weights.device, self.weights.dtype)
        y = labels(y_test, x.shape[0], "y_test", x.device)
        check_label_range(y, self.num_classes, "y_test")
        pred = self._logits(x, batch_size).argmax(-1)  # (K, n)
        broken = ~finite_heads(self.weights, self.biases, self.subsets.to(self.weights.device))
        pred[broken] = -1  # a head without finite weights predicts nothing (argmax of NaN logits is 0)
        correct = (pred == y[None, :]).double()
        acc = correct.mean(1)
        onehot = torch.nn.functional.one_hot(y, self.num_classes).double()  # (n, C)
        counts = onehot.sum(0)
        per_class = (correct @ onehot) / counts
        per_class[:, counts == 0] = float("nan")
        acc[broken] = float("nan")
        per_class[broken] = float("nan")
        return ProbeEvaluation(from_torch(acc, kind), from_torch(per_class, kind), from_torch(pred, kind))


def finite_heads(weights: torch.Tensor, biases: torch.Tensor, subsets: Subsets) -> torch.Tensor:
    """(K,) bool: head k's weights (rows offsets[k]:offsets[k+1] of the packed (nnz, C) weights) and
    bias are all finite."""
    K = len(subsets)
    bad_rows = (~torch.isfinite(weights).all(1)).to(torch.float64)
    list_id = torch.repeat_interleave(torch.arange(K, device=weights.device), subsets.sizes.to(weights.device))
    bad = torch.zeros(K, dtype=torch.float64, device=weights.device).index_add_(0, list_id, bad_rows)
    return (bad == 0) & torch.isfinite(biases).all(1)


def _width(subsets: Subsets, x: torch.Tensor) -> int:
    if subsets.d is not None:
        return subsets.d
    if subsets.max_index >= x.shape[1]:
        raise ValueError(f"X: subsets index feature {subsets.max_index}, X has {x.shape[1]} features")
    return x.shape[1]
