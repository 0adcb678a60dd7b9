"""Start the baseline and our server in turn, run every scenario, print the table.

``python -m benchmarks [--quick] [--rounds N] [--loop auto|asyncio|uvloop]``. Every server
and every load generator is its own process; each figure is the median of the rounds, shown
with its min-max so the machine's noise is visible. Nothing is written to disk.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from benchmarks.system import rss_bytes
from metrics_lab.server import LOOP_CHOICES

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("ours", "baseline")
DEFAULT_ROUNDS = 5
"""Rounds per figure: on a shared 2-core machine one round's figure can be 15% off or more."""


@dataclass(frozen=True)
class Sizes:
    """How big each scenario is."""

    ingest_points: int = 400_000
    ingest_connections: int = 4
    batch: int = 500
    memory_points: int = 1_000_000
    memory_keys: int = 1_000
    get_repeats: int = 3
    latency_connections: int = 8
    latency_requests: int = 1_000
    concurrent_connections: int = 1_000
    concurrent_points: int = 100


FULL = Sizes()
QUICK = Sizes(
    ingest_points=100_000,
    memory_points=250_000,
    get_repeats=2,
    latency_requests=300,
)


@dataclass(frozen=True)
class Figure:
    """One row of the table: what is measured, in which unit, and the target on the ratio."""

    name: str
    unit: str
    target: str
    met: Callable[[float, float], bool]  # (ours, baseline) medians -> target met?


FIGURES = {
    "ingest": Figure(
        "pipelined ingest", "points/s", "ours/baseline >= 1.0", lambda ours, base: ours >= base
    ),
    "memory": Figure(
        "memory per point (RSS growth)", "bytes", "ours <= 32", lambda ours, base: ours <= 32
    ),
    "get_all": Figure(
        "get * time to last byte", "s", "ours/baseline <= 1.0", lambda ours, base: ours <= base
    ),
    "latency": Figure(
        "single put round trip, median",
        "us",
        "ours/baseline <= 1.1",
        lambda ours, base: ours <= 1.1 * base,
    ),
    "concurrent_stored": Figure(
        "concurrent connections: points stored",
        "points",
        "all stored",
        lambda ours, base: False,  # replaced in run(): it depends on the sizes
    ),
    "concurrent_refused": Figure(
        "concurrent connections: refused", "conns", "none", lambda ours, base: ours == 0
    ),
}


@dataclass
class Report:
    """Every sample of every figure: ``samples[figure][kind]`` is one value per round."""

    sizes: Sizes
    loop: str
    rounds: int
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def add(self, figure: str, kind: str, value: float) -> None:
        """Record one round's value."""
        self.samples.setdefault(figure, {}).setdefault(kind, []).append(value)

    def median(self, figure: str, kind: str) -> float:
        """The median over the rounds."""
        return statistics.median(self.samples[figure][kind])

    def met(self, figure: str) -> bool:
        """Whether our median meets the figure's target."""
        ours, base = self.median(figure, "ours"), self.median(figure, "baseline")
        if figure == "concurrent_stored":
            return ours == self.sizes.concurrent_connections * self.sizes.concurrent_points
        return FIGURES[figure].met(ours, base)


class _Server:
    """A server process on a free loopback port."""

    def __init__(self, kind: str, loop: str) -> None:
        command = [sys.executable, "-m", "benchmarks.serve", kind, "--loop", loop]
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # "port <n>", printed once it listens
        if not line.startswith("port "):
            self.stop()
            raise RuntimeError(f"the {kind} server did not start (it printed {line!r})")
        self.port = int(line.split()[1])

    def rss(self) -> int | None:
        return rss_bytes(self.process.pid)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        if self.process.stdout is not None:
            self.process.stdout.close()


def _load(scenario: str, port: int, loop: str, **options: int) -> dict[str, float]:
    command = [sys.executable, "-m", "benchmarks.load", scenario, "--port", str(port)]
    command += ["--loop", loop]
    for name, value in options.items():
        command += [f"--{name}", str(value)]
    output = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, check=True, timeout=600
    ).stdout
    result: dict[str, float] = json.loads(output)
    return result


def _run_round(kind: str, sizes: Sizes, report: Report, say: Callable[[str], None]) -> None:
    loop = report.loop
    server = _Server(kind, loop)
    try:
        say(f"{kind}: ingest")
        result = _load(
            "ingest",
            server.port,
            loop,
            points=sizes.ingest_points,
            keys=sizes.memory_keys,
            connections=sizes.ingest_connections,
            batch=sizes.batch,
        )
        report.add("ingest", kind, result["points_per_second"])
        say(f"{kind}: latency")
        result = _load(
            "latency",
            server.port,
            loop,
            connections=sizes.latency_connections,
            points=sizes.latency_requests,
        )
        report.add("latency", kind, result["median_seconds"] * 1e6)
        say(f"{kind}: concurrent connections")
        result = _load(
            "concurrent",
            server.port,
            loop,
            connections=sizes.concurrent_connections,
            points=sizes.concurrent_points,
        )
        report.add("concurrent_stored", kind, result["stored"])
        report.add("concurrent_refused", kind, result["refused"])
    finally:
        server.stop()
    server = _Server(kind, loop)
    try:
        say(f"{kind}: memory")
        before = server.rss()
        _load(
            "ingest",
            server.port,
            loop,
            points=sizes.memory_points,
            keys=sizes.memory_keys,
            connections=sizes.ingest_connections,
            batch=sizes.batch,
        )
        after = server.rss()
        growth = float("nan") if before is None or after is None else after - before
        report.add("memory", kind, growth / sizes.memory_points)
        say(f"{kind}: get *")
        result = _load(
            "get_all", server.port, loop, points=sizes.memory_points, repeats=sizes.get_repeats
        )
        report.add("get_all", kind, result["seconds"])
    finally:
        server.stop()


def run(
    sizes: Sizes = FULL,
    rounds: int = DEFAULT_ROUNDS,
    loop: str = "auto",
    say: Callable[[str], None] = print,
) -> Report:
    """Run every scenario ``rounds`` times against both servers (in turn) and collect figures."""
    report = Report(sizes, loop, rounds)
    for number in range(1, rounds + 1):
        for kind in KINDS[::-1] if number % 2 == 0 else KINDS:  # alternate who goes first
            _run_round(kind, sizes, report, partial(_prefixed, say, f"round {number}/{rounds}"))
    return report


def _prefixed(say: Callable[[str], None], prefix: str, text: str) -> None:
    say(f"{prefix} {text}")


def _cell(values: list[float]) -> str:
    middle = statistics.median(values)
    if middle != middle:  # nan: RSS is not measurable on this system
        return "n/a"
    text = _number(middle)
    if len(values) > 1:
        text += f" ({_number(min(values))}-{_number(max(values))})"
    return text


def _number(value: float) -> str:
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def format_table(report: Report) -> str:
    """The report as a plain-text table: medians (min-max), ratio, target, met."""
    header = ("figure", "unit", "ours", "baseline", "ratio", "target", "met")
    rows = []
    for key, figure in FIGURES.items():
        if key not in report.samples:
            continue
        ours, base = report.median(key, "ours"), report.median(key, "baseline")
        ratio = f"{ours / base:.2f}" if base and base == base and ours == ours else "-"
        rows.append(
            (
                figure.name,
                figure.unit,
                _cell(report.samples[key]["ours"]),
                _cell(report.samples[key]["baseline"]),
                ratio,
                figure.target,
                "yes" if report.met(key) else "NO",
            )
        )
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, tuple("-" * width for width in widths), *rows]
    ]
    sizes = report.sizes
    lines.append(
        f"\n{report.rounds} round(s), medians (min-max); event loop: {report.loop}; "
        f"ingest {sizes.ingest_points:,} points over {sizes.ingest_connections} connections in "
        f"batches of {sizes.batch}; memory and get * with {sizes.memory_points:,} points over "
        f"{sizes.memory_keys:,} keys; latency over {sizes.latency_connections} connections; "
        f"{sizes.concurrent_connections:,} concurrent connections x {sizes.concurrent_points} "
        "points."
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark from the command line; 0 if every target is met, else 1."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description="Benchmark our server against the baseline."
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, one round (<1 min)")
    parser.add_argument("--rounds", type=int, help="rounds to take medians of (default: 5)")
    parser.add_argument("--loop", choices=LOOP_CHOICES, default="auto", help="for both servers")
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else DEFAULT_ROUNDS)
    report = run(QUICK if args.quick else FULL, rounds, args.loop, say=_progress)
    print(format_table(report))
    return 0 if all(report.met(key) for key in report.samples) else 1


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
