"""Runs one unit of a study: CKA of every subset with the full layer, or a chunk of probe heads."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from .._files import digest
from .data import LayerData
from .plan import ResultRow, Unit
from .schema import StudyConfig
from .views import ViewCache

if TYPE_CHECKING:
    from ..probes.result import ProbeResult
    from ..subsets import Subsets


def head_init_seed(method: str, fraction: float, seed: int, tag: str = "") -> int:
    """The seed of a head's ``nn.Linear`` initialisation: fixed by what the head is (method, fraction,
    subset seed), not by its place in the grid -- so adding seeds, reordering fractions or cutting the
    heads into other chunks leaves every head's numbers as they were."""
    return int(digest([method, float(fraction), int(seed), tag], 15), 16) % (2**31)


def run_unit(cfg: StudyConfig, unit: Unit, data: LayerData, views: ViewCache, progress: bool) -> list[ResultRow]:
    from ..cka import subset_cka
    from ..probes import RECIPES

    S, heads = unit.subsets, list(unit.heads)
    rows = [ResultRow(data.model, data.dataset, data.layer, unit.method, float(S.fractions[k]), int(S.seeds[k]),
                      int(S.sizes[k])) for k in heads]
    if unit.kind == "cka":
        n = cfg.cka_samples
        X = torch.as_tensor(np.array(data.X_test[:n]))  # a writable copy of the first n test samples
        Z = X if unit.view is None else torch.as_tensor(views.apply(unit.view, data.X_test[:n]))
        if cfg.device:
            X, Z = X.to(cfg.device), Z.to(cfg.device)
        # CKA of each subset of the view with the full layer itself
        values = subset_cka(Z, S, target=None if unit.view is None else X, debiased=cfg.cka_debiased).cpu().numpy()
        for r, k in zip(rows, heads):
            r.cka = float(values[k])
        return rows
    part = S[heads[0]:heads[-1] + 1]
    recipe = RECIPES[cfg.recipe]
    num_classes = len(data.class_names) if data.class_names else int(np.max(data.y_train)) + 1
    options = recipe.for_chunk(cfg.options_for(data.model, data.dataset_name),  # the user's over the paper's
                               S, data.dim, torch.device(cfg.device or "cpu"), num_classes,
                               [head_init_seed(unit.method, r.fraction, r.seed) for r in rows])
    X_val = None if data.X_val is None else views.apply(unit.view, data.X_val)
    y_val = None if data.y_val is None else np.asarray(data.y_val)
    with warnings.catch_warnings():  # a diverged head is recorded in its row and reported, not warned about here
        warnings.filterwarnings("ignore", message="train_probes: .* heads diverged", category=RuntimeWarning)
        res = _train(cfg, data, views, unit, part, options, X_val, y_val, progress)
    ev = res.evaluate(views.apply(unit.view, data.X_test), np.asarray(data.y_test))
    for j, r in enumerate(rows):
        acc = float(ev.accuracy[j])
        r.accuracy = acc if np.isfinite(acc) else None  # a head without finite weights has no accuracy
        r.per_class = None if r.accuracy is None else [None if np.isnan(v) else float(v)
                                                       for v in np.asarray(ev.per_class_accuracy[j])]
        r.diverged = bool(cast(torch.Tensor, res.diverged)[j])  # never None: ProbeResult.__post_init__ sets it
    return rows


def _train(cfg: StudyConfig, data: LayerData, views: ViewCache, unit: Unit, part: Subsets, options: dict[str, Any],
           X_val: Any, y_val: Any, progress: bool) -> ProbeResult:
    from ..probes import RECIPES, train_probes

    if data.stream is not None:  # protocol "paper": augmented batches through the backbone, all heads at once
        bs = RECIPES[cfg.recipe].batch_size(options)
        P = None if unit.view is None else views.matrix(unit.view)  # the view's basis, applied to each batch
        stream = data.stream(bs, P, unit.stream_seed)
        if data.val_stream is not None:  # validation with the training augmentation, drawn anew at each evaluation
            X_val, y_val = data.val_stream(bs, P), None
        return train_probes(stream, None, part, recipe=cfg.recipe, X_val=X_val, y_val=y_val, progress=progress,
                            **options)
    X_train = views.apply(unit.view, data.X_train)
    return train_probes(X_train, np.asarray(data.y_train), part, recipe=cfg.recipe, X_val=X_val, y_val=y_val,
                        device=cfg.device, progress=progress, **options)
