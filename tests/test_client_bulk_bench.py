"""A smoke test of benchmarks/client_bulk.py: tiny sizes, structure only (never speed)."""

from __future__ import annotations

import pytest

from benchmarks import client_bulk


def test_a_tiny_run_reports_every_figure(capsys: pytest.CaptureFixture[str]) -> None:
    client_bulk.main(["--points", "20000", "--rounds", "1", "--stress-seconds", "0.2"])
    out = capsys.readouterr().out
    assert "points/s" in out
    assert "MiB peak beyond the input list" in out
    for name, _ in client_bulk.STRESSES:
        assert f"{name}: " in out
    assert " 0 wrong, 0 errors" in out
