"""metrics_lab.synthetic: the same seed gives the same points, on a grid, in a sane range."""

from __future__ import annotations

import itertools

import pytest

from metrics_lab.synthetic import (
    DEFAULT_START,
    cpu_load,
    fleet,
    memory_usage,
    random_walk,
    request_latency,
)

GENERATORS = [cpu_load, memory_usage, request_latency, random_walk]


@pytest.mark.parametrize("generator", GENERATORS)
def test_same_seed_same_points_other_seed_other_points(generator):
    assert generator("k", points=200, seed=7) == generator("k", points=200, seed=7)
    assert generator("k", points=200, seed=7) != generator("k", points=200, seed=8)


@pytest.mark.parametrize("generator", GENERATORS)
def test_points_sit_on_a_regular_grid_from_a_fixed_start(generator):
    points = generator("host.metric", points=50, step=30, start=1_000)
    assert [ts for _, _, ts in points] == list(range(1_000, 1_000 + 30 * 50, 30))
    assert {key for key, _, _ in points} == {"host.metric"}
    assert all(type(value) is float and type(ts) is int for _, value, ts in points)


@pytest.mark.parametrize("generator", GENERATORS)
def test_the_default_start_is_fixed_not_now(generator):
    assert generator("k", points=1)[0][2] == DEFAULT_START == 1_700_000_000


def test_values_stay_in_realistic_ranges():
    cpu = [value for _, value, _ in cpu_load("c", points=1440, seed=3)]
    assert all(0.0 <= value <= 100.0 for value in cpu)
    assert max(cpu) - min(cpu) > 20  # the daily rhythm shows
    memory = [value for _, value, _ in memory_usage("m", points=1440, seed=3)]
    assert all(700 < value < 2000 for value in memory)
    assert any(later < earlier for earlier, later in itertools.pairwise(memory))
    latency = [value for _, value, _ in request_latency("l", points=5000, seed=3)]
    assert all(value > 0 for value in latency)
    typical = sorted(latency)[len(latency) // 2]
    assert 30 < typical < 55
    assert max(latency) > 5 * typical  # bursts happen


def test_random_walk_starts_at_its_origin():
    walk = random_walk("w", points=100, origin=50.0, scale=2.0, seed=1)
    assert walk[0][1] == 50.0
    assert len({value for _, value, _ in walk}) > 90


def test_fleet_gives_three_metrics_per_host_on_one_grid():
    points = fleet(("a", "b"), points=10, seed=4)
    keys = sorted({key for key, _, _ in points})
    assert keys == ["a.cpu", "a.latency", "a.memory", "b.cpu", "b.latency", "b.memory"]
    assert len(points) == 60
    assert len({ts for _, _, ts in points}) == 10
    assert points == fleet(("a", "b"), points=10, seed=4)
    # Hosts differ: each series has a seed of its own.
    a_cpu = [value for key, value, _ in points if key == "a.cpu"]
    b_cpu = [value for key, value, _ in points if key == "b.cpu"]
    assert a_cpu != b_cpu
