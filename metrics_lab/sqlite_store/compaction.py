"""Compaction: the journal folded into ``series``, one chunk of keys per transaction.

The worker asks :class:`Compaction` whether a fold is due (every ``compact_every``
journaled points, soon after a crash left a journal, at close) and runs it a step at a time
between its commits, so that a put waits for one step at most, never for a whole fold.
Journal rows are deleted only once every key they changed is written to ``series``.
"""

from __future__ import annotations

import heapq
import time
from array import array
from collections.abc import Iterator, Sequence
from itertools import islice
from typing import Final

from metrics_lab.sqlite_store.database import REPLACE_SERIES, JournalRow, logger, pack
from metrics_lab.sqlite_store.opening import Opened
from metrics_lab.sqlite_store.reading import CommittedPoints
from metrics_lab.storage import INT64_TYPECODE, Series, Snapshot, one_line

__all__ = ["DEFAULT_COMPACT_EVERY", "DEFAULT_FOLD_CHUNK", "FOLD_RETRY_DELAY", "Compaction"]

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


class Compaction:
    """The fold's state and steps; the worker's own (read elsewhere only for monitoring).

    Folds the keys of the points that :meth:`journaled` was told of, reading their points
    from ``committed`` and writing them to ``opened``'s file; a journal that ``opened``
    found (left by a crash) is folded soon.
    """

    def __init__(
        self,
        opened: Opened,
        committed: CommittedPoints,
        *,
        compact_every: int,
        fold_chunk: int,
    ) -> None:
        self.compact_every = compact_every
        self.fold_chunk = fold_chunk
        self._database = opened.database
        self._path = opened.database.path
        self._committed = committed
        # Keys journaled since the current fold began. A dict (of None), not a set: the
        # garbage collector does not track a dict of strings, and a set of a million keys
        # would cost every full collection a visit to each.
        self._changed: dict[str, None] = opened.changed
        self._journaled = opened.journaled  # points journaled since the current fold began
        self._fold: _Fold | None = None
        self._fold_wanted = opened.journaled > 0  # a journal was left by a crash: fold it soon
        self._fold_retry_at = 0.0

    def journaled(self, keys: Sequence[str]) -> None:
        """Points of these keys are committed to the journal."""
        self._changed.update(dict.fromkeys(keys))
        self._journaled += len(keys)

    @property
    def unfolded_keys(self) -> int:
        """How many keys have journaled points not yet folded into ``series``."""
        fold = self._fold
        return len(self._changed) + (fold.left if fold is not None else 0)

    def due(self) -> bool:
        """Whether the worker should take a step of the fold now."""
        return self._wanted_now() and time.monotonic() >= self._fold_retry_at

    def wait(self) -> float | None:
        """How long the worker may sleep before a delayed fold is due (``None``: forever)."""
        if not self._wanted_now():
            return None
        return max(0.0, self._fold_retry_at - time.monotonic())

    def try_step(self) -> None:
        """One step of the fold; if it fails, a warning, and the next step a little later."""
        try:
            self._step()
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

    def fold_all(self) -> None:
        """Fold every journaled point now, a step after another (at close; raises)."""
        # A fold under way first, then one more for the keys journaled since it began.
        while self._fold is not None or self._fold_wanted or self._journaled:
            self._step()

    def _wanted_now(self) -> bool:
        """Whether a fold is under way, asked for, or due by the points journaled."""
        return self._fold is not None or self._fold_wanted or self._journaled >= self.compact_every

    def _step(self) -> None:
        """One transaction of the fold: a chunk of keys, or a run of journal rows to delete."""
        fold = self._fold
        if fold is None:
            fold = self._fold = self._start()
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

    def _start(self) -> _Fold | None:
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


def _series_row(key: str, pieces: Snapshot) -> JournalRow:
    timestamps = array(INT64_TYPECODE)
    values = array("d")
    for piece in pieces:
        if isinstance(piece, Series):  # a MemoryStore's snapshot holds nothing else
            timestamps.extend(piece.timestamps)
            values.extend(piece.values)
    return key, pack(timestamps), pack(values)
