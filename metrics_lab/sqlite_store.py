"""A durable store: every acknowledged put is committed to one SQLite file (stdlib, WAL mode).

:class:`SQLiteStore` keeps the :class:`~metrics_lab.storage.Storage` contract, and adds one
promise: when :meth:`~SQLiteStore.put_many` returns, its points are committed. It is also a
:class:`~metrics_lab.storage.GroupCommitStorage`: the server stages the puts of each chunk
it receives and commits once per turn of its event loop, before it writes their ``ok``
answers, so an ``ok`` means "on disk", and one commit (one disk sync) covers the pipelined
batches of every connection that arrived together.

How the file is laid out, and why:

- ``journal``: one row per staged batch (see :meth:`~SQLiteStore.stage`), its keys joined by
  newlines, its timestamps and values as packed arrays. A commit appends rows at the end of
  the table: a few sequential pages, however many keys the batches touch. (One row per point
  in a table ordered by key would dirty a page per key at every commit: several times slower
  for a batch over many keys.)
- ``series``: one row per key, its timestamps and values as packed arrays, sorted: the
  compacted form. Folding the journal into it (*compaction*) is one transaction, done when
  the store opens after a crash, when it closes, and whenever ``compact_every`` points have
  been journaled since the last time, so the file stays about the size of the data.

Reads never touch the file: the store is a :class:`~metrics_lab.storage.MemoryStore` that
writes every put to the database first, so it answers ``get`` at in-memory speed and needs
the memory an in-memory store needs (about 18 bytes a point). Opening loads ``series`` and
replays ``journal`` on top of it.

One server owns one database file: the store takes an exclusive lock on the file when it
opens it and keeps it until :meth:`~SQLiteStore.close`, so a second server (or any other
program) cannot write behind its back. Opening fails with :class:`StoreOpenError`, a one-line
message, if the path cannot hold a database, the file is not a metrics_lab database, or
another process holds the lock; nothing on disk is changed in that case.

>>> import tempfile, pathlib
>>> with tempfile.TemporaryDirectory() as tmp:
...     store = SQLiteStore(pathlib.Path(tmp) / "metrics.db")
...     store.put_many([("cpu", 2, 0.4), ("cpu", 1, 0.5), ("cpu", 2, 0.7)])
...     store.close()
...     store = SQLiteStore(pathlib.Path(tmp) / "metrics.db")
...     print(store.read("cpu"))
...     store.close()
[Series(key='cpu', timestamps=[1, 2], values=[0.5, 0.7])]
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
import threading
from array import array
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

from metrics_lab.storage import (
    INT64_TYPECODE,
    STORED,
    MemoryStore,
    PointBatch,
    Snapshot,
    Storage,
    StoreFailure,
)

__all__ = ["APPLICATION_ID", "FORMAT_VERSION", "SQLiteStore", "StoreOpenError"]

APPLICATION_ID: Final = 0x4D4C4142
"""Stamped in the database header (``PRAGMA application_id``, "MLAB") to tell our files apart
from other programs' SQLite databases, which the store refuses to touch."""

FORMAT_VERSION: Final = 2
"""The layout of the tables (``PRAGMA user_version``); a file with another one is refused."""

DEFAULT_COMPACT_EVERY: Final = 1_000_000
"""Journaled points after which ``put_many`` folds the journal into ``series``."""

_SCHEMA: Final = (
    """CREATE TABLE series (
        key TEXT PRIMARY KEY,
        timestamps BLOB NOT NULL,  -- int64, little-endian, ascending and unique
        "values" BLOB NOT NULL     -- float64, little-endian, one per timestamp
    ) WITHOUT ROWID""",
    """CREATE TABLE journal (
        id INTEGER PRIMARY KEY,    -- the order of the puts
        keys TEXT NOT NULL,        -- one key per point, joined by newlines
        timestamps BLOB NOT NULL,  -- int64, little-endian, one per point
        "values" BLOB NOT NULL     -- float64, little-endian, one per point
    )""",
)

Synchronous = Literal["FULL", "NORMAL"]


class StoreOpenError(Exception):
    """The store cannot be opened; the message is one line that says why and what to check."""


class SQLiteStore(Storage):
    """Points in an SQLite database file; survives restarts and crashes of the process.

    ``path`` is created if it does not exist (its directory must). ``synchronous`` chooses what
    a commit waits for: ``"FULL"`` (the default) syncs the write-ahead log to the disk at every
    commit, so an acknowledged put survives a power cut; ``"NORMAL"`` leaves that to the
    operating system, which still survives a crash or ``kill -9`` of the server but may lose
    the last commits if the machine itself goes down. ``lock_timeout`` is how long to wait
    for another process's lock before giving up. ``compact_every``: see the module docstring.

    Calls may come from any thread (a :func:`~metrics_lab.serve_in_background` server runs
    in its own); they take turns.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Synchronous = "FULL",
        lock_timeout: float = 1.0,
        compact_every: int = DEFAULT_COMPACT_EVERY,
    ) -> None:
        self._memory = MemoryStore()
        self.path = Path(path)
        self.compact_every = compact_every
        self._lock = threading.RLock()  # put_many holds it across stage and commit
        self._journaled = 0  # points in the journal
        self._changed: set[str] = set()  # keys with points in the journal
        # Batches in the open transaction, not yet readable, as (keys, timestamps, values).
        self._staged: list[tuple[Sequence[Any], ...]] = []
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
            self._load()
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
        with self._transaction("BEGIN EXCLUSIVE"):
            application_id = db.execute("PRAGMA application_id").fetchone()[0]
            tables = db.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
            if application_id != APPLICATION_ID and (application_id != 0 or tables):
                raise StoreOpenError(
                    f"{self.path} is an SQLite database of another program, not a metrics_lab "
                    "one; give --db a new file name"
                )
            if application_id == 0:
                for statement in _SCHEMA:
                    db.execute(statement)
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                db.execute(f"PRAGMA user_version = {FORMAT_VERSION}")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version != FORMAT_VERSION:
                raise StoreOpenError(
                    f"{self.path} was written by another version of metrics_lab (format "
                    f"{version}, this one reads {FORMAT_VERSION}); give --db a new file name"
                )
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreOpenError(f"cannot switch {self.path} to WAL mode (got {mode!r})")
        db.execute(f"PRAGMA synchronous = {synchronous}")

    @contextlib.contextmanager
    def _transaction(self, begin: str = "BEGIN") -> Iterator[None]:
        """Run the block in one transaction: committed if it returns, rolled back if it raises."""
        db = self._db
        db.execute(begin)
        try:
            yield
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _load(self) -> None:
        """Load ``series``, replay ``journal`` on top, and fold a journal left by a crash."""
        for key, timestamps, values in self._db.execute(
            'SELECT key, timestamps, "values" FROM series'
        ):
            self._memory.restore(key, *_unpack(timestamps, values))
        for keys, timestamps, values in self._db.execute(
            'SELECT keys, timestamps, "values" FROM journal ORDER BY id'
        ):
            batch = keys.split("\n")
            stamps, numbers = _unpack(timestamps, values)
            self._memory.write(PointBatch(batch, numbers, stamps)).result()
            self._changed.update(batch)
            self._journaled += len(batch)
        if self._journaled:
            self._compact()

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

    def write(self, batch: PointBatch) -> Future[None]:
        """Commit the points to the file, then store them; see :class:`Storage`."""
        try:
            with self._lock:
                self.stage(zip(batch.keys, batch.timestamps, batch.values, strict=True))
                self.commit()
        except Exception as exc:
            failed: Future[None] = Future()
            failed.set_exception(StoreFailure(f"the database {self.path} failed: {exc}"))
            return failed
        return STORED

    def snapshot(self, key: str | None = None) -> Snapshot:
        """See :class:`Storage`."""
        with self._lock:
            return self._memory.snapshot(key)

    def stage(self, points: Iterable[tuple[str, int, float]]) -> None:
        """Write the points into the open transaction (begun if needed); see :meth:`commit`.

        Raises, staging nothing of this call, for a timestamp outside 64 bits or a key that
        holds a newline or is not valid Unicode (no key the protocol carries does either).
        """
        columns = tuple(zip(*points, strict=True))
        if not columns:
            return
        keys, timestamps, values = columns
        # Packed before the statement: a value that does not fit raises here, harmlessly.
        joined_keys = "\n".join(keys)
        if joined_keys.count("\n") != len(keys) - 1:
            raise ValueError("SQLiteStore cannot store a key that holds a newline")
        row = (
            joined_keys,
            _pack(array(INT64_TYPECODE, timestamps)),
            _pack(array("d", values)),
        )
        with self._lock:
            db = self._db
            if not db.in_transaction:
                db.execute("BEGIN")
            db.execute('INSERT INTO journal (keys, timestamps, "values") VALUES (?, ?, ?)', row)
            self._staged.append(columns)

    def commit(self) -> None:
        """Commit every staged point, then make them readable; on failure, none of them.

        One commit is one sync of the write-ahead log (with ``synchronous="FULL"``), however
        many batches were staged: the server stages the batches of all the connections that
        arrived in one turn of its loop and commits once.
        """
        with self._lock:
            staged, self._staged = self._staged, []
            db = self._db
            if not db.in_transaction:
                return
            try:
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            for keys, timestamps, values in staged:
                self._memory.write(PointBatch(keys, values, timestamps))
                self._changed.update(keys)
                self._journaled += len(keys)
            if self._journaled >= self.compact_every:
                self._compact()

    def _compact(self) -> None:
        """Fold the journal into ``series``: rewrite the changed keys, empty the journal."""
        db = self._db
        with self._transaction():
            for key in self._changed:
                frozen = self._memory._columns[key].freeze(key)
                timestamps, values = frozen.timestamps, frozen.values
                db.execute(
                    'INSERT OR REPLACE INTO series (key, timestamps, "values") VALUES (?, ?, ?)',
                    (key, _pack(timestamps), _pack(values)),
                )
            db.execute("DELETE FROM journal")
        self._changed.clear()
        self._journaled = 0

    def __len__(self) -> int:
        """The number of stored points."""
        with self._lock:
            return len(self._memory)

    def close(self) -> None:
        """Commit, compact, checkpoint the log into the file and close; again does nothing."""
        with self._lock:
            db = self._db
            try:
                self.commit()
                if self._journaled:
                    self._compact()
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.ProgrammingError:
                return  # already closed
            db.close()

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"


# The file holds little-endian numbers whatever machine wrote it.
_SWAP: Final = sys.byteorder != "little"


Number = TypeVar("Number", int, float)


def _pack(numbers: array[Number]) -> bytes:
    if _SWAP:
        numbers = array(numbers.typecode, numbers)
        numbers.byteswap()
    return numbers.tobytes()


def _unpack(timestamps: bytes, values: bytes) -> tuple[array[int], array[float]]:
    """The arrays that :func:`_pack` wrote as ``timestamps`` and ``values``."""
    numbers = array(INT64_TYPECODE, timestamps), array("d", values)
    if _SWAP:
        for column in numbers:
            column.byteswap()
    return numbers
