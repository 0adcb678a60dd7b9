"""The compact MemoryStore behaves exactly like a plain dict of dicts (property tests)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from metrics_lab.storage import MemoryStore, Point

keys = st.sampled_from(["cpu", "mem", "a.b", "zz", "ключ"])
timestamps = st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.integers(-3, 3)
values = st.floats(allow_nan=False, allow_infinity=False)
points = st.tuples(keys, timestamps, values)
# Several batches with reads in between: reads sort lazily, later puts must still win.
Row = tuple[str, list[int], list[float]]
batches = st.lists(st.lists(points, max_size=30), max_size=6)


def _model_read(model: dict[str, dict[int, float]], key: str | None) -> list[Row]:
    names = sorted(model) if key is None else [key] if key in model else []
    return [
        (name, sorted(model[name]), [model[name][t] for t in sorted(model[name])]) for name in names
    ]


def _store_read(store: MemoryStore, key: str | None) -> list[Row]:
    return [(s.key, list(s.timestamps), list(s.values)) for s in store.read(key)]


@settings(max_examples=200, deadline=None)
@given(batches, st.sampled_from([None, "cpu", "mem", "absent"]))
def test_memory_store_matches_a_dict_model(batches: list[list[Point]], key: str | None) -> None:
    store = MemoryStore()
    model: dict[str, dict[int, float]] = {}
    for batch in batches:
        store.put_many(batch)
        for name, timestamp, value in batch:
            model.setdefault(name, {})[timestamp] = value  # last write wins
        assert _store_read(store, key) == _model_read(model, key)
        assert _store_read(store, None) == _model_read(model, None)
    assert len(store) == sum(len(series) for series in model.values())


def test_reads_are_sorted_and_last_write_wins() -> None:
    store = MemoryStore()
    store.put_many([("k", 5, 1.0), ("k", 3, 2.0), ("k", 5, 3.0), ("k", 4, 4.0), ("k", 3, 5.0)])
    [series] = store.read("k")
    assert list(series.timestamps) == [3, 4, 5]
    assert list(series.values) == [5.0, 4.0, 3.0]
