"""One behavioural suite for every store: MemoryStore and SQLiteStore must be interchangeable."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from metrics_lab import MemoryStore, Storage
from metrics_lab.sqlite_store import SQLiteStore

StoreFactory = Callable[[], Storage]


@pytest.fixture(params=["memory", "sqlite"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Makes stores of one kind; an SQLite store reopened by the factory sees the same file."""
    made: list[Storage] = []

    def make() -> Storage:
        store: Storage = (
            MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "suite.db")
        )
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture
def store(make_store: StoreFactory) -> Storage:
    return make_store()


def as_tuples(store: Storage, key: str | None = None) -> list[tuple[str, list[int], list[float]]]:
    return [(s.key, list(s.timestamps), list(s.values)) for s in store.read(key)]


def test_empty_store_reads_nothing(store: Storage) -> None:
    assert store.read() == []
    assert store.read("cpu") == []


def test_points_come_back_sorted_by_key_then_timestamp(store: Storage) -> None:
    store.put_many([("mem", 5, 1.0), ("cpu", 3, 0.3), ("cpu", 1, 0.1), ("cpu", 2, 0.2)])
    assert as_tuples(store) == [("cpu", [1, 2, 3], [0.1, 0.2, 0.3]), ("mem", [5], [1.0])]
    assert as_tuples(store, "cpu") == [("cpu", [1, 2, 3], [0.1, 0.2, 0.3])]


def test_last_write_wins_within_and_across_calls(store: Storage) -> None:
    store.put_many([("cpu", 1, 0.1), ("cpu", 1, 0.2)])
    store.put_many([("cpu", 1, 0.3), ("cpu", 0, 9.0), ("cpu", 1, 0.4)])
    assert as_tuples(store) == [("cpu", [0, 1], [9.0, 0.4])]


def test_extremes_round_trip_exactly(store: Storage) -> None:
    points = [
        ("k", -(2**63), -1.7976931348623157e308),
        ("k", 2**63 - 1, 5e-324),
        ("k", 0, 0.1 + 0.2),
        ("ключ.cpu", 7, -0.0),
    ]
    store.put_many(points)
    assert as_tuples(store) == [
        ("k", [-(2**63), 0, 2**63 - 1], [-1.7976931348623157e308, 0.1 + 0.2, 5e-324]),
        ("ключ.cpu", [7], [-0.0]),
    ]


def test_keys_are_case_sensitive_and_exact(store: Storage) -> None:
    store.put_many([("CPU", 1, 1.0), ("cpu", 1, 2.0)])
    assert as_tuples(store, "cpu") == [("cpu", [1], [2.0])]
    assert store.read("cp") == []


def test_a_key_no_put_could_store_reads_as_nothing(store: Storage) -> None:
    store.put_many([("cpu", 1, 1.0)])
    assert store.read("\udcff") == []  # what the server makes of a get with bad UTF-8


def test_empty_put_many_changes_nothing(store: Storage) -> None:
    store.put_many([])
    assert store.read() == []


def test_many_points_many_keys(store: Storage) -> None:
    points = [(f"host{i % 7}.cpu", i // 7, float(i)) for i in range(7000)]
    store.put_many(reversed(points))
    series = store.read()
    assert [s.key for s in series] == [f"host{i}.cpu" for i in range(7)]
    assert all(list(s.timestamps) == list(range(1000)) for s in series)


def test_durable_store_keeps_points_across_reopen(
    request: pytest.FixtureRequest, make_store: StoreFactory
) -> None:
    if "memory" in request.node.callspec.id:
        pytest.skip("MemoryStore forgets by design")
    first = make_store()
    first.put_many([("cpu", 1, 0.5), ("cpu", 2, 0.6)])
    first.close()
    assert as_tuples(make_store()) == [("cpu", [1, 2], [0.5, 0.6])]
