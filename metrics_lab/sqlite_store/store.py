"""The store itself: opening, writing and reading put together behind the Storage contract."""

from __future__ import annotations

import os
from concurrent.futures import Future
from pathlib import Path

from metrics_lab.pending_write import PendingWrite
from metrics_lab.sqlite_store.compaction import (
    DEFAULT_COMPACT_EVERY,
    DEFAULT_FOLD_CHUNK,
    Compaction,
)
from metrics_lab.sqlite_store.opening import Synchronous, open_database
from metrics_lab.sqlite_store.reading import CommittedPoints
from metrics_lab.sqlite_store.writing import Writer, journal_row
from metrics_lab.storage import (
    STORED,
    PointBatch,
    Snapshot,
    Storage,
    StoreFailure,
    failed_write,
    one_line,
)

__all__ = ["SQLiteStore"]


class SQLiteStore(Storage):
    """Points in an SQLite database file; survives restarts and crashes of the process.

    ``path`` is created if it does not exist (its directory must). ``synchronous`` chooses what
    a commit waits for: ``"FULL"`` (the default) syncs the write-ahead log to the disk at every
    commit, so an acknowledged put survives a power cut; ``"NORMAL"`` leaves that to the
    operating system, which still survives a crash or ``kill -9`` of the server but may lose
    the last commits if the machine itself goes down. ``lock_timeout`` is how long to wait
    for another process's lock before giving up. ``compact_every`` and ``fold_chunk``: see
    :mod:`metrics_lab.sqlite_store`. ``max_size_bytes`` caps the size of the database file
    (``None``: no cap but the disk's); once it is reached, puts fail as on a full disk, until
    the cap is raised (:attr:`max_size_bytes` may be set at any time) or a fold frees room.

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
        max_size = _checked_size(max_size_bytes)
        opened = open_database(
            self.path, synchronous=synchronous, lock_timeout=lock_timeout, max_size=max_size
        )
        self._committed = CommittedPoints(opened.memory)
        self._compaction = Compaction(
            opened, self._committed, compact_every=compact_every, fold_chunk=fold_chunk
        )
        self._writer = Writer(opened.database, self._committed, self._compaction, max_size=max_size)

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
            row, checked = journal_row(batch)
        except (TypeError, ValueError, OverflowError) as exc:
            return failed_write(f"{self.path} cannot hold these points: {one_line(exc)}")
        pending = PendingWrite(checked)
        if not self._writer.submit(row, pending):
            return failed_write(f"the store {self.path} is closed")
        return pending.future

    def snapshot(self, key: str | None = None) -> Snapshot:
        """See :class:`~metrics_lab.storage.Storage`: every committed point, as of the call."""
        return self._committed.snapshot(key)

    def __len__(self) -> int:
        """The number of stored points."""
        return len(self._committed)

    @property
    def compact_every(self) -> int:
        """Journaled points after which the journal is folded (:mod:`metrics_lab.sqlite_store`)."""
        return self._compaction.compact_every

    @property
    def fold_chunk(self) -> int:
        """Keys written to ``series`` per fold transaction (:mod:`metrics_lab.sqlite_store`)."""
        return self._compaction.fold_chunk

    @property
    def max_size_bytes(self) -> int | None:
        """The cap on the database file's size (``None``: none). Setting it takes effect
        before the next commit; raising it lets refused puts succeed again."""
        return self._writer.max_size

    @max_size_bytes.setter
    def max_size_bytes(self, size: int | None) -> None:
        self._writer.max_size = _checked_size(size)

    @property
    def unfolded_keys(self) -> int:
        """How many keys have journaled points not yet folded into ``series`` (for
        monitoring; exact only when read from a future's done callback)."""
        return self._compaction.unfolded_keys

    def close(self) -> None:
        """Commit what is queued, fold the journal, checkpoint the log, release the file.

        Raises :class:`~metrics_lab.storage.StoreFailure` (a one-line message) if the fold or
        the checkpoint fails, a full disk say: every acknowledged point is still committed,
        in the journal, and is replayed when the file is opened again. A second call does
        nothing.
        """
        error = self._writer.close()
        if error is not None:
            raise StoreFailure(
                f"could not finish writing {self.path}: {one_line(error)}; every acknowledged "
                "point is in its journal and comes back when it is opened again"
            ) from error

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"


def _checked_size(size: int | None) -> int | None:
    if size is not None and size < 1:
        raise ValueError(f"max_size_bytes must be positive or None, not {size}")
    return size
