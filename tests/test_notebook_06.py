"""Notebook 06 run top to bottom in a real kernel reaches the state it announces.

Every statement the notebook makes about the checker is printed by its code; this test reads
those printed lines: the steps' TODOs cover every rule the strict profile checks, a crash
shows the learner's traceback, a hang ends in a partial report, the learner's own class runs
as a program and as ``metrics-lab check-client my_client:MyClient``, and the solutions (run
after the exercises) pass every check.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from metrics_lab.conformance import CLIENT_CHECKS, HUNG_HINT, SERVER_CHECKS

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "06_build_your_own_server.ipynb"
STRICT = len(SERVER_CHECKS)
COURSE = len([check for check in SERVER_CHECKS if check.runs_in("course")])


@pytest.fixture(scope="module")
def outputs(executed_notebook) -> list[str]:
    """The text each code cell printed, in order (cells that print nothing give "")."""
    notebook = executed_notebook(NOTEBOOK)  # the run tests/test_notebooks.py checks too
    return [
        "".join(output.get("text", "") for output in cell.outputs if output.output_type == "stream")
        for cell in notebook.cells
        if cell.cell_type == "code"
    ]


def cell_printing(outputs: list[str], text: str) -> str:
    return next(output for output in outputs if text in output)


def test_the_todos_cover_every_rule_the_strict_profile_checks(outputs: list[str]) -> None:
    strict_server = cell_printing(outputs, "server StrictServer: ")
    assert "failing rules that no step covers: none" in strict_server
    step_reports = [output for output in outputs if "failing rules that no step covers" in output]
    assert len(step_reports) == 5  # the first attempt, then one per step
    assert all("failing rules that no step covers: none" in output for output in step_reports)


def test_a_crash_shows_the_learners_traceback(outputs: list[str]) -> None:
    # steps() shows it unasked: the first attempt raises on a get without a key.
    first_steps = cell_printing(outputs, "failing rules that no step covers")
    assert re.search(r"\nyour code raised in \d+ check\(s\); the first, [a-z0-9-]+:\n", first_steps)
    assert 'File "' in first_steps
    rows = cell_printing(outputs, "error-get-without-key [fail]")
    assert "it probably crashed on this request" in rows
    assert "return self.get(args[0])" in rows
    assert "IndexError: list index out of range" in rows


def test_a_hang_gives_a_partial_report_and_the_line_it_is_stuck_on(outputs: list[str]) -> None:
    hung = cell_printing(outputs, "server LoopingServer: ")
    assert f"stopped after error-get-without-key: {HUNG_HINT}" in hung
    assert 'while line.split() == [b"get"]:' in hung


def test_the_learners_program_and_client_are_checked_from_the_shell(outputs: list[str]) -> None:
    program = cell_printing(outputs, "exit status of metrics-lab check:")
    assert f"/{COURSE} checks passed (course profile)" in program
    assert f"/{STRICT} checks passed (strict profile)" in program
    client = cell_printing(outputs, "exit status of metrics-lab check-client:")
    assert "client my_client.MyClient: " in client
    assert f"/{len(CLIENT_CHECKS)} checks passed (strict profile)" in client


def test_the_solutions_pass_and_a_course_green_server_fails_strict(outputs: list[str]) -> None:
    solutions = cell_printing(outputs, "server SolvedSteps: ")
    assert f"server SolvedSteps: {STRICT}/{STRICT} checks passed" in solutions
    assert f"server DictServer: {STRICT}/{STRICT} checks passed" in solutions
    # Exercise 1's answer (DescendingServer) is left for the learner to check.
    assert "DescendingServer" not in solutions
    total = len(CLIENT_CHECKS)
    assert f"client client.Client: {total}/{total} checks passed" in solutions
    without_buffer = cell_printing(outputs, "server WithoutBuffer: ")
    assert f"server WithoutBuffer: {COURSE}/{COURSE} checks passed (course profile)" in (
        without_buffer
    )
    assert "PROTOCOL.md rules failed: split-request, split-utf8, long-line" in without_buffer


def test_the_learners_program_is_their_code_in_a_folder_removed_at_the_end(
    outputs: list[str],
) -> None:
    program = cell_printing(outputs, "my_server.py:")
    assert "class MyServer(asyncio.Protocol):\n    buffer = b''\n" in program
    assert "def data_received(self, data):" in program
    assert "TODO" not in program, "the notes to the learner stay in the notebook"
    assert re.search(r"metrics_lab_06_\w+ removed: True\n$", cell_printing(outputs, " removed: "))
