"""How a study picks the k features each probe reads: one entry per method in ``METHODS``.

A method turns (the config, the layer width d) into plans: a view of the layer
(None for the layer itself) and the subsets of that view's columns to probe.
Adding a method is one function and one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch

from ..subsets import Subsets, draw_subsets
from .views import PCAView, ProjectionView, View

if TYPE_CHECKING:
    from .schema import StudyConfig


@dataclass(frozen=True)
class Plan:
    """Probe the columns ``subsets`` of ``view`` (None: the layer itself); ``tag`` tells plans of one method apart."""

    view: View | None
    subsets: Subsets
    tag: str = ""


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    # (StudyConfig, d) -> [Plan]; the config's fractions are resolved (not None): plan_units passes the model's grid
    plans: Callable[[StudyConfig, int], list[Plan]]
    needs_train_features: bool = False  # its view is fitted on (or applied to) the training features


def _fractions_with_full(cfg: StudyConfig) -> list[float]:
    return sorted(set(cast("tuple[float, ...]", cfg.fractions)) | {1.0})


def _grid(cfg: StudyConfig, d: int, with_full: bool) -> dict[str, list[float] | list[int]]:
    """draw_subsets' grid argument: the absolute ``sizes`` when the config gives them, else its fractions;
    with the full layer when ``with_full``."""
    if cfg.sizes is not None:
        too_big = [k for k in cfg.sizes if k > d]
        if too_big:
            raise ValueError(f"sizes: {too_big} exceed the layer's {d} features")
        return {"sizes": sorted(set(cfg.sizes) | ({d} if with_full else set()))}
    fracs = sorted(set(cast("tuple[float, ...]", cfg.fractions)))
    return {"fractions": _fractions_with_full(cfg) if with_full else fracs}


def _random(cfg: StudyConfig, d: int) -> list[Plan]:
    grid = draw_subsets(d, seeds=sorted(set(cfg.seeds)), **_grid(cfg, d, False))  # type: ignore[arg-type]
    full = d in cfg.sizes if cfg.sizes is not None else 1.0 in cast("tuple[float, ...]", cfg.fractions)
    if not full:
        grid = Subsets.concat([grid, draw_subsets(d, [1.0], [cfg.full_layer_seed])])
    return [Plan(None, grid)]


def _first(cfg: StudyConfig, d: int) -> list[Plan]:
    return [Plan(None, draw_subsets(d, mode="first", **_grid(cfg, d, True)))]  # type: ignore[arg-type]


def _pca_top(cfg: StudyConfig, d: int) -> list[Plan]:
    return [Plan(PCAView(), draw_subsets(d, mode="first", **_grid(cfg, d, True)))]  # type: ignore[arg-type]


def _pca_bottom(cfg: StudyConfig, d: int) -> list[Plan]:
    top = draw_subsets(d, mode="first", **_grid(cfg, d, True))  # type: ignore[arg-type]
    S = Subsets.from_lists([list(range(d - int(k), d)) for k in top.sizes], d=d)
    return [Plan(PCAView(), S.with_metadata(fractions=top.fractions))]


def _projections(kind: str) -> Callable[[StudyConfig, int], list[Plan]]:
    def plans(cfg: StudyConfig, d: int) -> list[Plan]:
        out = []
        for seed in sorted(set(cfg.seeds)):
            S = draw_subsets(d, mode="first", **_grid(cfg, d, True))  # type: ignore[arg-type]
            out.append(Plan(ProjectionView(int(seed), kind), S.with_metadata(seeds=torch.full((len(S),), int(seed))),
                            tag=f"seed{seed}"))
        return out

    return plans


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("random", "the paper's random subsets: seed s -> manual_seed(s), randperm(d), first int(f d)", _random),
    Method("first", "neurons 0..k-1 (the paper's MRL runs)", _first),
    Method("pca", "the top-k exact principal directions of the training features", _pca_top, True),
    Method("pca-bottom", "the bottom-k principal directions", _pca_bottom, True),
    Method("randproj", "k columns of a Gaussian random projection per seed", _projections("gaussian"), True),
    Method("randproj-uniform", "k columns of the authors' non-negative uniform projection per seed",
           _projections("uniform"), True),
)}
