"""Runs a study: every (model, dataset) through features, CKA and probes, into the results database.

Work is cut into units (:mod:`pyred.study.plan`). Each finished unit is
committed with its rows at once (rank 0 writes the database; other ranks spool
their units to disk, see :mod:`pyred.study.spool`), so a killed run keeps every
unit it finished, and the next run with the same configuration skips them. A
lock keeps a second run off the same folder. At the end the report is
rewritten from the database.
"""

from __future__ import annotations

import dataclasses
import os
import platform
from collections.abc import Callable
from typing import Any, cast

from .._version import __version__
from . import spool
from .data import load_layer_data
from .distributed import Distributed
from .errors import StudyError, one_line
from .execute import run_unit
from .identity import ConfigIdentity, identity
from .lock import RunLock
from .plan import plan_units
from .report import analyse_folder, write_report
from .schema import StudyConfig
from .store import ResultStore, database
from .views import ViewCache


def run(cfg: StudyConfig, *, progress: bool = True, wait: bool = True,
        say: Callable[[str], object] | None = print, backbones: dict[str, Any] | None = None) -> str:
    """Runs every unit of ``cfg`` not finished yet; returns the study folder (which holds results.sqlite).

    backbones: {NAME: backbone object} for the models named ``module:NAME`` (``pyred.Backbone.from_module``
    or any pyred backbone): their features are extracted with that object, keyed by its weights digest.

    wait: when another run holds the folder, wait for it (True) or raise StudyError (False).
    say: where one-line messages go (``print``; None for silence).
    A run that stops on an error (or Ctrl-C) records it in the runs table, keeping every unit it finished.
    """
    say = say or (lambda *_: None)
    backbones = dict(backbones or {})
    missing = [m.name for m in cfg.models if m.is_module and m.name[len("module:"):] not in backbones]
    if missing:
        raise StudyError(f"backbones: {missing} name backbone objects; pass run(cfg, backbones={{NAME: "
                         f"pyred.Backbone.from_module(...)}}) for each")
    dist = Distributed.setup(cfg.device)
    out = os.path.abspath(cfg.out)
    ident = identity(cfg, backbones)
    cid = ident.id
    cfg = dataclasses.replace(cfg, device=dist.device_for(cfg.device),
                              head_chunks=max(cfg.head_chunks, dist.world))  # enough probe units for every rank
    lock = store = None
    run_id = None
    try:
        status: tuple[str, Any] = ("ok", set())  # ("ok", finished unit keys) or ("error", message)
        if dist.rank == 0:
            try:
                lock = RunLock(out, wait)
                store = ResultStore(database(out))
                spool.ingest(store, out)  # units other ranks finished before a kill
                run_id = store.start_run(cid, ident.to_json(), cfg.settings(), versions())
                status = ("ok", store.finished_units())
            except Exception as exc:  # every rank must learn that rank 0 stopped
                status = ("error", f"{exc}")
                if dist.world == 1:
                    raise
        status = dist.broadcast(status)
        if status[0] == "error":
            raise StudyError(f"rank 0 could not start the study: {status[1]}")
        skipped = _run_units(cfg, cid, ident, dist, store, status[1], progress and dist.rank == 0, say, backbones)
        dist.barrier()
        if store is not None:
            spool.ingest(store, out)
            store.finish_run(cast(int, run_id))  # set with store, on rank 0
            store.close()
            store = None
            if skipped:
                say(f"pyred: {skipped} finished units of configuration {cid} were already in {database(out)}; "
                    "skipped them")
            if cfg.report:
                write_report(out, config=cid)
            else:
                analyse_folder(out, config=cid)
    except BaseException as exc:
        if store is not None and run_id is not None:
            store.fail_run(run_id, "interrupted" if isinstance(exc, KeyboardInterrupt)
                           else f"{type(exc).__name__}: {one_line(exc)}")
        raise
    finally:
        if store is not None:
            store.close()
        if lock is not None:
            lock.release()
        dist.teardown()
    return out


def _run_units(cfg: StudyConfig, cid: str, ident: ConfigIdentity, dist: Distributed, store: ResultStore | None,
               finished: set[str], shown: bool, say: Callable[[str], object],
               backbones: dict[str, Any] | None = None) -> int:
    """Every unit of every (model, dataset) not in ``finished`` that falls to this rank; returns how many
    units were skipped as finished. Rank 0 (``store``) records each pair's plan and commits each unit."""
    out = os.path.abspath(cfg.out)
    skipped = 0
    reuse: dict[Any, Any] = {}  # the last network and its extracted layers, across its layer entries
    for pi, pair in enumerate(cfg.pairs()):
        mi, model, di, dataset, pcfg = pair.model_index, pair.model, pair.dataset_index, pair.dataset, pair.cfg
        given = (backbones or {}).get(model.name[len("module:"):]) if model.is_module else None
        data = load_layer_data(pcfg, model, dataset, dist, shown, ident.models[mi].features_sha256, given, reuse)
        views = ViewCache(data.X_train, data.dim, data.fit_features)
        units = plan_units(pcfg, cid, data, pair.method_tag)
        if store is not None:  # (model i, dataset j): names may repeat, places do not
            where = f"{mi}|{di}|{data.model}|{data.dataset}" + (f"|{pi}" if cfg.paper is not None else "")
            store.plan(cid, where, [(u.key, u.label) for u in units])
        skipped += sum(u.key in finished for u in units)
        for i, unit in enumerate(units):
            if i % dist.world != dist.rank or unit.key in finished:
                continue
            rows = run_unit(pcfg, unit, data, views, shown)
            diverged = sum(bool(r.diverged) for r in rows)
            if diverged:
                say(f"pyred: {diverged} of {len(rows)} probe heads of {unit.label} diverged (their training "
                    "loss became NaN or infinite); the report lists them")
            if store is not None:
                store.commit_unit(unit.key, cid, unit.label, rows, unit.fields)
                spool.ingest(store, out)
            else:
                spool.write(out, cid, unit, rows)
            finished.add(unit.key)  # a run that two of the paper's scripts share is done once
    return skipped


def versions() -> dict[str, Any]:
    import numpy as np
    import timm
    import torch

    import pyred

    info = pyred.native_info()
    return {"pyred": __version__, "torch": torch.__version__, "timm": timm.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "cuda_kernels": info["cuda_device_usable"],
            "cpu_kernels": info["cpu_module"]}
