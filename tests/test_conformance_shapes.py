"""The checker's calibration: learner-shaped servers and clients, and what each profile says.

Each shape in ``tests.learner_shapes`` is a way the course's learners commonly write their
solution, one the course's graders accept. Under ``--profile course`` each must pass (the
task-text rules it breaks show as warnings, pinned here); under ``strict`` it fails exactly
the rules of PROTOCOL.md it breaks. A check that starts failing an accepted shape under the
course profile would tell a learner the course rejects a solution it accepts.
"""

from __future__ import annotations

import pytest

from metrics_lab.background import serve_protocol_in_background
from metrics_lab.conformance import Profile, Report, check_client, check_server
from tests.learner_shapes import clients, servers

FAST = 0.5

# What every learner server breaks: it handles each chunk as whole lines, so blank lines,
# split requests and long lines go wrong, and float()/int()/str.split() take what PROTOCOL.md
# refuses. None of it is in the task text or the grader.
CHUNK_SERVER_STRICT = {
    "blank-lines",
    "split-request",
    "split-utf8",
    "long-line",
    "error-value-not-finite",
    "error-timestamp-over-64-bit",
    "error-put-star-key",
    "error-number-underscore",
    "error-non-ascii-digit",
    "error-key-control-char",
    "error-put-bad-utf8-key",
}
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
