"""Logs that can neither stall nor flood the server.

The summary and the queue are tested on their own, then through real servers: an outage of
refused batches logs a line per interval, not one per batch; and a ``metrics-lab serve``
whose stderr is a pipe that nobody reads keeps answering everyone through such an outage.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from metrics_lab import Client, RequestRejectedError, serve_in_background
from metrics_lab.logs import DroppingQueueHandler, LogSummary, nonblocking_logging
from metrics_lab.protocol import ERROR_ANSWER, encode_puts
from metrics_lab.session import STORE_ERROR_ANSWER
from metrics_lab.sqlite_store import SQLiteStore
from tests.conftest import TIMEOUT, read_answers
from tests.serve_process import ServeProcess
from tests.test_durable_commit import CAPPED_SERVE, client_points, fill_to_the_last_page

logger = logging.getLogger("metrics_lab.test_logging")

CAP = 256 * 1024
"""Bytes the capped SQLite store may grow to: full after a few thousand points."""


def messages(caplog: pytest.LogCaptureFixture, name: str = logger.name) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == name]


# --- the summary ---------------------------------------------------------------------------


def test_a_summary_logs_the_first_at_once_then_one_line_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=logger.name)
    now = [100.0]
    summary = LogSummary(
        logger, "refused {count} point(s) in {events} batch(es): {example}", clock=lambda: now[0]
    )
    summary.add(10, "disk full")
    for _ in range(500):
        summary.add(2, "disk still full")
    assert messages(caplog) == ["refused 10 point(s) in 1 batch(es): disk full"]
    now[0] += 10.0  # the interval is over: the next one writes what was counted, and itself
    summary.add(1, "disk full again")
    assert messages(caplog)[1:] == [
        "refused 1001 point(s) in 501 batch(es): disk full again "
        "(in the last 10 s; one such line every 10 s at most)"
    ]
    summary.close()  # nothing counted since: nothing to write
    assert len(messages(caplog)) == 2
    assert summary.total == 1011


def test_what_a_summary_holds_back_is_written_when_the_interval_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=logger.name)
    summary = LogSummary(logger, "{count} line(s) refused", interval=0.05)
    summary.add()
    summary.add()
    summary.add()
    deadline = time.monotonic() + TIMEOUT  # written by the summary's timer, no other call
    while len(messages(caplog)) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert messages(caplog)[0] == "1 line(s) refused"
    assert messages(caplog)[1].startswith("2 line(s) refused (in the last ")
    summary.close()


def test_a_summary_keeps_the_braces_of_its_fields(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=logger.name)
    summary = LogSummary(logger, "{path} refused {count}", path="/data/{odd}.db")
    summary.add(3)
    assert messages(caplog) == ["/data/{odd}.db refused 3"]
    summary.close()


# --- the queue -----------------------------------------------------------------------------


class StuckOutput(logging.Handler):
    """An output that takes nothing until released (a paused terminal)."""

    def __init__(self) -> None:
        super().__init__()
        self.released = threading.Event()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.released.wait(TIMEOUT)
        self.lines.append(record.getMessage())


@pytest.fixture
def stuck_output() -> Iterator[StuckOutput]:
    root = logging.getLogger()
    output = StuckOutput()
    root.addHandler(output)
    try:
        yield output
    finally:
        output.released.set()
        root.removeHandler(output)


def test_a_stuck_output_drops_records_and_says_how_many(stuck_output: StuckOutput) -> None:
    sent = 1000
    with nonblocking_logging(capacity=10) as queued:
        # Only this test's records: a summary's timer left by another test may log meanwhile.
        queued.addFilter(lambda record: record.name in {logger.name, "metrics_lab.logs"})
        for number in range(sent):
            logger.warning("record %d", number)  # none of these waits for the output
        # Through: the queue's ten and the one in the writer's hands, at most.
        assert queued.total_dropped >= sent - 11
        stuck_output.released.set()
        logger.warning("record after")  # dropped too if the writer has not caught up yet
    written = [line for line in stuck_output.lines if line.startswith("record ")]
    notices = [line for line in stuck_output.lines if "dropped" in line]
    assert notices
    assert all(
        line.endswith(" log record(s) dropped: the log output was not taking them")
        for line in notices
    )
    # Every record is written, or counted in a notice that is written: none goes unsaid.
    assert sum(int(line.split()[0]) for line in notices) == queued.total_dropped
    assert len(written) + queued.total_dropped == sent + 1


def test_nonblocking_logging_puts_the_handlers_back() -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    with nonblocking_logging() as queued:
        assert root.handlers == [queued]
        with nonblocking_logging() as inner:  # nested: the same queue
            assert inner is queued
        assert isinstance(queued, DroppingQueueHandler)
    assert root.handlers == before


# --- real servers ------------------------------------------------------------------------

REFUSED_ROUNDS = 300
PUTS_PER_ROUND = 100
WRONG_PER_ROUND = 50


def test_an_outage_logs_a_line_per_interval_not_per_batch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    store = SQLiteStore(tmp_path / "metrics.db", max_size_bytes=CAP)
    try:
        with serve_in_background(store=store) as server:
            started = time.monotonic()
            fill_to_the_last_page(server.address)
            with Client(*server.address, timeout=TIMEOUT) as client:
                for number in range(REFUSED_ROUNDS):
                    with pytest.raises(RequestRejectedError, match="store unavailable"):
                        client.put("outage", 1.0, number)
            elapsed = time.monotonic() - started
    finally:
        store.max_size_bytes = None  # room again, for the fold at close
        store.close()
    # At most one line at once, one per interval, and one at close; not one per batch.
    most = 2 + int(elapsed // 10.0)
    assert 1 <= len(messages(caplog, "metrics_lab.sqlite_store")) <= most
    assert len(messages(caplog, "metrics_lab.session")) <= most


def test_a_server_whose_stderr_nobody_reads_keeps_answering_through_an_outage(
    tmp_path: Path,
) -> None:
    # DEBUG logs every connection and every wrong command: far more than a pipe holds.
    argv = ["-c", CAPPED_SERVE, str(tmp_path / "metrics.db"), str(CAP), "--log-level", "DEBUG"]
    with ServeProcess(argv=[sys.executable, *argv], hold_log=True) as server:
        fill_to_the_last_page(server.address)  # a full disk from here on
        request = encode_puts(client_points(0, PUTS_PER_ROUND), now=0) + b"got\n" * WRONG_PER_ROUND
        refused_answers = STORE_ERROR_ANSWER * PUTS_PER_ROUND + ERROR_ANSWER * WRONG_PER_ROUND
        for _ in range(REFUSED_ROUNDS):
            with socket.create_connection(server.address, timeout=TIMEOUT) as sock:
                sock.sendall(request)
                assert read_answers(sock, PUTS_PER_ROUND + WRONG_PER_ROUND) == refused_answers
        with Client(*server.address, timeout=TIMEOUT) as fresh:  # still answered, at once
            with pytest.raises(RequestRejectedError, match="store unavailable"):
                fresh.put("fresh", 1.0, 1)
            assert fresh.get("fresh") == {}
        server.read_log()
        server.proc.terminate()  # SIGTERM: a graceful stop (Windows: the process ends at once)
        output = server.wait_for_end_of_log(TIMEOUT)
    assert "Traceback" not in output
    if sys.platform != "win32":
        # It dropped records rather than wait for its stderr, and said so once the pipe
        # moved: with the next record that found room, or on the way out.
        assert "log record(s) dropped: the log output was not taking them" in output
        # And what the summaries counted since their last line is written on the way out.
        summaries = [
            line
            for line in output.splitlines()
            if "metrics_lab.session: the store failed to take" in line and "(in the last" in line
        ]
        assert summaries, output[-2000:]
