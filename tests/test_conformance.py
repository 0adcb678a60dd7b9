"""The conformance checker on servers: right servers pass, each broken one fails its rule.

The broken servers are one small asyncio server (``tests.fake_server.ToyServer``) with a
switch per fault, so each variant differs from the all-right toy in exactly one way; the
all-right toy must pass every check, which shows the checks test the protocol and not our
implementation. Client checks are in ``test_conformance_clients.py``.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator

import pytest

from metrics_lab import serve_in_background
from metrics_lab.background import BackgroundServer, serve_protocol_in_background
from metrics_lab.cli import main
from metrics_lab.conformance import SERVER_CHECKS, Report, check_server
from metrics_lab.conformance.report import CheckFailed, CheckResult, readable
from tests.fake_server import COURSE_ONLY, Faults, Flood, Silent, serve_toy
from tests.test_conformance_shapes import LENIENT_PARSING, NO_LINE_BUFFER

FAST = 1.0
"""Per-answer timeout for checks against the toys: they answer at once, or never."""

ALL_SERVER_CHECKS = {check.name for check in SERVER_CHECKS}
GRADER_CHECKS = {check.name for check in SERVER_CHECKS if check.source == "grader"}
TASK_CHECKS = {check.name for check in SERVER_CHECKS if check.source == "task"}
COURSE_CHECKS = GRADER_CHECKS | TASK_CHECKS
STRICT_CHECKS = ALL_SERVER_CHECKS - COURSE_CHECKS
ERROR_CHECKS = {name for name in ALL_SERVER_CHECKS if name.startswith("error-")}


def test_our_server_passes_every_check_in_both_profiles() -> None:
    with serve_in_background() as server:
        strict = check_server(*server.address, timeout=FAST)
        course = check_server(*server.address, timeout=FAST, profile="course")
    assert strict.failed == [], strict.table()
    assert len(strict.results) == len(SERVER_CHECKS) >= 36
    assert course.failed == [], course.table()
    assert {result.name for result in course.results} == COURSE_CHECKS


def test_the_right_toy_passes_every_check() -> None:
    with serve_toy(Faults()) as server:
        report = check_server(*server.address, timeout=FAST)
    assert report.failed == [], report.table()


def test_every_check_names_its_source() -> None:
    assert {check.source for check in SERVER_CHECKS} == {"grader", "task", "protocol"}
    # What the course's week-6 grader sends: puts, gets, get *, and one wrong command.
    assert {
        "put-ok",
        "get-key",
        "get-missing",
        "get-all",
        "overwrite",
        "empty-line",
    } == GRADER_CHECKS
    # What the task text asks and no grader tests: a warning under the course profile.
    assert {"timestamp-order", "several-clients", "survives-errors", "error-get-two-keys"} <= (
        TASK_CHECKS
    )
    assert all(check.task_words for check in SERVER_CHECKS if check.source == "task")
    assert {"get-all-key-order", "long-line", "blank-lines", "split-request"} <= STRICT_CHECKS


BROKEN_SERVERS = {
    "no-buffering": (
        Faults(buffers_lines=False, max_line=None),
        # Without a line buffer there is no line to measure, so no limit either.
        {"split-request", "split-utf8", "long-line"},
    ),
    "unsorted-timestamps": (Faults(sorts_timestamps=False), {"timestamp-order"}),
    "unsorted-keys": (Faults(sorts_keys=False), {"get-all-key-order"}),
    "appends": (Faults(overwrites=False), {"overwrite"}),
    "answers-empty-lines": (Faults(answers_empty_lines=True), {"empty-line", "blank-lines"}),
    "answers-a-lone-blank-segment": (Faults(answers_lone_blank_segment=True), {"blank-lines"}),
    "wrong-error-text": (Faults(error_answer=b"error\nbad command\n\n"), ERROR_CHECKS),
    # The grader's own wrong command is sent on the connection it goes on using.
    "closes-after-error": (Faults(closes_after_error=True), {"survives-errors", "empty-line"}),
    "silent-after-error": (Faults(silent_after_error=True), {"survives-errors", "empty-line"}),
    "crashes-on-bad-utf8": (Faults(crashes_on_bad_utf8=True), {"error-put-bad-utf8-key"}),
    "accepts-bad-utf8": (Faults(accepts_bad_utf8=True), {"error-put-bad-utf8-key"}),
    "keeps-cr": (Faults(strips_cr=False), {"crlf"}),
    "splits-on-each-space": (Faults(collapses_spaces=False), {"spaces"}),
    "echoes-values": (Faults(writes_repr=False), {"value-format"}),
    "accepts-nan": (Faults(accepts_non_finite=True), {"error-value-not-finite"}),
    "accepts-underscores": (Faults(accepts_underscores=True), {"error-number-underscore"}),
    "accepts-unicode-digits": (Faults(accepts_unicode_digits=True), {"error-non-ascii-digit"}),
    "accepts-control-keys": (Faults(accepts_control_keys=True), {"error-key-control-char"}),
    "accepts-star-key": (Faults(accepts_star_key=True), {"error-put-star-key"}),
    "no-64-bit-bound": (Faults(accepts_any_timestamp=True), {"error-timestamp-over-64-bit"}),
    "ignores-case": (Faults(ignores_case=True), {"error-uppercase-command"}),
    "no-line-limit": (Faults(max_line=None), {"long-line"}),
    "data-per-connection": (Faults(shares_data=False), {"several-clients"}),
    "wipes-on-connect": (Faults(wipes_on_connect=True), {"several-clients"}),
}


@pytest.mark.parametrize("name", BROKEN_SERVERS)
def test_a_broken_server_fails_its_rule_and_no_other(name: str) -> None:
    faults, broken_rules = BROKEN_SERVERS[name]
    assert broken_rules <= ALL_SERVER_CHECKS
    with serve_toy(faults) as server:
        report = check_server(*server.address, timeout=FAST)
    assert set(report.failed) == broken_rules, report.table()


def test_a_server_the_course_accepts_passes_the_course_profile() -> None:
    with serve_toy(COURSE_ONLY) as server:
        course = check_server(*server.address, timeout=FAST, profile="course")
        strict = check_server(*server.address, timeout=FAST)
    assert course.passed, course.table()
    assert course.warnings == [], course.table()
    lenient_format = {"get-all-key-order", "value-format", "spaces"}
    assert set(strict.failed) == lenient_format | NO_LINE_BUFFER | LENIENT_PARSING, strict.table()
    assert strict.course_passed
    assert not strict.passed
    assert "the course's graders would accept it; PROTOCOL.md rules failed: " in strict.summary()
    table = strict.table()
    course_part, strict_part = table.split("docs/PROTOCOL.md's stricter rules")
    assert "FAIL" not in course_part
    assert "get-all-key-order            FAIL" in strict_part


def _normalised(report: Report) -> list[tuple[str, bool, str]]:
    """The results with the run's random key prefix taken out, to compare two runs."""
    return [
        (r.name, r.passed, re.sub(r"conformance\.[0-9a-f]{8}\.", "conformance.RUN.", r.detail))
        for r in report.results
    ]


@pytest.mark.parametrize("faults", [Faults(wipes_on_connect=True), COURSE_ONLY])
def test_two_runs_on_the_same_server_give_the_same_report(faults: Faults) -> None:
    with serve_toy(faults) as server:
        first = check_server(*server.address, timeout=FAST)
        second = check_server(*server.address, timeout=FAST)
    assert _normalised(first) == _normalised(second)


def test_a_server_that_loses_data_between_connections_is_told_so() -> None:
    with serve_toy(Faults(wipes_on_connect=True)) as server:
        report = check_server(*server.address, timeout=FAST)
    [result] = [r for r in report.results if not r.passed]
    assert "lost data between connections" in result.detail


def only_result(faults: Faults, name: str, timeout: float = FAST) -> CheckResult:
    """The result of the one check ``name`` against a toy server with ``faults``."""
    with serve_toy(faults) as server:
        report = check_server(*server.address, timeout=timeout, only=[name])
    [result] = report.results
    return result


def test_a_failure_shows_sent_expected_got_and_the_rule_readably() -> None:
    result = only_result(Faults(overwrites=False), "overwrite")
    assert result.detail.startswith("the last put for a timestamp must win; sent 'get conform")
    assert "expected 'ok\\n" in result.detail
    assert " 1.5 100\\n" in result.detail  # the appended value the toy still returns
    assert result.detail.endswith(f"rule: {result.description}")
    assert "\n" not in result.detail


def test_a_crash_is_named_with_the_request_that_caused_it() -> None:
    result = only_result(Faults(crashes_on_bad_utf8=True), "error-put-bad-utf8-key")
    assert "it probably crashed on this request" in result.detail
    assert "sent 'put conformance." in result.detail


def test_a_key_order_failure_shows_the_keys_and_the_rule() -> None:
    result = only_result(Faults(sorts_keys=False), "get-all-key-order")
    assert "expected .B .a .b .c; got .c .a .B .b" in result.detail
    assert "code-point order" in result.detail
    assert "bytes)" not in result.detail  # nothing cut short


def test_a_silent_connection_after_an_error_names_the_command() -> None:
    result = only_result(Faults(silent_after_error=True), "survives-errors", timeout=0.3)
    assert "after the wrong command 'got conformance." in result.detail
    assert "and its answer 'error\\nwrong command\\n\\n'" in result.detail
    assert "no complete answer before the timeout" in result.detail


# The bound is the test's timeout, far above the seconds a run takes, far below "hangs".
@pytest.mark.timeout(120)
def test_a_flooding_server_fails_every_check_within_the_time_bound() -> None:
    with serve_protocol_in_background(Flood) as server:
        report = check_server(*server.address, timeout=0.2)
    assert set(report.failed) == ALL_SERVER_CHECKS, report.table()
    details = " ".join(result.detail for result in report.results)
    assert "more bytes than any right" in details


def test_a_silent_server_ends_the_run_after_two_unanswered_checks() -> None:
    with serve_protocol_in_background(Silent) as server:
        report = check_server(*server.address, timeout=0.2)
    assert report.failed == ["put-ok", "get-key"], report.table()
    assert "before the timeout" in report.results[0].detail
    assert report.note == (
        "stopped after get-key: the server answered no request: is it hung (an endless loop "
        "in data_received?), or does it never write?"
    )
    assert not report.passed
    assert not report.course_passed


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
    with pytest.raises(ValueError, match=r"PROTOCOL\.md rules, run by --profile strict"):
        check_server("127.0.0.1", 1, only=["long-line"], profile="course")


def test_serve_protocol_in_background_serves_any_protocol_until_stopped() -> None:
    server = serve_protocol_in_background(Flood)
    with socket.create_connection(server.address, timeout=5) as sock:
        data = sock.recv(10)
    assert set(data) == {ord("x")}  # at least one byte, all of the flood
    with pytest.raises(AttributeError, match="MetricsServer"):
        _ = server.store
    server.stop()
    assert not server.running


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
    assert f"{len(SERVER_CHECKS)}/{len(SERVER_CHECKS)} checks passed (strict profile)" in out
    assert "FAIL" not in out


def test_cli_check_json_names_the_broken_rule_and_exits_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with serve_toy(Faults(overwrites=False)) as server:
        status = main(["check", f"{server.host}:{server.port}", "--json", "--timeout", str(FAST)])
    document = json.loads(capsys.readouterr().out)
    assert status == 1
    assert document["passed"] is False
    assert document["course_passed"] is False
    assert document["profile"] == "strict"
    [failed] = [r for r in document["results"] if not r["passed"]]
    assert (failed["name"], failed["source"], failed["status"]) == ("overwrite", "grader", "fail")


def test_cli_check_profile_course_accepts_what_the_course_accepts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with serve_toy(COURSE_ONLY) as server:
        address = f"{server.host}:{server.port}"
        course = main(["check", address, "--profile", "course", "--json", "--timeout", str(FAST)])
        course_document = json.loads(capsys.readouterr().out)
        strict = main(["check", address, "--json", "--timeout", str(FAST)])
        strict_document = json.loads(capsys.readouterr().out)
    assert (course, strict) == (0, 1)
    assert course_document["profile"] == "course"
    assert {r["source"] for r in course_document["results"]} == {"grader", "task"}
    assert strict_document["course_passed"] is True
    assert {r["source"] for r in strict_document["results"] if not r["passed"]} == {"protocol"}


def test_cli_check_refuses_an_unknown_profile(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["check", "127.0.0.1:1", "--profile", "lenient"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


# --- the report --------------------------------------------------------------------------


def test_readable_escapes_and_cuts() -> None:
    assert readable(b"ok\n\n") == "ok\\n\\n"
    assert readable(b"\xff") == "\\xff"
    assert readable("put k ٣ 1\n".encode()) == "put k ٣ 1\\n"
    assert readable(b"k\x01") == "k\\x01"
    assert readable(b"x" * 500).endswith("... (500 bytes)")


def test_check_failed_detail_is_one_line_and_says_got_only_where_it_applies() -> None:
    failure = CheckFailed("why", sent=b"get a\n", expected=b"ok\n\n", got=b"")
    assert failure.detail == "why; sent 'get a\\n'; expected 'ok\\n\\n'; got nothing"
    assert CheckFailed("why", sent=b"x").detail == "why; sent 'x'"


def test_a_report_groups_by_source_and_says_what_the_course_would_do() -> None:
    report = Report(
        "server x",
        (
            CheckResult("a", "rule a", "pass", source="grader"),
            CheckResult("t", "rule t", "fail", "why t", source="task"),
            CheckResult("b", "rule b", "fail", "why b", source="protocol"),
        ),
    )
    assert report.summary() == (
        "server x: 1/3 checks passed (strict profile); the course's graders would accept it; "
        "task-text rules failed: t; PROTOCOL.md rules failed: b"
    )
    table = report.table()
    assert table.index("course's graders") < table.index("task text") < table.index("stricter")
    assert json.loads(report.to_json())["results"][2]["source"] == "protocol"
    warned = Report(
        "server x", (CheckResult("t", "rule t", "warn", "why", source="task"),), "course"
    )
    assert warned.passed
    assert warned.summary() == (
        "server x: 0/1 checks passed (course profile); task-text rules warnings: t"
    )
