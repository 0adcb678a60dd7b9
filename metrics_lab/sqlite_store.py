"""A durable store: the points in one SQLite file (stdlib :mod:`sqlite3`, WAL mode).

:class:`SQLiteStore` keeps the :class:`~metrics_lab.storage.Storage` contract, and adds one
promise: when :meth:`~SQLiteStore.put_many` returns, its points are committed. The server
calls ``put_many`` once for the puts of each chunk it receives, before it writes their
``ok`` answers, so an ``ok`` means "on disk", and one commit covers a whole pipelined batch.

One server owns one database file: the store takes an exclusive lock on the file when it
opens it and keeps it until :meth:`~SQLiteStore.close`, so a second server (or any other
program) cannot write behind its back. Opening fails with :class:`StoreOpenError`, a one-line
message, if the path cannot hold a database, the file is not a metrics_lab database, or
another process holds the lock; nothing on disk is changed in that case.

>>> import tempfile, pathlib
>>> with tempfile.TemporaryDirectory() as tmp:
...     store = SQLiteStore(pathlib.Path(tmp) / "metrics.db")
...     store.put_many([("cpu", 2, 0.4), ("cpu", 1, 0.5), ("cpu", 2, 0.7)])
...     print(store.read("cpu"))
...     store.close()
[Series(key='cpu', timestamps=[1, 2], values=[0.5, 0.7])]
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Final, Literal

from metrics_lab.storage import Point, Series

__all__ = ["APPLICATION_ID", "SQLiteStore", "StoreOpenError"]

APPLICATION_ID: Final = 0x4D4C4142
"""Stamped in the database header (``PRAGMA application_id``, "MLAB") to tell our files apart
from other programs' SQLite databases, which the store refuses to touch."""

_SCHEMA: Final = """
CREATE TABLE points (
    key TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (key, timestamp)
) WITHOUT ROWID
"""
# WITHOUT ROWID: the primary key is the table's own b-tree, so a point is stored once, in
# (key, timestamp) order, which is exactly the order reads want.

_UPSERT: Final = (
    "INSERT INTO points (key, timestamp, value) VALUES (?, ?, ?) "
    "ON CONFLICT (key, timestamp) DO UPDATE SET value = excluded.value"
)

Synchronous = Literal["FULL", "NORMAL"]


class StoreOpenError(Exception):
    """The store cannot be opened; the message is one line that says why and what to check."""


class SQLiteStore:
    """Points in an SQLite database file; survives restarts and crashes of the process.

    ``path`` is created if it does not exist (its directory must). ``synchronous`` chooses what
    a commit waits for: ``"FULL"`` (the default) syncs the write-ahead log to the disk at every
    commit, so an acknowledged put survives a power cut; ``"NORMAL"`` leaves that to the
    operating system, which still survives a crash or ``kill -9`` of the server but may lose
    the last commits if the machine itself goes down. ``lock_timeout`` is how long to wait
    for another process's lock before giving up.

    Calls may come from any thread (a :func:`~metrics_lab.serve_in_background` server runs
    in its own); they take turns on one connection.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Synchronous = "FULL",
        lock_timeout: float = 1.0,
    ) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._check_path()
        try:
            # isolation_level=None: no hidden BEGIN; every transaction here is explicit.
            self._db = sqlite3.connect(
                self.path, timeout=lock_timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreOpenError(f"cannot open database {self.path}: {exc}") from exc
        try:
            self._prepare(synchronous)
        except sqlite3.Error as exc:
            self._db.close()
            raise StoreOpenError(self._explain(exc)) from exc
        except StoreOpenError:
            self._db.close()
            raise

    def _check_path(self) -> None:
        parent = self.path.parent
        if not parent.is_dir():
            what = "is not a directory" if parent.exists() else "does not exist"
            raise StoreOpenError(f"cannot open database {self.path}: directory {parent} {what}")
        if self.path.exists() and not self.path.is_file():
            raise StoreOpenError(f"cannot open database {self.path}: it is not a regular file")

    def _prepare(self, synchronous: Synchronous) -> None:
        db = self._db
        # Exclusive locking before WAL: no shared-memory index, and the lock is held from the
        # first write until close, so exactly one process writes this file.
        db.execute("PRAGMA locking_mode = EXCLUSIVE")
        # Take the lock before looking at anything, and fail now (not at the first put) if
        # another process has it. Reading the header also rejects files that are not SQLite.
        db.execute("BEGIN EXCLUSIVE")
        try:
            application_id = db.execute("PRAGMA application_id").fetchone()[0]
            tables = db.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
            if application_id != APPLICATION_ID and (application_id != 0 or tables):
                raise StoreOpenError(
                    f"{self.path} is an SQLite database of another program, not a metrics_lab "
                    "one; give --db a new file name"
                )
            if application_id == 0:
                db.execute(_SCHEMA)
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreOpenError(f"cannot switch {self.path} to WAL mode (got {mode!r})")
        db.execute(f"PRAGMA synchronous = {synchronous}")

    def _explain(self, exc: sqlite3.Error) -> str:
        message = str(exc)
        if "locked" in message or "busy" in message:
            hint = "another process (a second server?) is using it"
        elif "not a database" in message:
            hint = "the file is not an SQLite database; give --db a new file name"
        elif "readonly" in message or "unable to open" in message:
            hint = "check that the file and its directory are writable"
        else:
            hint = message
        return f"cannot open database {self.path}: {hint} ({message})"

    def put_many(self, points: Iterable[Point]) -> None:
        """Store the points in one transaction and commit it before returning.

        A later point replaces an earlier one at the same key and timestamp. If anything
        fails, nothing of this call is stored and the error is raised.
        """
        with self._lock:
            db = self._db
            db.execute("BEGIN")
            try:
                db.executemany(_UPSERT, points)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    def read(self, key: str | None = None) -> list[Series]:
        """Return ``key``'s series, or all series by ascending key; see the Storage contract."""
        if key is not None:
            try:
                key.encode("utf-8")
            except UnicodeEncodeError:
                return []  # a key no put could have stored (the server passes odd get keys)
        with self._lock:
            if key is None:
                rows = self._db.execute(
                    "SELECT key, timestamp, value FROM points ORDER BY key, timestamp"
                ).fetchall()
            else:
                rows = self._db.execute(
                    "SELECT key, timestamp, value FROM points WHERE key = ? ORDER BY timestamp",
                    (key,),
                ).fetchall()
        return _group(rows)

    def __len__(self) -> int:
        """The number of stored points."""
        with self._lock:
            count: int = self._db.execute("SELECT count(*) FROM points").fetchone()[0]
        return count

    def close(self) -> None:
        """Checkpoint the log into the database file and close it; calling again does nothing."""
        with self._lock:
            db = self._db
            try:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.ProgrammingError:
                return  # already closed
            db.close()

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"


def _group(rows: list[tuple[str, int, float]]) -> list[Series]:
    """Cut rows ordered by key into one :class:`Series` per key."""
    result: list[Series] = []
    current: str | None = None
    timestamps: list[int] = []
    values: list[float] = []
    for key, timestamp, value in rows:
        if key != current:
            if current is not None:
                result.append(Series(current, timestamps, values))
            current, timestamps, values = key, [], []
        timestamps.append(timestamp)
        values.append(value)
    if current is not None:
        result.append(Series(current, timestamps, values))
    return result
