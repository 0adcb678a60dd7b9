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
  a piece at a time, each at most :data:`SNAPSHOT_PIECE` points (the session encodes a piece
  in one go). A store whose data must travel from elsewhere may yield a ``Future``
  instead of a piece: "not ready yet, come back when this is done". Such a store may fix its
  view a little after the call: then it yields a future first, done once the view is fixed,
  and the session holds back the requests after a get until then.

And ``close()`` releases the store's files or connections. For scripts and tests,
:meth:`Storage.put_many` and :meth:`Storage.read` do the same and wait for the result.

>>> store = MemoryStore()
>>> store.put_many([("cpu", 0.4, 2), ("cpu", 0.5, 1), ("cpu", 0.7, 2)])
>>> store.read("cpu")
[Series(key='cpu', timestamps=[1, 2], values=[0.5, 0.7])]
"""

from __future__ import annotations

import struct
import threading
from abc import ABC, abstractmethod
from array import array
from collections.abc import Hashable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from operator import lt
from typing import Final, NamedTuple

__all__ = [
    "INT64_TYPECODE",
    "SNAPSHOT_PIECE",
    "STORED",
    "GetResult",
    "MemoryStore",
    "PointBatch",
    "Series",
    "Snapshot",
    "Storage",
    "StoreFailure",
    "StoreOpenError",
    "failed_write",
    "one_line",
    "round_robin_period",
    "whole_series",
]


@dataclass(slots=True)
class PointBatch:
    """Points in the order they were put, as three columns: ``keys[i]``, ``timestamps[i]``,
    ``values[i]`` make point ``i``. The one shape a point has from parser to store, in the
    storage side's one column order: key, timestamp, value, as in :class:`Series` and
    :data:`GetResult`. (The wire and the put side of the API, ``Client.put``, ``put_many`` and
    :meth:`of`, say ``key value timestamp``, as the course's protocol does.)

    Treat it as read-only. (It is not a frozen dataclass only because the server makes one
    per lone put, and a frozen dataclass takes several times longer to make.)

    >>> batch = PointBatch.of([("cpu", 0.5, 1), ("mem", 7.0, 1)])
    >>> len(batch), list(batch)
    (2, [('cpu', 1, 0.5), ('mem', 1, 7.0)])
    """

    keys: Sequence[str]
    timestamps: Sequence[int]
    values: Sequence[float]

    @classmethod
    def of(cls, points: Iterable[tuple[str, float, int]]) -> PointBatch:
        """A batch of ``(key, value, timestamp)`` tuples, the order ``Client.put`` takes."""
        columns = tuple(zip(*points, strict=True))
        if not columns:
            return cls((), (), ())
        keys, values, timestamps = columns
        return cls(keys, timestamps, values)

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self) -> Iterator[tuple[str, int, float]]:
        """The points as ``(key, timestamp, value)`` rows."""
        return zip(self.keys, self.timestamps, self.values, strict=True)


class Series(NamedTuple):
    """One key's points: timestamps ascending and unique, ``values[i]`` at ``timestamps[i]``."""

    key: str
    timestamps: Sequence[int]
    values: Sequence[float]


GetResult = dict[str, list[tuple[int, float]]]
"""What a client's ``get`` returns: each key's ``(timestamp, value)`` pairs, timestamps
ascending (the rows of its :class:`Series`, as the client reads them off the wire)."""

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


def one_line(exc: BaseException) -> str:
    """An exception as one line for a log or an error message (its type if it says nothing)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def failed_write(message: str) -> Future[None]:
    """A future already failed with :class:`StoreFailure` (``message``): points not stored."""
    failed: Future[None] = Future()
    failed.set_exception(StoreFailure(message))
    return failed


SNAPSHOT_PIECE: Final = 1024
"""At most this many points per :class:`Series` piece of a snapshot, so that a key of a
million points is encoded and sent a piece at a time: a piece is what the server encodes in
one go (a few tens of KiB of answer, well under a millisecond of work)."""


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

        Pieces come in key then timestamp order, at most :data:`SNAPSHOT_PIECE` points each;
        one key may span several pieces. Points
        written after the call are not seen, however slowly the pieces are taken. A store
        that reads in a thread of its own may instead fix the view a little later: then the
        first thing it yields is a future, done once the view is fixed, and points written
        after that are not seen.
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


_POINT: Final = struct.Struct(INT64_TYPECODE + "d")  # native, as the arrays of _split() read
"""A point as a :class:`MemoryStore` keeps it: timestamp and value, 16 bytes. (The timestamp's
code is :data:`INT64_TYPECODE`, not ``"q"``, for the same reason: ``"q"`` converts an int of
more than 30 bits through a generic routine several times slower, at every put.)"""
_PIECE_SIZE: Final = SNAPSHOT_PIECE * _POINT.size  # bytes of packed points in a full piece

_RUN: Final = 4
"""How many points per key, on average, a batch needs before :meth:`MemoryStore.write` stores
it a key at a time: below that, what it costs to set up each key's run outweighs the gain."""


def round_robin_period(keys: Sequence[Hashable]) -> int | None:
    """``p`` if the keys come round in the same order every ``p`` points (``keys[i] ==
    keys[i + p]``, the first ``p`` all different), at least :data:`_RUN` points per key; else
    ``None``. Then key ``keys[j]``'s points are exactly those at ``j``, ``j + p``, ``j + 2p``...

    The usual shape of a batch: a collector sends the same metrics each interval, in the same
    order; one key alone is ``p = 1``. Every test here is a C loop over the batch.

    >>> round_robin_period(["cpu", "mem"] * 4), round_robin_period(["cpu", "mem", "cpu"] * 4)
    (2, None)
    """
    if len(keys) < _RUN:
        return None
    try:
        period = keys.index(keys[0], 1)
    except ValueError:  # no key comes twice
        return None
    if period * _RUN > len(keys) or keys[period:] != keys[:-period]:
        return None
    return period if len(set(keys[:period])) == period else None


def _packed_run(timestamps: Sequence[int], values: Sequence[float]) -> bytearray:
    """Timestamps and values, as many of each, as packed points, converted by one C call per
    column rather than one per point. Raises as :data:`_POINT` would at a point it cannot hold."""
    count = len(timestamps)
    # struct, not array(typecode, list), converts: array parses a format string per item.
    return _packed(
        array(INT64_TYPECODE, struct.pack(f"{count}{INT64_TYPECODE}", *timestamps)),
        array("d", struct.pack(f"{count}d", *values)),
    )


def _split(points: bytes | bytearray) -> tuple[array[int], array[float]]:
    """Packed points as their timestamps and their values."""
    # Both arrays read every 8 bytes; the timestamps are every other one from the first,
    # the values every other one from the second. (Strided slices are copied in C.)
    return array(INT64_TYPECODE, points)[0::2], array("d", points)[1::2]


def _packed(timestamps: array[int], values: array[float]) -> bytearray:
    """Timestamps and values, as many of each, as packed points."""
    points = bytearray(_POINT.size * len(timestamps))
    with memoryview(points) as view:  # released at once: a bytearray seen by a view cannot grow
        view.cast(INT64_TYPECODE)[0::2] = timestamps
        view.cast("d")[1::2] = values
    return points


def _sorted_points(points: bytearray) -> bytearray:
    """The points sorted by timestamp, the last written value of each timestamp kept."""
    timestamps, values = _split(points)
    # sorted() is stable, so equal timestamps keep their write order and the last wins.
    order = sorted(range(len(timestamps)), key=timestamps.__getitem__)
    latest: dict[int, float] = {}
    for index in order:
        latest[timestamps[index]] = values[index]
    return _packed(array(INT64_TYPECODE, latest.keys()), array("d", latest.values()))


# A key's points as they are at a snapshot: key, points, how many, the last value. Later
# writes append beyond that many or replace the bytearray whole, which the snapshot does not
# see; the one change in place, a rewrite of the last value, is why it keeps its own copy.
_Frozen = tuple[str, bytearray, int, float]


def _freeze(key: str, points: bytearray) -> _Frozen:
    """Sorted points of ``key`` as a snapshot sees them: see :data:`_Frozen`."""
    last_value = _POINT.unpack_from(points, len(points) - _POINT.size)[1]
    return key, points, len(points) // _POINT.size, last_value


class _Unsorted:
    """An unsorted key's points as the snapshots taken since it last changed see them: the
    first ``count`` of ``points``. They never change in place (a write to an unsorted key
    appends; its bytearray is only ever replaced whole), so a snapshot fixes them without
    sorting, and the first snapshot whose pieces reach them sorts them for all the others."""

    __slots__ = ("count", "key", "points", "settled")

    def __init__(self, key: str, points: bytearray) -> None:
        self.key = key
        self.points = points
        self.count = len(points) // _POINT.size
        self.settled: _Frozen | None = None  # sorted, once a snapshot's pieces reached them


class MemoryStore(Storage):
    """The default store: every point in memory, compact, gone when the process ends.

    Each key's points are packed into one bytearray, 16 bytes a point (timestamp, value),
    where dicts of floats take about 100. Points are appended as they come. While timestamps
    arrive in ascending order (the usual case for metrics) a key's points stay sorted and
    unique at no cost; an older point puts the key in the unsorted set. A snapshot does not
    sort: it fixes how many points it sees, and the key is sorted when its pieces are first
    taken, into a new bytearray, keeping the last write per timestamp, once for every snapshot
    taken meanwhile (so a ``get *`` sorts one key at a time, between other clients' requests).
    The store keeps the sorted points if the key has not changed since. (A snapshot of one
    sorted key that fits in a piece, what most gets ask for, copies it at once: that is all
    the work its one piece would do later.) So a key's bytearray
    only ever grows at the end, or is replaced whole, except for one case: a rewrite of the
    newest point of a sorted key changes the last value in place.

    Why bytearrays in dicts, and not arrays in an object per key: the garbage collector
    tracks neither bytearrays nor dicts that hold only them (or numbers) under strings. With
    a million keys in objects, a full collection (which visits every tracked object) took
    0.3 s while every client waited; this way the keys cost it nothing. (An unsorted key's
    view, an object, lives from a snapshot until the key is sorted.)

    Not thread-safe by itself: the server calls it from its event loop only. A durable store
    that writes to one from another thread holds :attr:`lock` around every call but the
    taking of pieces, which holds it itself for the one change it makes.
    """

    def __init__(self) -> None:
        self._points: dict[str, bytearray] = {}  # each key's, packed
        self._newest: dict[str, int] = {}  # each key's largest timestamp
        self._unsorted: set[str] = set()  # keys whose points are out of order
        self._sorted_keys: tuple[str, ...] | None = ()  # every key, sorted; None once one is new
        self._views: dict[str, _Unsorted] = {}  # unsorted keys' latest views, not sorted yet
        self.lock = threading.RLock()
        """Held while a snapshot's sorted points replace a key's (see :class:`MemoryStore`).
        Reentrant: a durable store holding it may count the points, which takes it again."""

    def write(self, batch: PointBatch) -> Future[None]:
        """Store the points at once and return :data:`STORED`; see :class:`Storage`.

        A timestamp outside 64 bits or a value that is not a number gives a failed future
        (the protocol never lets either through); the points before it are stored.
        """
        keys, timestamps, values = batch.keys, batch.timestamps, batch.values
        count = len(keys)
        if not count == len(timestamps) == len(values):
            return failed_write("a batch's columns differ in length")
        all_points, newest, pack = self._points, self._newest, _POINT.pack
        try:
            # (The count is tested here too: a lone put costs little more than a function call.)
            if count >= _RUN and (period := round_robin_period(keys)) is not None:
                keys, timestamps, values = self._write_runs(keys, timestamps, values, period)
            # The points left, one at a time. No strict= keyword: any keyword makes zip()
            # slower than storing one point. The lengths were checked above.
            for key, value, timestamp in zip(keys, values, timestamps):  # noqa: B905
                last = newest.get(key)
                if last is None:
                    all_points[key] = bytearray(pack(timestamp, value))
                    self._sorted_keys = None
                elif timestamp > last:  # the usual case: a newer point
                    points = all_points[key]
                    points += pack(timestamp, value)
                elif timestamp == last and key not in self._unsorted:
                    all_points[key][-_POINT.size :] = pack(timestamp, value)  # a rewrite
                    continue
                else:
                    points = all_points[key]
                    points += pack(timestamp, value)
                    self._unsorted.add(key)
                    continue
                newest[key] = timestamp
        except (struct.error, OverflowError, TypeError, ValueError) as exc:
            return failed_write(f"the memory store cannot hold that point: {exc}")
        return STORED

    def _write_runs(
        self, keys: Sequence[str], timestamps: Sequence[int], values: Sequence[float], period: int
    ) -> tuple[Sequence[str], Sequence[int], Sequence[float]]:
        """Store a batch whose keys come round every ``period`` points (see
        :func:`round_robin_period`) a key at a time, as far as it can in one go; return the
        points left for :meth:`write` to store one at a time.

        A key's run newer than its newest point and strictly ascending, the usual case, is
        appended whole. Any other key's points are left, in their order (the order between
        keys does not matter). If a point cannot be stored, nothing is, and all are left:
        one at a time, the points before it are stored and it raises, as write() promises.
        """
        runs = []
        try:
            for first in range(period):
                run_timestamps, run_values = timestamps[first::period], values[first::period]
                packed = _packed_run(run_timestamps, run_values)
                runs.append((keys[first], run_timestamps, run_values, packed))
        except (struct.error, OverflowError, TypeError, ValueError):
            return keys, timestamps, values
        all_points, newest = self._points, self._newest
        left_keys: list[str] = []
        left_timestamps: list[int] = []
        left_values: list[float] = []
        for key, run_timestamps, run_values, packed in runs:
            last = newest.get(key)
            # Strictly ascending (one C loop over pairs) and newer than the key's newest:
            # appended, the key's points stay sorted and unique.
            if (last is None or run_timestamps[0] > last) and all(
                map(lt, run_timestamps, run_timestamps[1:])
            ):
                if last is None:
                    all_points[key] = packed
                    self._sorted_keys = None
                else:
                    all_points[key] += packed
                newest[key] = run_timestamps[-1]
            else:
                left_keys += [key] * len(run_timestamps)
                left_timestamps += run_timestamps
                left_values += run_values
        return left_keys, left_timestamps, left_values

    def snapshot(self, key: str | None = None) -> Snapshot:
        """``key``'s series, or every series by ascending key, as of now; see :class:`Storage`.

        Taking it costs a few operations per key; the points are copied a piece at a time,
        as the pieces are taken, and a key whose points came out of order is sorted then.
        One sorted key that fits in a piece, what most gets ask for, is copied at once.
        """
        if key is None:
            if self._sorted_keys is None:
                # A tuple, not a list: the garbage collector stops tracking a tuple of strings.
                self._sorted_keys = tuple(sorted(self._newest))
            keys: Sequence[str] = self._sorted_keys
        else:
            points = self._points.get(key)
            if points is not None and len(points) <= _PIECE_SIZE and key not in self._unsorted:
                return iter((Series(key, *_split(points)),))
            keys = () if points is None else (key,)
        return self._pieces([self._frozen(name) for name in keys])

    def restore(self, key: str, timestamps: array[int], values: array[float]) -> None:
        """Set ``key``'s points to these, which must be sorted and unique already (a durable
        store loading its saved copy)."""
        self._unsorted.discard(key)
        self._views.pop(key, None)
        if key not in self._newest:
            self._sorted_keys = None
        if not timestamps:
            self._points.pop(key, None)
            self._newest.pop(key, None)
            return
        self._points[key] = _packed(timestamps, values)
        self._newest[key] = timestamps[-1]

    def __len__(self) -> int:
        """The number of stored points (one per key and timestamp)."""
        return sum(self._settled(self._frozen(key))[2] for key in self._points)

    def _frozen(self, key: str) -> _Frozen | _Unsorted:
        """``key``'s points as a snapshot sees them, sorted or not yet."""
        points = self._points[key]
        if key not in self._unsorted:
            return _freeze(key, points)
        view = self._views.get(key)
        if view is None or view.count != len(points) // _POINT.size:  # none, or appended to
            view = self._views[key] = _Unsorted(key, points)
        return view

    def _settled(self, view: _Frozen | _Unsorted) -> _Frozen:
        """A key's points as a snapshot sees them, sorted. An unsorted view is sorted once for
        every snapshot that shares it, and the store keeps the result if the key has not
        changed since, so that later snapshots need not sort it again."""
        if not isinstance(view, _Unsorted):
            return view
        if view.settled is None:
            # Two threads taking pieces of one view (the event loop and a durable store's
            # compaction) may both sort it, outside the lock: equal results, one is kept.
            points = _sorted_points(view.points[: view.count * _POINT.size])
            view.settled = _freeze(view.key, points)
            with self.lock:  # a durable store may be writing from another thread
                if self._views.get(view.key) is view:  # the key's bytearray is view.points
                    del self._views[view.key]
                    if len(view.points) == view.count * _POINT.size:  # not written to since
                        self._points[view.key] = points
                        self._unsorted.discard(view.key)
        return view.settled

    def _pieces(self, frozen: list[_Frozen | _Unsorted]) -> Snapshot:
        for view in frozen:
            key, points, count, last_value = self._settled(view)
            for start in range(0, count, SNAPSHOT_PIECE):
                end = min(start + SNAPSHOT_PIECE, count)
                timestamps, values = _split(points[start * _POINT.size : end * _POINT.size])
                if end == count:
                    values[-1] = last_value
                yield Series(key, timestamps, values)

    def key_count(self) -> int:
        """How many keys have points."""
        return len(self._newest)
