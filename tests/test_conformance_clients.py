"""The conformance checker on clients: right clients pass, each broken one fails its rule.

The broken clients are one course-style client (``tests.fake_server.ToyClient``) with a switch
per fault; the all-right toy, our own ``Client``, a client that connects for every request,
one that prints in every call and one whose ClientError derives from BaseException must all
pass: the checker raises no false alarms.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from metrics_lab import AsyncClient, Client, ClientError
from metrics_lab.cli import main
from metrics_lab.conformance import CLIENT_CHECKS, check_client
from metrics_lab.conformance.client_checks import load_client
from tests.fake_server import (
    BaseErrorClient,
    BaseToyClientError,
    ClientFaults,
    PrintingClient,
    ToyClient,
    ToyClientError,
    toy_client,
)
from tests.learner_shapes.my_client import MyClient, MyClientError

CLIENT_FAST = 0.5
"""The timeout given to clients under test; only the silent-server check waits it out."""

ALL_CLIENT_CHECKS = {check.name for check in CLIENT_CHECKS}
COURSE_CHECKS = {check.name for check in CLIENT_CHECKS if check.source != "protocol"}


def test_our_client_passes_every_client_check_in_both_profiles() -> None:
    strict = check_client(Client, timeout=CLIENT_FAST)
    course = check_client(Client, timeout=CLIENT_FAST, profile="course")
    assert strict.failed == [], strict.table()
    assert len(strict.results) == len(CLIENT_CHECKS) >= 30
    assert course.failed == [], course.table()
    assert {result.name for result in course.results} == COURSE_CHECKS


def test_the_right_toy_client_passes_every_client_check() -> None:
    report = check_client(ToyClient, timeout=CLIENT_FAST)
    assert report.failed == [], report.table()


BROKEN_CLIENTS: dict[str, tuple[dict[str, Any], set[str]]] = {
    "no-sort": ({"sorts": False}, {"get-sorted"}),
    "repr-values": ({"sends_value_repr": True}, {"put-int-value"}),
    "zero-means-now": ({"now_when_falsy": True}, {"put-timestamp-zero"}),
    # Its get still fails on "wrong command", a line that is not three fields; and a status
    # it never looks at, it cannot refuse early.
    "ignores-error-status": (
        {"checks_status": False},
        {"error-on-put", "garbage-status", "garbage-status-early"},
    ),
    "sends-in-pieces": ({"sends_in_pieces": True}, {"one-sendall"}),
    "reads-once": ({"reads_one_recv": True}, {"get-split-answer"}),
    "raw-os-errors": (
        {"wraps_os_errors": False},
        {"connect-refused", "silent-server", "late-answer"},
    ),
    "no-key-check": ({"validates_keys": False}, {"bad-key-not-sent"}),
    "rounds-sent-values": ({"rounds_sent_values": True}, {"put-value-precision"}),
    "rounds-read-values": ({"rounds_read_values": True}, {"get-value-precision"}),
    "ascii-put-keys": ({"ascii_put_keys": True}, {"put-utf8-key"}),
    "latin1-answers": ({"latin1_answers": True}, {"get-utf8-key"}),
    "one-line-is-error": ({"one_line_is_error": True}, {"get-one-line"}),
    "discards-extra-bytes": ({"discards_extra": True}, {"keeps-extra-bytes"}),
    # Keeping unread bytes after a failure keeps a timed-out request's late answer too.
    "keeps-garbage": ({"keeps_garbage": True}, {"garbage-not-kept", "late-answer"}),
    "waits-for-whole-answer": ({"waits_for_whole_answer": True}, {"garbage-status-early"}),
}


@pytest.mark.parametrize("name", BROKEN_CLIENTS)
def test_a_broken_client_fails_its_rule_and_no_other(name: str) -> None:
    faults, broken_rules = BROKEN_CLIENTS[name]
    assert broken_rules <= ALL_CLIENT_CHECKS
    report = check_client(toy_client(**faults), ToyClientError, timeout=CLIENT_FAST)
    assert set(report.failed) == broken_rules, report.table()


def test_a_client_that_connects_for_every_request_is_no_false_alarm() -> None:
    report = check_client(toy_client(connects_per_request=True), ToyClientError, timeout=0.5)
    # Bytes after an answer cannot wait on a connection it has closed: a strict rule only.
    assert report.failed == ["keeps-extra-bytes"], report.table()
    assert report.course_passed


def test_a_client_error_derived_from_base_exception_is_reported_as_what_it_is() -> None:
    report = check_client(BaseErrorClient, BaseToyClientError, timeout=CLIENT_FAST)
    assert report.failed == [], report.table()
    # A fault still shows as the exception, not as a check that never returned.
    broken = type("Broken", (BaseErrorClient,), {"faults": ClientFaults(one_line_is_error=True)})
    report = check_client(broken, BaseToyClientError, timeout=CLIENT_FAST, only=["get-one-line"])
    [result] = report.results
    assert "raised BaseToyClientError('an answer of one line')" in result.detail


def test_what_a_client_prints_is_kept_per_check(capsys: pytest.CaptureFixture[str]) -> None:
    report = check_client(PrintingClient, ToyClientError, timeout=CLIENT_FAST)
    captured = capsys.readouterr()
    assert report.failed == [], report.table()
    assert captured.out == captured.err == ""
    by_name = {result.name: result for result in report.results}
    assert "toy client: put palm.cpu" in by_name["put-wire"].output
    assert "toy client (stderr): put palm.cpu" in by_name["put-wire"].output
    assert "get" not in by_name["put-wire"].output
    assert "(put-wire: the client printed 'toy client: connecting\\n" in report.table()


def test_check_client_json_stays_json_when_the_client_prints(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = main(
        ["check-client", "tests.fake_server:PrintingClient", "--json", "--timeout", "0.5"]
    )
    document = json.loads(capsys.readouterr().out)
    assert status == 0
    assert all(result["output"].startswith("toy client: ") for result in document["results"])


def test_check_client_profile_course(capsys: pytest.CaptureFixture[str]) -> None:
    name = "tests.fake_server:ToyClient"
    assert main(["check-client", name, "--profile", "course", "--timeout", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "(course profile)" in out
    assert "docs/PROTOCOL.md's stricter rules (" not in out
    assert "asked by the course's task text" in out


class HangingClient(ToyClient):
    """Ignores its timeout: waits forever for answers."""

    def __init__(self, host: str, port: int, timeout: float | None = None) -> None:
        super().__init__(host, port, None)


def test_a_client_that_ignores_its_timeout_is_reported_not_waited_for() -> None:
    report = check_client(HangingClient, ToyClientError, timeout=0.2, only=["silent-server"])
    assert report.failed == ["silent-server"]
    assert "did not return within" in report.results[0].detail


def test_load_client_finds_the_class_and_its_error() -> None:
    assert load_client("metrics_lab.client:Client")[0] is Client
    with pytest.raises(ValueError, match="ClientError or MetricsServerError"):
        load_client("metrics_lab.server:MetricsServer")
    # A scaffold that names its error after its class, as notebook 06's MyClient does.
    assert load_client("tests.learner_shapes.my_client:MyClient") == (MyClient, MyClientError)
    with pytest.raises(ValueError, match="MODULE:CLASS"):
        load_client("metrics_lab.client")


def test_cli_check_client(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["check-client", "metrics_lab.client:Client", "--timeout", str(CLIENT_FAST)])
    assert status == 0
    assert "checks passed" in capsys.readouterr().out
    assert main(["check-client", "no_such_module_here:Client"]) == 1
    assert capsys.readouterr().err.startswith(
        "metrics-lab: cannot import 'no_such_module_here': No module named "
        "'no_such_module_here' (run this in the folder of no_such_module_here.py, or give its path)"
    )


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "import socket\n\nclass MyClient(\n    def put(self):\n",
            "metrics-lab: cannot import 'my_client': {path}, line 3: '(' was never closed",
        ),
        (
            "class MyClientError(Exception):\n    pass\n\nMyClient = Undefined\n",
            "metrics-lab: importing 'my_client' raised NameError: name 'Undefined' is not "
            "defined ({path}, line 4)",
        ),
    ],
    ids=["syntax error", "raises on import"],
)
def test_a_client_module_that_cannot_load_is_one_line(
    tmp_path: Path, source: str, message: str
) -> None:
    (tmp_path / "my_client.py").write_text(source)
    checked = subprocess.run(
        [sys.executable, "-m", "metrics_lab", "check-client", "my_client:MyClient"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert checked.returncode == 1
    assert checked.stdout == ""
    assert checked.stderr == message.format(path=tmp_path / "my_client.py") + "\n"


class BlockingAsyncClient:
    """AsyncClient behind the course's blocking interface, on an event loop of its own.

    The checker drives blocking clients; this lets the checks that need no socket recording
    (AsyncClient connects with asyncio, not ``socket.create_connection``) run on AsyncClient.
    """

    def __init__(self, host: str, port: int, timeout: float | None = None) -> None:
        self._loop = asyncio.new_event_loop()
        self._client = AsyncClient(host, port, timeout)
        self._loop.run_until_complete(self._client.connect())

    def put(self, key: str, value: float, timestamp: int | None = None) -> None:
        self._loop.run_until_complete(self._client.put(key, value, timestamp))

    def get(self, key: str) -> dict[str, list[tuple[int, float]]]:
        return self._loop.run_until_complete(self._client.get(key))

    def close(self) -> None:
        self._loop.run_until_complete(self._client.close())
        self._loop.close()


@pytest.mark.parametrize("client_class", [Client, BlockingAsyncClient])
def test_both_package_clients_never_hand_on_a_late_answer(client_class: type[Any]) -> None:
    report = check_client(client_class, ClientError, timeout=CLIENT_FAST, only=["late-answer"])
    assert report.passed, report.table()


def test_a_client_that_hands_on_a_late_answer_is_caught() -> None:
    report = check_client(
        toy_client(keeps_garbage=True), ToyClientError, timeout=CLIENT_FAST, only=["late-answer"]
    )
    [result] = report.results
    assert "returned the late answer to the timed-out get('cpu')" in result.detail
    assert "got {'cpu': [(1, 1.0)]}" in result.detail


class ParsesNothing(ToyClient):
    """A get that never fills its dict (a learner's parsing loop that never runs)."""

    def get(self, key: str) -> dict[str, list[tuple[int, float]]]:
        super().get(key)
        return {}


def test_a_get_that_returns_nothing_is_not_called_truncated() -> None:
    report = check_client(ParsesNothing, ToyClientError, timeout=CLIENT_FAST, only=["get-parse"])
    [result] = report.results
    assert "get('cpu') returned {}, nothing of the answer's 2 points" in result.detail
    assert "truncated" not in result.detail


class ReturnsNone(ToyClient):
    """A get that returns None, where the server hung up, instead of raising."""

    def get(self, key: str) -> dict[str, list[tuple[int, float]]]:
        try:
            return super().get(key)
        except ToyClientError:
            return None  # type: ignore[return-value]


def test_a_missing_error_says_what_the_call_returned_and_when_it_must_raise() -> None:
    report = check_client(ReturnsNone, ToyClientError, timeout=CLIENT_FAST, only=["server-closes"])
    [result] = report.results
    assert result.detail.startswith(
        "get('cpu') returned None; it must raise ToyClientError when the server hangs up "
        "without answering"
    )
