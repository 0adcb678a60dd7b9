"""The server checks: one per rule of ``docs/PROTOCOL.md``, run against any live server.

Every check opens its own connections and writes only keys under its own prefix
(``conformance.<run>.<check>``), and ``get *`` checks look only at their own keys' lines
among whatever else the server holds. Checks run one at a time: a misbehaving server (one
that wipes its data when a connection opens, say) then fails the check of the rule it breaks,
the same one on every run, and not whichever check happened to run beside it.

Each check says where its rule comes from (:data:`~metrics_lab.conformance.report.Source`):
``grader`` (the course's week-6 grader tests it: its client puts and gets points, reads
``get *``, and sends ``get wrong command test\n\n`` in one segment expecting one error
answer), ``task`` (the task text asks for it; no grader tests it) or ``protocol``
(PROTOCOL.md's stricter reading). Expected answers are written out as literal bytes, as
PROTOCOL.md shows them, never produced by :mod:`metrics_lab.protocol`: an encoder bug must
not hide a server bug.

Each check tests one rule. Where a check needs a wrong command only as a means (to see that
the connection survives it, say), it accepts any complete answer to it, so a wrong error text
shows up in the ``error-*`` checks and nowhere else.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from metrics_lab.conformance.probe import DEFAULT_MAX_ANSWER, Probe, Reading
from metrics_lab.conformance.report import (
    Check,
    CheckFailed,
    Profile,
    Progress,
    Report,
    Source,
    readable,
    run_check,
    select,
)

__all__ = ["DEFAULT_TIMEOUT", "SERVER_CHECKS", "ServerContext", "check_server"]

DEFAULT_TIMEOUT: Final = 2.0
"""Seconds the checker waits for any one answer before it calls the server silent."""

ERROR: Final = b"error\nwrong command\n\n"
OK: Final = b"ok\n\n"
LINE_LIMIT: Final = 64 * 1024
"""The default request-line limit of PROTOCOL.md; the long-line check goes past it."""
MAX_GET_ALL: Final = 64 * 1024 * 1024
"""Bytes the checker accepts for one ``get *`` answer (a busy server holds many points)."""


@dataclass
class ServerContext:
    """What a check gets: where the server is, its own key prefix, and fresh connections."""

    host: str
    port: int
    timeout: float
    prefix: str
    max_answer: int = DEFAULT_MAX_ANSWER
    max_get_all: int = MAX_GET_ALL
    refused: bool = False
    """Whether a connection was refused: nothing listens (any more) on the port."""
    _probes: list[Probe] = field(default_factory=list)

    def key(self, suffix: str = "") -> str:
        """A key that belongs to this check alone."""
        return self.prefix + suffix

    def connect(self) -> Probe:
        """Open a new connection to the server (closed when the check ends)."""
        try:
            probe = Probe(self.host, self.port, self.timeout, self.max_answer)
        except OSError as exc:
            self.refused = isinstance(exc, ConnectionRefusedError)
            raise CheckFailed(f"cannot connect to {self.host}:{self.port}: {exc}") from None
        self._probes.append(probe)
        return probe

    @property
    def unanswered(self) -> bool:
        """Whether the check waited in vain for an answer and heard nothing on any connection."""
        return any(p.waited_out for p in self._probes) and not any(p.heard for p in self._probes)

    @property
    def heard(self) -> bool:
        """Whether the server sent any byte to this check."""
        return any(p.heard for p in self._probes)

    def close(self) -> None:
        """Close every connection the check opened."""
        for probe in self._probes:
            probe.close()


# --- helpers the checks share --------------------------------------------------------------

SEE_OUTPUT: Final = "see your server's output for its traceback"
"""Where a crashed server's traceback is, when the server runs in a process of its own."""

CRASHED: Final = f"it probably crashed on this request: {SEE_OUTPUT}"


def send(probe: Probe, data: bytes) -> None:
    """Send ``data``, turning a failure into the check's failure."""
    try:
        probe.send(data)
    except OSError as exc:
        raise CheckFailed(
            f"sending failed ({exc}): the server had closed the connection, so it probably "
            f"crashed on an earlier request of this check: {SEE_OUTPUT}",
            sent=data,
        ) from None


def expect_silence(probe: Probe, data: bytes, why: str, sent: bytes | None = None) -> None:
    """Send ``data``; fail with ``why`` if any answer comes within a short pause.

    ``sent`` is what the failure shows as sent (``data`` unless given).
    """
    send(probe, data)
    early = probe.read_nothing(min(0.05, probe.timeout / 4))
    if early:
        raise CheckFailed(why, sent=data if sent is None else sent, got=early)


def ask(probe: Probe, request: bytes, count: int = 1, *, max_bytes: int | None = None) -> Reading:
    """Send ``request`` and read ``count`` answers."""
    send(probe, request)
    return probe.read_answers(count, max_bytes=max_bytes)


def expect(
    probe: Probe,
    request: bytes,
    expected: bytes,
    why: str,
    count: int = 1,
    *,
    crashed: str = CRASHED,
) -> None:
    """Send ``request``; fail with ``why`` unless exactly ``expected`` comes back.

    ``crashed`` is the hint added when the server hung up instead of answering.
    """
    reading = ask(probe, request, count)
    if reading.data != expected:
        raise CheckFailed(
            _because(why, reading, crashed=crashed),
            sent=request,
            expected=expected,
            got=reading.data,
        )


def _because(why: str, reading: Reading, *, crashed: str = CRASHED) -> str:
    """``why``, and why the read stopped short (with the ``crashed`` hint if the server hung up)."""
    if reading.complete:
        return why
    if reading.ending in ("closed", "reset"):
        return f"{why} ({reading.describe()}: {crashed})"
    return f"{why} ({reading.describe()})"


def own_lines(answer: bytes, prefix: str) -> list[bytes]:
    """The data lines of a ``get *`` answer that belong to keys under ``prefix``."""
    # prefix + "." or " ": the prefix of check "get-all" must not match "get-all-key-order".
    starts = ((prefix + ".").encode(), (prefix + " ").encode())
    return [line for line in answer.split(b"\n") if line.startswith(starts)]


def get_all(ctx: ServerContext, probe: Probe, why: str) -> bytes:
    """Send ``get *`` and return the whole answer, failing if it is not one whole answer."""
    request = b"get *\n"
    reading = ask(probe, request, max_bytes=ctx.max_get_all)
    if not (reading.complete and reading.data.startswith(b"ok\n")):
        raise CheckFailed(
            _because(why, reading), sent=request, expected=b"ok\n...\n\n", got=reading.data
        )
    return reading.data


def put_all(probe: Probe, points: Sequence[tuple[str, str, int]]) -> None:
    """Put ``(key, value text, timestamp)`` points one request at a time, each answered ok."""
    for key, value, timestamp in points:
        expect(probe, f"put {key} {value} {timestamp}\n".encode(), OK, "a put must be answered ok")


# --- the checks ----------------------------------------------------------------------------

SERVER_CHECKS: list[Check[ServerContext]] = []
"""Every server check, in the order a report lists them."""

# The task text's words behind the ``task`` rules (the course's text is Russian; each quote is
# followed by what it says in English).
TASK_BY_PROTOCOL: Final = (
    "'Сервер, получающий запросы от клиентов и возвращающий результаты согласно протоколу' "
    "(a server that answers requests as the protocol says: a wrong command gets "
    "'error\\nwrong command\\n\\n', and the connection goes on)"
)
TASK_MANY_USERS: Final = (
    "'доступ к интересующей информации сотням и тысячам пользователей одновременно' "
    "(one server's data, for hundreds of users at once)"
)
TASK_POINTS_IN_ORDER: Final = (
    "'{key : [(timestamp_1, value_1),..., (timestamp_n, value_n)]}' "
    "(each key's points, timestamp by timestamp)"
)


def server_check(
    name: str, description: str, source: Source, task_words: str = ""
) -> Callable[[Callable[[ServerContext], None]], Callable[[ServerContext], None]]:
    """Register the decorated function as a server check of the rule ``description``."""

    def register(run: Callable[[ServerContext], None]) -> Callable[[ServerContext], None]:
        SERVER_CHECKS.append(Check(name, description, run, source, task_words))
        return run

    return register


@server_check("put-ok", "put <key> <value> <timestamp> is answered ok\\n\\n", "grader")
def _put_ok(ctx: ServerContext) -> None:
    expect(ctx.connect(), f"put {ctx.key()} 10.5 1501864247\n".encode(), OK, "put must answer ok")


@server_check(
    "get-key",
    "get <key> answers ok and one '<key> <value> <timestamp>' line per point",
    "grader",
)
def _get_key(ctx: ServerContext) -> None:
    probe, key = ctx.connect(), ctx.key()
    put_all(probe, [(key, "10.5", 1501864247)])
    expected = f"ok\n{key} 10.5 1501864247\n\n".encode()
    expect(probe, f"get {key}\n".encode(), expected, "get must return the stored point")


@server_check("get-missing", "get of a key with no points answers ok\\n\\n", "grader")
def _get_missing(ctx: ServerContext) -> None:
    expect(ctx.connect(), f"get {ctx.key()}\n".encode(), OK, "an unknown key has no points")


@server_check("get-all", "get * returns every point of every key", "grader")
def _get_all(ctx: ServerContext) -> None:
    probe, one, two = ctx.connect(), ctx.key(".one"), ctx.key(".two")
    put_all(probe, [(one, "10.5", 100), (two, "0.25", 200)])
    answer = get_all(ctx, probe, "get * must answer ok and data lines")
    expected = {f"{one} 10.5 100".encode(), f"{two} 0.25 200".encode()}
    if set(own_lines(answer, ctx.prefix)) != expected:
        raise CheckFailed(
            "get * must include every stored point (only this check's keys are shown)",
            sent=b"get *\n",
            expected=b"\n".join(sorted(expected)),
            got=b"\n".join(own_lines(answer, ctx.prefix)),
        )
    bad = [line for line in answer.split(b"\n")[1:-2] if len(line.split(b" ")) != 3]
    if bad:
        raise CheckFailed("every data line must be '<key> <value> <timestamp>'", got=bad[0])


@server_check(
    "get-all-key-order",
    "get * lists keys in plain code-point order of the key strings (as Python's sorted(): "
    "'B' < 'a' < 'b'); the course's own example lists them in insertion order",
    "protocol",
)
def _get_all_key_order(ctx: ServerContext) -> None:
    probe = ctx.connect()
    suffixes = (".c", ".a", ".B", ".b")
    keys = [ctx.key(suffix) for suffix in suffixes]
    put_all(probe, [(key, "1.5", 10) for key in keys])
    own = own_lines(get_all(ctx, probe, "get * must answer ok and data lines"), ctx.prefix)
    expected = [f"{key} 1.5 10".encode() for key in sorted(keys)]
    if own != expected:
        # Only the keys' endings: the whole lines would be cut short and hide the order.
        order = [line.split(b" ")[0].decode(errors="replace")[len(ctx.prefix) :] for line in own]
        raise CheckFailed(
            f"keys were put in the order {' '.join(suffixes)} (after the prefix "
            f"{ctx.prefix}); get * must list them in code-point order",
            sent=b"get *\n",
            expected=" ".join(sorted(suffixes)),
            got=" ".join(order) or "none of them",
        )


@server_check(
    "timestamp-order",
    "each key's points come in ascending timestamp order",
    "task",
    TASK_POINTS_IN_ORDER,
)
def _timestamp_order(ctx: ServerContext) -> None:
    probe, key = ctx.connect(), ctx.key()
    put_all(probe, [(key, "3.5", 300), (key, "1.5", 100), (key, "2.5", 200)])
    lines = f"{key} 1.5 100\n{key} 2.5 200\n{key} 3.5 300\n"
    expect(probe, f"get {key}\n".encode(), f"ok\n{lines}\n".encode(), "get must sort by timestamp")
    own = b"".join(line + b"\n" for line in own_lines(get_all(ctx, probe, "get *"), ctx.prefix))
    if own != lines.encode():
        raise CheckFailed(
            "get * must sort by timestamp too", sent=b"get *\n", expected=lines.encode(), got=own
        )


@server_check(
    "overwrite",
    "a put with a timestamp the key already has replaces the value (the grader puts k2 at "
    "timestamp 5 twice and expects the second value)",
    "grader",
)
def _overwrite(ctx: ServerContext) -> None:
    probe, key = ctx.connect(), ctx.key()
    put_all(probe, [(key, "1.5", 100), (key, "2.5", 100)])
    expected = f"ok\n{key} 2.5 100\n\n".encode()
    expect(probe, f"get {key}\n".encode(), expected, "the last put for a timestamp must win")


@server_check(
    "value-format",
    "values come back as repr(float): 2 -> 2.0, 0.00001 -> 1e-05 (the course's graders "
    "read values with float() and accept any spelling)",
    "protocol",
)
def _value_format(ctx: ServerContext) -> None:
    probe, key = ctx.connect(), ctx.key()
    put_all(probe, [(key, "2", 1), (key, "0.00001", 2), (key, "10.50", 3), (key, "-1.5e3", 4)])
    expected = f"ok\n{key} 2.0 1\n{key} 1e-05 2\n{key} 10.5 3\n{key} -1500.0 4\n\n".encode()
    expect(probe, f"get {key}\n".encode(), expected, "values must be written as repr(float)")


@server_check(
    "timestamp-range", "timestamps are any 64-bit integers: negative, 0, 2**63-1", "protocol"
)
def _timestamp_range(ctx: ServerContext) -> None:
    probe, key = ctx.connect(), ctx.key()
    top = 2**63 - 1
    # Sent in ascending order, so a server that does not sort still passes this check.
    put_all(probe, [(key, "3.5", -(2**63)), (key, "2.5", 0), (key, "1.5", top)])
    expected = f"ok\n{key} 3.5 {-(2**63)}\n{key} 2.5 0\n{key} 1.5 {top}\n\n".encode()
    expect(probe, f"get {key}\n".encode(), expected, "every 64-bit timestamp must be kept")


@server_check("case-sensitive-keys", "keys differing only in case are different keys", "protocol")
def _case_sensitive_keys(ctx: ServerContext) -> None:
    probe, lower, upper = ctx.connect(), ctx.key(".cpu"), ctx.key(".CPU")
    put_all(probe, [(lower, "1.5", 1), (upper, "2.5", 1)])
    expected = f"ok\n{upper} 2.5 1\n\n".encode()
    expect(probe, f"get {upper}\n".encode(), expected, "get must match the key's exact case")


@server_check("utf8-key", "a key may hold any printable characters, UTF-8 on the wire", "protocol")
def _utf8_key(ctx: ServerContext) -> None:
    probe, key = ctx.connect(), ctx.key(".температура.°C")
    put_all(probe, [(key, "21.5", 1)])
    expected = f"ok\n{key} 21.5 1\n\n".encode()
    expect(probe, f"get {key}\n".encode(), expected, "a UTF-8 key must come back unchanged")


@server_check(
    "crlf",
    "a \\r before the \\n is ignored (telnet and nc on Windows send \\r\\n)",
    "protocol",
)
def _crlf(ctx: ServerContext) -> None:
    probe, key = ctx.connect(), ctx.key()
    expect(probe, f"put {key} 1.5 100\r\n".encode(), OK, "put ending in \\r\\n must be answered ok")
    expected = f"ok\n{key} 1.5 100\n\n".encode()
    expect(probe, f"get {key}\r\n".encode(), expected, "get ending in \\r\\n must find the key")


@server_check("spaces", "runs of spaces between fields count as one", "protocol")
def _spaces(ctx: ServerContext) -> None:
    probe, key = ctx.connect(), ctx.key()
    expect(probe, f"put  {key}   1.5  100\n".encode(), OK, "spaced-out put must be answered ok")
    expected = f"ok\n{key} 1.5 100\n\n".encode()
    expect(probe, f"get   {key}\n".encode(), expected, "spaced-out get must find the key")


@server_check(
    "empty-line",
    "'get wrong command test\\n\\n' sent in one segment gets exactly one answer, an error, "
    "and the connection then answers the next request (the course's grader sends this)",
    "grader",
)
def _empty_line(ctx: ServerContext) -> None:
    probe, key = ctx.connect(), ctx.key()
    put_all(probe, [(key, "1.5", 100)])
    request = b"get wrong command test\n\n"
    reading = ask(probe, request)
    if not (reading.complete and reading.data.startswith(b"error\n")):
        raise CheckFailed(
            _because("the request must be answered with an error", reading),
            sent=request,
            expected=b"error\n...\n\n",
            got=reading.data,
        )
    expected = f"ok\n{key} 1.5 100\n\n".encode()
    why = (
        "the next request must get its own answer (a second answer, to the empty line, "
        "arrives here instead: the grader's next get fails on it)"
    )
    expect(probe, f"get {key}\n".encode(), expected, why)


@server_check(
    "blank-lines",
    "an empty line, or one of spaces only, gets no answer at all, whether it follows a request "
    "in the same segment or comes alone in its own segment",
    "protocol",
)
def _blank_lines(ctx: ServerContext) -> None:
    probe, key = ctx.connect(), ctx.key()
    request = f"put {key} 1.5 100\n\n   \n".encode()
    expect(probe, request, OK, "the put must be answered ok; the empty lines after it nothing")
    for blank in (b"\n", b"   \n"):
        # Alone in its own segment: nothing else is unsent or unanswered, so it leaves on its
        # own. Whatever answer comes is read here or, if late, in place of the get's answer.
        expect_silence(probe, blank, "an empty line sent alone must get no answer")
    expected = f"ok\n{key} 1.5 100\n\n".encode()
    why = "empty lines must not be answered (an answer to one arrives here instead)"
    expect(probe, f"get {key}\n".encode(), expected, why)


@server_check("pipelining", "requests sent together are answered in order", "protocol")
def _pipelining(ctx: ServerContext) -> None:
    probe, one, two, none = ctx.connect(), ctx.key(".one"), ctx.key(".two"), ctx.key(".none")
    request = (
        f"put {one} 1.5 1\nget {one}\nput {two} 2.5 2\nput {one} 3.5 3\n"
        f"get {two}\nget {none}\nget {one}\n"
    ).encode()
    expected = (
        f"ok\n\nok\n{one} 1.5 1\n\nok\n\nok\n\nok\n{two} 2.5 2\n\nok\n\n"
        f"ok\n{one} 1.5 1\n{one} 3.5 3\n\n"
    ).encode()
    expect(probe, request, expected, "each answer must follow its request, in order", count=7)


def _split(probe: Probe, parts: Sequence[bytes], expected: bytes) -> None:
    """Send ``parts`` as separate segments, checking that no answer comes before the last."""
    for index, part in enumerate(parts[:-1]):
        why = "the server answered before the line was complete"
        expect_silence(probe, part, why, sent=b"".join(parts[: index + 1]))
    try:
        expect(probe, parts[-1], expected, "a request split across sends must be read as one")
    except CheckFailed as failure:
        pieces = " + ".join(f"'{readable(part)}'" for part in parts)
        raise CheckFailed(
            failure.why, sent=pieces, expected=failure.expected, got=failure.got
        ) from None


@server_check(
    "split-request", "a request split across several sends is read as one line", "protocol"
)
def _split_request(ctx: ServerContext) -> None:
    probe, key = ctx.connect(), ctx.key().encode()
    _split(probe, [b"pu", b"t " + key + b" 1", b".5 10", b"0\n"], OK)
    _split(probe, [b"ge", b"t " + key[:3], key[3:] + b"\n"], b"ok\n" + key + b" 1.5 100\n\n")


@server_check(
    "split-utf8", "a key's multi-byte UTF-8 character may be split across sends", "protocol"
)
def _split_utf8(ctx: ServerContext) -> None:
    probe, key = ctx.connect(), ctx.key(".é").encode()
    cut = len(key) - 1  # between the two bytes of "é"
    _split(probe, [b"put " + key[:cut], key[cut:] + b" 1.5 100\n"], OK)
    expect(probe, b"get " + key + b"\n", b"ok\n" + key + b" 1.5 100\n\n", "key must match")


@server_check(
    "several-clients",
    "what one connection puts, every other connection gets: all connections share one store",
    "task",
    TASK_MANY_USERS,
)
def _several_clients(ctx: ServerContext) -> None:
    key = ctx.key()
    get = f"get {key}\n".encode()
    why = (
        "a connection must see what another one put (the server lost data between "
        "connections, or keeps a store per connection)"
    )
    # Each connection opens only after the last request was answered, so where a point is
    # lost does not depend on how fast the server notices a new connection.
    first = ctx.connect()
    put_all(first, [(key, "1.5", 1)])
    second = ctx.connect()
    expect(second, get, f"ok\n{key} 1.5 1\n\n".encode(), why)
    put_all(second, [(key, "2.5", 2)])
    expected = f"ok\n{key} 1.5 1\n{key} 2.5 2\n\n".encode()
    for probe in (first, ctx.connect()):
        expect(probe, get, expected, why)


@dataclass(frozen=True, slots=True)
class _WrongCommand:
    name: str
    description: str
    lines: tuple[str, ...]  # templates: {key} is the check's key
    stores: bool  # whether a lenient server would store a point under {key}
    source: Source


_WRONG_COMMANDS: Final = (
    _WrongCommand("unknown-command", "an unknown command: got", ("got {key}",), False, "task"),
    _WrongCommand(
        "uppercase-command", "commands are lower case: PUT", ("PUT {key} 1.5 1",), True, "task"
    ),
    _WrongCommand("get-without-key", "get without a key", ("get",), False, "task"),
    _WrongCommand("get-two-keys", "get with two keys", ("get {key} {key}",), False, "task"),
    _WrongCommand("put-too-few", "put with two fields", ("put {key} 1.5",), True, "task"),
    _WrongCommand("put-too-many", "put with four fields", ("put {key} 1.5 1 2",), True, "task"),
    _WrongCommand(
        "value-not-number", "a value that is not a number", ("put {key} x 1",), True, "task"
    ),
    _WrongCommand(
        "timestamp-not-integer",
        "a timestamp that is not an integer",
        ("put {key} 1.5 1.5", "put {key} 1.5 x"),
        True,
        "task",
    ),
    _WrongCommand(
        "value-not-finite",
        "a value that is nan or inf",
        ("put {key} nan 1", "put {key} inf 1", "put {key} -inf 1"),
        True,
        "protocol",
    ),
    _WrongCommand(
        "timestamp-over-64-bit",
        "a timestamp outside 64 bits",
        ("put {key} 1.5 9223372036854775808", "put {key} 1.5 -9223372036854775809"),
        True,
        "protocol",
    ),
    _WrongCommand("put-star-key", "* as a put key", ("put * 1.5 1",), False, "protocol"),
    _WrongCommand(
        "number-underscore",
        "a number spelled with underscores (Python's float() and int() take 1_000)",
        ("put {key} 1_0 1", "put {key} 1.5 1_000"),
        True,
        "protocol",
    ),
    _WrongCommand(
        "non-ascii-digit",
        "a number spelled with non-ASCII digits (Python's float() and int() take '٣')",
        ("put {key} ٣ 1", "put {key} 1.5 ٣", "put {key} 1.5 \uff11\uff12"),
        True,
        "protocol",
    ),
    _WrongCommand(
        "key-control-char",
        "a put key with a control character (keys are printable)",
        ("put {key}.\x01 1.5 1", "put {key}.\x7f 1.5 1", "put {key}.\x1b[31m 1.5 1"),
        False,
        "protocol",
    ),
)


def _wrong_command_check(case: _WrongCommand) -> Callable[[ServerContext], None]:
    def run(ctx: ServerContext) -> None:
        key = ctx.key()
        for template in case.lines:
            request = (template.format(key=key) + "\n").encode()
            # A fresh connection per line: a server that closes after an error fails
            # survives-errors, not this check.
            expect(ctx.connect(), request, ERROR, "must be answered error\\nwrong command\\n\\n")
        if case.stores:
            expect(ctx.connect(), f"get {key}\n".encode(), OK, "a wrong command must store nothing")

    return run


for _case in _WRONG_COMMANDS:
    SERVER_CHECKS.append(
        Check(
            f"error-{_case.name}",
            f"{_case.description} is answered error\\nwrong command\\n\\n",
            _wrong_command_check(_case),
            _case.source,
            TASK_BY_PROTOCOL if _case.source == "task" else "",
        )
    )


@server_check(
    "error-put-bad-utf8-key", "a put key that is not UTF-8 is a wrong command", "protocol"
)
def _bad_utf8_key(ctx: ServerContext) -> None:
    request = b"put " + ctx.key().encode() + b".\xff\xfe 1.5 1\n"
    expect(ctx.connect(), request, ERROR, "must be answered error\\nwrong command\\n\\n")


@server_check(
    "survives-errors",
    "after each wrong command the connection keeps answering (the error checks use a fresh "
    "connection each; this one sends them all on one)",
    "task",
    TASK_BY_PROTOCOL,
)
def _survives_errors(ctx: ServerContext) -> None:
    probe, key, bad = ctx.connect(), ctx.key(), ctx.key(".bad")
    put_all(probe, [(key, "1.5", 1)])
    expected = f"ok\n{key} 1.5 1\n\n".encode()
    lines = [t for case in _WRONG_COMMANDS if case.source == "task" for t in case.lines]
    for template in lines:
        request = (template.format(key=bad) + "\n").encode()
        # Any complete answer will do here: its text is the error-* checks' business.
        answer = ask(probe, request)
        if not answer.complete:
            why = "a wrong command must be answered, and the connection must stay open"
            raise CheckFailed(_because(why, answer), sent=request, got=answer.data)
        why = (
            f"after the wrong command '{readable(request)}' and its answer "
            f"'{readable(answer.data)}', the connection must keep working"
        )
        get = f"get {key}\n".encode()
        expect(probe, get, expected, why, crashed="it probably broke on that command")


@server_check(
    "long-line",
    "a line over the limit (64 KiB) gets an error answer and a close (the course sets no limit)",
    "protocol",
)
def _long_line(ctx: ServerContext) -> None:
    probe = ctx.connect()
    request = b"get " + b"k" * (LINE_LIMIT + 1024) + b"\n"
    # A server may close before reading it all; what it answered is still readable.
    with contextlib.suppress(OSError):
        probe.send(request)
    reading = probe.closed_by_peer()
    answered = reading.data.startswith(b"error\n") and reading.data.endswith(b"\n\n")
    if not (answered and reading.ending in ("closed", "reset")):
        raise CheckFailed(
            "the server must answer error and close the connection"
            + (" (it did not close it)" if reading.ending == "timeout" else "")
            + (
                ": the long line came whole, ending in \\n, so check each complete line's length "
                "too, not only the unfinished rest of a line you buffer"
                if reading.data.startswith(b"ok\n")
                else ""
            ),
            sent=request,
            expected=b"error\n...\n\n, then close",
            got=reading.data,
        )


# --- running them --------------------------------------------------------------------------

HANG_HINT: Final = "is it hung (an endless loop in data_received?)"
"""What a server that stops answering everyone is likely to suffer from."""

_UNANSWERED_IN_A_ROW: Final = 2
"""Checks in a row without a byte back after which the run asks whether the server is alive."""


def _answers(ctx: ServerContext) -> bool:
    """Whether the server answers a simple get on a fresh connection within the timeout."""
    try:
        with Probe(ctx.host, ctx.port, ctx.timeout, ctx.max_answer) as probe:
            probe.send(f"get {ctx.key('.alive')}\n".encode())
            return probe.read_answers().ending != "timeout" or probe.heard
    except OSError:
        return True  # refused or reset: not a hang; the checks say what it is


def check_server(
    host: str,
    port: int,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    only: Sequence[str] | None = None,
    profile: Profile = "strict",
    progress: Progress | None = None,
) -> Report:
    """Run the server checks of ``profile`` against ``host:port`` and return the report.

    ``profile="course"`` predicts the course's graders (their rules fail, the task text's
    warn); ``"strict"`` (the default) is PROTOCOL.md, every rule. ``progress`` is called
    after each check. ``timeout`` bounds every wait for an answer, so a
    silent or flooding server makes the run slower, never endless: each check waits at most a
    few timeouts. ``only`` picks checks by name. Checks run one at a time, each on its own
    connections and keys, so a run's report does not depend on timing.
    """
    checks = select(SERVER_CHECKS, only, profile, timeout)
    run_id = secrets.token_hex(4)
    results = []
    note = ""
    unanswered = 0  # checks in a row that got no byte back
    heard = False  # whether any check got a byte back
    for number, check in enumerate(checks, 1):
        ctx = ServerContext(host, port, timeout, f"conformance.{run_id}.{check.name}")
        try:
            results.append(run_check(check, ctx, profile))
        finally:
            ctx.close()
        if progress is not None:
            progress(number, len(checks), results[-1])
        unanswered = unanswered + 1 if ctx.unanswered else 0
        heard = heard or ctx.heard
        if unanswered >= _UNANSWERED_IN_A_ROW and not _answers(ctx):
            # A hung server fails every later check the same way, a timeout each: say it once.
            note = f"stopped after {check.name}: " + (
                f"the server stopped answering: {HANG_HINT}"
                if heard
                else f"the server answered no request: {HANG_HINT}, or does it never write?"
            )
            break
        if ctx.refused:
            # Every later check would fail the same way: say it once, and stop.
            note = (
                f"stopped at {check.name}: nothing accepts connections on {host}:{port}"
                if number == 1
                else f"stopped at {check.name}: the server stopped accepting connections "
                "(it crashed or exited; the failures before show the last requests it got)"
            )
            break
    return Report(f"server {host}:{port}", tuple(results), profile, note)
