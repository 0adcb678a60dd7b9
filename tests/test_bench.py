"""A smoke test of the benchmark: tiny sizes, real processes, structure only (never speed)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from benchmarks.run import FIGURES, ROOT, Sizes, format_table, run

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
)


@pytest.mark.timeout(120)
def test_tiny_benchmark_fills_every_figure_for_both_servers() -> None:
    messages: list[str] = []
    report = run(TINY, rounds=1, loop="asyncio", say=messages.append)
    assert set(report.samples) == set(FIGURES)
    for figure in FIGURES:
        assert set(report.samples[figure]) == {"ours", "baseline"}
        assert all(len(values) == 1 for values in report.samples[figure].values())
    # Correctness, not speed: every acknowledged point was stored, by both servers.
    assert report.samples["concurrent_stored"] == {"ours": [100], "baseline": [100]}
    assert report.samples["concurrent_refused"] == {"ours": [0], "baseline": [0]}
    table = format_table(report)
    for row in FIGURES.values():
        assert row.name in table
    assert messages  # progress was reported


def test_importing_metrics_lab_does_not_import_the_benchmark() -> None:
    code = "import sys, metrics_lab; print(any(m.startswith('benchmarks') for m in sys.modules))"
    output = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "False"
