"""The paper's measures on accuracy-vs-fraction results, and the subset baselines.

* ``diffused_redundancy``: DR(delta) = 1 - f*, with the paper's "nearest" rule
  (f* is the tested fraction whose accuracy ratio to the full layer is closest
  to delta -- what produced the published numbers) or the literal "threshold"
  rule (the smallest fraction whose ratio reaches delta); ``dr_curve`` over a
  delta grid (``DELTA_GRIDS``).
* ``seed_stats``: mean and population std (ddof 0) over seeds per fraction.
* ``gini``, ``max_min``, ``coefficient_of_variation``: per-class disparity.
* Baselines giving k-dimensional features: exact PCA (top-k or bottom-k, from
  the eigendecomposition of the centred Gram), random projections (Gaussian,
  or the authors' non-negative uniform variant), first-k neurons (MRL).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import torch

from . import _checks as check

RULES = ("nearest", "threshold")

# The delta grids of the paper's DR-vs-delta figures: 30 points (20 evenly spaced in [0, 0.8], 10 in
# [0.8, 1]), or 10 or 20 evenly spaced in [0.75, 1].
DELTA_GRIDS = {
    "paper30": np.concatenate([np.linspace(0.0, 0.8, 20), np.linspace(0.8, 1.0, 10)]),
    "high10": np.linspace(0.75, 1.0, 10),
    "high20": np.linspace(0.75, 1.0, 20),
}


def _vector(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x.cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise ValueError(f"{name}: expected at least one value")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: contains NaN or Inf")
    return a


def diffused_redundancy(fractions: Sequence[float], accuracies: Sequence[float], full_accuracy: float,
                        delta: float = 0.9, rule: str = "nearest") -> float:
    """DR(delta) = 1 - f* from the mean accuracy at each tested fraction.

    Args:
      fractions: (F,) tested fractions in (0, 1] (any order; 1.0 may be among them).
      accuracies: (F,) mean accuracy over seeds at each fraction.
      full_accuracy: accuracy of the full layer (f = 1), > 0.
      delta: target ratio of the full accuracy (0.9 = 90 %).
      rule: "nearest" (the paper's: f* minimises |acc(f)/full - delta| over the
        tested fractions and f = 1; ties go to the smaller f) or "threshold"
        (f* is the smallest fraction with acc(f)/full >= delta; f = 1 always qualifies).

    Returns: DR in [0, 1).
    """
    if rule not in RULES:
        raise ValueError(f"rule: expected one of {RULES}, got {rule!r}")
    f, a = _vector(fractions, "fractions"), _vector(accuracies, "accuracies")
    if f.shape != a.shape:
        raise ValueError(f"accuracies: expected {f.size} values (one per fraction), got {a.size}")
    if np.any((f <= 0) | (f > 1)):
        raise ValueError("fractions: each must be in (0, 1]")
    if not np.isfinite(full_accuracy) or full_accuracy <= 0:
        raise ValueError(f"full_accuracy: expected a positive number, got {full_accuracy!r}")
    f = np.append(f, 1.0)
    ratio = np.append(a / full_accuracy, 1.0)
    order = np.argsort(f, kind="stable")
    f, ratio = f[order], ratio[order]
    if rule == "nearest":
        f_star = f[int(np.argmin(np.abs(ratio - delta)))]
    else:
        f_star = f[int(np.nonzero(ratio >= delta)[0][0])]
    return float(1.0 - f_star)


def dr_curve(fractions: Sequence[float], accuracies: Sequence[float], full_accuracy: float,
             deltas: Sequence[float] | np.ndarray | str = "paper30",
             rule: str = "nearest") -> tuple[np.ndarray, np.ndarray]:
    """(deltas, DR at each delta); ``deltas`` is a sequence or a name in DELTA_GRIDS."""
    if isinstance(deltas, str):
        if deltas not in DELTA_GRIDS:
            raise ValueError(f"deltas: expected a sequence or one of {sorted(DELTA_GRIDS)}, got {deltas!r}")
        deltas = DELTA_GRIDS[deltas]
    d = _vector(deltas, "deltas")
    return d, np.array([diffused_redundancy(fractions, accuracies, full_accuracy, x, rule) for x in d])


def seed_stats(fractions: Sequence[float],
               values: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per distinct fraction: (fractions ascending, mean, population std (ddof 0), count) of ``values``."""
    f, v = _vector(fractions, "fractions"), _vector(values, "values")
    if f.shape != v.shape:
        raise ValueError(f"values: expected {f.size} values (one per fraction entry), got {v.size}")
    uniq = np.unique(f)
    groups = [v[f == u] for u in uniq]
    return uniq, np.array([g.mean() for g in groups]), np.array([g.std(ddof=0) for g in groups]), \
        np.array([len(g) for g in groups])


def gini(values: Sequence[float]) -> float:
    """Gini coefficient as the paper computed it (oliviaguest/gini): shift so the minimum is 0
    when any value is negative, add 1e-7, sort ascending, G = sum_i (2i - n - 1) x_i / (n sum_i x_i)."""
    x = _vector(values, "values").copy()
    if np.amin(x) < 0:
        x -= np.amin(x)
    x = np.sort(x + 1e-7)
    n = x.size
    i = np.arange(1, n + 1)
    return float(np.sum((2 * i - n - 1) * x) / (n * np.sum(x)))


def max_min(values: Sequence[float]) -> float:
    """Spread: max - min."""
    x = _vector(values, "values")
    return float(x.max() - x.min())


def coefficient_of_variation(values: Sequence[float]) -> float:
    """Population std / mean (NaN when the mean is 0)."""
    x = _vector(values, "values")
    m = x.mean()
    return float(x.std(ddof=0) / m) if m != 0 else float("nan")


# -- baselines ------------------------------------------------------------------------------------
class PCABasis:
    """Exact principal directions of X (n, d) from the eigendecomposition of its centred Gram.

    Attributes: mean (d,), components (d, d) with columns in decreasing order of
    variance, variances (d,) (eigenvalues / n). float64 numpy arrays.
    """

    def __init__(self, X: Any) -> None:
        from .gram import GramStats

        x = torch.as_tensor(np.asarray(X) if not isinstance(X, torch.Tensor) else X)
        m = GramStats(x.shape[1]).update(x).moments()
        evals, evecs = np.linalg.eigh(m.C.cpu().numpy())
        order = np.argsort(evals)[::-1]
        self.variances = evals[order] / m.n
        self.components = evecs[:, order]
        self.mean = m.mean.cpu().numpy()

    def project(self, X: Any, k: int, which: str = "top") -> np.ndarray:
        """(n, k) coordinates of X on the top-k (or bottom-k) components; X is not centred
        (as in the paper, a probe's bias absorbs the mean)."""
        if which not in ("top", "bottom"):
            raise ValueError(f"which: expected 'top' or 'bottom', got {which!r}")
        d = self.components.shape[1]
        k = check.integer(k, "k", min=0, max=d)
        V = self.components[:, :k] if which == "top" else self.components[:, d - k:]
        return cast(np.ndarray, np.asarray(X, dtype=np.float64) @ V)


def random_projection(d: int, k: int, seed: int, kind: str = "gaussian") -> np.ndarray:
    """(d, k) projection matrix: "gaussian" (i.i.d. N(0, 1/k)), or "uniform" -- the authors'
    i.i.d. U[0, 1) entries with unit-norm columns, drawn from a torch generator seeded with ``seed``."""
    if kind not in ("gaussian", "uniform"):
        raise ValueError(f"kind: expected 'gaussian' or 'uniform', got {kind!r}")
    g = torch.Generator().manual_seed(int(seed))
    if kind == "uniform":
        P = torch.rand(d, d, generator=g, dtype=torch.float64)
        P = P / P.norm(dim=0, keepdim=True)
        return cast(np.ndarray, P[:, :k].numpy())  # (torch's stubs type the division as Any)
    return cast(np.ndarray, (torch.randn(d, k, generator=g, dtype=torch.float64) / max(1, k) ** 0.5).numpy())
