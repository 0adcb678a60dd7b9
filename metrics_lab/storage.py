"""Where the points live: the :class:`Storage` interface and the in-memory store.

The server talks to a store through two calls, so any store with the same behaviour can be
dropped in without touching the server:

- ``write(batch)`` takes a :class:`PointBatch` and returns a :class:`~concurrent.futures.Future`
  that is done once the points are stored (for a durable store: committed), or failed with the
  store's exception if they are not. :class:`MemoryStore` stores at once and returns
  :data:`STORED`; a durable store commits in a thread of its own, so the server never waits
  for a disk.
- ``snapshot(key)`` returns what ``get`` reads, fixed as of the call: ``key``'s points, or
  every key's for ``None``, as :class:`Series` pieces in key then timestamp order, to iterate
  a piece at a time. A store whose data must travel from elsewhere may yield a ``Future``
  instead of a piece: "not ready yet, come back when this is done".

And ``close()`` releases the store's files or connections. For scripts and tests,
:meth:`Storage.put_many` and :meth:`Storage.read` do the same and wait for the result.

>>> store = MemoryStore()
>>> store.put_many([("cpu", 0.4, 2), ("cpu", 0.5, 1), ("cpu", 0.7, 2)])
>>> store.read("cpu")
[Series(key='cpu', timestamps=[1, 2], values=[0.5, 0.7])]
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from array import array
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from typing import Final, NamedTuple

from metrics_lab.protocol import PointBatch

__all__ = [
    "INT64_TYPECODE",
    "SNAPSHOT_PIECE",
    "STORED",
    "MemoryStore",
    "PointBatch",
    "Series",
    "Snapshot",
    "Storage",
    "StoreFailure",
    "StoreOpenError",
    "failed_write",
    "whole_series",
]


class Series(NamedTuple):
    """One key's points: timestamps ascending and unique, ``values[i]`` at ``timestamps[i]``."""

    key: str
    timestamps: Sequence[int]
    values: Sequence[float]


Snapshot = Iterator["Series | Future[None]"]
"""What :meth:`Storage.snapshot` returns: pieces of series, or a future to wait for."""


class StoreOpenError(Exception):
    """A store cannot be opened; the message is one line that says why and what to check."""


class StoreFailure(Exception):
    """The store could not do what was asked (disk full, database gone); the message says why."""


def _stored() -> Future[None]:
    done: Future[None] = Future()
    done.set_result(None)
    return done


STORED: Final = _stored()
"""The future a store returns for points it stored at once (already done, no exception)."""


def failed_write(message: str) -> Future[None]:
    """A future already failed with :class:`StoreFailure` (``message``): points not stored."""
    failed: Future[None] = Future()
    failed.set_exception(StoreFailure(message))
    return failed


SNAPSHOT_PIECE: Final = 4096
"""At most this many points per :class:`Series` piece of a snapshot, so that a key of a
million points is encoded and sent a piece at a time."""


class Storage(ABC):
    """What the server needs from a store. See the module docstring for the contract."""

    @abstractmethod
    def write(self, batch: PointBatch) -> Future[None]:
        """Store the points, in order: a later point replaces an earlier one at its timestamp.

        The future is done once every point is stored (committed, for a durable store), or
        failed if none of them is. It may complete in another thread.
        """

    @abstractmethod
    def snapshot(self, key: str | None = None) -> Snapshot:
        """``key``'s points, or every key's for ``None``, as of this call, a piece at a time.

        Pieces come in key then timestamp order; one key may span several pieces. Points
        written after the call are not seen, however slowly the pieces are taken.
        """

    def close(self) -> None:  # noqa: B027 (a store with nothing to release need not override)
        """Release the store's resources; the store is not used afterwards."""

    def put_many(self, points: Iterable[tuple[str, float, int]]) -> None:
        """Store ``(key, value, timestamp)`` points and wait until they are stored.

        Raises the store's exception if they cannot be.
        """
        self.write(PointBatch.of(points)).result()

    def read(self, key: str | None = None) -> list[Series]:
        """Return ``key``'s series (``[]`` if none), or every series for ``None``, whole."""
        return whole_series(self.snapshot(key))


def whole_series(snapshot: Snapshot) -> list[Series]:
    """Read a snapshot out to the end, waiting where it asks to, one :class:`Series` per key.

    >>> store = MemoryStore()
    >>> store.put_many([("cpu", 0.5, 1)])
    >>> whole_series(store.snapshot())
    [Series(key='cpu', timestamps=[1], values=[0.5])]
    """
    keys: list[str] = []
    timestamps: list[list[int]] = []
    values: list[list[float]] = []
    for piece in snapshot:
        if isinstance(piece, Future):
            piece.result()  # wait until the store has the next piece
            continue
        if not keys or keys[-1] != piece.key:
            keys.append(piece.key)
            timestamps.append([])
            values.append([])
        timestamps[-1].extend(piece.timestamps)
        values[-1].extend(piece.values)
    return [Series(*series) for series in zip(keys, timestamps, values, strict=True)]


INT64_TYPECODE: Final = "l" if array("l").itemsize == 8 else "q"
"""The :mod:`array` type code of 64-bit timestamps: ``"l"`` where a C long has 64 bits (Linux,
macOS), because appending an int above 2**30 (every Unix timestamp) to a ``"q"`` array takes a
slower conversion; Windows' long has 32 bits, so there it is ``"q"``."""


class _Column:
    """One key's points in two typed arrays: 16 bytes a point instead of about 100 in dicts.

    Points are appended as they come. While timestamps arrive in ascending order (the usual
    case for metrics) the arrays stay sorted and unique at no cost; an older point marks the
    column unsorted, and the next read sorts it once, into new arrays, keeping the last write
    per timestamp. So the arrays only ever grow at the end, or are replaced whole, except for
    one case: a rewrite of the newest point changes the last value in place.
    """

    __slots__ = ("newest", "sorted", "timestamps", "values")

    def __init__(self) -> None:
        self.timestamps = array(INT64_TYPECODE)
        self.values = array("d")
        self.sorted = True
        # The largest timestamp in the column. A point above it can be appended as it is,
        # sorted or not (the fast case, inlined in MemoryStore.write); any other point goes
        # through append().
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

    def freeze(self, key: str) -> _Frozen:
        """The column as it is now, for a snapshot: settled arrays, their length, last value.

        Later writes append beyond ``length`` or replace the arrays whole, which the
        snapshot does not see; the one change in place, a rewrite of the last value, is
        why the snapshot keeps its own copy of it.
        """
        self.settle()
        length = len(self.timestamps)
        return _Frozen(
            key, self.timestamps, self.values, length, self.values[-1] if length else 0.0
        )


class _Frozen(NamedTuple):
    key: str
    timestamps: array[int]
    values: array[float]
    length: int
    last_value: float


def _pieces(frozen: list[_Frozen]) -> Snapshot:
    for key, timestamps, values, length, last_value in frozen:
        for start in range(0, length, SNAPSHOT_PIECE):
            end = min(start + SNAPSHOT_PIECE, length)
            piece = values[start:end]
            if end == length:
                piece[-1] = last_value
            yield Series(key, timestamps[start:end], piece)


class MemoryStore(Storage):
    """The default store: every point in memory, compact, gone when the process ends.

    Not thread-safe by itself: the server calls it from its event loop only. (A durable
    store that holds one guards it with a lock of its own.)
    """

    def __init__(self) -> None:
        self._columns: dict[str, _Column] = {}
        self._sorted_keys: list[str] | None = []  # every key, sorted; None once a key is new

    def write(self, batch: PointBatch) -> Future[None]:
        """Store the points at once and return :data:`STORED`; see :class:`Storage`.

        A timestamp outside 64 bits or a value that is not a float gives a failed future
        (the protocol never lets either through); the points before it are stored.
        """
        columns = self._columns
        keys, values, timestamps = batch.keys, batch.values, batch.timestamps
        if not len(keys) == len(values) == len(timestamps):
            return failed_write("a batch's columns differ in length")
        try:
            # No strict= keyword: any keyword makes zip() slower than storing one point.
            # The lengths were checked above.
            for key, value, timestamp in zip(keys, values, timestamps):  # noqa: B905
                column = columns.get(key)
                if column is None:
                    column = columns[key] = _Column()
                    self._sorted_keys = None
                # The common case inlined (this loop is the server's hot path): a newer point.
                if timestamp > column.newest:
                    column.newest = timestamp
                    column.timestamps.append(timestamp)
                    column.values.append(value)
                else:
                    column.append(timestamp, value)
        except (OverflowError, TypeError, ValueError) as exc:
            return failed_write(f"the memory store cannot hold that point: {exc}")
        return STORED

    def snapshot(self, key: str | None = None) -> Snapshot:
        """``key``'s series, or every series by ascending key, as of now; see :class:`Storage`.

        Taking it costs a few operations per key; the points are copied a piece at a time,
        as the pieces are taken.
        """
        columns = self._columns
        if key is None:
            if self._sorted_keys is None:
                self._sorted_keys = sorted(columns)
            keys: list[str] = self._sorted_keys
        else:
            keys = [key] if key in columns else []
        return _pieces([columns[name].freeze(name) for name in keys])

    def restore(self, key: str, timestamps: array[int], values: array[float]) -> None:
        """Set ``key``'s points to these arrays, which must be sorted and unique already
        (a durable store loading its saved copy). The store keeps the arrays."""
        column = _Column()
        column.timestamps, column.values = timestamps, values
        if timestamps:
            column.newest = timestamps[-1]
        if key not in self._columns:
            self._sorted_keys = None
        self._columns[key] = column

    def __len__(self) -> int:
        """The number of stored points (one per key and timestamp)."""
        total = 0
        for column in self._columns.values():
            column.settle()
            total += len(column.timestamps)
        return total

    def key_count(self) -> int:
        """How many keys have points."""
        return len(self._columns)
