"""Reading: every committed point in memory, so that a ``get`` never touches the file."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future

from metrics_lab.storage import MemoryStore, PointBatch, Snapshot

__all__ = ["CommittedPoints"]


class CommittedPoints:
    """A :class:`~metrics_lab.storage.MemoryStore` of the committed points, behind a lock:
    the worker adds points while the server reads. Every method may be called from any
    thread."""

    def __init__(self, memory: MemoryStore) -> None:
        self._memory = memory
        self._lock = memory.lock  # the memory store takes it too, to keep a key it sorted

    def add(self, batch: PointBatch) -> Future[None]:
        """Store points that are committed (the worker's call); see :meth:`MemoryStore.write`."""
        with self._lock:
            return self._memory.write(batch)

    def snapshot(self, key: str | None = None) -> Snapshot:
        """See :meth:`MemoryStore.snapshot`: as of the call."""
        with self._lock:
            return self._memory.snapshot(key)

    def snapshots(self, keys: Sequence[str]) -> list[Snapshot]:
        """A snapshot of each key, all as of the call. Taking them costs a few operations per
        key under the lock; the points are copied as the snapshots are read, after it."""
        with self._lock:
            return [self._memory.snapshot(key) for key in keys]

    def __len__(self) -> int:
        """The number of points."""
        with self._lock:
            return len(self._memory)
