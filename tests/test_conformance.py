"""The conformance checker: right peers pass, each broken peer fails its rule and no other.

The broken servers are one small asyncio server (``ToyServer``) with a switch per fault, so
each variant differs from the all-right toy in exactly one way; the all-right toy must pass
every check, which shows the checks test the protocol and not our implementation. The same
goes for the clients (``ToyClient``).
"""

from __future__ import annotations

import asyncio
import json
import math
import runpy
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from metrics_lab import Client, serve_in_background
from metrics_lab.background import BackgroundServer, serve_protocol_in_background
from metrics_lab.cli import main
from metrics_lab.conformance import CLIENT_CHECKS, SERVER_CHECKS, check_client, check_server
from metrics_lab.conformance.client_checks import load_client
from metrics_lab.conformance.report import CheckFailed, readable

FAST = 1.0
"""Per-answer timeout for checks against the toys: they answer at once, or never."""

CLIENT_FAST = 0.5
"""The timeout given to clients under test; only the silent-server check waits it out."""

SOLUTIONS = Path(__file__).parent.parent / "notebooks" / "solutions" / "06_build_your_own_server.py"

ALL_SERVER_CHECKS = {check.name for check in SERVER_CHECKS}
ERROR_CHECKS = {name for name in ALL_SERVER_CHECKS if name.startswith("error-")}


# --- a small server with one switch per fault --------------------------------------------


@dataclass(frozen=True)
class Faults:
    """How the toy server behaves; the defaults follow PROTOCOL.md."""

    buffers_lines: bool = True
    sorts_timestamps: bool = True
    sorts_keys: bool = True
    overwrites: bool = True
    answers_empty_lines: bool = False
    error_answer: bytes = b"error\nwrong command\n\n"
    closes_after_error: bool = False
    crashes_on_bad_utf8: bool = False
    strips_cr: bool = True
    collapses_spaces: bool = True
    writes_repr: bool = True
    accepts_non_finite: bool = False
    ignores_case: bool = False
    max_line: int | None = 64 * 1024
    shares_data: bool = True


@dataclass
class ToyStore:
    """key -> [(timestamp, value, value as sent)], in arrival order."""

    points: dict[str, list[tuple[int, float, str]]] = field(default_factory=dict)


class ToyServer(asyncio.Protocol):
    """A deliberately plain metrics server whose behaviour ``Faults`` can break."""

    def __init__(self, store: ToyStore, faults: Faults) -> None:
        self.store = store if faults.shares_data else ToyStore()
        self.faults = faults
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if self.faults.buffers_lines:
            *lines, self.buffer = (self.buffer + data).split(b"\n")
        else:
            lines = data.split(b"\n")
        limit = self.faults.max_line
        for line in lines:
            too_long = limit is not None and len(line) > limit
            answer = self.faults.error_answer if too_long else self.answer(line)
            if answer is not None:
                self.transport.write(answer)
                if too_long or (
                    answer == self.faults.error_answer and self.faults.closes_after_error
                ):
                    self.transport.close()
                    return
        if limit is not None and len(self.buffer) > limit:
            self.transport.write(self.faults.error_answer)
            self.transport.close()

    def answer(self, line: bytes) -> bytes | None:
        if self.faults.strips_cr:
            line = line.removesuffix(b"\r")
        if not line.strip():
            return self.faults.error_answer if self.faults.answers_empty_lines else None
        fields = line.split(b" ")
        if self.faults.collapses_spaces:
            fields = [part for part in fields if part]
        command = fields[0].lower() if self.faults.ignores_case else fields[0]
        try:
            if command == b"put" and len(fields) == 4:
                return self.put(*fields[1:])
            if command == b"get" and len(fields) == 2:
                return self.get(fields[1].decode())
        except UnicodeDecodeError:
            if self.faults.crashes_on_bad_utf8:
                raise
        except ValueError:
            pass
        return self.faults.error_answer

    def put(self, raw_key: bytes, raw_value: bytes, raw_timestamp: bytes) -> bytes:
        key, text = raw_key.decode(), raw_value.decode()
        value, timestamp = float(text), int(raw_timestamp)
        if key == "*" or not -(2**63) <= timestamp < 2**63:
            raise ValueError(key)
        if not (math.isfinite(value) or self.faults.accepts_non_finite):
            raise ValueError(text)
        series = self.store.points.setdefault(key, [])
        if self.faults.overwrites:
            series[:] = [point for point in series if point[0] != timestamp]
        series.append((timestamp, value, text))
        return b"ok\n\n"

    def get(self, key: str) -> bytes:
        keys = list(self.store.points) if key == "*" else [key]
        if self.faults.sorts_keys:
            keys.sort()
        lines = ["ok\n"]
        for name in keys:
            series = self.store.points.get(name, [])
            if self.faults.sorts_timestamps:
                series = sorted(series)
            for timestamp, value, text in series:
                shown = repr(value) if self.faults.writes_repr else text
                lines.append(f"{name} {shown} {timestamp}\n")
        return ("".join(lines) + "\n").encode()


def serve_toy(faults: Faults) -> BackgroundServer:
    store = ToyStore()
    return serve_protocol_in_background(lambda: ToyServer(store, faults))


# --- hostile servers ---------------------------------------------------------------------


class Silent(asyncio.Protocol):
    """Accepts connections, reads everything, never answers."""


class Flood(asyncio.Protocol):
    """Sends bytes without ever ending an answer, as fast as the client takes them."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        self.transport = transport
        self.paused = False
        self.write_more()

    def write_more(self) -> None:
        if not self.paused and not self.transport.is_closing():
            self.transport.write(b"x" * 65536)
            asyncio.get_running_loop().call_soon(self.write_more)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.write_more()


# --- servers -----------------------------------------------------------------------------


def test_our_server_passes_every_check() -> None:
    with serve_in_background() as server:
        report = check_server(*server.address, timeout=FAST)
    assert report.failed == [], report.table()
    assert len(report.results) == len(SERVER_CHECKS) >= 30


def test_the_right_toy_passes_every_check() -> None:
    with serve_toy(Faults()) as server:
        report = check_server(*server.address, timeout=FAST)
    assert report.failed == [], report.table()


BROKEN_SERVERS = {
    "no-buffering": (
        Faults(buffers_lines=False, max_line=None),
        # Without a line buffer there is no line to measure, so no limit either.
        {"split-request", "split-utf8", "long-line"},
    ),
    "unsorted-timestamps": (Faults(sorts_timestamps=False), {"timestamp-order"}),
    "unsorted-keys": (Faults(sorts_keys=False), {"get-all-key-order"}),
    "appends": (Faults(overwrites=False), {"overwrite"}),
    "answers-empty-lines": (Faults(answers_empty_lines=True), {"empty-line"}),
    "wrong-error-text": (Faults(error_answer=b"error\nbad command\n\n"), ERROR_CHECKS),
    "closes-after-error": (Faults(closes_after_error=True), {"survives-errors"}),
    "crashes-on-bad-utf8": (Faults(crashes_on_bad_utf8=True), {"error-put-bad-utf8-key"}),
    "keeps-cr": (Faults(strips_cr=False), {"crlf"}),
    "splits-on-each-space": (Faults(collapses_spaces=False), {"spaces"}),
    "echoes-values": (Faults(writes_repr=False), {"value-format"}),
    "accepts-nan": (Faults(accepts_non_finite=True), {"error-value-not-finite"}),
    "ignores-case": (Faults(ignores_case=True), {"error-uppercase-command"}),
    "no-line-limit": (Faults(max_line=None), {"long-line"}),
    "data-per-connection": (Faults(shares_data=False), {"several-clients"}),
}


@pytest.mark.parametrize("name", BROKEN_SERVERS)
def test_a_broken_server_fails_its_rule_and_no_other(name: str) -> None:
    faults, broken_rules = BROKEN_SERVERS[name]
    assert broken_rules <= ALL_SERVER_CHECKS
    with serve_toy(faults) as server:
        report = check_server(*server.address, timeout=FAST)
    assert set(report.failed) == broken_rules, report.table()


def test_a_failure_shows_sent_expected_and_got_readably() -> None:
    with serve_toy(Faults(overwrites=False)) as server:
        report = check_server(*server.address, timeout=FAST, only=["overwrite"])
    [result] = report.results
    assert result.detail.startswith("the last put for a timestamp must win; sent 'get conform")
    assert "expected 'ok\\n" in result.detail
    assert " 1.5 100\\n" in result.detail  # the appended value the toy still returns
    assert "\n" not in result.detail


# The bound is the test's timeout, far above the second or two a run takes, far below "hangs".
@pytest.mark.timeout(60)
@pytest.mark.parametrize("hostile", [Silent, Flood])
def test_a_hostile_server_fails_every_check_within_the_time_bound(
    hostile: type[asyncio.Protocol],
) -> None:
    with serve_protocol_in_background(hostile) as server:
        report = check_server(*server.address, timeout=0.3)
    assert set(report.failed) == ALL_SERVER_CHECKS, report.table()
    details = " ".join(result.detail for result in report.results)
    expected_reason = "before the timeout" if hostile is Silent else "more bytes than any right"
    assert expected_reason in details


def test_a_refused_connection_is_reported_not_raised() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    report = check_server("127.0.0.1", port, timeout=FAST, only=["put-ok"])
    assert report.failed == ["put-ok"]
    assert "cannot connect" in report.results[0].detail


def test_an_unknown_check_name_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown check"):
        check_server("127.0.0.1", 1, only=["no-such-rule"])


def test_serve_protocol_in_background_serves_any_protocol_until_stopped() -> None:
    server = serve_protocol_in_background(Flood)
    with socket.create_connection(server.address, timeout=5) as sock:
        data = sock.recv(10)
    assert set(data) == {ord("x")}  # at least one byte, all of the flood
    with pytest.raises(AttributeError, match="MetricsServer"):
        _ = server.store
    server.stop()
    assert not server.running


# --- clients -----------------------------------------------------------------------------


class ToyClientError(Exception):
    """The toy client's error."""


ClientError = ToyClientError  # the checker looks the error up next to the class, by this name


@dataclass(frozen=True)
class ClientFaults:
    """How the toy client behaves; the defaults follow the course."""

    sorts: bool = True
    sends_value_repr: bool = False
    now_when_falsy: bool = False
    checks_status: bool = True
    sends_in_pieces: bool = False
    reads_one_recv: bool = False
    validates_keys: bool = True
    wraps_os_errors: bool = True


class ToyClient:
    """A course-style client, written plainly, with switches to break it."""

    faults = ClientFaults()

    def __init__(self, host: str, port: int, timeout: float | None = None) -> None:
        try:
            self.sock = socket.create_connection((host, port), timeout)
        except OSError as exc:
            if not self.faults.wraps_os_errors:
                raise
            raise ClientError(exc) from exc

    def close(self) -> None:
        self.sock.close()

    def _talk(self, request: str) -> list[str]:
        data = request.encode()
        try:
            if self.faults.sends_in_pieces:
                for index in range(0, len(data), 4):
                    self.sock.sendall(data[index : index + 4])
            else:
                self.sock.sendall(data)
            answer = b""
            while not answer.endswith(b"\n\n"):
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ClientError("closed")
                answer += chunk
                if self.faults.reads_one_recv:
                    break
        except OSError as exc:
            if not self.faults.wraps_os_errors:
                raise
            raise ClientError(exc) from exc
        status, *lines = answer.decode().split("\n")
        if self.faults.checks_status and status != "ok":
            raise ClientError(status)
        return [line for line in lines if line]

    def put(self, key: str, value: float, timestamp: int | None = None) -> None:
        if self.faults.now_when_falsy:
            timestamp = timestamp or int(time.time())
        elif timestamp is None:
            timestamp = int(time.time())
        text = repr(float(value)) if self.faults.sends_value_repr else str(value)
        self._talk(f"put {key} {text} {timestamp}\n")

    def get(self, key: str) -> dict[str, list[tuple[int, float]]]:
        if self.faults.validates_keys and (not key or any(c.isspace() for c in key)):
            raise ClientError(f"bad key {key!r}")
        result: dict[str, list[tuple[int, float]]] = {}
        for line in self._talk(f"get {key}\n"):
            try:
                name, value, timestamp = line.split()
                result.setdefault(name, []).append((int(timestamp), float(value)))
            except ValueError as exc:
                raise ClientError(line) from exc
        if self.faults.sorts:
            for series in result.values():
                series.sort()
        return result


def toy_client(**faults: Any) -> type[ToyClient]:
    return type("BrokenToyClient", (ToyClient,), {"faults": replace(ClientFaults(), **faults)})


def test_our_client_passes_every_client_check() -> None:
    report = check_client(Client, timeout=CLIENT_FAST)
    assert report.failed == [], report.table()
    assert len(report.results) == len(CLIENT_CHECKS) >= 15


def test_the_right_toy_client_passes_every_client_check() -> None:
    report = check_client(ToyClient, timeout=CLIENT_FAST)
    assert report.failed == [], report.table()


BROKEN_CLIENTS = {
    "no-sort": ({"sorts": False}, {"get-sorted"}),
    "repr-values": ({"sends_value_repr": True}, {"put-int-value"}),
    "zero-means-now": ({"now_when_falsy": True}, {"put-timestamp-zero"}),
    # Its get still fails on "wrong command", a line that is not three fields.
    "ignores-error-status": ({"checks_status": False}, {"error-on-put", "garbage-status"}),
    "sends-in-pieces": ({"sends_in_pieces": True}, {"one-sendall"}),
    "reads-once": ({"reads_one_recv": True}, {"get-split-answer"}),
    "raw-os-errors": ({"wraps_os_errors": False}, {"connect-refused", "silent-server"}),
    "no-key-check": ({"validates_keys": False}, {"bad-key-not-sent"}),
}


@pytest.mark.parametrize("name", BROKEN_CLIENTS)
def test_a_broken_client_fails_its_rule_and_no_other(name: str) -> None:
    faults, broken_rules = BROKEN_CLIENTS[name]
    assert broken_rules <= {check.name for check in CLIENT_CHECKS}
    report = check_client(toy_client(**faults), ToyClientError, timeout=CLIENT_FAST)
    assert set(report.failed) == broken_rules, report.table()


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
    with pytest.raises(ValueError, match="ClientError"):
        load_client("metrics_lab.server:MetricsServer")
    with pytest.raises(ValueError, match="MODULE:CLASS"):
        load_client("metrics_lab.client")
    client_class, error_class = load_client(f"{SOLUTIONS}:Client")  # a file path works too
    assert (client_class.__name__, error_class.__name__) == ("Client", "ClientError")


# --- the command line --------------------------------------------------------------------


@pytest.fixture
def our_server() -> Iterator[BackgroundServer]:
    with serve_in_background() as server:
        yield server


def test_cli_check_prints_a_table_and_exits_0(
    our_server: BackgroundServer, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["check", f"{our_server.host}:{our_server.port}", "--timeout", str(FAST)])
    out = capsys.readouterr().out
    assert status == 0
    assert f"{len(SERVER_CHECKS)}/{len(SERVER_CHECKS)} checks passed" in out
    assert "FAIL" not in out


def test_cli_check_json_names_the_broken_rule_and_exits_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with serve_toy(Faults(overwrites=False)) as server:
        status = main(["check", f"{server.host}:{server.port}", "--json", "--timeout", str(FAST)])
    document = json.loads(capsys.readouterr().out)
    assert status == 1
    assert document["passed"] is False
    assert [r["name"] for r in document["results"] if not r["passed"]] == ["overwrite"]


def test_cli_check_client(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["check-client", "metrics_lab.client:Client", "--timeout", str(CLIENT_FAST)])
    assert status == 0
    assert "checks passed" in capsys.readouterr().out
    assert main(["check-client", "no_such_module_here:Client"]) == 1
    assert "cannot import" in capsys.readouterr().err


# --- the report --------------------------------------------------------------------------


def test_readable_escapes_and_cuts() -> None:
    assert readable(b"ok\n\n") == "ok\\n\\n"
    assert readable(b"\xff") == "\\xff"
    assert readable(b"x" * 500).endswith("... (500 bytes)")


def test_check_failed_detail_is_one_line() -> None:
    failure = CheckFailed("why", sent=b"get a\n", expected=b"ok\n\n", got=b"")
    assert failure.detail == "why; sent 'get a\\n'; expected 'ok\\n\\n'; got ''"


# --- notebook 06's solutions -------------------------------------------------------------


def test_the_solutions_of_notebook_06_are_right() -> None:
    solutions = runpy.run_path(str(SOLUTIONS))  # not as __main__: defines, does not run
    assert check_server_class(solutions["DictServer"]).failed == []
    assert check_server_class(solutions["DescendingServer"]).failed == ["get-all-key-order"]
    report = check_client(solutions["Client"], solutions["ClientError"], timeout=CLIENT_FAST)
    assert report.failed == [], report.table()


def check_server_class(server_class: Any) -> Any:
    store: dict[str, Any] = {}
    with serve_protocol_in_background(lambda: server_class(store)) as server:
        return check_server(*server.address, timeout=FAST)
