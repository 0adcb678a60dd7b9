"""Where the points live: the :class:`Storage` interface and the in-memory store.

The server talks to storage through three calls, so any store with the same behaviour can be
dropped in without touching the server:

- ``put_many(points)``: store ``(key, timestamp, value)`` points; for one key and timestamp
  the last write wins.
- ``read(key)``: one key's points, or every key's with ``key=None``, as :class:`Series`
  sorted by key and then by timestamp, one value per timestamp.
- ``close()``: release what the store holds (files, connections).

The server calls them from its event loop thread, between reads of the network, so they
must be quick and must not block on other threads.

A store that must write each put to disk can also offer ``stage(points)`` and ``commit()``
(:class:`GroupCommitStorage`): the server then stages the puts of every chunk it receives
and commits once per turn of its event loop, so one disk sync covers the batches of all the
connections that arrived together.

>>> store = MemoryStore()
>>> store.put_many([("cpu", 2, 0.4), ("cpu", 1, 0.5), ("cpu", 2, 0.7)])
>>> store.read("cpu")
[Series(key='cpu', timestamps=[1, 2], values=[0.5, 0.7])]
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Sequence
from typing import NamedTuple, Protocol, runtime_checkable

__all__ = [
    "INT64_TYPECODE",
    "GroupCommitStorage",
    "MemoryStore",
    "Point",
    "Series",
    "Storage",
]

Point = tuple[str, int, float]
"""One point as the store takes it: ``(key, timestamp, value)``."""


class Series(NamedTuple):
    """One key's points: timestamps ascending and unique, ``values[i]`` at ``timestamps[i]``."""

    key: str
    timestamps: Sequence[int]
    values: Sequence[float]


class Storage(Protocol):
    """What the server needs from a store. See the module docstring for the contract."""

    def put_many(self, points: Iterable[Point]) -> None:
        """Store the points, in order; a later point replaces an earlier one at its timestamp."""

    def read(self, key: str | None = None) -> list[Series]:
        """Return ``key``'s series (``[]`` if it has no points), or every series for ``None``."""

    def close(self) -> None:
        """Release the store's resources; the store is not used afterwards."""


@runtime_checkable
class GroupCommitStorage(Storage, Protocol):
    """A store whose puts can wait for one commit together (see the module docstring).

    Staged points are not visible to ``read`` until ``commit`` returns. If ``commit`` raises,
    none of the points staged since the last commit are stored. ``put_many`` stages and commits.
    """

    def stage(self, points: Iterable[Point]) -> None:
        """Prepare the points for the next commit; raise (staging nothing) if they cannot be."""

    def commit(self) -> None:
        """Store every staged point, durably, or none of them and raise."""


INT64_TYPECODE = "l" if array("l").itemsize == 8 else "q"
"""The :mod:`array` type code of 64-bit timestamps: ``"l"`` where a C long has 64 bits (Linux,
macOS), because appending an int above 2**30 (every Unix timestamp) to a ``"q"`` array takes a
slower conversion; Windows' long has 32 bits, so there it is ``"q"``."""


class _Column:
    """One key's points in two typed arrays: 16 bytes a point instead of about 100 in dicts.

    Points are appended as they come. While timestamps arrive in ascending order (the usual
    case for metrics) the arrays stay sorted and unique at no cost; an older point marks the
    column unsorted, and the next read sorts it once, keeping the last write per timestamp.
    """

    __slots__ = ("newest", "sorted", "timestamps", "values")

    def __init__(self) -> None:
        self.timestamps = array(INT64_TYPECODE)
        self.values = array("d")
        self.sorted = True
        # The largest timestamp in the column. A point above it can be appended as it is,
        # sorted or not (the fast case, inlined in MemoryStore.put_many); any other point
        # goes through append().
        self.newest: float = -math.inf

    def append(self, timestamp: int, value: float) -> None:
        """Add a point that is not above :attr:`newest`."""
        if self.sorted and timestamp == self.newest:
            self.values[-1] = value  # a rewrite of the newest point: stays sorted
            return
        self.sorted = False
        self.timestamps.append(timestamp)
        self.values.append(value)

    def settle(self) -> None:
        """Sort by timestamp and keep the last written value of each timestamp."""
        if self.sorted:
            return
        timestamps, values = self.timestamps, self.values
        # sorted() is stable, so equal timestamps keep their write order and the last wins.
        order = sorted(range(len(timestamps)), key=timestamps.__getitem__)
        latest: dict[int, float] = {}
        for index in order:
            latest[timestamps[index]] = values[index]
        self.timestamps = array(INT64_TYPECODE, latest.keys())
        self.values = array("d", latest.values())
        self.sorted = True


class MemoryStore:
    """The default store: every point in memory, compact, gone when the process ends."""

    def __init__(self) -> None:
        self._columns: dict[str, _Column] = {}

    def put_many(self, points: Iterable[Point]) -> None:
        """Store the points in order; see :class:`Storage`."""
        columns = self._columns
        for key, timestamp, value in points:
            column = columns.get(key)
            if column is None:
                column = columns[key] = _Column()
            # The common case inlined (this loop is the server's hot path): a newer timestamp.
            if timestamp > column.newest:
                column.newest = timestamp
                column.timestamps.append(timestamp)
                column.values.append(value)
            else:
                column.append(timestamp, value)

    def _restore(self, key: str, timestamps: array[int], values: array[float]) -> None:
        """Set ``key``'s points to these arrays, sorted and unique already (a saved copy)."""
        column = self._columns[key] = _Column()
        column.timestamps, column.values = timestamps, values
        if timestamps:
            column.newest = timestamps[-1]

    def _packed(self, key: str) -> tuple[array[int], array[float]]:
        """``key``'s timestamps and values, sorted and unique, as the arrays the store keeps."""
        column = self._columns[key]
        column.settle()
        return column.timestamps, column.values

    def read(self, key: str | None = None) -> list[Series]:
        """Return ``key``'s series, or all series by ascending key; see :class:`Storage`."""
        if key is None:
            return [self._series(name) for name in sorted(self._columns)]
        if key not in self._columns:
            return []
        return [self._series(key)]

    def _series(self, key: str) -> Series:
        column = self._columns[key]
        column.settle()
        return Series(key, column.timestamps.tolist(), column.values.tolist())

    def __len__(self) -> int:
        """The number of stored points (one per key and timestamp)."""
        total = 0
        for column in self._columns.values():
            column.settle()
            total += len(column.timestamps)
        return total

    def close(self) -> None:
        """Nothing to release: the points go with the object."""
