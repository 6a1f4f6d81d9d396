"""What a probe reads: the layer itself, or a basis change of it (PCA, random projections).

A view is a small frozen dataclass that says how to map the layer's features;
:class:`ViewCache` computes each view's matrix once per (model, dataset) and
applies it to a split's features.
"""

from __future__ import annotations

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
    """Each view's (d, d) matrix, computed once from a model-dataset's features."""

    def __init__(self, X_train: Any) -> None:
        self._X_train = X_train
        self._matrices: dict[View, np.ndarray] = {}

    def matrix(self, view: View) -> np.ndarray:
        if view not in self._matrices:
            from ..analysis import PCABasis, random_projection

            if isinstance(view, PCAView):
                self._matrices[view] = PCABasis(np.asarray(self._X_train, dtype=np.float64)).components
            else:
                d = self._X_train.shape[1]
                self._matrices[view] = random_projection(d, d, view.seed, view.kind)
        return self._matrices[view]

    def apply(self, view: View | None, X: Any) -> np.ndarray:
        """The features X (n, d) as ``view`` sees them (float32); the layer itself for None."""
        X = np.asarray(X)
        if view is None:
            return cast(np.ndarray, X)
        return cast(np.ndarray, (X @ self.matrix(view)).astype(np.float32))
