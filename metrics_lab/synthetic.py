"""Seeded, deterministic metric series for the notebooks, the demo and the benchmark.

Every generator takes a ``seed`` and returns the same points for the same arguments, on a
regular grid of ``step`` seconds from ``start`` (a fixed Unix time, not "now", so outputs
never change between runs). Points come as ``(key, value, timestamp)``, ready for
:meth:`metrics_lab.Client.put` or ``put_many``.

>>> cpu_load("web1.cpu", points=3, seed=1)[0]
('web1.cpu', 49.61, 1700000000)
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

__all__ = [
    "DEFAULT_START",
    "cpu_load",
    "fleet",
    "memory_usage",
    "random_walk",
    "request_latency",
]

DEFAULT_START = 1_700_000_000
"""2023-11-14 22:13:20 UTC: the fixed start of every generated series."""

DAY = 86_400

Points = list[tuple[str, float, int]]


def _grid(start: int, step: int, points: int) -> range:
    return range(start, start + step * points, step)


def cpu_load(
    key: str, *, points: int = 1440, step: int = 60, start: int = DEFAULT_START, seed: int = 0
) -> Points:
    """CPU load in percent: a daily rhythm (busy afternoons, quiet nights) plus noise, 0-100."""
    rng = random.Random(seed)
    phase = rng.uniform(0, 2 * math.pi)
    base = rng.uniform(25, 45)
    series = []
    for timestamp in _grid(start, step, points):
        daily = 20 * math.sin(2 * math.pi * timestamp / DAY + phase)
        value = min(100.0, max(0.0, base + daily + rng.gauss(0, 4)))
        series.append((key, round(value, 2), timestamp))
    return series


def memory_usage(
    key: str, *, points: int = 1440, step: int = 60, start: int = DEFAULT_START, seed: int = 0
) -> Points:
    """Memory in MiB that grows steadily and drops back when the collector reclaims it."""
    rng = random.Random(seed)
    floor = rng.uniform(800, 1200)
    used = floor
    series = []
    for timestamp in _grid(start, step, points):
        used += rng.uniform(0, 6)
        if used > floor * 1.6 or rng.random() < 0.01:
            used = floor + rng.uniform(0, 50)
        series.append((key, round(used, 1), timestamp))
    return series


def request_latency(
    key: str, *, points: int = 1440, step: int = 60, start: int = DEFAULT_START, seed: int = 0
) -> Points:
    """Request latency in milliseconds: log-normal around ~40 ms, with rare bursts of ~10x."""
    rng = random.Random(seed)
    series = []
    burst_left = 0
    for timestamp in _grid(start, step, points):
        if burst_left == 0 and rng.random() < 0.005:
            burst_left = rng.randint(3, 10)
        value = rng.lognormvariate(math.log(40), 0.25)
        if burst_left:
            value *= rng.uniform(6, 12)
            burst_left -= 1
        series.append((key, round(value, 2), timestamp))
    return series


def random_walk(
    key: str,
    *,
    points: int = 1440,
    step: int = 60,
    start: int = DEFAULT_START,
    seed: int = 0,
    origin: float = 0.0,
    scale: float = 1.0,
) -> Points:
    """A Gaussian random walk from ``origin`` with steps of standard deviation ``scale``."""
    rng = random.Random(seed)
    value = origin
    series = []
    for timestamp in _grid(start, step, points):
        series.append((key, round(value, 4), timestamp))
        value += rng.gauss(0, scale)
    return series


Generator = Callable[..., Points]

_FLEET_METRICS: dict[str, Generator] = {
    "cpu": cpu_load,
    "memory": memory_usage,
    "latency": request_latency,
}


def fleet(
    hosts: Sequence[str] = ("web1", "web2", "db1"),
    *,
    points: int = 1440,
    step: int = 60,
    start: int = DEFAULT_START,
    seed: int = 0,
) -> Points:
    """CPU, memory and latency for each host (keys like ``web1.cpu``), all on one grid."""
    series: Points = []
    for host_index, host in enumerate(hosts):
        for metric_index, (metric, generator) in enumerate(_FLEET_METRICS.items()):
            series_seed = seed * 1000 + host_index * 10 + metric_index
            key = f"{host}.{metric}"
            series += generator(key, points=points, step=step, start=start, seed=series_seed)
    return series
