"""The results database of a study folder: ``results.sqlite``.

Tables (schema version ``SCHEMA_VERSION``, tagged with ``APPLICATION_ID`` so a
foreign or older database is refused, not misread):

* ``configs``: one row per configuration (its id is the digest of its
  canonical identity, see :mod:`pyred.study.config`), with that identity and
  when it last ran;
* ``runs``: every ``pyred run``: its configuration, all its settings, versions;
* ``units``: finished units of work (key, configuration, label);
* ``results``: one row per (configuration, model, dataset, layer, method,
  fraction, seed) with k, accuracy, per-class accuracies and CKA.

A unit's rows and its "finished" record are written in one transaction, so a
run killed at any moment (SIGKILL included) loses no finished unit and never
holds half of one. Rows of different configurations never overwrite each other.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import sqlite3
import time
from typing import Any, Iterable

from .._files import atomic_write
from .errors import StudyError
from .plan import ResultRow

SCHEMA_VERSION = 2
APPLICATION_ID = 0x70797264  # "pyrd"
KEY = ("model", "dataset", "layer", "method", "fraction", "seed")
COLUMNS = KEY + ("k", "accuracy", "per_class", "cka")

SCHEMA = """
CREATE TABLE configs (id TEXT PRIMARY KEY, identity TEXT NOT NULL, first_run REAL NOT NULL, last_run REAL NOT NULL);
CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, config_id TEXT NOT NULL REFERENCES configs(id),
  started_at REAL NOT NULL, finished_at REAL, settings TEXT NOT NULL, versions TEXT NOT NULL);
CREATE TABLE units (unit TEXT PRIMARY KEY, config_id TEXT NOT NULL REFERENCES configs(id), label TEXT NOT NULL,
  finished_at REAL NOT NULL);
CREATE TABLE results (config_id TEXT NOT NULL REFERENCES configs(id),
  model TEXT NOT NULL, dataset TEXT NOT NULL, layer TEXT NOT NULL, method TEXT NOT NULL,
  fraction REAL NOT NULL, seed INTEGER NOT NULL, k INTEGER NOT NULL,
  accuracy REAL, per_class TEXT, cka REAL,
  PRIMARY KEY (config_id, model, dataset, layer, method, fraction, seed));
"""


@dataclasses.dataclass(frozen=True)
class ConfigInfo:
    id: str
    identity: dict
    first_run: float
    last_run: float
    rows: int
    runs: int


class ResultStore:
    """``results.sqlite`` of a study folder. ``create=False`` refuses a missing database."""

    def __init__(self, path: str | os.PathLike, create: bool = True):
        self.path = os.fspath(path)
        exists = os.path.exists(self.path)
        if not exists and not create:
            raise StudyError(f"no results database at {self.path} (run 'pyred run' first)")
        try:
            self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self._check(exists)
        except sqlite3.DatabaseError as exc:
            raise StudyError(f"{self.path} is not a readable pyred results database ({exc}); move it away and "
                             "re-run, or point --out at another folder") from None

    def _check(self, existed: bool) -> None:
        db = self.db
        app, version = db.execute("PRAGMA application_id").fetchone()[0], db.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if app == 0 and not tables:  # new (or empty) file: ours to create
            db.execute("PRAGMA journal_mode=WAL")
            with self._tx():
                for statement in filter(str.strip, SCHEMA.split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        elif app != APPLICATION_ID:
            if {"results", "units", "runs"} <= tables:
                raise StudyError(f"{self.path} was written by an older pyred (schema 1, before configurations were "
                                 "recorded); its rows cannot be told apart by configuration. Move it away (or use "
                                 "another --out) and re-run")
            raise StudyError(f"{self.path} is not a pyred results database (it holds tables {sorted(tables)})")
        elif version != SCHEMA_VERSION:
            raise StudyError(f"{self.path} has pyred schema version {version}, this pyred reads version "
                             f"{SCHEMA_VERSION}; use the pyred that wrote it, or another --out")
        check = [r[0] for r in db.execute("PRAGMA quick_check")]
        if check != ["ok"]:
            raise StudyError(f"{self.path} is damaged (sqlite quick_check: {'; '.join(check[:3])}); move it away "
                             "and re-run, finished units will be recomputed")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")

    def close(self) -> None:
        self.db.close()

    # -- writing ---------------------------------------------------------------------------
    def start_run(self, config_id: str, identity: dict, settings: dict, versions: dict) -> int:
        now = time.time()
        with self._tx():
            self.db.execute("INSERT INTO configs (id, identity, first_run, last_run) VALUES (?, ?, ?, ?) "
                            "ON CONFLICT (id) DO UPDATE SET last_run = excluded.last_run",
                            (config_id, json.dumps(identity, sort_keys=True), now, now))
            cur = self.db.execute("INSERT INTO runs (config_id, started_at, settings, versions) VALUES (?, ?, ?, ?)",
                                  (config_id, now, json.dumps(settings, sort_keys=True),
                                   json.dumps(versions, sort_keys=True)))
        return int(cur.lastrowid)

    def finish_run(self, run_id: int) -> None:
        with self._tx():
            self.db.execute("UPDATE runs SET finished_at = ? WHERE id = ?", (time.time(), run_id))

    def finished_units(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT unit FROM units")}

    def commit_unit(self, unit: str, config_id: str, label: str, rows: Iterable[ResultRow],
                    fields: tuple[str, ...]) -> bool:
        """Upserts ``fields`` of ``rows`` under ``config_id`` and marks ``unit`` finished, atomically.
        Returns False (and writes nothing) when the unit was already finished."""
        cols = ("config_id",) + KEY + ("k",) + tuple(fields)
        update = ", ".join(f"{c}=excluded.{c}" for c in ("k",) + tuple(fields))
        sql = (f"INSERT INTO results ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
               f"ON CONFLICT (config_id, {', '.join(KEY)}) DO UPDATE SET {update}")
        with self._tx():
            if self.db.execute("SELECT 1 FROM units WHERE unit = ?", (unit,)).fetchone():
                return False
            self.db.executemany(sql, [(config_id,) + tuple(_cell(getattr(r, c)) for c in cols[1:]) for r in rows])
            self.db.execute("INSERT INTO units (unit, config_id, label, finished_at) VALUES (?, ?, ?, ?)",
                            (unit, config_id, label, time.time()))
        return True

    # -- reading ---------------------------------------------------------------------------
    def configs(self) -> list[ConfigInfo]:
        """Every configuration, the most recently run first."""
        cur = self.db.execute(
            "SELECT c.id, c.identity, c.first_run, c.last_run, "
            "(SELECT COUNT(*) FROM results r WHERE r.config_id = c.id), "
            "(SELECT COUNT(*) FROM runs u WHERE u.config_id = c.id) FROM configs c ORDER BY c.last_run DESC")
        return [ConfigInfo(i, json.loads(ident), f, last, n, runs) for i, ident, f, last, n, runs in cur]

    def resolve(self, config: str | None = None, all_configs: bool = False) -> list[str]:
        """The configuration ids to read: all, the one ``config`` names (a unique id prefix), or the latest."""
        infos = self.configs()
        if not infos:
            raise StudyError(f"{self.path} holds no results yet (run 'pyred run' first)")
        if all_configs:
            return [c.id for c in infos]
        if config is None:
            return [infos[0].id]
        hits = [c.id for c in infos if c.id.startswith(config)]
        if len(hits) != 1:
            known = ", ".join(c.id for c in infos)
            raise StudyError(f"--config: {config!r} matches {'no' if not hits else len(hits)} configurations "
                             f"(known: {known}; 'pyred runs DIR' lists them)")
        return hits

    def rows(self, config_id: str) -> list[ResultRow]:
        cur = self.db.execute(f"SELECT {', '.join(COLUMNS)} FROM results WHERE config_id = ? "
                              "ORDER BY model, dataset, layer, method, fraction, seed", (config_id,))
        out = []
        for r in cur:
            d = dict(zip(COLUMNS, r))
            d["per_class"] = json.loads(d["per_class"]) if d["per_class"] else None
            out.append(ResultRow(**d))
        return out

    def cache_dirs(self) -> set[str]:
        """The feature-cache folders that runs into this folder used."""
        out = set()
        for (settings,) in self.db.execute("SELECT settings FROM runs"):
            s = json.loads(settings)
            out.add(os.path.abspath(s.get("cache_dir") or os.path.join(s.get("out", "."), "cache")))
        return out

    # -- export ----------------------------------------------------------------------------
    def export_csv(self, path: str, config_ids: list[str]) -> str:
        with atomic_write(path, newline="") as f:
            w = csv.writer(f)
            w.writerow(("config_id",) + COLUMNS)
            for cid in config_ids:
                for r in self.rows(cid):
                    w.writerow([cid] + [_text(getattr(r, c), c) for c in COLUMNS])
        return path

    def export_parquet(self, path: str, config_ids: list[str]) -> str:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise StudyError("Parquet export needs pyarrow: pip install pyarrow") from exc
        rows = [(cid, r) for cid in config_ids for r in self.rows(cid)]
        table = pa.table({"config_id": [cid for cid, _ in rows],
                          **{c: [_text(getattr(r, c), c) for _, r in rows] for c in COLUMNS}})
        with atomic_write(path, "wb") as f:
            pq.write_table(table, f)
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
    return v


def _text(v: Any, column: str):
    return json.dumps(v) if column == "per_class" and v is not None else v
