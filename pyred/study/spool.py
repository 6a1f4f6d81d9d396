"""Finished units of ranks other than 0, on their way to the database.

Under torch.distributed only rank 0 writes ``results.sqlite``. Another rank
writes each unit it finishes to DIR/spool/<unit>.json (atomically) at once;
rank 0 moves spooled units into the database as it goes, at the end, and at
the start of the next run -- so a unit finished on any rank survives a kill.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings

from .._files import remove, write_json
from .plan import ResultRow, Unit
from .store import ResultStore


def folder(out: str) -> str:
    return os.path.join(out, "spool")


def write(out: str, config_id: str, unit: Unit, rows: list[ResultRow]) -> None:
    os.makedirs(folder(out), exist_ok=True)
    write_json(os.path.join(folder(out), f"{unit.key}.json"),
               {"unit": unit.key, "config_id": config_id, "label": unit.label, "fields": list(unit.fields),
                "rows": [dataclasses.asdict(r) for r in rows]})


def ingest(store: ResultStore, out: str) -> int:
    """Commits every complete spooled unit to ``store`` and removes its file; returns how many."""
    d = folder(out)
    if not os.path.isdir(d):
        return 0
    n = 0
    for name in sorted(os.listdir(d)):
        if not name.endswith(".json"):
            continue  # a temporary file of a write in progress (or killed mid-way)
        path = os.path.join(d, name)
        try:
            with open(path) as f:
                doc = json.load(f)
            rows = [ResultRow(**r) for r in doc["rows"]]
            unit, config_id, label, fields = doc["unit"], doc["config_id"], doc["label"], tuple(doc["fields"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # Written whole or not at all, so damage came from outside: the unit is simply computed again.
            os.replace(path, path + ".damaged")
            warnings.warn(f"pyred: spooled unit {path} is damaged ({type(exc).__name__}: {exc}); it is kept as "
                          f"{name}.damaged and the unit will be computed again", RuntimeWarning, stacklevel=2)
            continue
        store.commit_unit(unit, config_id, label, rows, fields)
        remove(path)
        n += 1
    return n
