"""The finished server and client pass the checker, run as a learner runs them.

``notebooks/solutions/server.py`` is started as a program and checked with ``metrics-lab
check`` in both profiles; ``notebooks/solutions/client.py`` with ``metrics-lab check-client
client:Client`` from its folder; notebook 06's solution classes in this process. When the
checker gains a rule, these fail until the solutions follow it.
"""

from __future__ import annotations

import runpy
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from metrics_lab.conformance import CLIENT_CHECKS, SERVER_CHECKS, Profile, check_client

SOLUTIONS = Path(__file__).resolve().parent.parent / "notebooks" / "solutions"
PROFILES: list[Profile] = ["course", "strict"]


def expected_count(checks: list[Any], profile: Profile) -> int:
    return len([check for check in checks if check.runs_in(profile)])


@pytest.fixture(scope="module")
def solution_server() -> Iterator[str]:
    """``python notebooks/solutions/server.py --port 0``, running; yields its address."""
    command = [sys.executable, str(SOLUTIONS / "server.py"), "--port", "0"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()  # "listening on 127.0.0.1:PORT"
            assert line.startswith("listening on 127.0.0.1:"), line
            yield line.split()[-1]
        finally:
            process.terminate()
            process.wait(timeout=10)


@pytest.mark.parametrize("profile", PROFILES)
def test_the_solution_server_passes_metrics_lab_check(
    solution_server: str, profile: Profile
) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "metrics_lab", "check", solution_server, "--profile", profile],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout
    total = expected_count(SERVER_CHECKS, profile)
    assert run.stdout.splitlines()[-1].endswith(
        f"{total}/{total} checks passed ({profile} profile)"
    )


@pytest.mark.parametrize("profile", PROFILES)
def test_the_solution_client_passes_metrics_lab_check_client(profile: Profile) -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "metrics_lab",
            "check-client",
            "client:Client",
            "--profile",
            profile,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=SOLUTIONS,  # where a learner runs it: beside client.py
    )
    assert run.returncode == 0, run.stdout
    total = expected_count(CLIENT_CHECKS, profile)
    assert run.stdout.splitlines()[-1].endswith(
        f"{total}/{total} checks passed ({profile} profile)"
    )


@pytest.fixture(scope="module")
def notebook_06() -> dict[str, Any]:
    return runpy.run_path(str(SOLUTIONS / "06_build_your_own_server.py"))  # defines, runs nothing


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("name", ["SolvedSteps", "DictServer"])
def test_notebook_06_solution_servers_pass(
    notebook_06: dict[str, Any], name: str, profile: Profile
) -> None:
    report = notebook_06["check"](notebook_06[name], profile)
    assert report.passed, report.table()
    assert len(report.results) == expected_count(SERVER_CHECKS, profile)


def test_notebook_06_descending_server_breaks_key_order_only(notebook_06: dict[str, Any]) -> None:
    descending = notebook_06["DescendingServer"]
    assert notebook_06["check"](descending, "course").passed
    assert notebook_06["check"](descending, "strict").failed == ["get-all-key-order"]


def test_notebook_06_solution_client_is_the_solution_client(notebook_06: dict[str, Any]) -> None:
    client, error = notebook_06["Client"], notebook_06["ClientError"]
    assert Path(sys.modules[client.__module__].__file__ or "") == SOLUTIONS / "client.py"
    assert check_client(client, error, timeout=0.5).passed
