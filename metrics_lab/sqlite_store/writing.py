"""Writing: the worker thread, the only one that writes to the file.

Callers check and pack their points (:func:`journal_row`) and queue them
(:meth:`Writer.submit`). The worker takes everything queued meanwhile, writes it in one
transaction and commits (*group commit*), then adds the points to the committed ones in
memory and completes the futures; or fails them all if the commit failed. Between commits it
takes the steps of the fold that :class:`~metrics_lab.sqlite_store.compaction.Compaction`
says are due.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from array import array

from metrics_lab.logs import LogSummary
from metrics_lab.pending_write import PendingWrite
from metrics_lab.sqlite_store.compaction import Compaction
from metrics_lab.sqlite_store.database import INSERT_JOURNAL, Database, JournalRow, logger, pack
from metrics_lab.sqlite_store.reading import CommittedPoints
from metrics_lab.storage import INT64_TYPECODE, PointBatch, StoreFailure, one_line

__all__ = ["Writer", "journal_row"]

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
    return (joined, pack(timestamps), pack(values)), PointBatch(keys, timestamps, values)


class Writer:
    """The worker thread and what it owns: the file, the fold, the queue of batches to commit.

    Started at once, on the file that :func:`~metrics_lab.sqlite_store.opening.open_database`
    opened; adds what it commits to ``committed`` and tells ``compaction``, whose steps it
    runs between commits. :meth:`close` stops it.
    """

    def __init__(
        self,
        database: Database,
        committed: CommittedPoints,
        compaction: Compaction,
        *,
        max_size: int | None,
    ) -> None:
        self._database = database
        self._path = database.path
        self._committed = committed
        self._compaction = compaction
        # What callers hand to the worker, guarded by _wakeup.
        self._wakeup = threading.Condition()
        self._queue: list[_Queued] = []
        self._closing = False
        self._max_size = max_size
        self._size_changed = False  # opening applied the first cap itself
        self._close_error: BaseException | None = None
        self._refusals = LogSummary(  # an outage refuses every commit: a line per interval
            logger,
            "the database {path} refused {count} point(s) in {events} commit(s); the last "
            "error: {example}",
            path=self._path,
        )
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
        self._refusals.close()
        error, self._close_error = self._close_error, None
        return error if first else None

    # --- the worker ---------------------------------------------------------------------

    def _run(self) -> None:
        """The worker: commit what is queued, fold between commits, finish when closed."""
        compaction = self._compaction
        try:
            while True:
                with self._wakeup:
                    while not self._queue and not self._closing and not compaction.due():
                        self._wakeup.wait(compaction.wait())
                    group, self._queue = self._queue, []
                    closing = self._closing
                    if self._size_changed:
                        self._size_changed = False
                        self._database.apply_size_cap(self._max_size)
                if group:
                    self._commit(group)
                if compaction.due():
                    compaction.try_step()
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
            self._refusals.add(sum(len(pending.batch) for _, pending in group), one_line(exc))
            for _, pending in group:
                pending.part_done(
                    StoreFailure(f"the database {self._path} refused the points: {one_line(exc)}")
                )
            return
        for _, pending in group:
            batch = pending.batch
            stored = self._committed.add(batch)
            self._compaction.journaled(batch.keys)
            # never a failure, for points journal_row() accepted
            pending.part_done(stored.exception())

    def _finish(self) -> None:
        """At close, with the queue drained: fold everything, checkpoint, close the file."""
        try:
            self._compaction.fold_all()
            self._database.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except Exception as exc:
            self._database.roll_back()
            self._close_error = exc
            logger.warning("closing %s: %s", self._path, one_line(exc))
        finally:
            self._database.close()
