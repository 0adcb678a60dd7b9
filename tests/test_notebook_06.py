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

import nbformat
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


def test_the_learners_program_is_their_code_in_a_folder_kept_while_the_kernel_runs(
    outputs: list[str],
) -> None:
    program = cell_printing(outputs, "my_server.py:")
    assert "class MyServer(asyncio.Protocol):\n    buffer = b''\n" in program
    assert "def data_received(self, data):" in program
    assert "TODO" not in program, "the notes to the learner stay in the notebook"
    # No cell removes the folder (the learner's terminal uses it after Run All); Python does
    # when the kernel stops, and the run above has stopped its kernel.
    printed_folder = re.search(r"^folder: (.+)$", program, re.MULTILINE)
    assert printed_folder is not None, program
    folder = Path(printed_folder[1])
    assert folder.name.startswith("metrics_lab_06_")
    assert not folder.exists()


LEARNER_SERVER = """\
import asyncio
import math
import re
import textwrap

NUMBER = re.compile(r"-?[0-9]+(\\.[0-9]+)?")
MAX_LINE = 64 * 1024


def is_point(value, timestamp):
    return bool(NUMBER.fullmatch(value) and re.fullmatch(r"-?[0-9]{1,18}", timestamp))


class StrictServer(asyncio.Protocol):
    def __init__(self, store):
        self.store, self.buffer = store, b""

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buffer += data
        while b"\\n" in self.buffer:
            line, _, self.buffer = self.buffer.partition(b"\\n")
            if len(line) > MAX_LINE:
                break
            if line.strip():
                self.transport.write(self.answer(line))
        else:  # no line too long so far: only the unfinished rest may be
            if len(self.buffer) <= MAX_LINE:
                return
        self.transport.write(b"error\\nwrong command\\n\\n")
        self.transport.close()

    def answer(self, line):
        try:
            command, *args = line.decode().split()
            if command == "put" and len(args) == 3 and is_point(*args[1:]):
                key, value, timestamp = args
                if key != "*" and key.isprintable() and math.isfinite(float(value)):
                    points = [p for p in self.store.get(key, []) if p[0] != int(timestamp)]
                    self.store[key] = [*points, (int(timestamp), float(value))]
                    return b"ok\\n\\n"
            if command == "get" and len(args) == 1:
                keys = sorted(self.store) if args[0] == "*" else args
                lines = [f"{k} {v} {t}\\n" for k in keys for t, v in sorted(self.store.get(k, []))]
                return ("ok\\n" + "".join(lines) + "\\n").encode()
        except ValueError:
            pass
        return b"error\\nwrong command\\n\\n"


print(check(StrictServer).summary())
"""


def test_a_learners_module_level_helpers_go_into_the_program_and_a_dead_start_is_told() -> None:
    """The beginner's case: a class that uses ``re``, ``math``, a compiled pattern and a
    function of the notebook's module runs as a program as it ran in the notebook; and a
    program that dies at import shows its traceback, not an IndexError of the next cell."""
    from tools.export_notebooks import run_notebook

    chapter = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in chapter.cells if cell.cell_type == "code"]

    def cell(start: str) -> nbformat.NotebookNode:
        found: nbformat.NotebookNode = next(c for c in code if c.source.startswith(start))
        return found

    start_program = cell("import subprocess")
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        cell("from metrics_lab.conformance import check_protocol"),
        nbformat.v4.new_code_cell(LEARNER_SERVER),
        cell("import tempfile"),
        cell("%%writefile -a {server_file}"),
        start_program,
        nbformat.v4.new_code_cell('server_file.write_text("import no_such_module\\n")'),
        nbformat.v4.new_code_cell(start_program.source),
    ]
    run_notebook(notebook, NOTEBOOK.parent)
    printed = [
        "".join(output.get("text", "") for output in cell.outputs if output.output_type == "stream")
        for cell in notebook.cells
    ]
    in_notebook = re.search(r"\d+/\d+ checks passed \(strict profile\)", printed[1])
    assert in_notebook, printed[1]
    written_here = ("import math\nimport re\n", "NUMBER = re.compile(", "MAX_LINE = 65536\n")
    for written in (*written_here, "def is_point("):
        assert written in printed[2]
    assert in_notebook[0] in printed[4], "the program passes what the class passed here"
    assert "my_server.py stopped at start (exit status 1); it said:" in printed[6]
    assert "ModuleNotFoundError: No module named 'no_such_module'" in printed[6]
