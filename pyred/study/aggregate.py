"""The study's measures, from the rows of one configuration: a pure function of the database.

Per (model, dataset, layer, method) a :class:`GroupSummary`: mean +- population
std of accuracy and CKA per fraction (:class:`SeedCurve`), the full layer's
accuracy, DR(delta) under both rules on the paper's delta grid, per-class
disparity (Gini, max - min, CV) per fraction, the heads that diverged, and why
DR is missing where it is. ``to_json()`` gives analysis.json's layout.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from .. import analysis as A
from .plan import ResultRow

DELTAS = (0.9, 0.95)  # the deltas the report's DR tables show


@dataclass(frozen=True)
class SeedCurve:
    """Per tested fraction (ascending): the mean and population std over seeds, and how many seeds."""

    fraction: list[float]
    mean: list[float]
    std: list[float]
    n: list[int]

    @classmethod
    def of(cls, rows: list[ResultRow], value: str) -> SeedCurve:
        f, mean, std, n = A.seed_stats([r.fraction for r in rows], [getattr(r, value) for r in rows])
        return cls(f.tolist(), mean.tolist(), std.tolist(), n.tolist())

    def at(self, fraction: float) -> tuple[float, float] | None:
        """(mean, std) at ``fraction``, or None where it was not tested."""
        for f, m, s in zip(self.fraction, self.mean, self.std):
            if f == fraction:
                return m, s
        return None


@dataclass(frozen=True)
class DiffusedRedundancy:
    """DR(delta) per rule ("nearest", "threshold") and delta in DELTAS, and the nearest rule's DR-vs-delta curve."""

    values: dict[str, dict[float, float]]
    curve_delta: list[float]
    curve_dr: list[float]

    def get(self, rule: str, delta: float) -> float:
        return self.values[rule][delta]


@dataclass(frozen=True)
class Disparity:
    """Per-class accuracy at one fraction (mean over seeds; classes absent from the test set left out)."""

    fraction: float
    per_class: list[float]
    gini: float
    max_min: float
    cv: float
    accuracy: float


@dataclass(frozen=True)
class DivergedHead:
    fraction: float
    seed: int
    kept_earlier_weights: bool  # it kept weights from before it diverged, so it has an accuracy


@dataclass(frozen=True)
class GroupSummary:
    """Every measure of one (model, dataset, layer, method) of a configuration."""

    config_id: str
    model: str
    dataset: str
    layer: str
    method: str
    accuracy: SeedCurve | None = None
    full_accuracy: float | None = None
    dr: DiffusedRedundancy | None = None
    disparity: list[Disparity] = field(default_factory=list)
    cka: SeedCurve | None = None
    diverged: list[DivergedHead] = field(default_factory=list)
    dr_missing: str | None = None  # why there is no DR, for the report

    @property
    def label(self) -> str:
        return f"{self.model} / {self.dataset} ({self.method})"

    def to_json(self) -> dict[str, Any]:
        """analysis.json's layout for one group."""
        g: dict[str, Any] = {"config_id": self.config_id, "model": self.model, "dataset": self.dataset,
                             "layer": self.layer, "method": self.method}
        if self.accuracy is not None:
            g["accuracy"] = vars(self.accuracy).copy()
            if self.full_accuracy is not None:
                g["full_accuracy"] = self.full_accuracy
            if self.dr is not None:
                g["dr"] = {rule: {str(d): v for d, v in by.items()} for rule, by in self.dr.values.items()}
                g["dr_curve"] = {"delta": self.dr.curve_delta, "dr": self.dr.curve_dr}
            g["disparity"] = [vars(d).copy() for d in self.disparity]
        if self.diverged:
            g["diverged"] = [vars(d).copy() for d in self.diverged]
        if self.dr_missing is not None:
            g["dr_missing"] = self.dr_missing
        if self.cka is not None:
            g["cka"] = {k: v for k, v in vars(self.cka).items() if k != "n"}
        return g


def analyse(config_id: str, rows: list[ResultRow]) -> list[GroupSummary]:
    """One GroupSummary per (model, dataset, layer, method) of ``config_id``, sorted by those keys."""
    groups: dict[tuple[str, str, str, str], list[ResultRow]] = defaultdict(list)
    for r in rows:
        groups[(r.model, r.dataset, r.layer, r.method)].append(r)
    return [_group(config_id, key, rs) for key, rs in sorted(groups.items())]


def _group(config_id: str, key: tuple[str, str, str, str], rs: list[ResultRow]) -> GroupSummary:
    model, dataset, layer, method = key
    acc = [r for r in rs if r.accuracy is not None]
    curve = SeedCurve.of(acc, "accuracy") if acc else None
    full = cast("list[float]", [r.accuracy for r in acc if r.fraction == 1.0])  # acc: the rows with an accuracy
    full_acc = float(np.mean(full)) if full and np.mean(full) > 0 else None
    dr = _dr(curve, full_acc) if curve is not None and full_acc is not None else None
    ck = [r for r in rs if r.cka is not None]
    return GroupSummary(
        config_id, model, dataset, layer, method, accuracy=curve, full_accuracy=full_acc, dr=dr,
        disparity=_disparity(acc), cka=SeedCurve.of(ck, "cka") if ck else None,
        diverged=[DivergedHead(r.fraction, r.seed, r.accuracy is not None) for r in rs if r.diverged],
        dr_missing=None if dr is not None else _why_no_dr(rs, acc))


def _dr(curve: SeedCurve, full_acc: float) -> DiffusedRedundancy | None:
    f, mean = np.array(curve.fraction), np.array(curve.mean)
    sub = (f < 1.0) & (f > 0)
    if not sub.any():
        return None
    fr: Any  # arrays, which analysis's Sequence[float] parameters take (np.asarray)
    am: Any
    fr, am = f[sub], mean[sub]
    values = {rule: {d: A.diffused_redundancy(fr, am, full_acc, d, rule) for d in DELTAS} for rule in A.RULES}
    deltas, dr = A.dr_curve(fr, am, full_acc, "paper30", "nearest")
    return DiffusedRedundancy(values, deltas.tolist(), dr.tolist())


def _disparity(acc: list[ResultRow]) -> list[Disparity]:
    per_class: dict[float, list[list[float]]] = defaultdict(list)
    for r in acc:
        if r.per_class:
            per_class[r.fraction].append([np.nan if v is None else v for v in r.per_class])
    out = []
    for frac in sorted(per_class):
        pc = np.nanmean(np.array(per_class[frac], dtype=float), axis=0)
        pc = pc[np.isfinite(pc)]
        out.append(Disparity(frac, pc.tolist(), A.gini(pc), A.max_min(pc), A.coefficient_of_variation(pc),
                             float(np.mean([r.accuracy for r in acc if r.fraction == frac]))))
    return out


def _why_no_dr(rs: list[ResultRow], acc: list[ResultRow]) -> str:
    """Why a group has no DR, for the report."""
    if not acc:
        if any(r.diverged for r in rs):
            return "every probe head diverged"
        return "no probe has finished yet (its probe units have not run)"
    full = [r for r in rs if r.fraction == 1.0]
    if not any(r.accuracy is not None for r in full):
        if any(r.diverged for r in full):
            return "the full-layer head diverged, so there is no accuracy to compare with"
        return "the full-layer head's probe unit has not finished"
    if not any(0 < r.fraction < 1 for r in acc):
        return "no fraction strictly between 0 and 1 has a probe result"
    return "the full layer's accuracy is 0"


def depth_series(groups: list[GroupSummary], order: list[str]) -> dict[tuple[str, str], list[GroupSummary]]:
    """{(model, dataset): its random-subset groups in layer order} where a model has two layers or more."""
    by: dict[tuple[str, str], list[GroupSummary]] = {}
    for g in groups:
        if g.method == "random":
            by.setdefault((g.model, g.dataset), []).append(g)
    rank = {layer: i for i, layer in enumerate(order)}
    return {k: sorted(v, key=lambda g: rank.get(g.layer, len(rank))) for k, v in by.items() if len(v) > 1}
