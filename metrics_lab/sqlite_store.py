"""A durable store: every acknowledged put is committed to one SQLite file (stdlib, WAL mode).

:class:`SQLiteStore` keeps the :class:`~metrics_lab.storage.Storage` contract: the future that
:meth:`~SQLiteStore.write` returns is done once the points are committed, and failed, with a
:class:`~metrics_lab.storage.StoreFailure`, if they are not. An ``ok`` means "on disk".

One thread of the store's own, the *worker*, owns the database connection; nothing else
touches it, so no caller can commit or roll back what another one wrote. ``write`` checks
and packs the points on the caller's thread and queues them. The worker takes everything
queued meanwhile, by every connection of the server, writes it in one transaction and
commits (*group commit*: one disk sync for all of them), then copies the points into
memory and completes the futures. If anything fails (a full disk, a database that rolled
the transaction back by itself, a failed ``COMMIT``), every future of that group fails,
memory is untouched, a warning says how many points were refused, and the next group is
tried afresh: puts succeed again as soon as there is room.

How the file is laid out, and why:

- ``journal``: one row per written batch, its keys joined by newlines, its timestamps and
  values as packed arrays. A commit appends rows at the end of the table: a few sequential
  pages, however many keys the batches touch.
- ``series``: one row per key, its timestamps and values as packed arrays, sorted: the
  compacted form. The worker folds the journal into it (*compaction*) when ``compact_every``
  points have been journaled, when the store was opened with a journal left by a crash,
  and when it closes. The fold is done in chunks of ``fold_chunk`` keys, one transaction
  each, taking turns with the waiting commits, so a put waits for one chunk at most, not
  for the whole fold. Journal rows are deleted only once every key they changed has been
  written to ``series``; replaying the journal over ``series`` is idempotent, so a crash
  at any point of a fold reopens to the same data.

Reads never touch the file: the store holds a :class:`~metrics_lab.storage.MemoryStore`
with every committed point, so it answers ``get`` at in-memory speed and needs the memory
an in-memory store needs (about 18 bytes a point). Opening loads ``series`` and replays
``journal`` on top of it.

One server owns one database file: the store takes an exclusive lock on the file when it
opens it and keeps it until :meth:`~SQLiteStore.close`, so a second server (or any other
program) cannot write behind its back. Opening fails with :class:`StoreOpenError`, a one-line
message, if the path cannot hold a database, the file is damaged or not a metrics_lab
database, it is read-only, or another process holds the lock.

>>> import tempfile, pathlib
>>> with tempfile.TemporaryDirectory() as tmp:
...     store = SQLiteStore(pathlib.Path(tmp) / "metrics.db")
...     store.put_many([("cpu", 0.4, 2), ("cpu", 0.5, 1), ("cpu", 0.7, 2)])
...     store.close()
...     store = SQLiteStore(pathlib.Path(tmp) / "metrics.db")
...     print(store.read("cpu"))
...     store.close()
[Series(key='cpu', timestamps=[1, 2], values=[0.5, 0.7])]
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import logging
import operator
import os
import sqlite3
import struct
import sys
import threading
import time
from array import array
from collections.abc import Iterator
from concurrent.futures import Future
from itertools import islice
from pathlib import Path
from typing import Final, Literal, NamedTuple, TypeVar

from metrics_lab.storage import (
    INT64_TYPECODE,
    STORED,
    MemoryStore,
    PointBatch,
    Series,
    Snapshot,
    Storage,
    StoreFailure,
    StoreOpenError,
    failed_write,
    one_line,
)

__all__ = [
    "APPLICATION_ID",
    "DEFAULT_COMPACT_EVERY",
    "DEFAULT_FOLD_CHUNK",
    "FORMAT_VERSION",
    "SQLiteStore",
    "StoreOpenError",
]

logger = logging.getLogger("metrics_lab.sqlite_store")

APPLICATION_ID: Final = 0x4D4C4142
"""Stamped in the database header (``PRAGMA application_id``, "MLAB") to tell our files apart
from other programs' SQLite databases, which the store refuses to touch."""

FORMAT_VERSION: Final = 2
"""The layout of the tables (``PRAGMA user_version``); a file with another one is refused."""

DEFAULT_COMPACT_EVERY: Final = 1_000_000
"""Journaled points after which the worker folds the journal into ``series``."""

DEFAULT_FOLD_CHUNK: Final = 512
"""Keys written to ``series`` per transaction of a fold: a few milliseconds of work, so a
put that waits behind one is not noticed (with a million keys to fold, a put waited 130 ms
at most, against 970 ms with chunks of 2048), and still few enough commits that the fold
of a million keys takes about 20 s in the background."""

FOLD_RETRY_DELAY: Final = 1.0
"""Seconds before a fold that failed (a full disk, say) is tried again."""

_DELETE_ROWS: Final = 32
"""Journal rows deleted per transaction once a fold has written every key."""

_SORT_RUN: Final = 16384
"""Keys a fold sorts in one step (about 10 ms); the sorted runs are then merged."""

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
_INSERT_JOURNAL: Final = 'INSERT INTO journal (keys, timestamps, "values") VALUES (?, ?, ?)'
_REPLACE_SERIES: Final = (
    'INSERT OR REPLACE INTO series (key, timestamps, "values") VALUES (?, ?, ?)'
)

_DAMAGED_HINT: Final = "restore it from a backup, or give --db a new file name"
_WRITABLE_HINT: Final = "check that the file and its directory are writable"

# What a damaged file can make the loading code raise, besides sqlite3.Error: a blob of the
# wrong length or type (ValueError, TypeError, struct.error), text that is not UTF-8
# (UnicodeDecodeError, a ValueError), a number out of range (OverflowError).
_DAMAGE_ERRORS: Final = (
    sqlite3.Error,
    ValueError,
    TypeError,
    OverflowError,
    struct.error,
    IndexError,
    KeyError,
)

Synchronous = Literal["FULL", "NORMAL"]


class _Damaged(Exception):
    """The file holds something the store never writes."""


class _Pending(NamedTuple):
    """One written batch on its way to the disk: its journal row, its points, its future."""

    row: tuple[str, bytes, bytes]
    batch: PointBatch
    future: Future[None]


class _Fold:
    """A fold in progress: the keys still to write to ``series``, and the rows it covers.

    The keys are written in ascending order, so that each transaction rewrites a few
    neighbouring pages of ``series`` rather than one page per key all over the table (in
    hash order, the fold of a million keys took a minute). Sorting them all at once would
    hold the GIL, and so stop the server, for a second; so they are sorted a run at a time,
    one run per step of the fold, then merged lazily as the chunks are taken.

    The keys are held in tuples, not lists: the garbage collector stops tracking a tuple of
    strings, where it would visit a list of a million keys at every full collection.
    """

    def __init__(self, keys: tuple[str, ...], last_id: int, first_id: int) -> None:
        self.unsorted = keys
        self.sorted_to = 0  # unsorted[:sorted_to] are in runs
        self.runs: list[tuple[str, ...]] = []
        self.merged: Iterator[str] | None = None
        self.current: list[str] = []  # the chunk being written
        self.left = len(keys)  # keys not yet written to series
        self.last_id = last_id  # journal rows up to this id are folded once left is 0
        self.deleted_to = first_id - 1  # journal rows up to this id are deleted already

    def sort_a_run(self) -> bool:
        """Sort the next run of keys; return whether there was one to sort."""
        start = self.sorted_to
        if start >= len(self.unsorted):
            return False
        self.sorted_to = start + _SORT_RUN
        self.runs.append(tuple(sorted(self.unsorted[start : self.sorted_to])))
        return True

    def chunk(self, count: int) -> list[str]:
        """The next ``count`` keys in ascending order (every run must be sorted); the same
        ones again until :meth:`written` says they are in ``series``."""
        if not self.current:
            if self.merged is None:
                self.merged = heapq.merge(*self.runs)
                self.runs = []
            self.current = list(islice(self.merged, count))
        return self.current

    def written(self) -> None:
        """The keys of the current chunk are in ``series`` (committed)."""
        self.left -= len(self.current)
        self.current = []


class SQLiteStore(Storage):
    """Points in an SQLite database file; survives restarts and crashes of the process.

    ``path`` is created if it does not exist (its directory must). ``synchronous`` chooses what
    a commit waits for: ``"FULL"`` (the default) syncs the write-ahead log to the disk at every
    commit, so an acknowledged put survives a power cut; ``"NORMAL"`` leaves that to the
    operating system, which still survives a crash or ``kill -9`` of the server but may lose
    the last commits if the machine itself goes down. ``lock_timeout`` is how long to wait
    for another process's lock before giving up. ``compact_every`` and ``fold_chunk``: see
    the module docstring. ``max_size_bytes`` caps the size of the database file (``None``: no
    cap but the disk's); once it is reached, puts fail as on a full disk, until the cap is
    raised (:attr:`max_size_bytes` may be set at any time) or a fold frees room.

    Every method may be called from any thread. Call :meth:`close` when done: it writes what
    is queued, folds the journal and releases the file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Synchronous = "FULL",
        lock_timeout: float = 1.0,
        compact_every: int = DEFAULT_COMPACT_EVERY,
        fold_chunk: int = DEFAULT_FOLD_CHUNK,
        max_size_bytes: int | None = None,
    ) -> None:
        if compact_every < 1 or fold_chunk < 1:
            raise ValueError("compact_every and fold_chunk must be at least 1")
        self.path = Path(path)
        self.compact_every = compact_every
        self.fold_chunk = fold_chunk
        self._memory = MemoryStore()
        self._memory_lock = threading.Lock()  # the worker writes while the server reads
        # What callers hand to the worker, guarded by _wakeup.
        self._wakeup = threading.Condition()
        self._queue: list[_Pending] = []
        self._closing = False
        self._max_size = _checked_size(max_size_bytes)
        self._size_changed = False  # the constructor applies the first cap itself
        # The worker's own state (and the constructor's, before the worker starts).
        # Keys journaled since the current fold began. A dict (of None), not a set: the
        # garbage collector does not track a dict of strings, and a set of a million keys
        # would cost every full collection a visit to each.
        self._changed: dict[str, None] = {}
        self._journaled = 0  # points journaled since the current fold began
        self._fold: _Fold | None = None
        self._fold_wanted = False  # a journal was left by a crash: fold it soon
        self._fold_retry_at = 0.0
        self._close_error: BaseException | None = None
        self._check_path()
        try:
            # isolation_level=None: no hidden BEGIN; every transaction here is explicit.
            # check_same_thread=False: opened here, then used by the worker thread only.
            self._db = sqlite3.connect(
                self.path, timeout=lock_timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreOpenError(self._explain(exc)) from exc
        try:
            self._prepare(synchronous)
            self._page_size: int = self._db.execute("PRAGMA page_size").fetchone()[0]
            self._no_cap: int = self._db.execute("PRAGMA max_page_count").fetchone()[0]
            self._load()
            self._apply_size_cap()
        except StoreOpenError:
            self._db.close()
            raise
        except sqlite3.Error as exc:
            self._db.close()
            raise StoreOpenError(self._explain(exc)) from exc
        except (*_DAMAGE_ERRORS, _Damaged) as exc:
            self._db.close()
            raise StoreOpenError(
                f"cannot open database {self.path}: the file is damaged "
                f"({one_line(exc)}); {_DAMAGED_HINT}"
            ) from exc
        self._worker = threading.Thread(
            target=self._run, name=f"SQLiteStore({self.path.name})", daemon=True
        )
        self._worker.start()

    # --- opening -------------------------------------------------------------------------

    def _check_path(self) -> None:
        parent = self.path.parent
        if not parent.is_dir():
            what = "is not a directory" if parent.exists() else "does not exist"
            raise StoreOpenError(f"cannot open database {self.path}: directory {parent} {what}")
        if self.path.exists() and not self.path.is_file():
            raise StoreOpenError(f"cannot open database {self.path}: it is not a regular file")
        if self.path.exists():
            # SQLite opens a file it may not write read-only without a word, and then fails
            # with "disk I/O error" at the first lock. Asking the system first gives the
            # real reason. Opening for update without writing changes nothing.
            try:
                with open(self.path, "r+b"):
                    pass
            except OSError as exc:
                if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                    raise StoreOpenError(
                        f"cannot open database {self.path}: it is read-only for this "
                        f"process; {_WRITABLE_HINT}"
                    ) from exc
                raise StoreOpenError(f"cannot open database {self.path}: {exc}") from exc

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
            # SQLite keeps each table's CREATE statement as written: a damaged one would
            # only show at the first put, as a refused commit.
            schema = dict(db.execute("SELECT name, sql FROM sqlite_schema"))
            if schema != {"series": _SCHEMA[0], "journal": _SCHEMA[1]}:
                raise _Damaged("its tables are not the ones metrics_lab writes")
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreOpenError(f"cannot switch {self.path} to WAL mode (got {mode!r})")
        db.execute(f"PRAGMA synchronous = {synchronous}")
        # The structure of every page (the loading below reads only the tables' pages): a
        # damaged free list or header would otherwise show up at some later put.
        problems = [row[0] for row in db.execute("PRAGMA quick_check(1)")]
        if problems != ["ok"]:
            raise _Damaged(str(problems[0]))

    def _load(self) -> None:
        """Load ``series``, replay ``journal`` on top; a journal left by a crash is folded
        soon after (by the worker, so the server starts at once)."""
        memory = self._memory
        for key, stamps, numbers in self._db.execute(
            'SELECT key, timestamps, "values" FROM series'
        ):
            if type(key) is not str or key.split() != [key]:
                raise _Damaged(f"a series key is {key!r}")
            timestamps, values = _unpack(stamps, numbers)
            if not timestamps:
                raise _Damaged(f"series {key!r} is empty")
            if len(timestamps) > 1 and not all(
                map(operator.lt, timestamps, islice(timestamps, 1, None))
            ):
                raise _Damaged(f"the timestamps of series {key!r} are out of order")
            memory.restore(key, timestamps, values)
        for joined, stamps, numbers in self._db.execute(
            'SELECT keys, timestamps, "values" FROM journal ORDER BY id'
        ):
            if type(joined) is not str:
                raise _Damaged(f"journal keys of type {type(joined).__name__}")
            keys = joined.split("\n")
            timestamps, values = _unpack(stamps, numbers)
            if len(joined.split()) != len(keys) or len(timestamps) != len(keys):
                raise _Damaged("a journal row whose keys and points do not match")
            memory.write(PointBatch(keys, values, timestamps)).result()
            self._changed.update(dict.fromkeys(keys))
            self._journaled += len(keys)
            self._fold_wanted = True

    def _explain(self, exc: sqlite3.Error) -> str:
        message = one_line(exc)
        name = getattr(exc, "sqlite_errorname", "")
        if "locked" in message or "busy" in message:
            hint = "another process (a second server?) is using it"
        elif "not a database" in message:
            hint = "the file is not an SQLite database; give --db a new file name"
        elif "malformed" in message or name.startswith("SQLITE_CORRUPT"):
            hint = f"the file is damaged; {_DAMAGED_HINT}"
        elif name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM")) or (
            "readonly" in message or "unable to open" in message
        ):
            hint = _WRITABLE_HINT
        else:
            return f"cannot open database {self.path}: {message}"
        return f"cannot open database {self.path}: {hint} ({message})"

    # --- the Storage interface ----------------------------------------------------------

    def write(self, batch: PointBatch) -> Future[None]:
        """Queue the points for the next commit; the future is done once they are committed
        and readable, or failed with :class:`~metrics_lab.storage.StoreFailure` if they are
        not (none of them is stored then). See :class:`~metrics_lab.storage.Storage`.

        Keys must be as the protocol allows (non-empty, no whitespace), timestamps must fit
        in 64 bits and values be floats: a batch with any other point fails whole, at once.
        """
        if not len(batch):
            return STORED
        try:
            pending = _pending(batch)
        except (TypeError, ValueError, OverflowError) as exc:
            return failed_write(f"{self.path} cannot hold these points: {one_line(exc)}")
        with self._wakeup:
            if self._closing:
                return failed_write(f"the store {self.path} is closed")
            self._queue.append(pending)
            self._wakeup.notify()
        return pending.future

    def snapshot(self, key: str | None = None) -> Snapshot:
        """See :class:`~metrics_lab.storage.Storage`: every committed point, as of the call."""
        with self._memory_lock:
            return self._memory.snapshot(key)

    def __len__(self) -> int:
        """The number of stored points."""
        with self._memory_lock:
            return len(self._memory)

    @property
    def max_size_bytes(self) -> int | None:
        """The cap on the database file's size (``None``: none). Setting it takes effect
        before the next commit; raising it lets refused puts succeed again."""
        return self._max_size

    @max_size_bytes.setter
    def max_size_bytes(self, size: int | None) -> None:
        with self._wakeup:
            self._max_size = _checked_size(size)
            self._size_changed = True
            self._wakeup.notify()

    @property
    def unfolded_keys(self) -> int:
        """How many keys have journaled points not yet folded into ``series`` (for
        monitoring; exact only when read from a future's done callback)."""
        fold = self._fold
        return len(self._changed) + (fold.left if fold is not None else 0)

    def close(self) -> None:
        """Commit what is queued, fold the journal, checkpoint the log, release the file.

        Raises :class:`~metrics_lab.storage.StoreFailure` (a one-line message) if the fold or
        the checkpoint fails, a full disk say: every acknowledged point is still committed,
        in the journal, and is replayed when the file is opened again. A second call does
        nothing.
        """
        if threading.current_thread() is self._worker:
            # A future's done callback runs in the worker: it cannot wait for itself.
            raise RuntimeError("close() cannot be called from a write's done callback")
        with self._wakeup:
            first = not self._closing
            self._closing = True
            self._wakeup.notify()
        self._worker.join()
        error, self._close_error = self._close_error, None
        if first and error is not None:
            raise StoreFailure(
                f"could not finish writing {self.path}: {one_line(error)}; every acknowledged "
                "point is in its journal and comes back when it is opened again"
            ) from error

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    # --- the worker ---------------------------------------------------------------------

    def _run(self) -> None:
        """The worker: commit what is queued, fold between commits, finish when closed."""
        try:
            while True:
                with self._wakeup:
                    while not self._queue and not self._closing and not self._fold_due():
                        self._wakeup.wait(self._fold_wait())
                    group, self._queue = self._queue, []
                    closing = self._closing
                    if self._size_changed:
                        self._size_changed = False
                        self._apply_size_cap()
                if group:
                    self._commit(group)
                if self._fold_due():
                    self._try_fold_step()
                elif closing and not group:
                    break
            self._finish()
        except BaseException as exc:  # a bug: fail what waits rather than leave it hanging
            logger.exception("the SQLiteStore worker for %s stopped", self.path)
            self._close_error = exc
            with self._wakeup:
                self._closing = True
                group, self._queue = self._queue, []
            for pending in group:
                pending.future.set_exception(StoreFailure(f"the store {self.path} stopped"))
            with contextlib.suppress(sqlite3.Error):
                self._db.close()

    def _commit(self, group: list[_Pending]) -> None:
        """Write the group's rows in one transaction; then store them, or fail them all."""
        db = self._db
        try:
            with self._transaction():
                db.executemany(_INSERT_JOURNAL, [pending.row for pending in group])
        except Exception as exc:
            # SQLite may have rolled back the whole transaction by itself (SQLITE_FULL
            # does): whatever it did, none of the group is committed.
            points = sum(len(pending.batch) for pending in group)
            logger.warning(
                "the database %s refused %d point(s) from %d batch(es): %s",
                self.path,
                points,
                len(group),
                one_line(exc),
            )
            for pending in group:
                pending.future.set_exception(
                    StoreFailure(f"the database {self.path} refused the points: {one_line(exc)}")
                )
            return
        for pending in group:
            batch = pending.batch
            with self._memory_lock:
                stored = self._memory.write(batch)
            self._changed.update(dict.fromkeys(batch.keys))
            self._journaled += len(batch)
            failure = stored.exception()  # never, for points _pending accepted
            if failure is None:
                pending.future.set_result(None)
            else:
                pending.future.set_exception(failure)

    def _roll_back(self) -> None:
        db = self._db
        try:
            if db.in_transaction:
                db.execute("ROLLBACK")
        except sqlite3.Error as exc:  # the next BEGIN will tell if the connection is unusable
            logger.warning("rolling back on %s failed: %s", self.path, one_line(exc))

    def _apply_size_cap(self) -> None:
        size = self._max_size
        pages = self._no_cap if size is None else max(1, size // self._page_size)
        self._db.execute(f"PRAGMA max_page_count = {int(pages)}")

    def _fold_wanted_now(self) -> bool:
        """Whether a fold is under way, asked for, or due by the points journaled."""
        return self._fold is not None or self._fold_wanted or self._journaled >= self.compact_every

    def _fold_due(self) -> bool:
        return self._fold_wanted_now() and time.monotonic() >= self._fold_retry_at

    def _fold_wait(self) -> float | None:
        """How long the worker may sleep before a delayed fold is due (``None``: forever)."""
        if not self._fold_wanted_now():
            return None
        return max(0.0, self._fold_retry_at - time.monotonic())

    def _try_fold_step(self) -> None:
        try:
            self._fold_step()
        except Exception as exc:
            # The points are committed in the journal whatever happens here: a failed fold
            # costs disk space, never an acknowledged point. Try again a little later.
            self._roll_back()
            self._fold_retry_at = time.monotonic() + FOLD_RETRY_DELAY
            logger.warning(
                "folding the journal of %s failed, trying again in %.0f s "
                "(no committed point is affected): %s",
                self.path,
                FOLD_RETRY_DELAY,
                one_line(exc),
            )

    def _fold_step(self) -> None:
        """One transaction of the fold: a chunk of keys, or a run of journal rows to delete."""
        fold = self._fold
        if fold is None:
            fold = self._fold = self._start_fold()
            if fold is None:
                return
        db = self._db
        if fold.sort_a_run():
            return
        if fold.left:
            chunk = fold.chunk(self.fold_chunk)
            # The snapshots are taken under the lock, a few operations per key; the points are
            # copied and packed after it is released.
            with self._memory_lock:
                frozen = [self._memory.snapshot(key) for key in chunk]
            rows = [_series_row(key, pieces) for key, pieces in zip(chunk, frozen, strict=True)]
            with self._transaction():
                db.executemany(_REPLACE_SERIES, rows)
            fold.written()
            return
        # Every key is written: now the rows may go, a run at a time.
        bound = min(fold.last_id, fold.deleted_to + _DELETE_ROWS)
        with self._transaction():
            db.execute("DELETE FROM journal WHERE id <= ?", (bound,))
        fold.deleted_to = bound
        if bound >= fold.last_id:
            self._fold = None
            logger.info("folded the journal of %s into one row per key", self.path)

    def _start_fold(self) -> _Fold | None:
        """Take the keys changed so far, and the journal rows that hold them, for a fold."""
        first, last = self._db.execute("SELECT min(id), max(id) FROM journal").fetchone()
        keys = tuple(self._changed)
        self._changed = {}
        self._journaled = 0
        self._fold_wanted = False
        if last is None:
            return None
        logger.info("folding the journal of %s: %d key(s) changed", self.path, len(keys))
        # The keys later commits change go to a fresh set; their rows (ids above last) stay.
        return _Fold(keys, last, first)

    def _finish(self) -> None:
        """At close, with the queue drained: fold everything, checkpoint, close the file."""
        db = self._db
        try:
            # A fold under way first, then one more for the keys journaled since it began.
            while self._fold is not None or self._fold_wanted or self._journaled:
                self._fold_step()
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except Exception as exc:
            self._roll_back()
            self._close_error = exc
            logger.warning("closing %s: %s", self.path, one_line(exc))
        finally:
            db.close()

    @contextlib.contextmanager
    def _transaction(self, begin: str = "BEGIN") -> Iterator[None]:
        """Run the block in one transaction: committed if it returns, rolled back if it raises."""
        db = self._db
        db.execute(begin)
        try:
            yield
            db.execute("COMMIT")
        except BaseException:
            self._roll_back()
            raise


def _pending(batch: PointBatch) -> _Pending:
    """Check and pack a batch on the caller's thread, so that the worker's transaction cannot
    fail because of one bad point."""
    keys = batch.keys
    joined = "\n".join(keys)  # TypeError for a key that is not a str
    if len(joined.split()) != len(keys):
        raise ValueError("a key is empty or holds whitespace")
    if not joined.isascii():
        joined.encode()  # UnicodeEncodeError (a ValueError) for a lone surrogate
    timestamps = array(INT64_TYPECODE, batch.timestamps)  # OverflowError beyond 64 bits
    values = array("d", batch.values)  # TypeError for what is not a number
    if not len(timestamps) == len(values) == len(keys):
        raise ValueError("a batch whose columns differ in length")
    row = (joined, _pack(timestamps), _pack(values))
    return _Pending(row, PointBatch(keys, values, timestamps), Future())


def _series_row(key: str, pieces: Snapshot) -> tuple[str, bytes, bytes]:
    timestamps = array(INT64_TYPECODE)
    values = array("d")
    for piece in pieces:
        if isinstance(piece, Series):  # a MemoryStore's snapshot holds nothing else
            timestamps.extend(piece.timestamps)
            values.extend(piece.values)
    return key, _pack(timestamps), _pack(values)


def _checked_size(size: int | None) -> int | None:
    if size is not None and size < 1:
        raise ValueError(f"max_size_bytes must be positive or None, not {size}")
    return size


# The file holds little-endian numbers whatever machine wrote it.
_SWAP: Final = sys.byteorder != "little"


Number = TypeVar("Number", int, float)


def _pack(numbers: array[Number]) -> bytes:
    if _SWAP:
        numbers = array(numbers.typecode, numbers)
        numbers.byteswap()
    return numbers.tobytes()


def _unpack(timestamps: object, values: object) -> tuple[array[int], array[float]]:
    """The arrays that :func:`_pack` wrote as ``timestamps`` and ``values``."""
    if type(timestamps) is not bytes or type(values) is not bytes:
        raise _Damaged("a column that should be packed numbers is not")
    if len(timestamps) != len(values) or len(timestamps) % 8:
        raise _Damaged("packed columns of mismatched lengths")
    numbers = array(INT64_TYPECODE, timestamps), array("d", values)
    if _SWAP:
        for column in numbers:
            column.byteswap()
    return numbers
