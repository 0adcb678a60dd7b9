"""The client checks: drive anyone's ``Client`` class against a scripted server.

The scripted server is a plain TCP server on 127.0.0.1 (port 0) in a thread. It records every
byte the client sends and answers each request line from a script, so a check can offer a
right answer, an error, garbage, an answer cut into pieces, silence or a hang-up, and see what
the client makes of it. While a check runs, ``socket.create_connection`` is wrapped so that
the checker also sees which socket methods the client calls (the course's own client test
swaps in a fake socket that has only ``sendall`` and ``recv``).

The client class is used as the course defines it: ``Client(host, port, timeout=None)``,
``put(key, value, timestamp=None)``, ``get(key)``, and a ``ClientError`` exception exported by
the same module. A check that hangs in the client's code is reported after a deadline.

Checks run one at a time. While one runs, ``socket.create_connection`` is wrapped (every
connection the client makes, whenever it makes it, is watched), and whatever the client
prints goes to that check's ``output`` rather than to the terminal, so a report printed as
JSON stays JSON. Each check says where its rule comes from: ``course`` or ``strict``
(PROTOCOL.md's stricter reading).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import io
import math
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, TextIO

from metrics_lab.conformance.report import (
    Check,
    CheckFailed,
    CheckResult,
    Profile,
    Progress,
    Report,
    Source,
    broken,
    readable,
    run_check,
    select,
)

__all__ = ["CLIENT_CHECKS", "ClientContext", "ScriptedServer", "check_client", "load_client"]

DEFAULT_TIMEOUT: Final = 2.0
"""Seconds the client under test is given as its ``timeout``; checks wait a few of these."""

_CHUNK_PAUSE: Final = 0.05  # between the pieces of an answer sent in pieces

Reply = Sequence[bytes | float] | None
"""What the scripted server does for one request line: send these chunks (with a short pause
between them; ``[]`` means stay silent; a float is a pause of that many seconds first), or
hang up (``None``)."""


def conformant_reply(line: bytes) -> Reply:
    """Answer like a right server with no data: put -> ok, get -> empty, empty line -> nothing."""
    fields = line.split()
    if not fields:
        return []
    if fields[0] == b"put" and len(fields) == 4:
        return [b"ok\n\n"]
    if fields[0] == b"get" and len(fields) == 2:
        return [b"ok\n\n"]
    return [b"error\nwrong command\n\n"]


class ScriptedServer:
    """A TCP server in a thread that answers each request line as ``script`` says.

    ``received`` holds every byte received on every connection, ``lines`` every request
    line (without ``\\n``), ``sent`` every byte sent. :meth:`stop` closes the listener and
    every connection, which also unblocks a client stuck waiting for an answer.
    """

    def __init__(self, script: Callable[[bytes], Reply]) -> None:
        self.script = script
        self.received = bytearray()
        self.sent = bytearray()
        self.lines: list[bytes] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.01)  # how often the accept loop looks at the stop flag
        self._connections: list[socket.socket] = []
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` to give the client."""
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                if self._stopping.is_set():  # stop() has already closed the others
                    connection.close()
                    return
                self._connections.append(connection)
                thread = threading.Thread(target=self._serve, args=(connection,), daemon=True)
                self._threads.append(thread)
            thread.start()

    def _serve(self, connection: socket.socket) -> None:
        buffer = b""
        with connection, contextlib.suppress(OSError):  # OSError: the client left, or stop()
            connection.settimeout(None)
            while not self._stopping.is_set():
                data = connection.recv(65536)
                if not data:
                    return
                with self._lock:
                    self.received += data
                *lines, buffer = (buffer + data).split(b"\n")
                for line in lines:
                    with self._lock:
                        self.lines.append(line)
                    reply = self.script(line)
                    if reply is None:
                        connection.close()
                        return
                    for index, chunk in enumerate(reply):
                        if isinstance(chunk, float):
                            time.sleep(chunk)
                            continue
                        if index:
                            time.sleep(_CHUNK_PAUSE)  # make each piece its own segment
                        connection.sendall(chunk)
                        with self._lock:
                            self.sent += chunk

    def stop(self) -> None:
        """Close everything and wait (briefly) for the threads."""
        with self._lock:
            self._stopping.set()
            connections = list(self._connections)
        self._listener.close()
        for connection in connections:
            # shutdown() wakes a thread blocked in recv() on this socket; close() alone may not.
            for close in (lambda c=connection: c.shutdown(socket.SHUT_RDWR), connection.close):
                with contextlib.suppress(OSError):
                    close()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(1.0)


class _SocketRecorder:
    """Wraps one of the client's sockets and logs, in the check's shared log, each call."""

    def __init__(self, sock: socket.socket, log: list[tuple[int, str, bytes]], number: int) -> None:
        self._sock = sock
        self._log = log
        self.number = number  # which connection of the check this is, from 0

    def sendall(self, data: bytes) -> None:
        self._log.append((self.number, "sendall", bytes(data)))
        self._sock.sendall(data)

    def recv(self, size: int) -> bytes:
        data = self._sock.recv(size)
        self._log.append((self.number, "recv", data))
        return data

    # `with socket.create_connection(...) as sock:` looks these up on the type, not through
    # __getattr__, so they must exist here for such a client to work at all.
    def __enter__(self) -> _SocketRecorder:
        self._log.append((self.number, "__enter__", b""))
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._log.append((self.number, "__exit__", b""))
        self._sock.close()

    def close_socket(self) -> None:
        """Close the real socket (not logged: the checker does it after the check)."""
        self._sock.close()

    def __getattr__(self, name: str) -> Any:
        self._log.append((self.number, name, b""))
        return getattr(self._sock, name)


@dataclass
class ClientContext:
    """What a client check gets: the class under test, its error, and scripted servers.

    While the check runs, every ``socket.create_connection`` call is recorded in
    :attr:`connections`, and every call on the sockets it returns in :attr:`calls` as
    ``(connection number, method, data)``. :attr:`output` collects what the client prints.
    """

    client_class: type[Any]
    error_class: type[BaseException]
    timeout: float
    connections: list[tuple[tuple[Any, ...], dict[str, Any]]] = field(default_factory=list)
    recorders: list[_SocketRecorder] = field(default_factory=list)
    calls: list[tuple[int, str, bytes]] = field(default_factory=list)
    output: io.StringIO = field(default_factory=io.StringIO)
    _servers: list[ScriptedServer] = field(default_factory=list)
    _clients: list[Any] = field(default_factory=list)

    def serve(self, answers: dict[bytes, Reply] | None = None) -> ScriptedServer:
        """Start a scripted server: lines in ``answers`` get that reply, others a right one."""
        script = dict(answers or {})
        server = ScriptedServer(lambda line: script.get(line, conformant_reply(line)))
        self._servers.append(server)
        return server

    def client(self, server: ScriptedServer, timeout: float | None = None) -> Any:
        """Make a client of the class under test, connected to ``server``.

        ``timeout`` (the context's by default) is the client's own timeout.
        """
        timeout = self.timeout if timeout is None else timeout
        try:
            client = self.client_class(*server.address, timeout=timeout)
        except BaseException as exc:
            raise CheckFailed(f"Client({server.address}, timeout=...) raised {exc!r}") from None
        self._clients.append(client)
        return client

    def create_connection(self, *args: Any, **kwargs: Any) -> Any:
        """Stands in for ``socket.create_connection`` while the check runs."""
        self.connections.append((args, kwargs))
        sock = _REAL_CREATE_CONNECTION(*args, **kwargs)
        recorder = _SocketRecorder(sock, self.calls, len(self.recorders))
        self.recorders.append(recorder)
        return recorder

    def in_thread(self, function: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
        """Start ``function`` in a daemon thread whose prints go to this check's output.

        Returns the thread and a list that gets ``("returned", value)`` or
        ``("raised", exception)`` when the function ends.
        """
        outcome: list[Any] = []

        def run() -> None:
            with _OUTPUT.routed(self.output):
                try:
                    outcome.append(("returned", function()))
                except BaseException as exc:  # reported by the check, whatever its base
                    outcome.append(("raised", exc))

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread, outcome

    def stop(self) -> None:
        """Close the clients and stop every scripted server the check started."""
        for client in self._clients:
            # The course does not require close(); the sockets themselves are closed below.
            with _OUTPUT.routed(self.output), contextlib.suppress(BaseException):
                client.close()
        for recorder in self.recorders:
            recorder.close_socket()
        for server in self._servers:
            server.stop()


_REAL_CREATE_CONNECTION: Final = socket.create_connection


class _ThreadRoutedStream(io.TextIOBase):
    """Stands in for ``sys.stdout`` or ``sys.stderr``: each thread's text goes to its route.

    ``contextlib.redirect_stdout`` swaps the stream for the whole process, so a check's
    thread and the main thread would share it; this sends each registered thread's writes to
    its check's buffer and everyone else's to the stream it replaced.
    """

    def __init__(self, router: _OutputRouter, fallback: TextIO) -> None:
        super().__init__()
        self._router = router
        self.fallback = fallback

    def write(self, text: str) -> int:
        route = self._router.routes.get(threading.get_ident())
        return (route or self.fallback).write(text)

    def flush(self) -> None:
        if threading.get_ident() not in self._router.routes:
            self.fallback.flush()

    def isatty(self) -> bool:
        return False


class _OutputRouter:
    """The per-thread routes of :class:`_ThreadRoutedStream`, and installing the streams."""

    def __init__(self) -> None:
        self.routes: dict[int, io.StringIO] = {}

    @contextlib.contextmanager
    def routed(self, buffer: io.StringIO) -> Iterator[None]:
        """Send the calling thread's prints to ``buffer`` while the block runs."""
        ident = threading.get_ident()
        previous = self.routes.get(ident)
        self.routes[ident] = buffer
        try:
            yield
        finally:
            if previous is None:
                self.routes.pop(ident, None)
            else:
                self.routes[ident] = previous

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Put the routing streams in place of ``sys.stdout`` and ``sys.stderr``."""
        out, err = sys.stdout, sys.stderr
        sys.stdout = _ThreadRoutedStream(self, out)
        sys.stderr = _ThreadRoutedStream(self, err)
        try:
            yield
        finally:
            # A client thread that still hangs after its check (it ignored its timeout and the
            # closed sockets) would print to these streams again: a rare case, and a printed
            # report is already complete by then.
            sys.stdout, sys.stderr = out, err


_OUTPUT: Final = _OutputRouter()


# --- helpers the checks share --------------------------------------------------------------


def call(what: str, function: Callable[[], Any]) -> Any:
    """Call the client; any exception is the check's failure, described with ``what``."""
    try:
        return function()
    except BaseException as exc:  # a learner's ClientError may derive from BaseException
        raise CheckFailed(f"{what} raised {exc!r}") from None


def expect_wire(server: ScriptedServer, expected: bytes, what: str) -> None:
    """Fail unless the client sent exactly ``expected`` to ``server``."""
    if bytes(server.received) != expected:
        raise CheckFailed(
            f"{what} must put exactly these bytes on the wire",
            expected=expected,
            got=bytes(server.received),
        )


def expect_result(result: object, expected: object, what: str, answer: bytes) -> None:
    """Fail unless the client returned ``expected`` (types and signs of zero included)."""
    if result == expected and _shape(result) == _shape(expected):
        return
    got, wanted = _points(result), _points(expected)
    if got is not None and not got and wanted:
        raise CheckFailed(
            f"{what} returned {readable(repr(result).encode())}, nothing of the answer's "
            f"{len(wanted)} points (does it parse the data lines into the dict it returns?)",
            sent=answer,
        )
    if got is not None and wanted is not None and got < wanted:
        raise CheckFailed(
            f"{what} returned a truncated answer: {len(got)} of its {len(wanted)} points "
            "(does the client stop reading before the answer's final \\n\\n, after one "
            "recv of a fixed size?)",
            sent=answer,
        )
    raise CheckFailed(
        f"{what} must return {readable(repr(expected).encode())} for this answer, "
        f"returned {readable(repr(result).encode())}",
        sent=answer,
    )


def _points(result: object) -> set[tuple[object, object, object]] | None:
    """The ``(key, timestamp, value)`` points of a get result, or None if it is not one."""
    if not isinstance(result, dict):
        return None
    try:
        return {(key, point[0], point[1]) for key, series in result.items() for point in series}
    except (TypeError, IndexError):
        return None


def _shape(value: object) -> object:
    """The types inside a get result, so 10 and 10.0 (or "10", or 0.0 and -0.0) differ."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return (type(value), [_shape(item) for item in value])
    if isinstance(value, float):
        return (float, math.copysign(1.0, value))
    return type(value)


def expect_client_error(
    ctx: ClientContext, call: str, when: str, function: Callable[[], Any], **shown: bytes
) -> None:
    """Fail unless ``function`` raises the module's ``ClientError`` (or a subclass).

    The failure reads "``call`` returned ...; it must raise ClientError when ``when``".
    """
    try:
        result = function()
    except ctx.error_class:
        return
    except BaseException as exc:
        outcome = f"raised {exc!r}"
    else:
        outcome = f"returned {result!r}"
    raise CheckFailed(
        f"{call} {outcome}; it must raise {ctx.error_class.__name__} when {when}", **shown
    )


# --- the checks ----------------------------------------------------------------------------

CLIENT_CHECKS: list[Check[ClientContext]] = []
"""Every client check, in the order a report lists them."""


# The task text's words behind the ``task`` rules (quoted from the course's Russian text;
# what they say in English follows each quote).
_TASK_PUT: Final = (
    "'message = \"put <key> <value> <timestamp>\\n\"', 'её значение (value), полученное в "
    "момент времени timestamp' (the value as given, and the time it was taken)"
)
_TASK_GET: Final = (
    "'{key : [(timestamp_1, value_1),..., (timestamp_n, value_n)]}' "
    "(each key's points, timestamp by timestamp, with the values the server sent)"
)
_TASK_WORDS: Final = {
    "put-value-precision": _TASK_PUT,
    "put-timestamp-now": _TASK_PUT,
    "get-sorted": _TASK_GET,
    "get-value-precision": _TASK_GET,
    "error-on-put": (
        "'Метод put ... выбрасывает исключения в зависимости от произошедших в ходе "
        "выполнения ошибок' (put raises an exception when something went wrong)"
    ),
}


def client_check(
    name: str, description: str, source: Source
) -> Callable[[Callable[[ClientContext], None]], Callable[[ClientContext], None]]:
    """Register the decorated function as a client check of the rule ``description``."""

    def register(run: Callable[[ClientContext], None]) -> Callable[[ClientContext], None]:
        CLIENT_CHECKS.append(Check(name, description, run, source, _TASK_WORDS.get(name, "")))
        return run

    return register


@client_check(
    "connect",
    "Client(host, port, timeout) calls socket.create_connection((host, port), timeout)",
    "grader",
)
def _connect(ctx: ClientContext) -> None:
    server = ctx.serve()
    client = ctx.client(server)
    if not ctx.connections:
        # A client may connect lazily, in its first request: the course's test accepts that.
        call("put('cpu', 0.5, 1)", lambda: client.put("cpu", 0.5, 1))
    if not ctx.connections:
        how = (
            "it reached the server by another way (socket.socket().connect, or a "
            "create_connection imported with 'from socket import create_connection', "
            "which the course's test cannot replace)"
            if server.received
            else "nothing reached the server"
        )
        raise CheckFailed(
            f"neither Client(...) nor its first put called socket.create_connection: {how}"
        )
    args, kwargs = ctx.connections[0]
    timeout = args[1] if len(args) > 1 else kwargs.get("timeout")
    if tuple(args[0]) != server.address or timeout != ctx.timeout:
        raise CheckFailed(
            f"expected create_connection({server.address!r}, {ctx.timeout!r}), "
            f"got create_connection(*{args!r}, **{kwargs!r})"
        )


@client_check("connect-refused", "a refused connection raises ClientError, not OSError", "protocol")
def _connect_refused(ctx: ClientContext) -> None:
    # A socket bound but not listening: connecting to it is refused, and no one else can
    # start listening on the port while we hold it.
    with socket.socket() as closed_port:
        closed_port.bind(("127.0.0.1", 0))
        host, port = closed_port.getsockname()[:2]
        expect_client_error(
            ctx,
            f"Client({host!r}, {port})",
            "nothing listens on the port",
            lambda: ctx.client_class(host, port, timeout=ctx.timeout),
        )


@client_check(
    "put-wire",
    "put('palm.cpu', 10.5, 1501864247) sends put palm.cpu 10.5 1501864247\\n",
    "grader",
)
def _put_wire(ctx: ClientContext) -> None:
    server = ctx.serve()
    result = call("put", lambda: ctx.client(server).put("palm.cpu", 10.5, timestamp=1501864247))
    expect_wire(server, b"put palm.cpu 10.5 1501864247\n", "put('palm.cpu', 10.5, 1501864247)")
    if result is not None:
        raise CheckFailed(f"put must return None, returned {result!r}")


@client_check("put-int-value", "put('load', 301, 3) sends put load 301 3\\n (str(value))", "grader")
def _put_int_value(ctx: ClientContext) -> None:
    server = ctx.serve()
    call("put", lambda: ctx.client(server).put("load", 301, 3))
    expect_wire(server, b"put load 301 3\n", "put('load', 301, 3)")


_UTF8_KEY: Final = "температура.°C"
"""A key beyond ASCII: Cyrillic letters and a degree sign."""

_PRECISE_VALUES: Final = (0.1 + 0.2, 0.001, 1e-300, 5e-324, 1.7976931348623157e308, -0.0, -2.5e-07)
"""Values a client must not round: 17 significant digits, tiny, huge, negative zero."""


@client_check(
    "put-value-precision",
    "put sends the value exactly as given (str(value)): a float that needs 17 significant "
    "digits, tiny and huge magnitudes and -0.0 read back as the same float",
    "task",
)
def _put_value_precision(ctx: ClientContext) -> None:
    server = ctx.serve()
    client = ctx.client(server)
    for timestamp, value in enumerate(_PRECISE_VALUES):
        call(
            f"put('cpu', {value!r}, {timestamp})",
            functools.partial(client.put, "cpu", value, timestamp),
        )
    expected = b"".join(
        f"put cpu {value!r} {t}\n".encode() for t, value in enumerate(_PRECISE_VALUES)
    )
    sent = [line.split(b" ") for line in bytes(server.received).split(b"\n")[:-1]]
    try:
        values = [float(fields[2]) for fields in sent]
    except (IndexError, ValueError):
        values = []
    precise = list(_PRECISE_VALUES)
    if values != precise or _shape(values) != _shape(precise):  # -0.0 must stay -0.0
        raise CheckFailed(
            "each value sent must read back as the same float (no rounding, sign of zero kept)",
            expected=expected,
            got=bytes(server.received),
        )


@client_check(
    "put-utf8-key",
    "a non-ASCII key goes on the wire as UTF-8: put('температура.°C', 1.5, 1)",
    "protocol",
)
def _put_utf8_key(ctx: ClientContext) -> None:
    server = ctx.serve()
    key = _UTF8_KEY
    call(f"put({key!r}, 1.5, 1)", lambda: ctx.client(server).put(key, 1.5, 1))
    expect_wire(server, f"put {key} 1.5 1\n".encode(), f"put({key!r}, 1.5, 1)")


@client_check("put-timestamp-now", "put without a timestamp sends int(time.time())", "task")
def _put_timestamp_now(ctx: ClientContext) -> None:
    server = ctx.serve()
    client = ctx.client(server)
    before = int(time.time())
    call("put", lambda: client.put("cpu", 0.5))
    after = int(time.time())
    sent = bytes(server.received)
    fields = sent.split()
    if not (
        sent.endswith(b"\n")
        and fields[:3] == [b"put", b"cpu", b"0.5"]
        and len(fields) == 4
        and fields[3].isdigit()
        and before <= int(fields[3]) <= after
    ):
        raise CheckFailed(
            "put('cpu', 0.5) must send the current time as an integer",
            expected=f"put cpu 0.5 <{before}..{after}>\n".encode(),
            got=sent,
        )


@client_check(
    "put-timestamp-zero", "put(key, value, 0) sends timestamp 0 (0 is not 'now')", "protocol"
)
def _put_timestamp_zero(ctx: ClientContext) -> None:
    server = ctx.serve()
    call("put", lambda: ctx.client(server).put("cpu", 0.5, 0))
    expect_wire(server, b"put cpu 0.5 0\n", "put('cpu', 0.5, 0)")


_LIFECYCLE: Final = frozenset({"close", "shutdown", "__enter__", "__exit__", "settimeout"})
"""Calls allowed on a connection the client opens for one request (and closes after it)."""


@client_check(
    "one-sendall",
    "each put and get is one sendall of the whole request, then recv calls; nothing else is "
    "called on the socket (the course's fake socket has only sendall and recv), whether the "
    "client connects once or for every request",
    "grader",
)
def _one_sendall(ctx: ClientContext) -> None:
    answer = b"ok\ncpu 0.5 1\ncpu 0.5 2\n\n"  # two lines: get-one-line checks one
    server = ctx.serve({b"get cpu": [answer]})
    client = ctx.client(server)
    for request, run in (
        (b"put cpu 0.5 1\n", lambda: client.put("cpu", 0.5, 1)),
        (b"get cpu\n", lambda: client.get("cpu")),
        (b"put cpu 0.5 2\n", lambda: client.put("cpu", 0.5, 2)),
    ):
        mark, opened = len(ctx.calls), len(ctx.recorders)
        call(request.decode().strip(), run)
        if not ctx.recorders:
            raise CheckFailed(
                "the client's socket was not made by socket.create_connection, so its calls "
                "cannot be seen (the connect check says more)"
            )
        calls = ctx.calls[mark:]
        sends = [data for _, name, data in calls if name == "sendall"]
        # A connection opened for this request may also be closed in it.
        others = sorted(
            {
                name
                for number, name, _ in calls
                if name not in ("sendall", "recv") and not (number >= opened and name in _LIFECYCLE)
            }
        )
        if sends != [request] or others:
            names = ", ".join(name for _, name, _ in calls) or "nothing"
            raise CheckFailed(
                f"{request.decode().strip()!r} must be one sendall of the whole request "
                f"and recv calls; the client called {names}",
                expected=request,
                got=b" + ".join(sends),
            )


_GET_CASES: Final[tuple[tuple[str, str, Source, str, bytes, object], ...]] = (
    (
        "get-parse",
        "get(key) returns {key: [(int timestamp, float value), ...]}",
        "grader",
        "cpu",
        b"ok\ncpu 0.5 10\ncpu 2.0 20\n\n",
        {"cpu": [(10, 0.5), (20, 2.0)]},
    ),
    (
        "get-sorted",
        "get sorts each key's points by timestamp",
        "task",
        "cpu",
        b"ok\ncpu 2.0 20\ncpu 0.5 10\ncpu 1.0 15\n\n",
        {"cpu": [(10, 0.5), (15, 1.0), (20, 2.0)]},
    ),
    (
        "get-all",
        "get('*') returns every key in the answer",
        "grader",
        "*",
        b"ok\ncpu 0.5 10\nmem 1e-05 10\ncpu 2.0 20\n\n",
        {"cpu": [(10, 0.5), (20, 2.0)], "mem": [(10, 1e-05)]},
    ),
    ("get-empty", "an answer with no data lines gives {}", "grader", "nothing", b"ok\n\n", {}),
    (
        "get-one-line",
        "an answer with exactly one data line gives that one point",
        "grader",
        "cpu",
        b"ok\ncpu 0.5 10\n\n",
        {"cpu": [(10, 0.5)]},
    ),
    (
        "get-many-lines",
        "an answer with many data lines (300, over several keys) gives every point",
        "protocol",
        "*",
        b"ok\n" + b"".join(f"k{n % 3} {n}.5 {n}\n".encode() for n in range(300)) + b"\n",
        {f"k{k}": [(n, n + 0.5) for n in range(k, 300, 3)] for k in range(3)},
    ),
    (
        "get-value-precision",
        "values are read exactly: 17 significant digits, tiny and huge magnitudes, -0.0",
        "task",
        "cpu",
        b"ok\n"
        + b"".join(f"cpu {v!r} {t}\n".encode() for t, v in enumerate(_PRECISE_VALUES))
        + b"\n",
        {"cpu": list(enumerate(_PRECISE_VALUES))},
    ),
    (
        "get-utf8-key",
        "a non-ASCII key in an answer (UTF-8 on the wire) comes back unchanged",
        "protocol",
        _UTF8_KEY,
        f"ok\n{_UTF8_KEY} 21.5 1\n{_UTF8_KEY} 22.5 2\n\n".encode(),
        {_UTF8_KEY: [(1, 21.5), (2, 22.5)]},
    ),
)


def _get_check(key: str, answer: bytes, expected: object) -> Callable[[ClientContext], None]:
    def run(ctx: ClientContext) -> None:
        request = f"get {key}".encode()
        server = ctx.serve({request: [answer]})
        result = call(f"get({key!r})", lambda: ctx.client(server).get(key))
        expect_wire(server, request + b"\n", f"get({key!r})")
        expect_result(result, expected, f"get({key!r})", answer)

    return run


for _name, _description, _source, _key, _answer, _expected in _GET_CASES:
    CLIENT_CHECKS.append(
        Check(
            _name,
            _description,
            _get_check(_key, _answer, _expected),
            _source,
            _TASK_WORDS.get(_name, ""),
        )
    )


@client_check("get-split-answer", "an answer that arrives in pieces is read whole", "protocol")
def _get_split_answer(ctx: ClientContext) -> None:
    pieces = [b"ok\ncpu 0", b".5 10\ncpu 2.0 20\n", b"\n"]
    server = ctx.serve({b"get cpu": pieces})
    result = call("get('cpu')", lambda: ctx.client(server).get("cpu"))
    expect_result(result, {"cpu": [(10, 0.5), (20, 2.0)]}, "get('cpu')", b"".join(pieces))


@client_check(
    "keeps-extra-bytes",
    "bytes that arrive after an answer's final \\n\\n are kept for the next answer",
    "protocol",
)
def _keeps_extra_bytes(ctx: ClientContext) -> None:
    first, second = b"ok\none 1.0 1\none 1.5 2\n\n", b"ok\ntwo 2.0 2\ntwo 2.5 3\n\n"
    # Both answers come with the first request; the second request gets nothing more.
    server = ctx.serve({b"get one": [first + second], b"get two": []})
    client = ctx.client(server)
    result = call("get('one')", lambda: client.get("one"))
    expect_result(result, {"one": [(1, 1.0), (2, 1.5)]}, "get('one')", first + second)
    result = call(
        "get('two'), whose answer had already arrived after the answer to get('one'),",
        lambda: client.get("two"),
    )
    expect_result(result, {"two": [(2, 2.0), (3, 2.5)]}, "get('two')", first + second)


_ERROR_CASES: Final[tuple[tuple[str, str, Source, str, bytes | None], ...]] = (
    (
        "error-on-put",
        "an error answer to put raises ClientError",
        "task",
        "put",
        b"error\nwrong command\n\n",
    ),
    (
        "error-on-get",
        "an error answer to get raises ClientError",
        "grader",
        "get",
        b"error\nwrong command\n\n",
    ),
    (
        "garbage-status",
        "an answer that is neither ok nor error raises ClientError",
        "protocol",
        "get",
        b"hello\n\n",
    ),
    (
        "garbage-line",
        "a data line that cannot be parsed raises ClientError",
        "protocol",
        "get",
        b"ok\ncpu x 1\n\n",
    ),
    (
        "server-closes",
        "a server that hangs up without answering raises ClientError",
        "protocol",
        "get",
        None,
    ),
)


def _error_check(command: str, reply: bytes | None) -> Callable[[ClientContext], None]:
    def run(ctx: ClientContext) -> None:
        request, calling = (
            (b"put cpu 0.5 1", "put('cpu', 0.5, 1)")
            if command == "put"
            else (b"get cpu", "get('cpu')")
        )
        server = ctx.serve({request: None if reply is None else [reply]})
        client = ctx.client(server)
        function = (
            (lambda: client.put("cpu", 0.5, 1)) if command == "put" else (lambda: client.get("cpu"))
        )
        when = (
            "the server hangs up without answering"
            if reply is None
            else f"the server answers '{readable(reply)}'"
        )
        expect_client_error(ctx, calling, when, function, sent=reply or b"")

    return run


for _name, _description, _source, _command, _reply in _ERROR_CASES:
    CLIENT_CHECKS.append(
        Check(
            _name,
            _description,
            _error_check(_command, _reply),
            _source,
            _TASK_WORDS.get(_name, ""),
        )
    )

_GARBAGE: Final = b"HTTP/1.1 400 Bad Request\r\n\r\n"
"""A reply from something that is not a metrics server (it has no \\n\\n: only \\r\\n\\r\\n)."""


@client_check(
    "garbage-not-kept",
    "after a garbled reply, the garbage is never handed to the next request: that request "
    "gets its own answer, or ClientError without being sent",
    "protocol",
)
def _garbage_not_kept(ctx: ClientContext) -> None:
    good, points = b"ok\nmem 1.0 1\nmem 2.0 2\n\n", {"mem": [(1, 1.0), (2, 2.0)]}
    server = ctx.serve({b"get cpu": [_GARBAGE], b"get mem": [good]})
    client = ctx.client(server)
    with contextlib.suppress(BaseException):  # whether it raises is garbage-status's business
        client.get("cpu")
    mark = len(ctx.calls)
    try:
        result = client.get("mem")
    except ctx.error_class as exc:
        sent = any(name == "sendall" and b"get mem" in data for _, name, data in ctx.calls[mark:])
        if sent or b"get mem" in server.lines:
            raise CheckFailed(
                f"get('mem') after the garbled reply to get('cpu') was sent and answered right, "
                f"but raised {exc!r}: the garbage was kept for it",
                sent=_GARBAGE + good,
                expected=repr(points),
            ) from None
        return  # refused to use the broken connection: fine
    except BaseException as exc:
        raise CheckFailed(
            f"get('mem') after a garbled reply raised {exc!r}", sent=_GARBAGE + good
        ) from None
    expect_result(result, points, "get('mem') after a garbled reply", _GARBAGE + good)


@client_check(
    "garbage-status-early",
    "a status line that is neither ok nor error raises ClientError as soon as the line is "
    "complete, not after the client's timeout",
    "protocol",
)
def _garbage_status_early(ctx: ClientContext) -> None:
    status = _GARBAGE.split(b"\n")[0] + b"\n"
    server = ctx.serve({b"get cpu": [status, b"Content-Length: 0\r\n"]})
    # The client waits far longer than the checker does: only an early refusal ends in time.
    client = ctx.client(server, timeout=20 * ctx.timeout + 10)
    thread, outcome = ctx.in_thread(lambda: client.get("cpu"))
    thread.join(2 * ctx.timeout)
    if not outcome:
        raise CheckFailed(
            f"get('cpu') was still waiting {2 * ctx.timeout:g} s after a status line that is "
            "neither ok nor error (its own timeout is far longer)",
            sent=status + b"Content-Length: 0\r\n",
            expected="ClientError at once",
            got="no return yet",
        )
    kind, value = outcome[0]
    if not (kind == "raised" and isinstance(value, ctx.error_class)):
        shown = f"raised {value!r}" if kind == "raised" else f"returned {value!r}"
        raise CheckFailed(
            f"get('cpu') {shown}; it must raise {ctx.error_class.__name__} when the server's "
            f"status line is '{readable(status)}', neither ok nor error",
            sent=status,
        )


@client_check(
    "late-answer",
    "a request answered after the client's timeout raises ClientError, and the next request "
    "gets its own answer or ClientError, never the late answer of the one before",
    "protocol",
)
def _late_answer(ctx: ClientContext) -> None:
    late, own = b"ok\ncpu 1.0 1\n\n", b"ok\nmem 2.0 2\n\n"
    # The pause before the own answer lets the client read the late one alone first, as it
    # would if the next request came later: a client that mixes the two up is then seen.
    server = ctx.serve({b"get cpu": [1.5 * ctx.timeout, late], b"get mem": [ctx.timeout / 2, own]})
    client = ctx.client(server)
    expect_client_error(
        ctx, "get('cpu')", "its answer comes after the client's timeout", lambda: client.get("cpu")
    )
    # The late answer is on its way (or in the client's socket) before the next request.
    deadline = time.monotonic() + 2 * ctx.timeout
    while late not in server.sent and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        result = client.get("mem")
    except ctx.error_class:
        return  # refused to use the connection the timeout left behind: fine
    except BaseException as exc:
        raise CheckFailed(f"get('mem') after a timed-out get('cpu') raised {exc!r}") from None
    if result == {"cpu": [(1, 1.0)]}:
        raise CheckFailed(
            "get('mem') returned the late answer to the timed-out get('cpu'): after a timeout "
            "the client must drop the connection (or its unread bytes), not hand them on",
            sent=late + own,
            expected=repr({"mem": [(2, 2.0)]}),
            got=repr(result),
        )
    expect_result(result, {"mem": [(2, 2.0)]}, "get('mem') after a timed-out get('cpu')", own)


@client_check("silent-server", "no answer within the timeout raises ClientError", "protocol")
def _silent_server(ctx: ClientContext) -> None:
    server = ctx.serve({b"get cpu": []})
    client = ctx.client(server)
    expect_client_error(
        ctx, "get('cpu')", "no answer comes before the timeout", lambda: client.get("cpu")
    )


@client_check(
    "bad-key",
    "get('wrong command test\\n') raises ClientError (the course's server check calls it)",
    "grader",
)
def _bad_key(ctx: ClientContext) -> None:
    client = ctx.client(ctx.serve())
    bad = "wrong command test\n"
    expect_client_error(
        ctx, f"get({bad!r})", "the server answers it with error", lambda: client.get(bad)
    )


@client_check(
    "bad-key-not-sent",
    "a key with spaces or newlines is refused before it is sent (the course accepts a client "
    "that sends it and raises on the error answer)",
    "protocol",
)
def _bad_key_not_sent(ctx: ClientContext) -> None:
    server = ctx.serve()
    client = ctx.client(server)
    for bad in ("wrong command test\n", "two words", ""):
        with contextlib.suppress(BaseException):
            client.get(bad)
    if server.received:
        raise CheckFailed(
            "get('wrong command test\\n'), get('two words') and get('') must send nothing",
            expected=b"",
            got=bytes(server.received),
        )


# --- loading and running -------------------------------------------------------------------


def load_client(spec: str) -> tuple[type[Any], type[BaseException]]:
    """Import ``MODULE:CLASS`` (or ``path/to/file.py:CLASS``); return the class and its error.

    The error is the module's ``ClientError``, or ``<CLASS>Error`` (``MyClientError`` for
    ``MyClient``). Raises ``ValueError`` with what to fix when the module, the class or the
    error cannot be found.
    """
    module_name, _, class_name = spec.rpartition(":")
    if not module_name or not class_name:
        raise ValueError(f"expected MODULE:CLASS, like my_client:Client, not {spec!r}")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            loader_spec = importlib.util.spec_from_file_location(path.stem, path)
            if loader_spec is None or loader_spec.loader is None:
                raise ImportError(f"cannot load {path}")
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[path.stem] = module
            loader_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except (ImportError, OSError) as exc:
        hint = ""
        # The learner's module itself is not found (not one it imports): say where to run.
        if isinstance(exc, ModuleNotFoundError) and exc.name == module_name.partition(".")[0]:
            where = module_name.replace(".", "/") + ".py"
            hint = f" (run this in the folder of {where}, or give its path)"
        raise ValueError(f"cannot import {module_name!r}: {exc}{hint}") from exc
    except SyntaxError as exc:  # the learner's file does not parse: where, not our traceback
        raise ValueError(
            f"cannot import {module_name!r}: {exc.filename}, line {exc.lineno}: {exc.msg}"
        ) from exc
    except Exception as exc:  # its top-level code raised (a NameError, say): where it did
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" ({frames[-1].filename}, line {frames[-1].lineno})" if frames else ""
        raise ValueError(
            f"importing {module_name!r} raised {type(exc).__name__}: {exc}{where}"
        ) from exc
    client_class = getattr(module, class_name, None)
    if not isinstance(client_class, type):
        raise ValueError(f"{module_name!r} has no class {class_name!r}")
    return client_class, _error_class_of(client_class)


def _error_class_of(client_class: type[Any]) -> type[BaseException]:
    """The exception next to ``client_class``: ``ClientError``, or ``<class name>Error``.

    The course names it ClientError; a scaffold named MyClient may name it MyClientError.
    """
    module = sys.modules.get(client_class.__module__)
    names = ("ClientError", f"{client_class.__name__}Error")
    for name in names:
        error_class = getattr(module, name, None)
        if isinstance(error_class, type) and issubclass(error_class, BaseException):
            return error_class
    raise ValueError(
        f"{client_class.__module__!r} must define (or import) {' or '.join(names)} "
        f"next to {client_class.__name__}"
    )


def check_client(
    client_class: type[Any],
    error_class: type[BaseException] | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    only: Sequence[str] | None = None,
    profile: Profile = "strict",
    progress: Progress | None = None,
) -> Report:
    """Run the client checks of ``profile`` against ``client_class`` and return the report.

    ``error_class`` defaults to the ``ClientError`` (or ``<class name>Error``) of the
    class's own module.
    ``profile="course"`` predicts the course's graders (their rules fail, the task text's
    warn); ``"strict"`` (the default) is PROTOCOL.md, every rule. ``progress`` is called after
    each check.
    ``timeout`` is passed to the client; a check that has not finished after a few timeouts
    (a client that ignores its timeout) is stopped and reported as hanging. Checks run one at
    a time; what the client prints during a check is kept in that result's ``output``.
    """
    if error_class is None:
        error_class = _error_class_of(client_class)
    checks = select(CLIENT_CHECKS, only, profile, timeout)
    results = []
    with _OUTPUT.installed():
        for number, check in enumerate(checks, 1):
            ctx = ClientContext(client_class, error_class, timeout)
            results.append(_run_bounded(check, ctx, profile, deadline=3 * timeout + 1))
            if progress is not None:
                progress(number, len(checks), results[-1])
    target = f"client {client_class.__module__}.{client_class.__qualname__}"
    return Report(target, tuple(results), profile)


def _run_bounded(
    check: Check[ClientContext], ctx: ClientContext, profile: Profile, deadline: float
) -> CheckResult:
    """Run ``check`` in a thread; stop its servers (unblocking the client) after ``deadline``.

    While it runs, ``socket.create_connection`` is the context's recording stand-in.
    """
    outcome: list[CheckResult] = []

    def run() -> None:
        with _OUTPUT.routed(ctx.output):
            outcome.append(run_check(check, ctx, profile))

    socket.create_connection = ctx.create_connection
    try:
        worker = threading.Thread(target=run, name=f"client-check-{check.name}", daemon=True)
        worker.start()
        worker.join(deadline)
        hung = worker.is_alive()
        ctx.stop()  # closes the scripted servers' sockets, which wakes a client stuck in recv
        worker.join(1.0)
    finally:
        socket.create_connection = _REAL_CREATE_CONNECTION
    if hung or not outcome:
        why = f"the client did not return within {deadline:g} s (does it ignore its timeout?)"
        result = broken(check, why, profile)
    else:
        result = outcome[0]
    return replace(result, output=ctx.output.getvalue())
