"""Notebook 08 (inside the session) reaches the states its prose describes, as its outputs show.

tests/test_notebooks.py runs every notebook and checks that it runs cleanly; this file runs
notebook 08 once more and checks what its cells print: the prose after each output describes
those outputs, so a change in the core that changes them must fail here until the notebook
follows. No timing is asserted: the notebook prints its measurements, and the prose does not
rely on their values.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from metrics_lab.server import PUMP_PIECE, TURN_BUDGET
from tools.export_notebooks import run_notebook

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "08_inside_the_session.ipynb"


@pytest.fixture(scope="module")
def executed() -> nbformat.NotebookNode:
    notebook: nbformat.NotebookNode = nbformat.read(NOTEBOOK, as_version=4)
    run_notebook(notebook, NOTEBOOK.parent)
    return notebook


def _stdout(cell: nbformat.NotebookNode) -> str:
    return "".join(
        output.text
        for output in cell.get("outputs", [])
        if output.output_type == "stream" and output.name == "stdout"
    )


def _printed(notebook: nbformat.NotebookNode, part: str) -> str:
    """What the one code cell whose source holds ``part`` printed."""
    cells = [cell for cell in notebook.cells if cell.cell_type == "code" and part in cell.source]
    assert len(cells) == 1, f"one code cell holds {part!r}, not {len(cells)}"
    return _stdout(cells[0])


def test_the_session_holds_a_get_until_the_puts_before_it_are_stored(executed):
    held = _printed(executed, 'session.receive_data(b"put cpu 1 1\\nput cpu 2 2\\nget cpu')
    assert "ready to send:    b''" in held
    assert "writes started:   2" in held
    assert "wants more bytes: False" in held
    assert "a get now would wait because: an earlier put is not stored yet" in held
    assert "a put now would wait because: None" in held
    steps = _printed(executed, 'print("batches committed:  ", later.commit())')
    assert "data_to_send:        b'ok\\n\\nok\\n\\n'" in steps, "data_to_send runs no request"
    assert "run_held_requests:   True" in steps
    assert "b'ok\\ncpu 1.0 1\\ncpu 2.0 2\\n\\n'" in steps, "the get sees both puts, not the third"
    assert "waiting for, wants:  None True" in steps


def test_a_get_reads_its_snapshot(executed):
    first = _printed(executed, "first = session.data_to_send(20_000)")
    assert "the get behind it waits because: the get before it is still being answered" in first
    assert "zzz already stored: [Series(key='zzz'" in first
    rest = _printed(executed, "rest = drain(session)")
    assert "big answer: 5000 points; mentions zzz: False" in rest
    assert "then: b'ok\\n\\nok\\nzzz 1.0 1\\n\\n'" in rest


def test_the_durable_store_answers_later_and_keeps_the_points(executed):
    futures = _printed(executed, "durable = SQLiteStore(db_path)")
    assert "memory store's future is STORED: True" in futures
    assert "SQLite store's future is STORED: False" in futures
    assert "who commits: ['SQLiteStore(metrics.db)']" in futures
    by_hand = _printed(executed, "def serve_by_hand(")
    assert by_hand.startswith(
        "b'ok\\n\\nok\\n\\nok\\ndisk.used 41.5 1700000000\\ndisk.used 42.0 1700000060\\n"
        "disk.used 42.5 1700000120\\n\\n'"
    )
    reopened = _printed(executed, "reopened = SQLiteStore(db_path)")
    assert "timestamps=[1700000000, 1700000060, 1700000120]" in reopened
    assert "temporary folder removed: True" in reopened


def test_flow_control_holds_back_requests_and_bounds_the_buffer(executed):
    bounded = _printed(executed, "MAX_QUEUED_ANSWERS: ")
    assert "writes started: 1024 | wants more bytes: False" in bounded
    assert "the next put waits because: too many answers" in bounded
    assert "oks: 1100 | wants more bytes: True" in _printed(executed, 'answers = b""\nwhile')
    greedy = _printed(executed, "greedy = socket.create_connection(")
    assert "before reading, the put is stored: {}" in greedy
    assert "after reading 41 answers" in greedy
    assert "{'late.put': [(1, 1.0)]}" in greedy
    over = re.search(r"the high-water mark \+ (-?\d+)", greedy)
    assert over is not None, greedy
    # One write of a turn may pass the mark: a piece and the lines of one encoding step.
    assert int(over[1]) < PUMP_PIECE + 64 * 1024, "flow control stops writing past the mark"


def test_fair_turns_experiment_restores_the_budget_and_prints_three_cases(executed):
    printed = _printed(executed, "server_module.TURN_BUDGET = 60.0")
    assert f"budget restored: {TURN_BUDGET} s" in printed
    for case in ("alone", "beside 8 heavy readers", "beside 8 heavy readers, no budget"):
        assert re.search(
            rf"^{re.escape(case)} +median +[\d.]+ ms +worst +[\d.]+ ms$", printed, re.M
        )
    assert "the worst round trip without the budget was" in printed


def test_the_two_parsers_give_the_same_bytes_and_the_fast_one_runs_fewer_lines(executed):
    assert "same bytes: True" in _printed(executed, "by_fast = answers_to(")
    lines = re.search(r"lines run: simple (\d+), fast (\d+)", _printed(executed, "count_lines("))
    assert lines is not None
    assert int(lines[2]) * 10 < int(lines[1])


def test_at_the_limit_the_quietest_connection_makes_room(executed):
    printed = _printed(executed, "serve_in_background(max_connections=3)")
    assert "open connections: 3" in printed
    assert "d: put -> b'ok\\n\\n'" in printed
    assert "a: get d -> b'ok\\nd 1.0 1\\n\\n'" in printed
    assert "b: get d -> b''" in printed
    assert "c: get d -> b'ok\\nd 1.0 1\\n\\n'" in printed
    assert "log: connection limit (3) reached: closed 1 quiet connection(s)" in printed
    timeout = _printed(executed, "serve_in_background(line_timeout=0.3)")
    assert timeout.startswith("the server sent b'' and closed the connection after")
