"""A smoke test of the benchmark: tiny sizes, real processes, structure only (never speed)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.run import FIGURES, KINDS, ROOT, Sizes, format_table, main, run, server_kinds

TINY = Sizes(
    ingest_points=2_000,
    ingest_connections=2,
    batch=100,
    memory_points=3_000,
    memory_keys=30,
    get_repeats=1,
    latency_connections=2,
    latency_requests=20,
    concurrent_connections=20,
    concurrent_points=5,
    key_count=2_000,
    slow_readers=3,
    slow_seconds=0.5,
    heavy_rounds=1,
    idle_connections=50,
    lockout_connections=20,
    lockout_hold=0.3,
    lockout_wait=2.0,
)
SLOW_FIGURES = {
    f"{variant}_{figure}"
    for variant in ("fair", "slow")
    for figure in ("rss", "p50", "p99", "max", "stalls")
}
OURS_ONLY = {*SLOW_FIGURES, "lockout_answered", "lockout_seconds"}
"""Figures not measured on the baseline: it has no flow control and no connection limit."""
PATH_FIGURES = {"path_lines", "path_functions", "path_modules"}
HEAVY_FIGURES = {*SLOW_FIGURES, "memory_key", "idle_bytes", "lockout_answered", "lockout_seconds"}


@pytest.mark.timeout(120)
def test_tiny_benchmark_fills_every_figure_for_every_server() -> None:
    messages: list[str] = []
    report = run(TINY, rounds=2, loop="asyncio", say=messages.append)
    assert report.kinds == KINDS
    assert set(report.samples) == set(FIGURES)
    for figure in FIGURES:
        kinds = {"fast", "simple"} if figure in OURS_ONLY else set(KINDS)
        kinds = {"simple"} if figure in PATH_FIGURES else kinds  # traced once per checkout
        assert set(report.samples[figure]) == kinds
        # The long scenarios run in the first heavy_rounds rounds only, the trace once.
        rounds = 1 if figure in HEAVY_FIGURES | PATH_FIGURES else 2
        assert all(len(values) == rounds for values in report.samples[figure].values())
    # Correctness, not speed: every acknowledged point was stored, by every server.
    assert report.samples["concurrent_stored"] == {kind: [100, 100] for kind in KINDS}
    assert report.samples["concurrent_refused"] == {kind: [0, 0] for kind in KINDS}
    # Whether the newcomer got in is what the lockout measures; either way it is a yes or no.
    assert {
        value for values in report.samples["lockout_answered"].values() for value in values
    } <= {0, 1}
    assert report.samples["path_modules"]["simple"][0] >= 3  # server, session, storage at least
    table = format_table(report)
    for row in FIGURES.values():
        assert row.name in table
    assert all(report.met(figure) is None for figure in ("slow_p50", "slow_max", "fair_stalls"))
    assert messages  # progress was reported


@pytest.mark.parametrize("role", ["before", "ours"])
def test_another_checkouts_server_must_import_its_own_package(tmp_path: Path, role: str) -> None:
    # No metrics_lab in tmp_path: the server would import the installed one, and measure
    # this checkout twice under two names. The benchmark refuses instead.
    kinds = server_kinds(**{role: tmp_path})
    other = [kind for kind in kinds if kind.checkout == tmp_path]
    assert [kind.name for kind in other] == (["before"] if role == "before" else ["fast", "simple"])
    with pytest.raises(RuntimeError, match="imported metrics_lab from"):
        other[0].start("asyncio")


def test_help_explains_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--quick", "--rounds", "--only", "--loop", "--before", "--ours"):
        assert option in text


def test_importing_metrics_lab_does_not_import_the_benchmark() -> None:
    code = "import sys, metrics_lab; print(any(m.startswith('benchmarks') for m in sys.modules))"
    output = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "False"


def test_the_simple_path_listing_adds_up_to_its_count() -> None:
    # In a child process: sys.settrace in this one would stop a coverage tracer.
    output = subprocess.run(
        [sys.executable, "-m", "benchmarks.trace_path", "--list"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    *listing, summary = output.strip().splitlines()
    rows = [line.split() for line in listing[1:] if line]
    total = re.match(
        r"simple path, one put and one get on a new connection: (\d+) lines in (\d+) functions",
        summary,
    )
    assert total is not None, summary
    assert sum(int(row[0]) for row in rows) == int(total[1]) > 0
    assert len(rows) == int(total[2])
    assert all(row[1].startswith("metrics_lab/") for row in rows)  # the package's code only
