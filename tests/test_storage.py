"""The storage contract, run against every store in STORES."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from metrics_lab.storage import MemoryStore, Series, Storage

STORES: list[Callable[[], Storage]] = [MemoryStore]


@pytest.fixture(params=STORES, ids=lambda factory: factory.__name__)
def store(request: pytest.FixtureRequest) -> Iterator[Storage]:
    made: Storage = request.param()
    yield made
    made.close()


def test_an_empty_store_reads_nothing(store: Storage) -> None:
    assert store.read("cpu") == []
    assert store.read() == []


def test_points_read_back_sorted_by_timestamp(store: Storage) -> None:
    store.put_many([("cpu", 3, 0.3), ("cpu", 1, 0.1), ("cpu", 2, 0.2)])
    assert store.read("cpu") == [Series("cpu", [1, 2, 3], [0.1, 0.2, 0.3])]


def test_the_last_write_wins_at_equal_timestamps(store: Storage) -> None:
    store.put_many([("cpu", 1, 0.1), ("cpu", 2, 0.2)])
    store.put_many([("cpu", 1, 9.0), ("cpu", 2, 0.5), ("cpu", 2, 0.7)])
    assert store.read("cpu") == [Series("cpu", [1, 2], [9.0, 0.7])]


def test_overwrite_after_out_of_order_writes(store: Storage) -> None:
    store.put_many([("k", 5, 5.0), ("k", 1, 1.0), ("k", 5, 50.0), ("k", 3, 3.0), ("k", 1, 10.0)])
    assert store.read("k") == [Series("k", [1, 3, 5], [10.0, 3.0, 50.0])]
    store.put_many([("k", 2, 2.0), ("k", 3, 30.0)])
    assert store.read("k") == [Series("k", [1, 2, 3, 5], [10.0, 2.0, 30.0, 50.0])]


def test_all_keys_come_in_ascending_order(store: Storage) -> None:
    store.put_many([("b", 1, 1.0), ("a", 2, 2.0), ("B", 3, 3.0), ("a", 1, 1.0)])
    assert [series.key for series in store.read()] == ["B", "a", "b"]
    assert store.read()[1] == Series("a", [1, 2], [1.0, 2.0])


def test_keys_are_case_sensitive_and_exact(store: Storage) -> None:
    store.put_many([("cpu", 1, 1.0), ("CPU", 1, 2.0)])
    assert store.read("cpu") == [Series("cpu", [1], [1.0])]
    assert store.read("cp") == []


def test_extreme_timestamps_and_values_survive(store: Storage) -> None:
    points = [("k", -(2**63), -1.7976931348623157e308), ("k", 2**63 - 1, 5e-324), ("k", 0, -0.0)]
    store.put_many(points)
    [series] = store.read("k")
    assert list(series.timestamps) == [-(2**63), 0, 2**63 - 1]
    assert list(series.values) == [-1.7976931348623157e308, -0.0, 5e-324]


def test_memory_store_counts_points_once_per_timestamp() -> None:
    store = MemoryStore()
    store.put_many([("a", 1, 1.0), ("a", 1, 2.0), ("b", 1, 1.0), ("a", 0, 1.0), ("a", 0, 3.0)])
    assert len(store) == 3
