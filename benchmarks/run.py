"""Start each server in turn, run every scenario against it, print the table.

``python -m benchmarks [--quick] [--rounds N] [--only GROUP ...] [--loop auto|asyncio|uvloop]
[--ours DIR] [--before DIR]`` (``--help`` says more). Every server and every load generator is
its own process; each figure is the median of the rounds, shown with its min-max so the
machine's noise is visible, and the servers take turns going first from one round to the next.
Nothing is written to disk.

The servers, or "kinds": ``fast`` and ``simple`` are ours with each parser (``fast`` is what
``parser="auto"`` picks, so the targets apply to it), ``baseline`` is
:mod:`benchmarks.baseline`, and ``before`` is our server from another checkout, say a
``git worktree`` of an older commit, to measure a change before and after in the same run.
``--ours DIR`` measures another checkout as ``fast`` and ``simple`` (a branch with a change),
with this checkout's benchmark.

The scenarios come in groups (:data:`GROUPS`), each on fresh servers: ``speed`` (ingest,
latency, concurrent connections), ``readers`` (memory per point, ``get *``, and in the heavy
rounds 40 readers of ``get *`` with the kernel's default receive buffers and again with small
ones), ``keys`` (memory per key, heavy rounds), ``footprint`` (idle connections), ``lockout``
(one peer holds the connection limit) and ``path`` (the simple path's lines, once).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from benchmarks.system import connections_possible, rss_bytes
from benchmarks.trace_path import TARGET_LINES
from metrics_lab.server import LOOP_CHOICES

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("fast", "simple", "baseline")
"""The servers every run measures; ``before`` joins them when a checkout is given."""
BEFORE = "before"
DEFAULT_ROUNDS = 3
"""Rounds per figure: on a shared 2-core machine one round's figure can be 15% off or more,
and more rounds than this take ``make bench`` towards ten minutes; ``--rounds`` asks for more."""
BEFORE_BYTES_PER_KEY = 430
"""What the server before the redesign (commit 0675b66) took per key, 1M keys of one point
each: the target for ``memory per key``. A fixed figure, not the ``--before`` checkout's: that
may be any commit, and one with the same store measures the same to a byte or two, which a
strict comparison would call a miss half the time."""
MIB = 1 << 20

SMALL_RECEIVE_BUFFER = 4096
"""The slow readers' SO_RCVBUF in the variant with small buffers, in bytes."""


def _boot(module: str) -> str:
    """Code for ``python -c`` that runs ``module``'s ``main`` from this checkout's benchmarks
    with the ``metrics_lab`` found first on the path (a checkout's, by ``PYTHONPATH``).

    The process prints the file its metrics_lab came from first; :func:`_start` checks it, so
    a server of another checkout cannot silently import this checkout's package. Whatever is
    imported after that from ``benchmarks`` is this checkout's, so every checkout is driven
    by the same benchmark.
    """
    return (
        "import sys, metrics_lab; print('module', metrics_lab.__file__, flush=True); "
        f"sys.path.insert(0, {str(ROOT)!r}); "
        f"from {module} import main; sys.exit(main(sys.argv[1:]))"
    )


def _start(
    module: str, arguments: Sequence[str], checkout: Path, wrapper: Sequence[str] = ()
) -> subprocess.Popen[str]:
    """Start ``module`` (see :func:`_boot`) with ``checkout``'s metrics_lab, its output piped."""
    command = [*wrapper, sys.executable, "-c", _boot(module), *arguments]
    # The checkout's own package first, whatever is installed in the environment.
    environment = {**os.environ, "PYTHONPATH": str(checkout)}
    process = subprocess.Popen(
        command, cwd=checkout, env=environment, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    module_line = process.stdout.readline().split(maxsplit=1)
    if len(module_line) != 2 or not Path(module_line[1].strip()).is_relative_to(checkout):
        process.terminate()
        process.communicate(timeout=120)
        raise RuntimeError(f"the {module} in {checkout} imported metrics_lab from {module_line}")
    return process


@dataclass(frozen=True)
class Sizes:
    """How big each scenario is."""

    ingest_points: int = 400_000
    ingest_connections: int = 4
    batch: int = 500
    memory_points: int = 1_000_000  # also what get * and the slow readers read
    memory_keys: int = 1_000
    get_repeats: int = 3
    latency_connections: int = 8
    latency_requests: int = 1_000
    concurrent_connections: int = 1_000
    concurrent_points: int = 100
    key_count: int = 1_000_000  # keys of one point each, for the memory per key
    slow_readers: int = 40
    slow_seconds: float = 15.0
    slow_rate: int = 1024  # bytes a second, each reader
    heavy_rounds: int = 2  # rounds that also run keys, slow readers, idle conns, held limit
    idle_connections: int = 10_000  # fewer if the open-file limit is lower (a message says so)
    lockout_connections: int = 1_000  # the server's --max-connections, all held (the default)
    lockout_hold: float = 2.0  # seconds the peer holds them before the newcomer comes
    lockout_wait: float = 5.0  # seconds the newcomer waits at most for its answer


FULL = Sizes()
QUICK = Sizes(
    ingest_points=100_000,
    memory_points=250_000,
    get_repeats=2,
    latency_requests=300,
    key_count=250_000,
    slow_seconds=5.0,
    heavy_rounds=1,
)

Medians = Mapping[str, float]


@dataclass(frozen=True)
class Figure:
    """One figure of the table: what is measured, in which unit, and the target (on ``fast``,
    our default parser) if there is one."""

    name: str
    unit: str
    target: str = "-"
    met: Callable[[Medians, Sizes], bool] | None = None  # (medians by kind, sizes) -> met?


FIGURES = {
    "ingest": Figure(
        "pipelined ingest",
        "points/s",
        "fast/baseline >= 1.0",
        lambda m, sizes: m["fast"] >= m["baseline"],
    ),
    "latency": Figure(
        "single put round trip, median",
        "us",
        "fast/baseline <= 1.1",
        lambda m, sizes: m["fast"] <= 1.1 * m["baseline"],
    ),
    "get_all": Figure(
        "get * time to last byte",
        "s",
        "fast/baseline <= 1.0",
        lambda m, sizes: m["fast"] <= m["baseline"],
    ),
    "concurrent_stored": Figure(
        "concurrent connections: points stored",
        "points",
        "all (conns x points), both parsers",
        lambda m, sizes: (
            m["fast"] == m["simple"] == sizes.concurrent_connections * sizes.concurrent_points
        ),
    ),
    "concurrent_refused": Figure(
        "concurrent connections: refused",
        "conns",
        "none, both parsers",
        lambda m, sizes: m["fast"] == m["simple"] == 0,
    ),
    "memory_point": Figure(
        "memory per point, few keys (RSS growth)",
        "bytes",
        "<= 20",
        lambda m, sizes: m["fast"] <= 20,
    ),
    "memory_key": Figure(
        "memory per key, 1 point each (RSS growth)",
        "bytes",
        f"<= {BEFORE_BYTES_PER_KEY} (before the redesign)",
        lambda m, sizes: m["fast"] <= BEFORE_BYTES_PER_KEY,
    ),
    "fair_rss": Figure(
        "slow readers, default buffers: server RSS growth, peak",
        "MiB",
        "<= 100",
        lambda m, sizes: m["fast"] <= 100,
    ),
    "fair_p50": Figure("slow readers, default buffers: other client round trip, median", "ms"),
    "fair_p99": Figure(
        "slow readers, default buffers: other client round trip, p99",
        "ms",
        "<= 20",
        lambda m, sizes: m["fast"] <= 20,
    ),
    "fair_max": Figure(
        "slow readers, default buffers: other client round trip, max",
        "ms",
        "<= 100",
        lambda m, sizes: m["fast"] <= 100,
    ),
    "fair_stalls": Figure("slow readers, default buffers: round trips over 100 ms", "count"),
    "slow_rss": Figure(
        "slow readers, small buffers: server RSS growth, peak",
        "MiB",
        "<= 100",
        lambda m, sizes: m["fast"] <= 100,
    ),
    "slow_p50": Figure("slow readers, small buffers: other client round trip, median", "ms"),
    "slow_p99": Figure(
        "slow readers, small buffers: other client round trip, p99",
        "ms",
        "<= 50",
        lambda m, sizes: m["fast"] <= 50,
    ),
    "slow_max": Figure("slow readers, small buffers: other client round trip, max", "ms"),
    "slow_stalls": Figure("slow readers, small buffers: round trips over 100 ms", "count"),
    "idle_bytes": Figure(
        "idle connections: server memory each (RSS growth)",
        "bytes",
        "<= 2,500",
        lambda m, sizes: m["fast"] <= 2_500,
    ),
    "lockout_answered": Figure(
        "connection limit held by one peer: newcomer's put answered",
        "1=yes",
        "1, both parsers",
        lambda m, sizes: m["fast"] == m["simple"] == 1,
    ),
    # No verdict of its own: a refusal at once is quick too (the figure above tells them apart).
    "lockout_seconds": Figure(
        "connection limit held by one peer: newcomer's wait for answer or refusal",
        "s",
        "< 1 (answered)",
    ),
    "path_lines": Figure(
        "simple path, put + get on a new connection: distinct lines",
        "lines",
        "<= ~120 (simple)",
        lambda m, sizes: m["simple"] <= TARGET_LINES,
    ),
    "path_functions": Figure("simple path: functions", "functions"),
    "path_modules": Figure("simple path: modules", "modules"),
}


@dataclass
class Report:
    """Every sample of every figure: ``samples[figure][kind]`` is one value per round."""

    sizes: Sizes
    loop: str
    rounds: int
    kinds: tuple[str, ...] = KINDS
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def add(self, figure: str, kind: str, value: float) -> None:
        """Record one round's value."""
        self.samples.setdefault(figure, {}).setdefault(kind, []).append(value)

    def median(self, figure: str, kind: str) -> float:
        """The median over the rounds."""
        return statistics.median(self.samples[figure][kind])

    def medians(self, figure: str) -> dict[str, float]:
        """The median of each kind measured for ``figure``."""
        return {kind: self.median(figure, kind) for kind in self.samples[figure]}

    def met(self, figure: str) -> bool | None:
        """Whether the figure's target is met (by ``fast``, and for correctness by ``simple``
        too); ``None`` if it has none."""
        check = FIGURES[figure].met
        return None if check is None else check(self.medians(figure), self.sizes)


class Server:
    """A server process on a free loopback port, with ``checkout``'s metrics_lab; ``wrapper``
    is a command to run it under (``valgrind ...``), if any."""

    def __init__(
        self, arguments: list[str], loop: str, checkout: Path, wrapper: Sequence[str] = ()
    ) -> None:
        self.process = _start("benchmarks.serve", [*arguments, "--loop", loop], checkout, wrapper)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # "port <n>", printed once it listens
        if not line.startswith("port "):
            self.stop()
            raise RuntimeError(f"the server {arguments} did not start (it printed {line!r})")
        self.port = int(line.split()[1])

    def rss(self) -> int | None:
        """The server's resident set size in bytes (``None`` where it cannot be told)."""
        return rss_bytes(self.process.pid)

    def stop(self) -> None:
        """Terminate the server and wait for it."""
        self.process.terminate()
        self.process.wait(timeout=120)
        if self.process.stdout is not None:
            self.process.stdout.close()


def _load_command(scenario: str, port: int, loop: str, options: Mapping[str, float]) -> list[str]:
    command = [sys.executable, "-m", "benchmarks.load", scenario, "--port", str(port)]
    command += ["--loop", loop]
    for name, value in options.items():
        command += [f"--{name}", str(value)]
    return command


def _load(scenario: str, port: int, loop: str, **options: float) -> dict[str, float]:
    command = _load_command(scenario, port, loop, options)
    output = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, check=True, timeout=600
    ).stdout
    result: dict[str, float] = json.loads(output)
    return result


def _load_watching_rss(
    server: Server, scenario: str, loop: str, **options: float
) -> tuple[dict[str, float], int]:
    """Run a scenario while sampling the server's RSS; its result and the peak RSS seen."""
    command = _load_command(scenario, server.port, loop, options)
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True) as load:
        peak = 0
        while load.poll() is None:
            peak = max(peak, server.rss() or 0)
            time.sleep(0.05)
        output = load.stdout.read() if load.stdout is not None else ""
    if load.returncode != 0:
        raise subprocess.CalledProcessError(load.returncode, command, output)
    result: dict[str, float] = json.loads(output)
    return result, peak


def _growth(before: int | None, after: int | None) -> float:
    return float("nan") if before is None or after is None or not after else after - before


@dataclass(frozen=True)
class ServerKind:
    """How to start one kind of server."""

    name: str
    arguments: list[str]
    checkout: Path = ROOT

    def start(self, loop: str, wrapper: Sequence[str] = (), *options: str) -> Server:
        """Start a server of this kind, with more ``options`` for it; see :class:`Server`."""
        return Server([*self.arguments, *options], loop, self.checkout, wrapper)


def server_kinds(before: Path | None = None, ours: Path = ROOT) -> list[ServerKind]:
    """The servers to measure: :data:`KINDS` (ours from checkout ``ours``), then ``before``
    if a checkout is given."""
    kinds = [
        ServerKind("fast", ["ours", "--parser", "fast"], ours),
        ServerKind("simple", ["ours", "--parser", "simple"], ours),
        ServerKind("baseline", ["baseline"]),
    ]
    if before is not None:
        kinds.append(ServerKind(BEFORE, ["ours"], before))  # with its own default parser
    return kinds


@contextmanager
def _serving(kind: ServerKind, loop: str, *options: str) -> Iterator[Server]:
    server = kind.start(loop, (), *options)
    try:
        yield server
    finally:
        server.stop()


@dataclass(frozen=True)
class Round:
    """One round against one kind of server, as each group of scenarios sees it."""

    kind: ServerKind
    number: int
    report: Report
    say: Callable[[str], None]

    @property
    def heavy(self) -> bool:
        """Whether this round also runs the long scenarios."""
        return self.number <= self.report.sizes.heavy_rounds

    def serving(self, *options: str) -> AbstractContextManager[Server]:
        """A fresh server of this round's kind (with more ``options``), stopped afterwards."""
        return _serving(self.kind, self.report.loop, *options)

    def load_points(self, port: int, **options: float) -> dict[str, float]:
        """Put the points that memory per point, ``get *`` and the slow readers read (or as
        many as ``options`` say)."""
        sizes = self.report.sizes
        defaults: dict[str, float] = {
            "points": sizes.memory_points,
            "keys": sizes.memory_keys,
            "connections": sizes.ingest_connections,
            "batch": sizes.batch,
        }
        return _load("ingest", port, self.report.loop, **{**defaults, **options})

    def add(self, figure: str, value: float) -> None:
        """Record this round's value of ``figure`` for this kind."""
        self.report.add(figure, self.kind.name, value)


def _speed(this: Round) -> None:
    """Pipelined ingest, single-put latency, concurrent connections."""
    sizes, name, loop = this.report.sizes, this.kind.name, this.report.loop
    with this.serving() as server:
        this.say(f"{name}: ingest")
        result = this.load_points(server.port, points=sizes.ingest_points)
        this.add("ingest", result["points_per_second"])
        this.say(f"{name}: latency")
        result = _load(
            "latency",
            server.port,
            loop,
            connections=sizes.latency_connections,
            points=sizes.latency_requests,
        )
        this.add("latency", result["median_seconds"] * 1e6)
        this.say(f"{name}: concurrent connections")
        result = _load(
            "concurrent",
            server.port,
            loop,
            connections=sizes.concurrent_connections,
            points=sizes.concurrent_points,
        )
        this.add("concurrent_stored", result["stored"])
        this.add("concurrent_refused", result["refused"])


def _readers(this: Round) -> None:
    """Memory per point and ``get *``; in heavy rounds the slow readers, with small receive
    buffers on the same server and with the kernel's default ones on a fresh server."""
    sizes, name, loop = this.report.sizes, this.kind.name, this.report.loop
    # The baseline has no flow control: it would encode every reader's whole answer at once
    # (minutes of work at full size), and the figures would only say so.
    slow_readers = this.heavy and name != "baseline"
    with this.serving() as server:
        this.say(f"{name}: memory per point")
        at_start = server.rss()
        this.load_points(server.port)
        this.add("memory_point", _growth(at_start, server.rss()) / sizes.memory_points)
        this.say(f"{name}: get *")
        result = _load(
            "get_all", server.port, loop, points=sizes.memory_points, repeats=sizes.get_repeats
        )
        this.add("get_all", result["seconds"])
        if slow_readers:
            this.say(f"{name}: {sizes.slow_readers} slow readers, small receive buffers")
            _slow_readers(server, this, "slow", SMALL_RECEIVE_BUFFER)
    if slow_readers:
        # A fresh server, so its RSS growth is not hidden by memory the last one kept.
        with this.serving() as server:
            this.say(f"{name}: {sizes.slow_readers} slow readers, default receive buffers")
            this.load_points(server.port)
            _slow_readers(server, this, "fair", 0)


def _slow_readers(server: Server, this: Round, figure: str, receive_buffer: int) -> None:
    """The slow readers against a loaded server: its RSS growth, another client's times, as
    the figures ``<figure>_rss``, ``_p50``, ``_p99``, ``_max`` and ``_stalls``."""
    sizes = this.report.sizes
    loaded = server.rss()
    result, peak = _load_watching_rss(
        server,
        "slow_readers",
        this.report.loop,
        connections=sizes.slow_readers,
        seconds=sizes.slow_seconds,
        rate=sizes.slow_rate,
        **{"receive-buffer": receive_buffer},
    )
    this.add(f"{figure}_rss", _growth(loaded, peak) / MIB)
    this.add(f"{figure}_p50", result["median_seconds"] * 1e3)
    this.add(f"{figure}_p99", result["p99_seconds"] * 1e3)
    this.add(f"{figure}_max", result["max_seconds"] * 1e3)
    this.add(f"{figure}_stalls", result["stalls"])


def _keys(this: Round) -> None:
    """Memory per key, in heavy rounds."""
    if not this.heavy:
        return
    sizes = this.report.sizes
    with this.serving() as server:
        this.say(f"{this.kind.name}: memory per key")
        at_start = server.rss()
        this.load_points(server.port, points=sizes.key_count, keys=sizes.key_count)
        this.add("memory_key", _growth(at_start, server.rss()) / sizes.key_count)


def _footprint(this: Round) -> None:
    """Server memory per idle connection, with room for them all (and the load's probe); in
    heavy rounds."""
    if not this.heavy:
        return
    count = this.report.sizes.idle_connections
    with this.serving("--max-connections", str(count + 1)) as server:
        this.say(f"{this.kind.name}: {count:,} idle connections")
        result = _load(
            "idle",
            server.port,
            this.report.loop,
            connections=count,
            **{"server-pid": server.process.pid},
        )
        this.add("idle_bytes", result["rss_growth"] / count)


def _lockout(this: Round) -> None:
    """One peer holds the server's default connection limit; a newcomer puts. In heavy rounds,
    not against the baseline, which has no limit."""
    if not this.heavy or this.kind.name == "baseline":
        return
    sizes = this.report.sizes
    with this.serving("--max-connections", str(sizes.lockout_connections)) as server:
        this.say(f"{this.kind.name}: {sizes.lockout_connections:,} connections held, a newcomer")
        result = _load(
            "lockout",
            server.port,
            this.report.loop,
            connections=sizes.lockout_connections,
            hold=sizes.lockout_hold,
            wait=sizes.lockout_wait,
        )
        this.add("lockout_answered", result["answered"])
        this.add("lockout_seconds", result["seconds"])


def _path(this: Round) -> None:
    """The simple path's lines, functions and modules, once per checkout (it is
    deterministic): as ``simple`` for ours, and as ``before``."""
    if this.number != 1 or this.kind.name not in ("simple", BEFORE):
        return
    this.say(f"{this.kind.name}: the simple path's lines")
    process = _start("benchmarks.trace_path", ["--json"], this.kind.checkout)
    output, _ = process.communicate(timeout=120)
    if process.returncode != 0:
        raise RuntimeError(f"benchmarks.trace_path failed in {this.kind.checkout}")
    counts = json.loads(output)
    for figure in ("lines", "functions", "modules"):
        this.add(f"path_{figure}", counts[figure])


GROUPS: dict[str, Callable[[Round], None]] = {
    "speed": _speed,
    "readers": _readers,
    "keys": _keys,
    "footprint": _footprint,
    "lockout": _lockout,
    "path": _path,
}
"""The groups of scenarios, in the order each round runs them; each starts its own servers."""


def run(
    sizes: Sizes = FULL,
    rounds: int = DEFAULT_ROUNDS,
    loop: str = "auto",
    say: Callable[[str], None] = print,
    before: Path | None = None,
    groups: Sequence[str] = tuple(GROUPS),
    ours: Path = ROOT,
) -> Report:
    """Run the scenarios of ``groups`` ``rounds`` times against each server (in turn) and
    collect figures.

    ``before``: a checkout of an older version of this project, whose server joins as
    ``before``; ``ours``: the checkout whose server is measured as ``fast`` and ``simple``.
    The long scenarios run in the first ``sizes.heavy_rounds`` rounds only.
    """
    idle = connections_possible(sizes.idle_connections)  # the servers inherit the raised limit
    if idle < sizes.idle_connections and "footprint" in groups:
        say(
            f"the open-file limit allows {idle:,} idle connections, not "
            f"{sizes.idle_connections:,}: measuring {idle:,} (raise it with ulimit -n)"
        )
    sizes = replace(sizes, idle_connections=idle)
    kinds = server_kinds(before, ours)
    report = Report(sizes, loop, rounds, tuple(kind.name for kind in kinds))
    for number in range(1, rounds + 1):
        # Rotate who goes first, so no server always meets the machine in the same state.
        shift = (number - 1) % len(kinds)
        for kind in kinds[shift:] + kinds[:shift]:
            this = Round(kind, number, report, partial(_prefixed, say, f"round {number}/{rounds}"))
            for group in groups:
                GROUPS[group](this)
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


def _ratio(value: float, reference: float | None) -> str:
    if not reference or reference != reference or value != value:
        return ""
    return f"{value / reference:.2f}"


def format_table(report: Report) -> str:
    """The report as a plain-text table: one line per figure and server, with the median
    (min-max), the ratios to the baseline (and to ``before``), the target and whether
    ``fast`` meets it."""
    has_before = BEFORE in report.kinds
    header = ["figure", "unit", "server", "median (min-max)", "/baseline"]
    header += ["/before"] if has_before else []
    header += ["target (fast)", "met"]
    rows: list[list[str]] = []
    for key, figure in FIGURES.items():
        if key not in report.samples:
            continue
        medians = report.medians(key)
        met = report.met(key)
        for number, kind in enumerate(kind for kind in report.kinds if kind in medians):
            first = number == 0
            row = [figure.name if first else "", figure.unit if first else "", kind]
            row += [_cell(report.samples[key][kind])]
            row += [_ratio(medians[kind], medians.get("baseline"))]
            row += [_ratio(medians[kind], medians.get(BEFORE))] if has_before else []
            verdict = "" if met is None else "yes" if met else "NO"
            row += [figure.target, verdict] if first else ["", ""]
            rows.append(row)
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, ["-" * width for width in widths], *rows]
    ]
    sizes = report.sizes
    heavy = min(sizes.heavy_rounds, report.rounds)
    lines.append(
        f"\n{report.rounds} round(s), medians (min-max), servers in turn; memory per key, "
        f"slow readers, idle connections and the held limit in {heavy} of them; "
        f"event loop: {report.loop}. Ingest "
        f"{sizes.ingest_points:,} points over {sizes.ingest_connections} connections in "
        f"batches of {sizes.batch}; memory per point, get * and slow readers over "
        f"{sizes.memory_points:,} points on {sizes.memory_keys:,} keys; memory per key with "
        f"{sizes.key_count:,} keys of 1 point; latency over {sizes.latency_connections} "
        f"connections; {sizes.concurrent_connections:,} concurrent connections x "
        f"{sizes.concurrent_points} points; {sizes.slow_readers} slow readers send get * at "
        f"once and read {sizes.slow_rate:,} bytes/s for {sizes.slow_seconds:g} s while another "
        "client puts and gets one point in turn, all its round trips counted, with the "
        f"kernel's default receive buffers and with {SMALL_RECEIVE_BUFFER:,} bytes (not run "
        "against the baseline, which has no flow control); "
        f"{sizes.idle_connections:,} idle connections; one peer holds "
        f"{sizes.lockout_connections:,} connections (half idle, half sending half a line) for "
        f"{sizes.lockout_hold:g} s, then a newcomer puts and waits up to "
        f"{sizes.lockout_wait:g} s (not against the baseline, which has no limit); the simple "
        "path traced once per checkout (python -m benchmarks.trace_path --list shows it)."
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark from the command line; 0 if every target is met, else 1."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=(
            "Benchmark our server (with each parser: fast, the default, and simple) against "
            "the baseline server, each in its own process with the load from another one. "
            "Prints one line per figure and server: the median over the rounds (min-max), "
            "the ratio to the baseline, and whether fast meets the target. Takes 5 to 10 "
            "minutes on a busy 2-core machine (2 to 3 with --quick); exits 1 if a target "
            "is missed."
        ),
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller sizes and one round (2 to 3 minutes)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help=f"rounds to take medians of (default: {DEFAULT_ROUNDS}, or 1 with --quick); "
        "memory per key, the slow readers, the idle connections and the held connection "
        f"limit run in the first {FULL.heavy_rounds} only",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=GROUPS,
        metavar="GROUP",
        help=f"run only these groups of scenarios: {', '.join(GROUPS)} (default: all)",
    )
    parser.add_argument(
        "--loop",
        choices=LOOP_CHOICES,
        default="auto",
        help="event loop of every server and load process (default: auto, uvloop if installed)",
    )
    parser.add_argument(
        "--before",
        type=Path,
        metavar="DIR",
        help="also measure the server of another checkout of this project, as 'before' "
        "(e.g. one made with: git worktree add /tmp/old <commit>)",
    )
    parser.add_argument(
        "--ours",
        type=Path,
        metavar="DIR",
        default=ROOT,
        help="measure the server of another checkout as fast and simple (a branch with a "
        "change), driven by this checkout's benchmark (default: this checkout)",
    )
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else DEFAULT_ROUNDS)
    before = None if args.before is None else args.before.resolve()
    say = partial(_progress, time.monotonic())
    sizes = QUICK if args.quick else FULL
    groups = args.only or tuple(GROUPS)
    report = run(sizes, rounds, args.loop, say, before, groups, args.ours.resolve())
    print(format_table(report))
    return 0 if all(report.met(key) is not False for key in report.samples) else 1


def _progress(started: float, text: str) -> None:
    print(f"[{time.monotonic() - started:4.0f} s] {text}", file=sys.stderr, flush=True)
