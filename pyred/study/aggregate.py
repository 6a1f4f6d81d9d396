"""The study's measures, from the rows of one configuration: a pure function of the database.

Per (model, dataset, layer, method): mean +- population std of accuracy and
CKA per fraction, the full layer's accuracy, DR(delta) under both rules on the
paper's delta grid, and per-class disparity (Gini, max - min, CV) per fraction.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from .. import analysis as A
from .plan import ResultRow


def analyse(config_id: str, rows: list[ResultRow]) -> list[dict]:
    """One dict per (model, dataset, layer, method) of ``config_id`` (JSON-ready)."""
    groups: dict[tuple, list[ResultRow]] = defaultdict(list)
    for r in rows:
        groups[(r.model, r.dataset, r.layer, r.method)].append(r)
    return [_group(config_id, key, rs) for key, rs in sorted(groups.items())]


def _group(config_id: str, key: tuple, rs: list[ResultRow]) -> dict:
    model, dataset, layer, method = key
    g = {"config_id": config_id, "model": model, "dataset": dataset, "layer": layer, "method": method}
    acc = [r for r in rs if r.accuracy is not None]
    if acc:
        f, mean, std, n = A.seed_stats([r.fraction for r in acc], [r.accuracy for r in acc])
        g["accuracy"] = {"fraction": f.tolist(), "mean": mean.tolist(), "std": std.tolist(), "n": n.tolist()}
        full = [r.accuracy for r in acc if r.fraction == 1.0]
        sub = (f < 1.0) & (f > 0)
        if full and np.mean(full) > 0:
            g["full_accuracy"] = full_acc = float(np.mean(full))
            if sub.any():
                fr, am = f[sub], mean[sub]
                g["dr"] = {rule: {str(d): A.diffused_redundancy(fr, am, full_acc, d, rule) for d in (0.9, 0.95)}
                           for rule in A.RULES}
                deltas, curve = A.dr_curve(fr, am, full_acc, "paper30", "nearest")
                g["dr_curve"] = {"delta": deltas.tolist(), "dr": curve.tolist()}
        per_class = defaultdict(list)
        for r in acc:
            if r.per_class:
                per_class[r.fraction].append([np.nan if v is None else v for v in r.per_class])
        disparity = []
        for frac in sorted(per_class):
            pc = np.nanmean(np.array(per_class[frac], dtype=float), axis=0)
            pc = pc[np.isfinite(pc)]
            disparity.append({"fraction": frac, "per_class": pc.tolist(), "gini": A.gini(pc),
                              "max_min": A.max_min(pc), "cv": A.coefficient_of_variation(pc),
                              "accuracy": float(np.mean([r.accuracy for r in acc if r.fraction == frac]))})
        g["disparity"] = disparity
    diverged = [r for r in rs if r.diverged]
    if diverged:
        g["diverged"] = [{"fraction": r.fraction, "seed": r.seed, "kept_earlier_weights": r.accuracy is not None}
                         for r in diverged]
    if "dr" not in g:
        g["dr_missing"] = _why_no_dr(rs, acc)
    ck = [r for r in rs if r.cka is not None]
    if ck:
        f, mean, std, n = A.seed_stats([r.fraction for r in ck], [r.cka for r in ck])
        g["cka"] = {"fraction": f.tolist(), "mean": mean.tolist(), "std": std.tolist()}
    return g


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
