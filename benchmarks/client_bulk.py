"""The clients under load: put_many of millions of points, and clients shared by threads and tasks.

Run with ``python -m benchmarks.client_bulk`` (1M and 10M points; ``--quick``: 1M only;
``--points N``: N only; ``--help`` for the rest). It starts an in-memory server with
``serve_in_background`` (so the server shares this process and its GIL, as in a notebook),
and reports against issue 11's targets:

- ``put_many`` throughput: the median (min-max) of a few rounds, each on a fresh server, in
  points per second and seconds per million points (target: at most 4.2 s per million);
- the client's peak memory beyond the input list, traced with :mod:`tracemalloc` over one more
  round of the largest batch (target: at most 64 MiB). The server runs in this process, so
  the figure is the traced peak above the input and above what the store finally holds:
  an upper bound for the client, since the server's own transient buffers count too;
- a stress test: two threads sharing one ``Client``, then two tasks sharing one
  ``AsyncClient``, for ``--stress-seconds`` each, counting answers that belong to another
  request (target: none) and errors (target: none).

The exit status is 1 if a target is missed. Standard library and the package only.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from metrics_lab import AsyncClient, Client, serve_in_background

MIB = 1024 * 1024
SECONDS_PER_MILLION_TARGET = 4.2
MEMORY_TARGET = 64 * MIB
TIMEOUT = 60.0
KEYS = 100
T0 = 1_700_000_000

Points = list[tuple[str, float, int]]
Address = tuple[str, int]


@dataclass
class Report:
    """Prints each figure as it comes, and keeps the targets that were missed."""

    missed: list[str] = field(default_factory=list)

    def say(self, line: str) -> None:
        print(line, flush=True)

    def check(self, ok: bool, what: str) -> str:
        if not ok:
            self.missed.append(what)
        return "ok" if ok else "MISSED"


def make_points(count: int) -> Points:
    keys = [f"host{i}.cpu" for i in range(KEYS)]
    return [(keys[i % KEYS], i * 0.25, T0 + i // KEYS) for i in range(count)]


def timed_put_many(points: Points) -> float:
    """Seconds for one ``put_many`` of ``points`` into a fresh in-memory server."""
    with serve_in_background() as server, Client(*server.address, timeout=TIMEOUT) as client:
        start = time.perf_counter()
        client.put_many(points)
        elapsed = time.perf_counter() - start
        stored = sum(len(series.timestamps) for series in server.store.read())
    if stored != len(points):
        raise RuntimeError(f"stored {stored} points of {len(points)}")
    return elapsed


def traced_put_many(points: Points) -> int:
    """Peak traced bytes above the input and above the store's final size, for one put_many."""
    with serve_in_background() as server, Client(*server.address, timeout=TIMEOUT) as client:
        tracemalloc.start()
        try:
            before, _ = tracemalloc.get_traced_memory()
            client.put_many(points)
            after, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    return peak - max(before, after)  # "after" holds the store's growth: the server's


def measure_put_many(count: int, rounds: int, report: Report, *, memory: bool) -> None:
    report.say(f"\nput_many of {count:,} points ({rounds} rounds, a fresh server each)")
    started = time.perf_counter()
    points = make_points(count)
    report.say(f"  input list built in {time.perf_counter() - started:.1f} s")
    seconds = [timed_put_many(points) for _ in range(rounds)]
    median = statistics.median(seconds)
    per_million = median / count * 1e6
    verdict = report.check(
        per_million <= SECONDS_PER_MILLION_TARGET, f"{count:,} points: {per_million:.2f} s/M"
    )
    report.say(f"  time     median {median:.2f} s (min {min(seconds):.2f}, max {max(seconds):.2f})")
    report.say(
        f"  rate     {count / median:,.0f} points/s (min {count / max(seconds):,.0f}, "
        f"max {count / min(seconds):,.0f}); {per_million:.2f} s per million "
        f"[target <= {SECONDS_PER_MILLION_TARGET}: {verdict}]"
    )
    if memory:
        extra = traced_put_many(points)
        verdict = report.check(extra <= MEMORY_TARGET, f"{count:,} points: {extra / MIB:.1f} MiB")
        report.say(
            f"  memory   {extra / MIB:.1f} MiB peak beyond the input list (tracemalloc, one more "
            f"round) [target <= {MEMORY_TARGET // MIB} MiB: {verdict}]"
        )


# --- sharing a client ----------------------------------------------------------------------


def expected(key: str) -> dict[str, list[tuple[int, float]]]:
    """``t0`` has one point, ``t1`` two: a swapped answer shows."""
    return {key: [(t, float(t)) for t in range(int(key[1:]) + 1)]}


def seed_keys(address: Address) -> None:
    with Client(*address, timeout=TIMEOUT) as client:
        client.put_many(
            [(key, value, t) for key in ("t0", "t1") for t, value in expected(key)[key]]
        )


def outcome_of(answer: object, key: str) -> str:
    return "right" if answer == expected(key) else "wrong"


def stress_threads(address: Address, seconds: float) -> Counter[str]:
    """Two threads share one Client, each getting its own key until ``seconds`` pass."""
    counts: list[Counter[str]] = [Counter(), Counter()]
    with Client(*address, timeout=TIMEOUT) as client:
        stop = time.monotonic() + seconds

        def work(key: str, mine: Counter[str]) -> None:
            while time.monotonic() < stop:
                try:
                    mine[outcome_of(client.get(key), key)] += 1
                except Exception as exc:
                    mine[type(exc).__name__] += 1

        threads = [
            threading.Thread(target=work, args=(key, mine))
            for key, mine in zip(("t0", "t1"), counts, strict=True)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return counts[0] + counts[1]


def stress_tasks(address: Address, seconds: float) -> Counter[str]:
    """Two tasks share one AsyncClient, each getting its own key until ``seconds`` pass."""
    outcomes: Counter[str] = Counter()

    async def work(client: AsyncClient, key: str, stop: float) -> None:
        while time.monotonic() < stop:
            try:
                outcomes[outcome_of(await client.get(key), key)] += 1
            except Exception as exc:
                outcomes[type(exc).__name__] += 1

    async def main() -> None:
        async with AsyncClient(*address, timeout=TIMEOUT) as client:
            stop = time.monotonic() + seconds
            await asyncio.gather(work(client, "t0", stop), work(client, "t1", stop))

    asyncio.run(main())
    return outcomes


STRESSES: list[tuple[str, Callable[[Address, float], Counter[str]]]] = [
    ("two threads, one Client", stress_threads),
    ("two tasks, one AsyncClient", stress_tasks),
]


def measure_sharing(seconds: float, report: Report) -> None:
    report.say(f"\none client shared for {seconds:g} s (gets of t0 and t1, which differ)")
    with serve_in_background() as server:
        seed_keys(server.address)
        for name, stress in STRESSES:
            outcomes = stress(server.address, seconds)
            errors = {k: v for k, v in outcomes.items() if k not in ("right", "wrong")}
            bad = outcomes["wrong"] + sum(errors.values())
            verdict = report.check(bad == 0, f"{name}: {dict(outcomes)}")
            report.say(
                f"  {name}: {outcomes['right']:,} right, {outcomes['wrong']} wrong, "
                f"{sum(errors.values())} errors {errors or ''}"
                f"[target: none wrong, no errors: {verdict}]"
            )


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, print the figures, and return 1 if a target is missed."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.client_bulk")
    parser.add_argument("--points", type=int, help="one batch size instead of 1M and 10M")
    parser.add_argument("--quick", action="store_true", help="1M points only")
    parser.add_argument("--rounds", type=int, help="rounds per size (default: 5 for 1M, 3 above)")
    parser.add_argument("--stress-seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    if args.points is not None:
        sizes = [args.points]
    else:
        sizes = [1_000_000] if args.quick else [1_000_000, 10_000_000]
    report = Report()
    report.say(f"client_bulk: Python {sys.version.split()[0]} on {sys.platform}")
    for count in sizes:
        rounds = args.rounds or (5 if count <= 1_000_000 else 3)
        measure_put_many(count, rounds, report, memory=count == max(sizes))
    measure_sharing(args.stress_seconds, report)
    if report.missed:
        report.say("\nmissed: " + "; ".join(report.missed))
        return 1
    report.say("\nevery target met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
