"""One behavioural suite for every store: each kind in STORE_KINDS must pass all of it.

The contract is in ``metrics_lab/storage.py``: ``write`` returns a future, ``snapshot`` is a
view fixed at the call, ``put_many`` and ``read`` wait for them.
"""

from __future__ import annotations

import gc
import itertools
import tempfile
from array import array
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrics_lab import MemoryStore, Storage, storage
from metrics_lab.sqlite_store import SQLiteStore
from metrics_lab.storage import (
    INT64_TYPECODE,
    SNAPSHOT_PIECE,
    PointBatch,
    Series,
    Snapshot,
    StoreFailure,
    whole_series,
)
from tests.pg_cluster import new_database

StoreFactory = Callable[[], Storage]
Row = tuple[str, list[int], list[float]]

STORE_KINDS = ("memory", "postgres", "sqlite")
"""Every kind of store metrics_lab has; each must pass the whole suite."""


def store_factory(kind: str, folder: Path, request: pytest.FixtureRequest) -> StoreFactory:
    """Makes stores of ``kind``; a durable store made again by it reopens the same data
    (a file in ``folder``, or one new database on the test session's PostgreSQL)."""
    if kind == "memory":
        return MemoryStore
    if kind == "sqlite":
        return lambda: SQLiteStore(folder / "suite.db")
    # Imported here: without psycopg, pg_cluster skips these tests and the others still run.
    from metrics_lab.postgres_store import PostgresStore

    url = new_database(request.getfixturevalue("pg_cluster"))
    return lambda: PostgresStore(url)


@pytest.fixture(params=STORE_KINDS)
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Makes stores of one kind; a durable store made again sees the same data."""
    factory = store_factory(request.param, tmp_path, request)
    made: list[Storage] = []

    def make() -> Storage:
        store = factory()
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture
def store(make_store: StoreFactory) -> Storage:
    return make_store()


def as_rows(series: Iterable[Series]) -> list[Row]:
    return [(s.key, list(s.timestamps), list(s.values)) for s in series]


def rows(store: Storage, key: str | None = None) -> list[Row]:
    return as_rows(store.read(key))


def snapshot_rows(store: Storage, key: str | None = None) -> Callable[[], list[Row]]:
    """Take a snapshot now; the returned function reads it out (later) as whole rows.

    It takes the first piece and, if that is a future, waits for it, as the session does
    before it runs a later request: a store that reads in a thread of its own has fixed its
    view by then (see ``Storage.snapshot``).
    """
    pieces = store.snapshot(key)
    first = next(pieces, None)
    if isinstance(first, Future):
        first.result(timeout=10)
        first = None
    rest = pieces if first is None else itertools.chain((first,), pieces)
    return lambda: as_rows(whole_series(rest))


def test_empty_store_reads_nothing(store: Storage) -> None:
    assert store.read() == []
    assert store.read("cpu") == []


def test_points_come_back_sorted_by_key_then_timestamp(store: Storage) -> None:
    store.put_many([("mem", 1.0, 5), ("cpu", 0.3, 3), ("cpu", 0.1, 1), ("cpu", 0.2, 2)])
    assert rows(store) == [("cpu", [1, 2, 3], [0.1, 0.2, 0.3]), ("mem", [5], [1.0])]
    assert rows(store, "cpu") == [("cpu", [1, 2, 3], [0.1, 0.2, 0.3])]
    assert store.read("cpu") == [Series("cpu", [1, 2, 3], [0.1, 0.2, 0.3])]


def test_keys_sort_by_code_point(store: Storage) -> None:
    store.put_many([("b", 1.0, 1), ("a", 2.0, 2), ("B", 3.0, 3), ("ключ", 4.0, 4), ("é", 5.0, 5)])
    assert [series.key for series in store.read()] == ["B", "a", "b", "é", "ключ"]
    # Beyond the Basic Multilingual Plane, ligatures, CJK: still code point order (a database
    # sorts by its collation unless told otherwise).
    more = ["a.cpu", "e", "z", "\U0001d518nicode", "ﬁ", "~", "日本"]
    store.put_many([(key, 1.0, 1) for key in more])
    keys = ["B", "a", "b", "é", "ключ", *more]
    assert [series.key for series in store.read()] == sorted(keys)


def test_last_write_wins_within_and_across_calls(store: Storage) -> None:
    store.put_many([("cpu", 0.1, 1), ("cpu", 0.2, 1)])
    store.put_many([("cpu", 0.3, 1), ("cpu", 9.0, 0), ("cpu", 0.4, 1)])
    assert rows(store) == [("cpu", [0, 1], [9.0, 0.4])]


def test_out_of_order_points_settle_in_order(store: Storage) -> None:
    store.put_many([("k", 5.0, 5), ("k", 1.0, 1), ("k", 50.0, 5), ("k", 3.0, 3), ("k", 10.0, 1)])
    assert rows(store, "k") == [("k", [1, 3, 5], [10.0, 3.0, 50.0])]
    store.put_many([("k", 2.0, 2), ("k", 30.0, 3)])
    assert rows(store, "k") == [("k", [1, 2, 3, 5], [10.0, 2.0, 30.0, 50.0])]


def test_extremes_round_trip_exactly(store: Storage) -> None:
    store.put_many(
        [
            ("k", -1.7976931348623157e308, -(2**63)),
            ("k", 5e-324, 2**63 - 1),
            ("k", 0.1 + 0.2, 0),
            ("ключ.cpu", -0.0, 7),
        ]
    )
    assert rows(store) == [
        ("k", [-(2**63), 0, 2**63 - 1], [-1.7976931348623157e308, 0.1 + 0.2, 5e-324]),
        ("ключ.cpu", [7], [-0.0]),
    ]
    assert str(store.read("ключ.cpu")[0].values[0]) == "-0.0"


def test_keys_are_case_sensitive_and_exact(store: Storage) -> None:
    store.put_many([("CPU", 1.0, 1), ("cpu", 2.0, 1)])
    assert rows(store, "cpu") == [("cpu", [1], [2.0])]
    assert store.read("cp") == []


def test_a_key_no_put_could_store_reads_as_nothing(store: Storage) -> None:
    store.put_many([("cpu", 1.0, 1)])
    assert store.read("\udcff") == []  # what the server makes of a get with bad UTF-8
    assert store.read("c\x00pu") == []  # a put refuses control characters in a key


def test_empty_put_many_changes_nothing(store: Storage) -> None:
    store.put_many([])
    assert store.read() == []


def test_a_batch_whose_columns_differ_fails_alone(store: Storage) -> None:
    with pytest.raises(StoreFailure):
        store.write(PointBatch(("a", "b"), (1, 2), (1.0,))).result(timeout=10)
    store.put_many([("cpu", 1.0, 1)])
    assert rows(store) == [("cpu", [1], [1.0])]


def test_write_returns_a_future_that_is_done_once_stored(store: Storage) -> None:
    written = store.write(PointBatch(("cpu", "mem"), (1, 1), (0.5, 7.0)))
    assert written.result(timeout=10) is None
    assert rows(store) == [("cpu", [1], [0.5]), ("mem", [1], [7.0])]


def test_many_points_many_keys(store: Storage) -> None:
    points = [(f"host{i % 7}.cpu", float(i), i // 7) for i in range(7000)]
    store.put_many(reversed(points))
    series = store.read()
    assert [s.key for s in series] == [f"host{i}.cpu" for i in range(7)]
    assert all(list(s.timestamps) == list(range(1000)) for s in series)


def test_keys_add_nothing_for_the_garbage_collector_to_track(store: Storage) -> None:
    # A full collection visits every tracked object: with one per key, a million keys made
    # each take 0.3 s, every client of the server waiting (benchmarks.durable found it).
    keys = 20_000
    store.put_many([("warm-up", 1.0, 1)])
    gc.collect()
    before = len(gc.get_objects())
    store.put_many([(f"k{index}", 1.0, index) for index in range(keys)])
    store.put_many([(f"k{index}", 2.0, index + 1) for index in range(0, keys, 2)])
    store.put_many([(f"k{index}", 3.0, 0) for index in range(0, keys, 3)])  # out of order
    assert store.read("k6")[0].timestamps == [0, 6, 7]  # a read sorts that column
    gc.collect()
    assert len(gc.get_objects()) - before < keys // 100


def test_a_big_key_comes_in_pieces_that_make_it_whole(store: Storage) -> None:
    count = 2 * SNAPSHOT_PIECE + 5
    store.put_many([("big", float(i), i) for i in range(count)])
    pieces = [piece for piece in store.snapshot("big") if isinstance(piece, Series)]
    assert all(len(piece.timestamps) <= SNAPSHOT_PIECE for piece in pieces)
    assert [t for piece in pieces for t in piece.timestamps] == list(range(count))


def test_a_snapshot_does_not_see_later_writes(store: Storage) -> None:
    store.put_many([("a", 1.0, 1), ("a", 2.0, 2), ("b", 1.0, 1), ("c", 1.0, 5), ("c", 2.0, 3)])
    read_out = snapshot_rows(store)
    # Every kind of change: a rewrite of the newest point, a point past it, an older point,
    # a new key before and after the others, a rewrite of an out-of-order column.
    store.put_many([("a", 9.0, 2), ("a", 3.0, 3), ("b", 0.5, 0), ("0", 1.0, 1), ("z", 1.0, 1)])
    store.put_many([("c", 7.0, 3), ("c", 8.0, 4)])
    assert read_out() == [
        ("a", [1, 2], [1.0, 2.0]),
        ("b", [1], [1.0]),
        ("c", [3, 5], [2.0, 1.0]),
    ]
    assert rows(store, "a") == [("a", [1, 2, 3], [1.0, 9.0, 3.0])]


def test_a_snapshot_of_one_key_read_piece_by_piece_while_it_grows(store: Storage) -> None:
    store.put_many([("k", float(i), i) for i in range(3 * SNAPSHOT_PIECE)])
    pieces = store.snapshot("k")
    first = next(piece for piece in pieces if isinstance(piece, Series))
    store.put_many([("k", -1.0, i) for i in range(0, 4 * SNAPSHOT_PIECE, 7)])
    rest = [piece for piece in pieces if isinstance(piece, Series)]
    values = [v for piece in (first, *rest) for v in piece.values]
    assert values == [float(i) for i in range(3 * SNAPSHOT_PIECE)]


def test_durable_store_keeps_points_across_reopen(
    request: pytest.FixtureRequest, make_store: StoreFactory
) -> None:
    if request.node.callspec.params["make_store"] == "memory":
        pytest.skip("MemoryStore forgets by design")
    first = make_store()
    first.put_many([("cpu", 0.5, 1), ("cpu", 0.6, 2)])
    first.close()
    assert rows(make_store()) == [("cpu", [1, 2], [0.5, 0.6])]


def test_memory_store_counts_points_once_per_timestamp() -> None:
    store = MemoryStore()
    store.put_many([("a", 1.0, 1), ("a", 2.0, 1), ("b", 1.0, 1), ("a", 1.0, 0), ("a", 3.0, 0)])
    assert len(store) == 3
    assert store.key_count() == 2


def test_memory_store_sorts_a_key_when_its_pieces_are_taken_once_for_every_snapshot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A snapshot that sorted every key at once held the server's loop for a second over a
    # million points out of order (benchmarks.run's readers): the sort is counted, not timed.
    sorts: list[int] = []

    def counted(points: bytearray) -> bytearray:
        sorts.append(len(points))
        return sorted_points(points)

    sorted_points = storage._sorted_points
    monkeypatch.setattr(storage, "_sorted_points", counted)
    store = MemoryStore()
    store.put_many([("a", 1.0, 2), ("a", 2.0, 1), ("b", 1.0, 2), ("b", 2.0, 1), ("c", 1.0, 1)])
    snapshots = [store.snapshot() for _ in range(3)]
    assert sorts == []
    assert next(snapshots[0]) == Series("a", array(INT64_TYPECODE, [1, 2]), array("d", [2.0, 1.0]))
    assert len(sorts) == 1  # "a" alone
    expected = [("a", [1, 2], [2.0, 1.0]), ("b", [1, 2], [2.0, 1.0]), ("c", [1], [1.0])]
    assert [as_rows(whole_series(snapshot)) for snapshot in snapshots[1:]] == 2 * [expected]
    assert [rows(store) for _ in range(2)] == 2 * [expected]
    assert len(sorts) == 2  # the store kept both keys sorted


def test_memory_store_snapshot_of_an_unsorted_key_sees_only_its_own_points() -> None:
    store = MemoryStore()
    store.put_many([("k", 1.0, 5), ("k", 2.0, 3)])
    before = store.snapshot("k")
    store.put_many([("k", 3.0, 4), ("k", 4.0, 5), ("k", 5.0, 9)])  # older, rewrite, newer
    between = store.snapshot("k")
    assert rows(store, "k") == [("k", [3, 4, 5, 9], [2.0, 3.0, 4.0, 5.0])]  # sorted, kept
    store.put_many([("k", 6.0, 9), ("k", 7.0, 1)])  # a rewrite in place, then out of order
    assert as_rows(whole_series(before)) == [("k", [3, 5], [2.0, 1.0])]
    assert as_rows(whole_series(between)) == [("k", [3, 4, 5, 9], [2.0, 3.0, 4.0, 5.0])]
    assert rows(store, "k") == [("k", [1, 3, 4, 5, 9], [7.0, 2.0, 3.0, 4.0, 6.0])]


keys = st.sampled_from(["cpu", "mem", "a.b", "zz", "ключ"])
timestamps = st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.integers(-3, 3)
values = st.floats(allow_nan=False, allow_infinity=False)
# Several batches with reads in between: reads sort lazily, later puts must still win.
batches = st.lists(st.lists(st.tuples(keys, values, timestamps), max_size=30), max_size=6)


def _model_rows(model: dict[str, dict[int, float]], key: str | None) -> list[Row]:
    names = sorted(model) if key is None else [key] if key in model else []
    return [
        (name, sorted(model[name]), [model[name][t] for t in sorted(model[name])]) for name in names
    ]


@pytest.mark.parametrize("kind", STORE_KINDS)
@settings(max_examples=60, deadline=None)
@given(batches=batches, key=st.sampled_from([None, "cpu", "mem", "absent"]))
def test_every_store_matches_a_dict_model(
    request: pytest.FixtureRequest,
    kind: str,
    batches: list[list[tuple[str, float, int]]],
    key: str | None,
) -> None:
    model: dict[str, dict[int, float]] = {}
    with tempfile.TemporaryDirectory() as folder:  # a folder, a database: one per example
        store = store_factory(kind, Path(folder), request)()
        try:
            for batch in batches:
                earlier, expected_earlier = snapshot_rows(store, key), _model_rows(model, key)
                store.put_many(batch)
                for name, value, timestamp in batch:
                    model.setdefault(name, {})[timestamp] = value  # last write wins
                assert rows(store, key) == _model_rows(model, key)
                assert rows(store, None) == _model_rows(model, None)
                assert earlier() == expected_earlier
        finally:
            store.close()


# A step: a batch of puts, a new snapshot of every key (None) or of one key (its name), or a
# piece taken off the open snapshot with that number (modulo how many are open).
steps = st.lists(
    st.lists(st.tuples(keys, values, st.integers(-3, 3)), max_size=8)
    | st.none()
    | keys
    | st.integers(),
    max_size=16,
)


@settings(max_examples=150, deadline=None)
@given(steps=steps)
def test_memory_store_snapshots_read_bit_by_bit_see_the_moment_they_were_taken(
    steps: list[list[tuple[str, float, int]] | str | int | None],
) -> None:
    # Out-of-order keys are sorted as the pieces are taken, shared by the snapshots taken
    # meanwhile, and kept by the store if unchanged; a small sorted key is copied at once:
    # every interleaving must read as a model.
    store = MemoryStore()
    model: dict[str, dict[int, float]] = {}
    opened: list[tuple[Snapshot, list[Series | Future[None]], list[Row]]] = []
    for step in steps:
        if step is None or isinstance(step, str):
            opened.append((store.snapshot(step), [], _model_rows(model, step)))
        elif isinstance(step, int):
            if opened:
                pieces, taken, _ = opened[step % len(opened)]
                taken.extend(itertools.islice(pieces, 1))
        else:
            store.put_many(step)
            for name, value, timestamp in step:
                model.setdefault(name, {})[timestamp] = value
    for pieces, taken, expected in opened:
        assert as_rows(whole_series(itertools.chain(taken, pieces))) == expected
    assert rows(store) == _model_rows(model, None)
    assert len(store) == sum(map(len, model.values()))


@st.composite
def many_points_per_key(draw: st.DrawFn) -> list[tuple[str, float, int]]:
    """A batch with several points per key: keys coming round in one order (the memory store
    writes those a key at a time), grouped, or in no order (those a point at a time);
    timestamps ascending or not, repeated or not."""
    names = draw(st.lists(keys, min_size=1, max_size=4, unique=True))
    count = draw(st.integers(0, 12 * len(names)))
    stamps = draw(st.lists(st.integers(-3, 40), min_size=count, max_size=count))
    if draw(st.booleans()):
        stamps.sort()
    order = draw(st.sampled_from(["round robin", "grouped", "any"]))
    if order == "round robin":
        batch_keys = [names[index % len(names)] for index in range(count)]
    elif order == "grouped":
        batch_keys = sorted(names[index % len(names)] for index in range(count))
    else:
        batch_keys = draw(st.lists(st.sampled_from(names), min_size=count, max_size=count))
    return [(key, draw(values), stamp) for key, stamp in zip(batch_keys, stamps, strict=True)]


@settings(max_examples=200, deadline=None)
@given(batches=st.lists(many_points_per_key(), max_size=4))
def test_memory_store_writes_batches_of_many_points_per_key_as_a_dict_model(
    batches: list[list[tuple[str, float, int]]],
) -> None:
    store = MemoryStore()
    model: dict[str, dict[int, float]] = {}
    for batch in batches:
        store.put_many(batch)
        for name, value, timestamp in batch:
            model.setdefault(name, {})[timestamp] = value
        assert rows(store) == _model_rows(model, None)


@pytest.mark.parametrize(
    "bad", [2**63, "1"], ids=["timestamp beyond 64 bits", "timestamp not a number"]
)
def test_memory_store_stores_the_points_before_one_it_cannot_hold(bad: object) -> None:
    store = MemoryStore()
    timestamps: list[Any] = [1, 1, 2, 2, bad, 3, 4, 4]  # the store, not the type, refuses
    values = [float(index) for index in range(8)]
    batch = PointBatch(keys=["a", "b"] * 4, values=values, timestamps=timestamps)
    assert isinstance(store.write(batch).exception(), StoreFailure)
    assert rows(store) == [("a", [1, 2], [0.0, 2.0]), ("b", [1, 2], [1.0, 3.0])]
