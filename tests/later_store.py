"""A store for tests that stores when the test says so, as a durable store's thread would."""

from __future__ import annotations

import threading
from concurrent.futures import Future

from metrics_lab import MemoryStore
from metrics_lab.storage import PointBatch


class LaterStore(MemoryStore):
    """A memory store whose writes wait for :meth:`commit`, unless it is :attr:`open`.

    :attr:`pending` holds the waiting writes, oldest first, as ``(batch, future)``;
    :attr:`points_written` counts every point written to it. Safe to commit or open from the
    test's thread while a server writes from its own.
    """

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[tuple[PointBatch, Future[None]]] = []
        self.points_written = 0
        self.open = False
        """Once true, writes are stored at once (the store has caught up)."""
        self._guard = threading.Lock()

    def write(self, batch: PointBatch) -> Future[None]:
        written: Future[None] = Future()
        with self._guard:
            self.points_written += len(batch)
            self.pending.append((batch, written))
        if self.open:
            self.commit()
        return written

    def commit(self, failure: BaseException | None = None) -> None:
        """Store every waiting write and complete its future; or, with ``failure``, fail them."""
        with self._guard:
            pending, self.pending = self.pending, []
        for batch, written in pending:
            if failure is None:
                with self.lock:
                    super().write(batch).result()
                written.set_result(None)
            else:
                written.set_exception(failure)
