"""Writing: the worker thread, the only one that writes to the file.

Callers check and pack their points (:func:`journal_row`) and queue them
(:meth:`Writer.submit`). The worker takes everything queued meanwhile, writes it in one
transaction and commits (*group commit*), then adds the points to the committed ones in
memory and completes the futures; or fails them all if the commit failed. Between commits it
folds the journal into ``series`` in chunks of keys, one transaction each (*compaction*).
"""

from __future__ import annotations

import contextlib
import heapq
import sqlite3
import threading
import time
from array import array
from collections.abc import Iterator
from itertools import islice
from typing import Final

from metrics_lab.pending_write import PendingWrite
from metrics_lab.sqlite_store.database import (
    INSERT_JOURNAL,
    REPLACE_SERIES,
    JournalRow,
    logger,
    pack,
)
from metrics_lab.sqlite_store.opening import Opened
from metrics_lab.sqlite_store.reading import CommittedPoints
from metrics_lab.storage import INT64_TYPECODE, PointBatch, Series, Snapshot, StoreFailure, one_line

__all__ = [
    "DEFAULT_COMPACT_EVERY",
    "DEFAULT_FOLD_CHUNK",
    "FOLD_RETRY_DELAY",
    "Writer",
    "journal_row",
]

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

_Queued = tuple[JournalRow, PendingWrite]  # a batch's journal row, and the batch on its way


def journal_row(batch: PointBatch) -> tuple[JournalRow, PointBatch]:
    """Check and pack a batch on the caller's thread, so that the worker's transaction cannot
    fail because of one bad point: its journal row, and its points as checked.

    Raises :class:`TypeError`, :class:`ValueError` or :class:`OverflowError` for a batch
    with a point the file cannot hold.
    """
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
    return (joined, pack(timestamps), pack(values)), PointBatch(keys, values, timestamps)


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


class Writer:
    """The worker thread and what it owns: the file, the fold, the queue of batches to commit.

    Started at once, on the file that :func:`~metrics_lab.sqlite_store.opening.open_database`
    opened; adds what it commits to ``committed``. :meth:`close` stops it.
    """

    def __init__(
        self,
        opened: Opened,
        committed: CommittedPoints,
        *,
        compact_every: int,
        fold_chunk: int,
        max_size: int | None,
    ) -> None:
        self.compact_every = compact_every
        self.fold_chunk = fold_chunk
        self._database = opened.database
        self._path = opened.database.path
        self._committed = committed
        # What callers hand to the worker, guarded by _wakeup.
        self._wakeup = threading.Condition()
        self._queue: list[_Queued] = []
        self._closing = False
        self._max_size = max_size
        self._size_changed = False  # opening applied the first cap itself
        # The worker's own state (and the constructor's, before the worker starts).
        # Keys journaled since the current fold began. A dict (of None), not a set: the
        # garbage collector does not track a dict of strings, and a set of a million keys
        # would cost every full collection a visit to each.
        self._changed: dict[str, None] = opened.changed
        self._journaled = opened.journaled  # points journaled since the current fold began
        self._fold: _Fold | None = None
        self._fold_wanted = opened.journaled > 0  # a journal was left by a crash: fold it soon
        self._fold_retry_at = 0.0
        self._close_error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"SQLiteStore({self._path.name})", daemon=True
        )
        self._thread.start()

    # --- the callers' side --------------------------------------------------------------

    def submit(self, row: JournalRow, pending: PendingWrite) -> bool:
        """Queue a batch for the next commit; ``False`` if the store is closed."""
        with self._wakeup:
            if self._closing:
                return False
            self._queue.append((row, pending))
            self._wakeup.notify()
        return True

    @property
    def max_size(self) -> int | None:
        """The cap on the file's size in bytes (``None``: none)."""
        return self._max_size

    @max_size.setter
    def max_size(self, size: int | None) -> None:
        with self._wakeup:
            self._max_size = size
            self._size_changed = True
            self._wakeup.notify()

    @property
    def unfolded_keys(self) -> int:
        """How many keys have journaled points not yet folded into ``series``."""
        fold = self._fold
        return len(self._changed) + (fold.left if fold is not None else 0)

    def close(self) -> BaseException | None:
        """Commit what is queued, fold the journal, checkpoint the log, close the file; wait
        for all that. Returns why the fold or the checkpoint failed, at the first call only."""
        if threading.current_thread() is self._thread:
            # A future's done callback runs in the worker: it cannot wait for itself.
            raise RuntimeError("close() cannot be called from a write's done callback")
        with self._wakeup:
            first = not self._closing
            self._closing = True
            self._wakeup.notify()
        self._thread.join()
        error, self._close_error = self._close_error, None
        return error if first else None

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
                        self._database.apply_size_cap(self._max_size)
                if group:
                    self._commit(group)
                if self._fold_due():
                    self._try_fold_step()
                elif closing and not group:
                    break
            self._finish()
        except BaseException as exc:  # a bug: fail what waits rather than leave it hanging
            logger.exception("the SQLiteStore worker for %s stopped", self._path)
            self._close_error = exc
            with self._wakeup:
                self._closing = True
                group, self._queue = self._queue, []
            for _, pending in group:
                pending.part_done(StoreFailure(f"the store {self._path} stopped"))
            with contextlib.suppress(sqlite3.Error):
                self._database.close()

    def _commit(self, group: list[_Queued]) -> None:
        """Write the group's rows in one transaction; then store them, or fail them all."""
        try:
            with self._database.transaction() as db:
                db.executemany(INSERT_JOURNAL, [row for row, _ in group])
        except Exception as exc:
            # SQLite may have rolled back the whole transaction by itself (SQLITE_FULL
            # does): whatever it did, none of the group is committed.
            points = sum(len(pending.batch) for _, pending in group)
            logger.warning(
                "the database %s refused %d point(s) from %d batch(es): %s",
                self._path,
                points,
                len(group),
                one_line(exc),
            )
            for _, pending in group:
                pending.part_done(
                    StoreFailure(f"the database {self._path} refused the points: {one_line(exc)}")
                )
            return
        for _, pending in group:
            batch = pending.batch
            stored = self._committed.add(batch)
            self._changed.update(dict.fromkeys(batch.keys))
            self._journaled += len(batch)
            # never a failure, for points journal_row() accepted
            pending.part_done(stored.exception())

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
            self._database.roll_back()
            self._fold_retry_at = time.monotonic() + FOLD_RETRY_DELAY
            logger.warning(
                "folding the journal of %s failed, trying again in %.0f s "
                "(no committed point is affected): %s",
                self._path,
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
        if fold.sort_a_run():
            return
        if fold.left:
            chunk = fold.chunk(self.fold_chunk)
            # The snapshots are taken under the lock, a few operations per key; the points are
            # copied and packed after it is released.
            frozen = self._committed.snapshots(chunk)
            rows = [_series_row(key, pieces) for key, pieces in zip(chunk, frozen, strict=True)]
            with self._database.transaction() as db:
                db.executemany(REPLACE_SERIES, rows)
            fold.written()
            return
        # Every key is written: now the rows may go, a run at a time.
        bound = min(fold.last_id, fold.deleted_to + _DELETE_ROWS)
        with self._database.transaction() as db:
            db.execute("DELETE FROM journal WHERE id <= ?", (bound,))
        fold.deleted_to = bound
        if bound >= fold.last_id:
            self._fold = None
            logger.info("folded the journal of %s into one row per key", self._path)

    def _start_fold(self) -> _Fold | None:
        """Take the keys changed so far, and the journal rows that hold them, for a fold."""
        db = self._database.connection
        first, last = db.execute("SELECT min(id), max(id) FROM journal").fetchone()
        keys = tuple(self._changed)
        self._changed = {}
        self._journaled = 0
        self._fold_wanted = False
        if last is None:
            return None
        logger.info("folding the journal of %s: %d key(s) changed", self._path, len(keys))
        # The keys later commits change go to a fresh set; their rows (ids above last) stay.
        return _Fold(keys, last, first)

    def _finish(self) -> None:
        """At close, with the queue drained: fold everything, checkpoint, close the file."""
        try:
            # A fold under way first, then one more for the keys journaled since it began.
            while self._fold is not None or self._fold_wanted or self._journaled:
                self._fold_step()
            self._database.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except Exception as exc:
            self._database.roll_back()
            self._close_error = exc
            logger.warning("closing %s: %s", self._path, one_line(exc))
        finally:
            self._database.close()


def _series_row(key: str, pieces: Snapshot) -> JournalRow:
    timestamps = array(INT64_TYPECODE)
    values = array("d")
    for piece in pieces:
        if isinstance(piece, Series):  # a MemoryStore's snapshot holds nothing else
            timestamps.extend(piece.timestamps)
            values.extend(piece.values)
    return key, pack(timestamps), pack(values)
