"""A written batch on its way to the disk, shared by the durable stores' writer threads.

A store's ``write`` wraps the batch in a :class:`PendingWrite` and queues it; its writer
threads commit it, in one part (:class:`~metrics_lab.sqlite_store.SQLiteStore`) or in one
part per writer, each writer its keys' share (:class:`~metrics_lab.postgres_store.PostgresStore`),
and say when each part is through. The future that ``write`` returned is done once every
part is committed, and failed if any part was not: never ``ok`` for a point that is not
committed.

>>> from metrics_lab.storage import PointBatch
>>> pending = PendingWrite(PointBatch.of([("cpu", 0.5, 1), ("mem", 0.7, 1)]), parts=2)
>>> pending.part_done(None)
>>> pending.future.done()
False
>>> pending.part_done(None)
>>> pending.future.result()
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future

from metrics_lab.storage import PointBatch

__all__ = ["Columns", "PendingWrite"]

Columns = tuple[Sequence[str], Sequence[int], Sequence[float]]
"""Points as three columns: keys, timestamps, values."""


class PendingWrite:
    """A batch committed in ``parts`` parts; :attr:`future` is done when the last is through.

    The lock is this batch's own: the writers of one batch wait for each other a moment, but
    never for another batch, nor for another store.
    """

    __slots__ = ("_failure", "_left", "_lock", "_shares", "batch", "future", "parts")

    def __init__(self, batch: PointBatch, parts: int = 1) -> None:
        self.batch = batch
        self.future: Future[None] = Future()
        self.parts = parts
        self._left = parts
        self._failure: BaseException | None = None
        self._shares: Sequence[Columns] | None = None
        # Several parts end on several writers' threads; one part needs no lock, and making
        # and taking one made a lone put to SQLite cost 2.5% more instructions.
        self._lock = threading.Lock() if parts > 1 else None

    def share(self, part: int) -> Columns:
        """The points whose key falls to ``part`` by its hash, so that one key is always
        written by one writer, in order (the batch is cut once, for all parts)."""
        if self._lock is None:
            return self.batch.keys, self.batch.timestamps, self.batch.values
        with self._lock:
            if self._shares is None:
                shares: list[tuple[list[str], list[int], list[float]]]
                shares = [([], [], []) for _ in range(self.parts)]
                for key, timestamp, value in self.batch:
                    keys, timestamps, values = shares[hash(key) % self.parts]
                    keys.append(key)
                    timestamps.append(timestamp)
                    values.append(value)
                self._shares = shares
            return self._shares[part]

    def part_done(self, failure: BaseException | None) -> None:
        """One part is through: committed, or not for ``failure``. After the last part the
        future is done, or failed with the first failure if any part failed."""
        if self._lock is not None:  # the last part through settles the future
            with self._lock:
                self._left -= 1
                if self._failure is None:
                    self._failure = failure
                if self._left:
                    return
                failure = self._failure
        if failure is None:
            self.future.set_result(None)
        else:
            self.future.set_exception(failure)
