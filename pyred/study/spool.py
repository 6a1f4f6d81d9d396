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
        with open(path) as f:
            doc = json.load(f)
        store.commit_unit(doc["unit"], doc["config_id"], doc["label"], [ResultRow(**r) for r in doc["rows"]],
                          tuple(doc["fields"]))
        remove(path)
        n += 1
    return n
