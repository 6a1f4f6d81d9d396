"""The results database of a study folder: ``results.sqlite``.

Tables (schema version ``SCHEMA_VERSION``, tagged with ``APPLICATION_ID`` so a
foreign or older database is refused, not misread):

* ``configs``: one row per configuration (its id is the digest of its
  canonical identity, see :mod:`pyred.study.identity`), with that identity and
  when it last ran;
* ``runs``: every ``pyred run``: its configuration, all its settings, versions,
  when it finished, or the error that stopped it;
* ``planned``: the units of work each (model, dataset) of a configuration was cut
  into when it was last planned -- what "done" is counted against;
* ``units``: finished units of work (key, configuration, label);
* ``results``: one row per (configuration, model, dataset, layer, method,
  fraction, seed) with k, accuracy, per-class accuracies, CKA, and whether the
  probe diverged.

A unit's rows and its "finished" record are written in one transaction, so a
run killed at any moment (SIGKILL included) loses no finished unit and never
holds half of one. Rows of different configurations never overwrite each other.

Readers (``pyred report``, ``export``, ``runs``) open the database read-only
(:meth:`ResultStore.read`): they never write to it -- not even a schema into an
empty file -- and work on a read-only folder (an archive, a shared mount). A
database of the previous schema is upgraded in place by a writer and in memory
by a reader.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterable
from types import TracebackType
from typing import IO, Any, Literal, cast
from urllib.parse import quote

from .errors import StudyError
from .identity import ConfigIdentity
from .plan import ResultRow

SCHEMA_VERSION = 3
APPLICATION_ID = 0x70797264  # "pyrd"
KEY = ("model", "dataset", "layer", "method", "fraction", "seed")
COLUMNS = KEY + ("k", "accuracy", "per_class", "cka", "diverged")

SCHEMA = """
CREATE TABLE configs (id TEXT PRIMARY KEY, identity TEXT NOT NULL, first_run REAL NOT NULL, last_run REAL NOT NULL);
CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, config_id TEXT NOT NULL REFERENCES configs(id),
  started_at REAL NOT NULL, finished_at REAL, settings TEXT NOT NULL, versions TEXT NOT NULL, error TEXT);
CREATE TABLE planned (unit TEXT NOT NULL, config_id TEXT NOT NULL REFERENCES configs(id), pair TEXT NOT NULL,
  label TEXT NOT NULL, PRIMARY KEY (config_id, unit));
CREATE TABLE units (unit TEXT PRIMARY KEY, config_id TEXT NOT NULL REFERENCES configs(id), label TEXT NOT NULL,
  finished_at REAL NOT NULL);
CREATE TABLE results (config_id TEXT NOT NULL REFERENCES configs(id),
  model TEXT NOT NULL, dataset TEXT NOT NULL, layer TEXT NOT NULL, method TEXT NOT NULL,
  fraction REAL NOT NULL, seed INTEGER NOT NULL, k INTEGER NOT NULL,
  accuracy REAL, per_class TEXT, cka REAL, diverged INTEGER,
  PRIMARY KEY (config_id, model, dataset, layer, method, fraction, seed));
"""

# What turns a database of schema version v into v + 1.
MIGRATIONS = {
    2: """
ALTER TABLE runs ADD COLUMN error TEXT;
ALTER TABLE results ADD COLUMN diverged INTEGER;
CREATE TABLE planned (unit TEXT NOT NULL, config_id TEXT NOT NULL REFERENCES configs(id), pair TEXT NOT NULL,
  label TEXT NOT NULL, PRIMARY KEY (config_id, unit));
""",
}


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """One ``pyred run`` of a configuration: when it started and finished, or what stopped it."""

    id: int
    started_at: float
    finished_at: float | None
    error: str | None

    @property
    def status(self) -> str:
        if self.error:
            return f"failed: {self.error}"
        return "finished" if self.finished_at is not None else "did not finish (still running, or killed)"


@dataclasses.dataclass(frozen=True)
class ConfigInfo:
    """A configuration and how far its runs got. ``units_planned`` counts the units of the (model,
    dataset) pairs planned so far (``pairs_planned`` of ``pairs``); ``units_done`` those finished."""

    id: str
    identity: ConfigIdentity
    first_run: float
    last_run: float
    rows: int
    runs: list[RunInfo]
    units_done: int
    units_planned: int
    pairs_planned: int
    units_recorded: int = 0  # finished units, planned or not (a database from before plans were kept)

    @property
    def pairs(self) -> int:
        return self.identity.pairs

    @property
    def complete(self) -> bool:
        return self.pairs_planned >= self.pairs and self.units_done >= self.units_planned > 0

    @property
    def has_results(self) -> bool:
        """Whether any of its units finished (what makes it a candidate for the latest to read)."""
        return bool(self.units_recorded or self.rows)

    @property
    def last_error(self) -> str | None:
        return self.runs[-1].error if self.runs else None

    def progress(self) -> str:
        """For people: "complete (20/20 units)", or how far it got and why it stopped."""
        if self.complete:
            return f"complete ({self.units_done}/{self.units_planned} units)"
        if not self.units_planned and self.units_recorded:
            return f"{self.units_recorded} units finished (planned by an older pyred: completeness not recorded)"
        text = f"incomplete: {self.units_done}/{self.units_planned} units finished"
        if self.pairs_planned < self.pairs:
            missing = self.pairs - self.pairs_planned
            text += f", {missing} of {self.pairs} (model, dataset) pairs not reached yet"
        if self.runs:
            text += f"; last run {self.runs[-1].status}"
        return text


def database(out: str) -> str:
    """The results database of the study folder ``out``."""
    return os.path.join(out, "results.sqlite")


def writable(folder: str) -> bool:
    """Whether files can be created in ``folder`` (a read-only mount or folder says no)."""
    return os.access(folder, os.W_OK)


class ResultStore:
    """``results.sqlite`` of a study folder, for a run (which writes it): creates it when missing and
    upgrades an older schema. ``create=False`` refuses a missing database. Readers use :meth:`read`."""

    def __init__(self, path: str | os.PathLike[str], create: bool = True):
        self.path = os.fspath(path)
        self.readonly = False
        self._tmp: str | None = None
        self._db: sqlite3.Connection | None = None
        exists = os.path.exists(self.path)
        if not exists and not create:
            raise StudyError(f"no results database at {self.path} (run 'pyred run' first)")
        try:
            self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self._check(writer=True)
        except sqlite3.DatabaseError as exc:
            raise StudyError(f"{self.path} is not a readable pyred results database ({exc}); move it away and "
                             "re-run, or point --out at another folder") from None

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> ResultStore:
        """The database opened for reading only: nothing is ever written to it or beside it. In a folder
        that cannot be written, a database left with a write-ahead log (a killed run) is read from a
        temporary copy that replays the log; an older schema is upgraded in a copy in memory."""
        self = cls.__new__(cls)
        self.path, self.readonly, self._tmp, self._db = os.fspath(path), True, None, None
        if not os.path.isfile(self.path):
            raise StudyError(f"no results database at {self.path} (run 'pyred run' first)")
        if os.path.getsize(self.path) == 0:
            raise StudyError(f"{self.path} is empty (0 bytes): not a pyred results database; move it away and "
                             "re-run")
        try:
            self._db = self._connect_readonly()
            self._check(writer=False)
        except sqlite3.DatabaseError as exc:
            self.close()
            raise StudyError(f"{self.path} is not a readable pyred results database ({exc}); move it away and "
                             "re-run, or point --out at another folder") from None
        except BaseException:
            self.close()
            raise
        return self

    def _connect_readonly(self) -> sqlite3.Connection:
        folder = os.path.dirname(os.path.abspath(self.path))
        wal = self.path + "-wal"
        if writable(folder):
            # A run may be writing: take part in SQLite's locking. Opened for writing (never creating) but only
            # read, so that the last connection to close folds an empty log away -- a read-only connection
            # would leave -wal and -shm files behind.
            return sqlite3.connect(f"file:{quote(os.path.abspath(self.path))}?mode=rw", uri=True, timeout=60,
                                   isolation_level=None)
        if os.path.exists(wal) and os.path.getsize(wal) > 0:  # committed rows still in the log: replay a copy
            self._tmp = tempfile.mkdtemp(prefix="pyred-read-")
            copy = os.path.join(self._tmp, "results.sqlite")
            shutil.copyfile(self.path, copy)
            shutil.copyfile(wal, copy + "-wal")
            return sqlite3.connect(copy, timeout=60, isolation_level=None)
        # nothing can write here, so the file cannot change while it is read
        return sqlite3.connect(f"file:{quote(os.path.abspath(self.path))}?immutable=1", uri=True,
                               isolation_level=None)

    @property
    def db(self) -> sqlite3.Connection:
        """The open connection (StudyError once the store is closed)."""
        if self._db is None:
            raise StudyError(f"{self.path}: the results database is closed")
        return self._db

    def _check(self, writer: bool) -> None:
        db = self.db
        app = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if app == 0 and not tables and writer:  # new (or empty) file: ours to create
            db.execute("PRAGMA journal_mode=WAL")
            with self._tx():
                for statement in filter(str.strip, SCHEMA.split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            version = SCHEMA_VERSION
        elif app != APPLICATION_ID:
            if {"results", "units", "runs"} <= tables:
                raise StudyError(f"{self.path} was written by an older pyred (schema 1, before configurations were "
                                 "recorded); its rows cannot be told apart by configuration. Move it away (or use "
                                 "another --out) and re-run")
            raise StudyError(f"{self.path} is not a pyred results database (it holds tables {sorted(tables)})")
        if version not in MIGRATIONS and version != SCHEMA_VERSION:
            raise StudyError(f"{self.path} has pyred schema version {version}, this pyred reads versions "
                             f"{sorted(MIGRATIONS)[0]} to {SCHEMA_VERSION}; use the pyred that wrote it, or "
                             "another --out")
        check = [r[0] for r in db.execute("PRAGMA quick_check")]
        if check != ["ok"]:
            raise StudyError(f"{self.path} is damaged (sqlite quick_check: {'; '.join(check[:3])}); move it away "
                             "and re-run, finished units will be recomputed")
        if version != SCHEMA_VERSION:
            if not writer:  # never upgrade what is only read: upgrade a copy in memory
                memory = sqlite3.connect(":memory:", isolation_level=None)
                db.backup(memory)
                db.close()
                self._db = db = memory
            self._migrate(version)
        if writer:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")

    def _migrate(self, version: int) -> None:
        with self._tx():
            while version != SCHEMA_VERSION:
                for statement in filter(str.strip, MIGRATIONS[version].split(";")):
                    self.db.execute(statement)
                version += 1
                self.db.execute(f"PRAGMA user_version = {version}")

    def close(self) -> None:
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()
            self._db = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    # -- writing ---------------------------------------------------------------------------
    def start_run(self, config_id: str, identity: dict[str, Any], settings: dict[str, Any],
                  versions: dict[str, Any]) -> int:
        now = time.time()
        with self._tx():
            self.db.execute("INSERT INTO configs (id, identity, first_run, last_run) VALUES (?, ?, ?, ?) "
                            "ON CONFLICT (id) DO UPDATE SET last_run = excluded.last_run",
                            (config_id, json.dumps(identity, sort_keys=True), now, now))
            cur = self.db.execute("INSERT INTO runs (config_id, started_at, settings, versions) VALUES (?, ?, ?, ?)",
                                  (config_id, now, json.dumps(settings, sort_keys=True),
                                   json.dumps(versions, sort_keys=True)))
        return int(cast(int, cur.lastrowid))  # set by the INSERT

    def finish_run(self, run_id: int) -> None:
        with self._tx():
            self.db.execute("UPDATE runs SET finished_at = ? WHERE id = ?", (time.time(), run_id))

    def fail_run(self, run_id: int, error: str) -> None:
        """Records what stopped a run (it keeps every unit it finished)."""
        with self._tx():
            self.db.execute("UPDATE runs SET error = ? WHERE id = ?", (error, run_id))

    def plan(self, config_id: str, pair: str, units: Iterable[tuple[str, str]]) -> None:
        """Records the units (key, label) that ``pair`` ("model|dataset") of a configuration is cut into,
        replacing an earlier plan of that pair (whose inputs may have changed since)."""
        with self._tx():
            self.db.execute("DELETE FROM planned WHERE config_id = ? AND pair = ?", (config_id, pair))
            self.db.executemany("INSERT OR REPLACE INTO planned (unit, config_id, pair, label) VALUES (?, ?, ?, ?)",
                                [(key, config_id, pair, label) for key, label in units])

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
            "(SELECT COUNT(*) FROM units n JOIN planned p ON p.unit = n.unit WHERE p.config_id = c.id), "
            "(SELECT COUNT(*) FROM planned p WHERE p.config_id = c.id), "
            "(SELECT COUNT(DISTINCT pair) FROM planned p WHERE p.config_id = c.id), "
            "(SELECT COUNT(*) FROM units n WHERE n.config_id = c.id) "
            "FROM configs c ORDER BY c.last_run DESC")
        runs: dict[str, list[RunInfo]] = {}
        for cid, *info in self.db.execute("SELECT config_id, id, started_at, finished_at, error FROM runs ORDER BY id"):
            runs.setdefault(cid, []).append(RunInfo(*info))
        return [ConfigInfo(i, ConfigIdentity.from_json(json.loads(ident)), f, last, n, runs.get(i, []), done, planned,
                           pairs, recorded)
                for i, ident, f, last, n, done, planned, pairs, recorded in cur]

    def resolve(self, config: str | None = None, all_configs: bool = False) -> list[str]:
        """The configuration ids to read: all, the one ``config`` names (a unique id prefix), or the
        latest one with finished units (a run that failed at once does not hide the results before it)."""
        infos = self.configs()
        if not infos:
            raise StudyError(f"{self.path} holds no results yet (run 'pyred run' first)")
        if all_configs:
            return [c.id for c in infos]
        if config is None:
            with_results = latest_with_results(infos)
            if with_results is not None:
                return [with_results.id]
            latest = infos[0]
            raise StudyError(f"{self.path} holds no finished unit yet: its latest configuration {latest.id} is "
                             f"{latest.progress()}")
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
            d["diverged"] = None if d["diverged"] is None else bool(d["diverged"])
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
    def write_csv(self, f: IO[str], config_ids: list[str]) -> None:
        """The rows of ``config_ids`` as CSV into an open text file."""
        w = csv.writer(f)
        w.writerow(("config_id",) + COLUMNS)
        for cid in config_ids:
            for r in self.rows(cid):
                w.writerow([cid] + [_text(getattr(r, c), c) for c in COLUMNS])

    def parquet_table(self, config_ids: list[str]) -> Any:
        """The rows of ``config_ids`` as a pyarrow Table (StudyError without pyarrow)."""
        pa = require_pyarrow()
        rows = [(cid, r) for cid in config_ids for r in self.rows(cid)]
        return pa.table({"config_id": [cid for cid, _ in rows],
                         **{c: [_text(getattr(r, c), c) for _, r in rows] for c in COLUMNS}})

    def _tx(self) -> _Transaction:
        return _Transaction(self.db)


def latest_with_results(infos: list[ConfigInfo]) -> ConfigInfo | None:
    """The most recently run configuration with finished units (``infos``: newest first), or None."""
    return next((c for c in infos if c.has_results), None)


def require_pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError as exc:
        raise StudyError("--parquet: Parquet export needs pyarrow (pip install pyarrow)") from exc
    return pyarrow


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Literal[False]:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
        return False


def _cell(v: Any) -> Any:
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v)
    return v


def _text(v: Any, column: str) -> Any:
    return json.dumps(v) if column == "per_class" and v is not None else v
