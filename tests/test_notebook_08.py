"""Notebook 08 (inside the session) reaches the states its prose describes, as its outputs show.

tests/test_notebooks.py runs every notebook and checks that it runs cleanly; this file reads
that same run (``executed_notebook`` in tests/conftest.py) and checks what its cells print: the
prose after each output describes those outputs, so a change in the core that changes them
must fail here until the notebook follows. No timing is asserted: the notebook prints its
measurements, and the prose does not rely on their values.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest

from metrics_lab.server import PUMP_PIECE
from tests.test_notebooks import _code_cell, _stdout

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "08_inside_the_session.ipynb"


@pytest.fixture(scope="module")
def executed(
    executed_notebook: Callable[[Path], nbformat.NotebookNode],
) -> nbformat.NotebookNode:
    return executed_notebook(NOTEBOOK)  # the run tests/test_notebooks.py checks too


def _printed(notebook: nbformat.NotebookNode, part: str) -> str:
    """What the one code cell whose source holds ``part`` printed."""
    return _stdout(_code_cell(notebook, part))


PRINTED = {
    # The cell (a part of its source) -> what its output holds, as the prose after it says.
    "_Connection._send))": [
        "data = self.session.data_to_send(ANSWER_PIECE)",  # at most a piece at once
        "self._more_to_do(len(data))",  # the rest is another method's
    ],
    "_Connection._more_to_do))": [
        "self._transport.close()",  # the peer is done and has every answer
        "session.run_held_requests()",  # the loop's second call
    ],
    "def drain(": ["wants more bytes: True | waits for: None"],  # nothing had to wait
    'session.receive_data(b"put cpu 1 1\\nput cpu 2 2\\nget cpu': [
        "ready to send:    b''",
        "writes started:   2",
        "state=pending>",  # waiting_for: where data_to_send stopped
        "wants more bytes: False",
        "a get, next to run, would wait because: an earlier put is not stored yet",
        "a put, next to run, would wait because: None",
    ],
    'print("batches committed:  ", later.commit())': [
        "data_to_send:        b'ok\\n\\nok\\n\\n'",  # data_to_send runs no request
        "run_held_requests:   True",
        "b'ok\\ncpu 1.0 1\\ncpu 2.0 2\\n\\n'",  # the get sees both puts, not the third
        "waiting for, wants:  None True",
    ],
    "first = session.data_to_send(20_000)": [
        "the get behind it waits because: the get before it is still being answered",
        "zzz already stored: [Series(key='zzz'",
    ],
    "rest = drain(session)": [
        "big answer: 5000 points; mentions zzz: False",
        "then: b'ok\\n\\nok\\nzzz 1.0 1\\n\\n'",
    ],
    "durable = SQLiteStore(db_path)": [
        "memory store's future is STORED: True",
        "SQLite store's future is STORED: False",
        "who commits: ['SQLiteStore(metrics.db)']",
    ],
    "def serve_by_hand(": [
        "b'ok\\n\\nok\\n\\nok\\ndisk.used 41.5 1700000000\\ndisk.used 42.0 1700000060\\n"
        "disk.used 42.5 1700000120\\n\\n'",
    ],
    "reopened = SQLiteStore(db_path)": [
        "timestamps=[1700000000, 1700000060, 1700000120]",
        "temporary folder removed: True",
    ],
    "MAX_QUEUED_ANSWERS: ": [
        "writes started: 1024 | wants more bytes: False",
        "the next put waits because: too many answers",
    ],
    'answers = b""\nwhile': ["oks: 1100 | wants more bytes: True"],
    'b"get *\\n" + b"".join(': [  # finished answers behind a big one count too
        "puts run: 1023 | wants more bytes: False",
        "the next put waits because: too many answers",
        "oks: 1100 | wants more bytes: True",
    ],
    "greedy = socket.create_connection(": [
        "before reading, the put is stored: {}",
        "after reading 41 answers",
        "{'late.put': [(1, 1.0)]}",
    ],
    "print(inspect.getsource(server_module._Pump._run))": ["call_later(0, self._run)"],
    "def what_runs_first(": [  # a due timer runs after the sockets, call_soon before them
        "call_soon      ['the next run', 'the request is read']",
        "call_later(0)  ['the request is read', 'the next run']",
    ],
    "by_fast = answers_to(": ["same bytes: True"],
    "serve_in_background(max_connections=3)": [
        "open connections: 3",
        "d: put -> b'ok\\n\\n'",
        "a: get d -> b'ok\\nd 1.0 1\\n\\n'",
        "b: get d -> b''",  # closed to make room: the quietest
        "c: get d -> b'ok\\nd 1.0 1\\n\\n'",
        "log: connection limit (3) reached: closed 1 quiet connection(s)",
    ],
    "serve_in_background(line_timeout=0.3)": [
        "the server sent b'' and closed the connection after",
    ],
}


@pytest.mark.parametrize("cell", PRINTED)
def test_the_cell_prints_what_the_prose_describes(executed, cell):
    printed = _printed(executed, cell)
    missing = [part for part in PRINTED[cell] if part not in printed]
    assert missing == [], f"printed:\n{printed}"


def test_a_big_answer_is_cut_at_a_floor_not_a_ceiling(executed):
    printed = _printed(executed, "first = session.data_to_send(20_000)")
    given = re.search(r"data_to_send\(20_000\) gave (\d+) bytes", printed)
    assert given is not None, printed
    assert int(given[1]) >= 20_000, "the prose says the limit is a floor"


def test_flow_control_bounds_what_a_peer_that_does_not_read_holds(executed):
    printed = _printed(executed, "greedy = socket.create_connection(")
    over = re.search(r"the high-water mark \+ (-?\d+)", printed)
    assert over is not None, printed
    # One write of a turn may pass the mark: a piece and the lines of one encoding step.
    assert int(over[1]) < PUMP_PIECE + 64 * 1024, "flow control stops writing past the mark"
    # The prose points at this line for what the buffer held once the client read.
    refilled = r"after the reading client emptied the buffer: \d+ \(\d+% of the high-water mark\)"
    assert re.search(refilled, printed), printed


def test_fair_turns_experiment_stops_its_servers_and_prints_three_cases(executed):
    printed = _printed(executed, "trips = {}")
    assert "server with the budget stopped, exit code 0" in printed
    assert "server without the budget stopped, exit code 0" in printed
    for case in ("alone", "beside 8 heavy readers", "beside 8 heavy readers, no budget"):
        assert re.search(
            rf"^{re.escape(case)} +first +[\d.]+ ms +median +[\d.]+ ms +worst +[\d.]+ ms "
            r"\(round trip \d+\)$",
            printed,
            re.M,
        )
    assert "the worst round trip without the budget was" in printed


def test_the_fast_parser_runs_fewer_lines(executed):
    lines = re.search(r"lines run: simple (\d+), fast (\d+)", _printed(executed, "count_lines("))
    assert lines is not None
    assert int(lines[2]) * 10 < int(lines[1])
