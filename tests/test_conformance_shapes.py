"""The checker's calibration: learner-shaped servers and clients, and what each profile says.

Each shape in ``tests.learner_shapes`` is a way the course's learners commonly write their
solution, one the course's graders accept. Under ``--profile course`` each must pass (the
task-text rules it breaks show as warnings, pinned here); under ``strict`` it fails exactly
the rules of PROTOCOL.md it breaks. A check that starts failing an accepted shape under the
course profile would tell a learner the course rejects a solution it accepts.
"""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from metrics_lab.background import serve_protocol_in_background
from metrics_lab.conformance import (
    HUNG_HINT,
    SERVER_CHECKS,
    Profile,
    Report,
    check_client,
    check_protocol,
    check_server,
)
from metrics_lab.protocol import DEFAULT_MAX_LINE as MAX_LINE
from tests.learner_shapes import clients, servers

FAST = 0.5

# What every learner server breaks: it handles each chunk as whole lines, so blank lines,
# split requests and long lines go wrong, and float()/int()/str.split() take what PROTOCOL.md
# refuses. None of it is in the task text or the grader.
NO_LINE_BUFFER = {"split-request", "split-utf8", "long-line"}
LENIENT_PARSING = {
    "error-value-not-finite",
    "error-timestamp-over-64-bit",
    "error-put-star-key",
    "error-number-underscore",
    "error-non-ascii-digit",
    "error-key-control-char",
    "error-put-bad-utf8-key",
}
CHUNK_SERVER_STRICT = {"blank-lines"} | NO_LINE_BUFFER | LENIENT_PARSING
ERROR_TEXT_CHECKS = {
    "error-unknown-command",
    "error-uppercase-command",
    "error-get-without-key",
    "error-get-two-keys",
    "error-put-too-few",
    "error-put-too-many",
    "error-value-not-number",
    "error-timestamp-not-integer",
}
DROPPED_ON_BAD_VALUE = {"error-value-not-number", "error-timestamp-not-integer", "survives-errors"}

SERVER_SHAPES: dict[str, tuple[set[str], set[str]]] = {
    # name: (course-profile warnings, strict failures); no shape fails the course profile.
    "chunk-at-a-time": (set(), CHUNK_SERVER_STRICT),
    "store-per-connection": ({"several-clients"}, CHUNK_SERVER_STRICT | {"several-clients"}),
    "insertion-order-keys": (set(), CHUNK_SERVER_STRICT | {"get-all-key-order"}),
    "exception-text": (ERROR_TEXT_CHECKS, CHUNK_SERVER_STRICT | ERROR_TEXT_CHECKS),
    "drops-on-bad-value": (DROPPED_ON_BAD_VALUE, CHUNK_SERVER_STRICT | DROPPED_ON_BAD_VALUE),
}

# What the learner client base breaks: it reads until the answer ends with \n\n and keeps
# nothing after it, waits out its timeout on a garbled status, and sends any key.
CLIENT_STRICT = {"bad-key-not-sent", "garbage-status-early", "keeps-extra-bytes", "late-answer"}

CLIENT_SHAPES: dict[str, tuple[set[str], set[str]]] = {
    "reads-until-blank-line": (set(), CLIENT_STRICT),
    # One recv never waits for more, so it never waits out a garbled status either.
    "one-fixed-size-recv": (
        set(),
        (CLIENT_STRICT - {"garbage-status-early"}) | {"get-many-lines", "get-split-answer"},
    ),
    "no-sort": ({"get-sorted"}, CLIENT_STRICT | {"get-sorted"}),
    "timestamp-zero": ({"put-timestamp-now"}, CLIENT_STRICT | {"put-timestamp-now"}),
    "rounding": ({"put-value-precision"}, CLIENT_STRICT | {"put-value-precision"}),
}


def check_shape(server_class: type[servers.ChunkServer], profile: Profile) -> Report:
    store: servers.Store = {}
    with serve_protocol_in_background(lambda: server_class(store)) as server:
        return check_server(*server.address, timeout=FAST, profile=profile)


@pytest.mark.parametrize("name", SERVER_SHAPES)
def test_a_learner_server_shape_passes_the_course_profile_and_fails_strict_exactly(
    name: str,
) -> None:
    warnings, failures = SERVER_SHAPES[name]
    course = check_shape(servers.SHAPES[name], "course")
    assert course.passed, course.table()
    assert set(course.warnings) == warnings, course.table()
    assert course.course_passed
    strict = check_shape(servers.SHAPES[name], "strict")
    assert set(strict.failed) == failures, strict.table()
    assert strict.warnings == []


@pytest.mark.parametrize("name", CLIENT_SHAPES)
def test_a_learner_client_shape_passes_the_course_profile_and_fails_strict_exactly(
    name: str,
) -> None:
    warnings, failures = CLIENT_SHAPES[name]
    client_class = clients.SHAPES[name]
    course = check_client(client_class, clients.ClientError, timeout=FAST, profile="course")
    assert course.passed, course.table()
    assert set(course.warnings) == warnings, course.table()
    strict = check_client(client_class, clients.ClientError, timeout=FAST)
    assert set(strict.failed) == failures, strict.table()


def test_a_task_text_warning_quotes_the_task_text_and_does_not_say_the_course_rejects_it() -> None:
    report = check_shape(servers.StorePerConnection, "course")
    [warned] = [result for result in report.results if result.status == "warn"]
    assert "the task text: 'доступ к интересующей информации" in warned.detail
    assert "reject" not in report.summary()
    assert report.summary().endswith("task-text rules warnings: several-clients")


def test_the_grader_case_of_empty_line_fails_a_server_that_answers_the_blank_line() -> None:
    class AnswersEveryLine(servers.ChunkServer):
        """Splits without strip(): the empty line after a request gets an error answer."""

        def data_received(self, data: bytes) -> None:
            for line in data.decode().split("\n")[:-1]:
                self.transport.write(self.process(line).encode())

    report = check_shape(AnswersEveryLine, "course")
    assert report.failed == ["empty-line"], report.table()
    assert "the course's graders would reject it: empty-line" in report.summary()


# --- checked in this process, as notebook 06 does -------------------------------------------


class CrashesOnGetWithoutKey(servers.ChunkServer):
    """Unpacks the fields without a guard: ``get`` alone raises inside data_received."""

    def process(self, line: str) -> str:
        command, key = line.split()[:2]  # a lone "get" has one field: ValueError
        return super().process(f"{command} {key}" if command == "get" else line)


class LoopsOnGetWithoutKey(servers.ChunkServer):
    """Waits for a key that never comes: ``get`` alone never returns."""

    def process(self, line: str) -> str:
        while line.split() == ["get"]:
            pass
        return super().process(line)


def test_a_crash_shows_the_learners_traceback_in_the_row_of_the_check() -> None:
    store: servers.Store = {}
    report = check_protocol(
        lambda: CrashesOnGetWithoutKey(store),
        timeout=FAST,
        only=["put-ok", "error-get-without-key"],
    )
    ok, crashed = report.results
    assert ok.traceback == ""
    assert crashed.status == "fail"
    assert "sent 'get\\n'" in crashed.detail
    assert "it probably crashed on this request: its traceback is below" in crashed.detail
    assert "in process\n    command, key = line.split()[:2]" in crashed.traceback
    assert crashed.traceback.endswith("ValueError: not enough values to unpack (expected 2, got 1)")
    assert "asyncio" not in crashed.traceback  # only the learner's frames
    assert "the code under test" in report.table()


def test_a_hang_ends_the_run_with_a_partial_report_and_the_line_it_hangs_on() -> None:
    store: servers.Store = {}
    seen: list[str] = []
    report = check_protocol(
        lambda: LoopsOnGetWithoutKey(store),
        timeout=FAST,
        profile="course",
        progress=lambda number, total, result: seen.append(result.name),
    )
    names = [result.name for result in report.results]
    assert names == seen
    assert names[-1] == "error-get-without-key"  # the first check that sends a lone get
    assert len(names) < len([c for c in SERVER_CHECKS if c.runs_in("course")])
    assert not report.passed
    assert HUNG_HINT in report.results[-1].detail
    assert 'while line.split() == ["get"]:' in report.results[-1].traceback
    assert f"stopped after error-get-without-key: {HUNG_HINT}" in report.summary()
    assert "would accept" not in report.summary()
    # The stuck thread was interrupted: the server's loop thread is gone.
    assert all(thread.name != "checked-server" for thread in threading.enumerate())


class WritesAndClosesForever(asyncio.Protocol):
    """A learner's long-line TODO gone wrong: ``while`` where ``if`` was meant.

    Each pass writes to a transport it has closed, which asyncio logs as a warning per call:
    the loop floods the log as fast as it spins.
    """

    buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        *lines, self.buffer = (self.buffer + data).split(b"\n")
        for line in lines:
            while len(line) > MAX_LINE:
                self.transport.write(b"error\nwrong command\n\n")
                self.transport.close()
            if line.strip():
                self.transport.write(b"ok\n\n")


def test_a_hang_that_writes_to_a_closed_transport_is_stopped_quietly(
    capfd: pytest.CaptureFixture[str],
) -> None:
    report = check_protocol(WritesAndClosesForever, timeout=FAST, only=["long-line", "put-ok"])
    [hung] = report.results  # the run stopped at the hang
    assert hung.name == "long-line"
    assert HUNG_HINT in hung.detail
    # The stuck frame shown is the learner's line, not asyncio's or logging's.
    # (Whichever line of the loop it was on.)
    *_, where, line = hung.traceback.splitlines()
    assert where.endswith(", in data_received")
    assert __file__ in where
    assert line.strip() in {
        "while len(line) > MAX_LINE:",
        'self.transport.write(b"error\\nwrong command\\n\\n")',
        "self.transport.close()",
    }
    assert all(thread.name != "checked-server" for thread in threading.enumerate())
    out, err = capfd.readouterr()
    assert "socket.send() raised exception" not in out + err
    assert "Logging error" not in out + err
    # asyncio's logger is left as it was: the filter went with the thread.
    assert not logging.getLogger("asyncio").filters


def test_a_client_exception_shows_the_learners_traceback() -> None:
    class Crashes(clients.LearnerClient):
        def get(self, key: str) -> dict[str, list[tuple[int, float]]]:
            return {key: [(1, 1 / 0)]}

    report = check_client(Crashes, clients.ClientError, timeout=FAST, only=["get-parse"])
    [result] = report.results
    assert "get('cpu') raised ZeroDivisionError" in result.detail
    assert "return {key: [(1, 1 / 0)]}" in result.traceback
    assert result.traceback.endswith("ZeroDivisionError: division by zero")


# --- hints for two mistakes a beginner made in notebook 06 ----------------------------------


class NoLineLimit(servers.ChunkServer):
    """Buffers the unfinished line, as it should, but never checks a line's length."""

    def __init__(self, store: servers.Store) -> None:
        super().__init__(store)
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        *lines, self.buffer = (self.buffer + data).split(b"\n")
        for line in lines:
            if line.strip():
                self.transport.write(self.process(line.decode()).encode())


class ErrorWithoutEmptyLine(servers.ChunkServer):
    """Ends its error answer after one newline: the empty line that ends an answer is missing."""

    def process(self, line: str) -> str:
        answer = super().process(line)
        return answer[:-1] if answer == servers.ERROR else answer


def test_a_long_line_answered_ok_says_the_line_came_whole() -> None:
    store: servers.Store = {}
    report = check_protocol(lambda: NoLineLimit(store), timeout=FAST, only=["long-line"])
    [result] = report.results
    assert result.status == "fail"
    assert "got 'ok\\n\\n'" in result.detail
    assert "the long line came whole, ending in \\n, so check each complete line's length" in (
        result.detail
    )


def test_an_answer_short_of_its_empty_line_says_so() -> None:
    store: servers.Store = {}
    report = check_protocol(
        lambda: ErrorWithoutEmptyLine(store), timeout=FAST, only=["error-unknown-command"]
    )
    [result] = report.results
    assert result.status == "fail"
    assert "the answer lacks the empty line that ends every answer (\\n\\n)" in result.detail
