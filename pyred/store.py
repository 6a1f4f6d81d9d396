"""The results database of a sweep: SQLite, one row per (model, dataset, layer, method, fraction, seed).

A work unit's rows and the record that the unit is finished are written in one
transaction, so a run killed at any moment (SIGKILL included) loses no finished
unit and never holds half of one; resuming skips finished units and cannot
duplicate a row (the key above is the table's primary key).
"""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import time
from typing import Any, Iterable

COLUMNS = ("model", "dataset", "layer", "method", "fraction", "seed", "k", "accuracy", "per_class", "cka")
KEY = COLUMNS[:6]

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
  model TEXT NOT NULL, dataset TEXT NOT NULL, layer TEXT NOT NULL, method TEXT NOT NULL,
  fraction REAL NOT NULL, seed INTEGER NOT NULL, k INTEGER NOT NULL,
  accuracy REAL, per_class TEXT, cka REAL,
  PRIMARY KEY (model, dataset, layer, method, fraction, seed));
CREATE TABLE IF NOT EXISTS units (unit TEXT PRIMARY KEY, finished_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY AUTOINCREMENT, started_at REAL NOT NULL,
  config TEXT NOT NULL, versions TEXT NOT NULL);
"""


class ResultStore:
    """``results.sqlite`` in a run folder."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def log_run(self, config: dict, versions: dict) -> None:
        with self._tx():
            self.db.execute("INSERT INTO runs (started_at, config, versions) VALUES (?, ?, ?)",
                            (time.time(), json.dumps(config, sort_keys=True), json.dumps(versions, sort_keys=True)))

    def finished(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT unit FROM units")}

    def commit_unit(self, unit: str, rows: Iterable[dict], fields: tuple[str, ...]) -> None:
        """Upserts ``fields`` of ``rows`` and marks ``unit`` finished, atomically."""
        cols = KEY + ("k",) + tuple(f for f in fields if f not in KEY + ("k",))
        update = ", ".join(f"{c}=excluded.{c}" for c in cols if c not in KEY)
        sql = (f"INSERT INTO results ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
               f"ON CONFLICT ({', '.join(KEY)}) DO UPDATE SET {update}")
        with self._tx():
            self.db.executemany(sql, [tuple(_cell(r[c]) for c in cols) for r in rows])
            self.db.execute("INSERT INTO units (unit, finished_at) VALUES (?, ?)", (unit, time.time()))

    def rows(self, where: str = "", params: tuple = ()) -> list[dict]:
        cur = self.db.execute(f"SELECT {', '.join(COLUMNS)} FROM results {where} "
                              "ORDER BY model, dataset, layer, method, fraction, seed", params)
        out = []
        for r in cur:
            d = dict(zip(COLUMNS, r))
            d["per_class"] = json.loads(d["per_class"]) if d["per_class"] else None
            out.append(d)
        return out

    def export_csv(self, path: str | os.PathLike) -> str:
        path = os.fspath(path)
        tmp = path + ".tmp"
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(COLUMNS)
            for r in self.rows():
                w.writerow([json.dumps(r[c]) if c == "per_class" and r[c] is not None else r[c] for c in COLUMNS])
        os.replace(tmp, path)
        return path

    def export_parquet(self, path: str | os.PathLike) -> str:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise RuntimeError("Parquet export needs pyarrow: pip install pyarrow") from exc
        rows = self.rows()
        table = pa.table({c: [json.dumps(r[c]) if c == "per_class" and r[c] is not None else r[c] for r in rows]
                          for c in COLUMNS})
        path = os.fspath(path)
        pq.write_table(table, path + ".tmp")
        os.replace(path + ".tmp", path)
        return path

    def _tx(self):
        return _Transaction(self.db)


class _Transaction:
    def __init__(self, db):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb):
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
        return False


def _cell(v: Any):
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v)
    if hasattr(v, "item"):
        return v.item()
    return v
