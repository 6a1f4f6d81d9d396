"""A study cut into units of work, and the rows they produce.

Per (model, dataset) and per method's plan: one CKA unit (every subset's CKA
with the full layer) and ``head_chunks`` probe units (a slice of the heads
each). A unit's key is a digest of everything its numbers depend on -- the
configuration's identity, where the features came from, the method, view and
subsets, and which heads -- so a finished unit is skipped only when nothing
that changes it changed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._files import digest, sha256_parts
from ..subsets import Subsets
from .data import LayerData
from .methods import METHODS
from .schema import StudyConfig
from .views import View


@dataclass(frozen=True)
class Unit:
    key: str
    kind: str  # "cka" or "probes"
    method: str
    view: View | None
    subsets: Subsets  # the plan's Subsets (all heads; this unit covers ``heads``)
    heads: range
    label: str  # for people: model|dataset|layer|method[|tag]|kind[ c/C]
    stream_seed: int = 0  # protocol "paper": the seed of the augmented stream these heads train on

    @property
    def fields(self) -> tuple[str, ...]:
        return ("cka",) if self.kind == "cka" else ("accuracy", "per_class", "diverged")


@dataclass
class ResultRow:
    """One (model, dataset, layer, method, fraction, seed) of a configuration."""

    model: str
    dataset: str
    layer: str
    method: str
    fraction: float
    seed: int
    k: int
    accuracy: float | None = None
    per_class: list[float | None] | None = field(default=None)
    cka: float | None = None
    diverged: bool | None = None  # the probe's training loss became NaN/Inf (its accuracy is None unless it
    #                               kept weights from before)


def plan_units(cfg: StudyConfig, cfg_id: str, data: LayerData, method_tag: str = "") -> list[Unit]:
    """The units of one (model, dataset) under ``cfg``; ``method_tag`` follows the method's name in their
    rows (see :class:`~pyred.study.schema.Pair`)."""
    units = []
    grid = cfg if cfg.sizes is not None else dataclasses.replace(cfg, fractions=cfg.fractions_for(data.model))
    for method in sorted(set(cfg.methods)):
        for plan in METHODS[method].plans(grid, data.dim):
            name = method + method_tag
            base = "|".join(filter(None, (data.model, data.dataset, data.layer, name, plan.tag)))
            S = plan.subsets
            lists = sha256_parts((S.indices.cpu().numpy().tobytes(), S.offsets.cpu().numpy().tobytes()))
            view = plan.view.describe() if plan.view else None
            what: list[Any] = [cfg_id, data.identity, method, view, plan.tag, lists]
            if cfg.paper is not None:  # one configuration holds runs of several recipes (the experiment's)
                what.append(sorted(cfg.recipe_options.items()))
            if cfg.cka:
                units.append(Unit(digest(what + ["cka"], 20), "cka", name, plan.view, S, range(len(S)),
                                  f"{base}|cka"))
            units += _probe_units(cfg, S, what, name, plan.view, base)
    return units


def _probe_units(cfg: StudyConfig, S: Subsets, what: list[Any], name: str, view: View | None,
                 base: str) -> list[Unit]:
    """``head_chunks`` units over the heads of S; under ``stream_seeds = "per-seed"`` one unit per training
    seed (S reordered so that each seed's heads are contiguous), each on its own seed's stream."""
    if cfg.protocol == "paper" and cfg.stream_seeds == "per-seed":
        seeds = S.seeds.tolist()
        fallback = min(cfg.seeds)  # heads of no seed ("first", PCA): the run's first seed
        order = sorted(range(len(S)), key=lambda k: (fallback if seeds[k] < 0 else seeds[k], k))
        S = Subsets.from_lists([S[k] for k in order], d=S.d).with_metadata(
            fractions=S.fractions[order], seeds=S.seeds[order])
        by_seed: dict[int, list[int]] = {}
        for k, s in enumerate(S.seeds.tolist()):
            by_seed.setdefault(fallback if s < 0 else s, []).append(k)
        return [Unit(digest(what + ["probes", ks[0], ks[-1] + 1, "stream seed", s], 20), "probes", name, view, S,
                     range(ks[0], ks[-1] + 1), f"{base}|probes seed {s}", s) for s, ks in by_seed.items()]
    bounds = np.linspace(0, len(S), min(cfg.head_chunks, len(S)) + 1).astype(int)
    chunks = len(bounds) - 1
    out = []
    for c in range(chunks):
        heads = range(int(bounds[c]), int(bounds[c + 1]))
        out.append(Unit(digest(what + ["probes", heads.start, heads.stop], 20), "probes", name, view, S, heads,
                        f"{base}|probes {c + 1}/{chunks}"))
    return out
