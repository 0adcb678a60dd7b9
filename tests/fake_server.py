"""Deliberately broken peers for the tests: scripted servers, toy servers and toy clients.

The real server never sends a reset mid-answer or a flood without ``\\n\\n``; to see how a
client copes, a test hands :class:`FakeServer` a script, a function that gets each accepted
socket and does exactly the wrong thing asked of it.

For the conformance checker, :class:`ToyServer` is one small asyncio server with a switch per
fault (:class:`Faults`) and :class:`ToyClient` one course-style client with a switch per fault
(:class:`ClientFaults`): each broken variant differs from the all-right toy in exactly one
way, and the checker must flag it on that rule and no other. :data:`COURSE_ONLY` keeps the
course's rules and breaks every stricter one it can.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, Self

from metrics_lab.background import BackgroundServer, serve_protocol_in_background

Script = Callable[[socket.socket], None]

POLL = 0.05
"""Seconds between checks for stop() while waiting for a connection."""


class FakeServer:
    """Accept connections on 127.0.0.1 (a free port) and run ``scripts`` on them in turn.

    The first connection gets ``scripts[0]``, the next ``scripts[1]``; the last script serves
    every later one. Scripts run in one background thread; :meth:`close` stops it.
    """

    def __init__(self, *scripts: Script) -> None:
        if not scripts:
            raise ValueError("a fake server needs at least one script")
        self._scripts = list(scripts)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(POLL)
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        self._stopping = threading.Event()
        self.errors: list[BaseException] = []
        self._current: socket.socket | None = None
        self._thread = threading.Thread(target=self._serve, name="fake-server", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        served = 0
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            script = self._scripts[min(served, len(self._scripts) - 1)]
            served += 1
            self._current = conn
            if self._stopping.is_set():  # close() came while we were accepting
                conn.close()
                return
            with conn:
                conn.settimeout(10)
                try:
                    script(conn)
                except OSError:
                    pass  # the client hung up first: that is the client's business
                except BaseException as exc:  # a broken script must fail the test, not hide
                    self.errors.append(exc)

    def close(self) -> None:
        """Stop accepting and wait for the script that is running to end."""
        self._stopping.set()
        current = self._current
        if current is not None:
            with contextlib.suppress(OSError):  # wake a script blocked in recv
                current.shutdown(socket.SHUT_RDWR)
        self._thread.join(15)
        self._listener.close()
        if self.errors:
            raise self.errors[0]

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def read_request(conn: socket.socket) -> bytes:
    """Read until the end of one request line (or the client's hang-up); return what came."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def wait_for_hangup(conn: socket.socket) -> None:
    """Read and drop everything until the client closes (or ten seconds pass)."""
    with contextlib.suppress(TimeoutError):
        while conn.recv(65536):
            pass


def reset(conn: socket.socket) -> None:
    """Close with a TCP reset rather than a clean close (SO_LINGER on, zero seconds)."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def _ok(line: bytes) -> bytes:
    return b"ok\n\n"


def answer_ok(
    conn: socket.socket, answer: Callable[[bytes], bytes] = _ok, recv_size: int = 65536
) -> None:
    """A well-behaved server for one connection: ``ok`` with no data to every request line.

    ``answer`` gives another answer to each line (without its ``\\n``); the answers to the
    lines of one received chunk (of at most ``recv_size`` bytes) go out in one write.
    """
    buffered = b""
    while True:
        chunk = conn.recv(recv_size)
        if not chunk:
            return
        buffered += chunk
        *lines, buffered = buffered.split(b"\n")
        conn.sendall(b"".join(answer(line) for line in lines))


# --- a toy metrics server with one switch per fault ----------------------------------------


@dataclass(frozen=True)
class Faults:
    """How the toy server behaves; the defaults follow PROTOCOL.md."""

    buffers_lines: bool = True
    sorts_timestamps: bool = True
    sorts_keys: bool = True
    overwrites: bool = True
    answers_empty_lines: bool = False
    answers_lone_blank_segment: bool = False  # a segment of only "\n" gets an answer
    error_answer: bytes = b"error\nwrong command\n\n"
    closes_after_error: bool = False
    silent_after_error: bool = False  # the connection stops answering after an error
    crashes_on_bad_utf8: bool = False
    accepts_bad_utf8: bool = False
    strips_cr: bool = True
    collapses_spaces: bool = True
    writes_repr: bool = True
    accepts_non_finite: bool = False
    accepts_underscores: bool = False  # float("1_0"), int("1_000")
    accepts_unicode_digits: bool = False  # float("٣")
    accepts_control_keys: bool = False
    accepts_star_key: bool = False
    accepts_any_timestamp: bool = False  # no 64-bit bound
    ignores_case: bool = False
    max_line: int | None = 64 * 1024
    shares_data: bool = True
    wipes_on_connect: bool = False  # one store, emptied whenever a connection opens


COURSE_ONLY = Faults(
    buffers_lines=False,
    max_line=None,
    sorts_keys=False,
    collapses_spaces=False,
    writes_repr=False,
    accepts_bad_utf8=True,
    accepts_non_finite=True,
    accepts_underscores=True,
    accepts_unicode_digits=True,
    accepts_control_keys=True,
    accepts_star_key=True,
    accepts_any_timestamp=True,
)
"""A server the course accepts: keys in insertion order, no line buffer nor limit, ``inf``,
``1_000`` and ``*`` taken, values echoed as sent, one space between fields."""


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
        self.silenced = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.faults.wipes_on_connect:
            self.store.points.clear()

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if self.silenced:
            return
        if self.faults.answers_lone_blank_segment and not data.strip():
            self.transport.write(self.faults.error_answer)
        if self.faults.buffers_lines:
            *lines, self.buffer = (self.buffer + data).split(b"\n")
        else:
            lines = data.split(b"\n")
        limit = self.faults.max_line
        for line in lines:
            too_long = limit is not None and len(line) > limit
            answer = self.faults.error_answer if too_long else self.answer(line)
            if answer is None:
                continue
            self.transport.write(answer)
            if answer == self.faults.error_answer:
                if too_long or self.faults.closes_after_error:
                    self.transport.close()
                    return
                if self.faults.silent_after_error:
                    self.silenced = True
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
        errors = "surrogateescape" if self.faults.accepts_bad_utf8 else "strict"
        try:
            texts = [part.decode("utf-8", errors) for part in fields[1:]]
            if command == b"put" and len(fields) == 4:
                return self.put(*texts)
            if command == b"get" and len(fields) == 2:
                return self.get(texts[0])
        except UnicodeDecodeError:
            if self.faults.crashes_on_bad_utf8:
                raise
        except ValueError:
            pass
        return self.faults.error_answer

    def put(self, key: str, text: str, raw_timestamp: str) -> bytes:
        faults, numbers = self.faults, text + raw_timestamp
        if "_" in numbers and not faults.accepts_underscores:
            raise ValueError(numbers)
        if not numbers.isascii() and not faults.accepts_unicode_digits:
            raise ValueError(numbers)
        # Surrogates stand for undecodable bytes (accepts_bad_utf8), not for control characters.
        printable = all(c.isprintable() or "\udc80" <= c <= "\udcff" for c in key)
        if not printable and not faults.accepts_control_keys:
            raise ValueError(key)
        if key == "*" and not faults.accepts_star_key:
            raise ValueError(key)
        value, timestamp = float(text), int(raw_timestamp)
        if not (faults.accepts_any_timestamp or -(2**63) <= timestamp < 2**63):
            raise ValueError(raw_timestamp)
        if not (math.isfinite(value) or faults.accepts_non_finite):
            raise ValueError(text)
        series = self.store.points.setdefault(key, [])
        if faults.overwrites:
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
        return ("".join(lines) + "\n").encode("utf-8", "surrogateescape")


def serve_toy(faults: Faults) -> BackgroundServer:
    """Run a toy server with ``faults`` in the background (one store for all connections)."""
    store = ToyStore()
    return serve_protocol_in_background(lambda: ToyServer(store, faults))


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


# --- a toy client with one switch per fault ------------------------------------------------


class ToyClientError(Exception):
    """The toy client's error."""


ClientError = ToyClientError  # the checker looks the error up next to the class, by this name


class BaseToyClientError(BaseException):
    """A learner's ClientError may derive from BaseException; the checker must cope."""


@dataclass(frozen=True)
class ClientFaults:
    """How the toy client behaves; the defaults follow PROTOCOL.md."""

    sorts: bool = True
    sends_value_repr: bool = False
    now_when_falsy: bool = False
    checks_status: bool = True
    sends_in_pieces: bool = False
    reads_one_recv: bool = False
    validates_keys: bool = True
    wraps_os_errors: bool = True
    rounds_sent_values: bool = False  # put('cpu', 0.001) sends 0.0
    rounds_read_values: bool = False
    ascii_put_keys: bool = False  # a non-ASCII key goes out as "?"
    latin1_answers: bool = False  # answers decoded as Latin-1: non-ASCII keys mangled
    one_line_is_error: bool = False  # the parser rejects an answer of exactly one data line
    discards_extra: bool = False  # bytes after an answer's \n\n are dropped
    keeps_garbage: bool = False  # after a broken answer, its bytes stay in the buffer
    waits_for_whole_answer: bool = False  # a bad status line is judged only at \n\n
    connects_per_request: bool = False  # not a fault: a new connection for every request
    prints: bool = False  # not a fault: chatters on stdout and stderr in every call


class ToyClient:
    """A course-style client, written plainly, with switches to break it.

    Right by default: one connection, bytes after an answer kept for the next one, a status
    line that is neither ok nor error refused at once, and after a broken exchange a fresh
    connection (so garbage never reaches the next request).
    """

    faults = ClientFaults()
    error: type[BaseException] = ToyClientError

    def __init__(self, host: str, port: int, timeout: float | None = None) -> None:
        self.address, self.timeout = (host, port), timeout
        self.buffer = b""
        self._say("connecting")
        self.sock: Any = self._connect()
        if self.faults.connects_per_request:
            self.sock.close()

    def _say(self, what: str) -> None:
        if self.faults.prints:
            print(f"toy client: {what}")
            print(f"toy client (stderr): {what}", file=sys.stderr)

    def _connect(self) -> Any:
        try:
            return socket.create_connection(self.address, self.timeout)
        except OSError as exc:
            if not self.faults.wraps_os_errors:
                raise
            raise self.error(exc) from exc

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()

    def _talk(self, request: str) -> list[str]:
        if self.faults.connects_per_request:
            with self._connect() as sock:
                self.buffer = b""
                return self._exchange(sock, request)
        if self.sock is None:  # the last exchange broke: start afresh
            self.sock = self._connect()
        try:
            return self._exchange(self.sock, request)
        except BaseException as exc:
            if isinstance(exc, self.error) and not self.faults.keeps_garbage:
                self.sock.close()
                self.sock, self.buffer = None, b""
            raise

    def _exchange(self, sock: Any, request: str) -> list[str]:
        data = request.encode()
        if self.faults.discards_extra:
            self.buffer = b""
        try:
            if self.faults.sends_in_pieces:
                for index in range(0, len(data), 4):
                    sock.sendall(data[index : index + 4])
            else:
                sock.sendall(data)
            while b"\n\n" not in self.buffer:
                self._refuse_bad_status()
                chunk = sock.recv(65536)
                if not chunk:
                    raise self.error("closed")
                self.buffer += chunk
                if self.faults.reads_one_recv:
                    break
        except OSError as exc:
            if not self.faults.wraps_os_errors:
                raise
            raise self.error(exc) from exc
        answer, _, self.buffer = self.buffer.partition(b"\n\n")
        status, *lines = answer.decode("latin-1" if self.faults.latin1_answers else "utf-8").split(
            "\n"
        )
        if self.faults.checks_status and status != "ok":
            raise self.error(status)
        return [line for line in lines if line]

    def _refuse_bad_status(self) -> None:
        status, newline, _ = self.buffer.partition(b"\n")
        early = self.faults.checks_status and not self.faults.waits_for_whole_answer
        if early and newline and status not in (b"ok", b"error"):
            raise self.error(f"not an answer: {status!r}")

    def put(self, key: str, value: float, timestamp: int | None = None) -> None:
        self._say(f"put {key}")
        if self.faults.now_when_falsy:
            timestamp = timestamp or int(time.time())
        elif timestamp is None:
            timestamp = int(time.time())
        if self.faults.ascii_put_keys:
            key = key.encode("ascii", "replace").decode()
        if self.faults.sends_value_repr:
            text = repr(float(value))
        elif self.faults.rounds_sent_values:
            text = str(round(value, 2))
        else:
            text = str(value)
        self._talk(f"put {key} {text} {timestamp}\n")

    def get(self, key: str) -> dict[str, list[tuple[int, float]]]:
        self._say(f"get {key}")
        if self.faults.validates_keys and (not key or any(c.isspace() for c in key)):
            raise self.error(f"bad key {key!r}")
        result: dict[str, list[tuple[int, float]]] = {}
        lines = self._talk(f"get {key}\n")
        if self.faults.one_line_is_error and len(lines) == 1:
            raise self.error("an answer of one line")
        for line in lines:
            try:
                name, value, timestamp = line.split()
                number = round(float(value), 6) if self.faults.rounds_read_values else float(value)
                result.setdefault(name, []).append((int(timestamp), number))
            except ValueError as exc:
                raise self.error(line) from exc
        if self.faults.sorts:
            for series in result.values():
                series.sort()
        return result


def toy_client(**faults: Any) -> type[ToyClient]:
    """A ToyClient class whose faults are the defaults changed by ``faults``."""
    return type("BrokenToyClient", (ToyClient,), {"faults": replace(ClientFaults(), **faults)})


class PrintingClient(ToyClient):
    """A right client that prints on stdout and stderr in every call."""

    faults = ClientFaults(prints=True)


class BaseErrorClient(ToyClient):
    """A right client whose ClientError derives from BaseException."""

    error = BaseToyClientError
