"""What a probe reads: the layer itself, or a basis change of it (PCA, random projections).

A view is a small frozen dataclass that says how to map the layer's features;
:class:`ViewCache` computes each view's matrix once per (model, dataset) and
applies it to a split's features.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import numpy as np


@dataclass(frozen=True)
class PCAView:
    """Coordinates on the exact principal directions of the training features (decreasing variance)."""

    def describe(self) -> str:
        return "pca"


@dataclass(frozen=True)
class ProjectionView:
    """Coordinates under a d x d random projection drawn with ``seed``: "gaussian", or the
    authors' non-negative "uniform" (unit-norm columns)."""

    seed: int
    kind: str

    def describe(self) -> str:
        return f"randproj-{self.kind}-seed{self.seed}"


View = PCAView | ProjectionView


class ViewCache:
    """Each view's (d, d) matrix, computed once per model-dataset: a PCA basis from the training features
    ``X_train`` -- or, where the study holds none (protocol "paper"), from ``fit()``, the features of one
    augmented pass over the training images, as the reference's calculate_pca.py computed them -- and the
    random projections from the width ``d`` alone."""

    def __init__(self, X_train: Any, d: int | None = None, fit: Callable[[], Any] | None = None) -> None:
        self._X_train, self._fit = X_train, fit
        self.d = int(X_train.shape[1]) if d is None else d
        self._matrices: dict[View, np.ndarray] = {}

    def matrix(self, view: View) -> np.ndarray:
        if view not in self._matrices:
            from ..analysis import PCABasis, random_projection

            if isinstance(view, PCAView):
                X = self._X_train if self._X_train is not None else cast(Callable[[], Any], self._fit)()
                self._matrices[view] = PCABasis(np.asarray(X, dtype=np.float64)).components
            else:
                self._matrices[view] = random_projection(self.d, self.d, view.seed, view.kind)
        return self._matrices[view]

    def apply(self, view: View | None, X: Any) -> np.ndarray:
        """The features X (n, d) as ``view`` sees them (float32); the layer itself for None."""
        X = np.asarray(X)
        if view is None:
            return cast(np.ndarray, X)
        return cast(np.ndarray, (X @ self.matrix(view)).astype(np.float32))
