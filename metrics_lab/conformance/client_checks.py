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
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from metrics_lab.conformance.report import (
    Check,
    CheckFailed,
    CheckResult,
    Report,
    run_check,
    select,
)

__all__ = ["CLIENT_CHECKS", "ClientContext", "ScriptedServer", "check_client", "load_client"]

DEFAULT_TIMEOUT: Final = 2.0
"""Seconds the client under test is given as its ``timeout``; checks wait a few of these."""

_CHUNK_PAUSE: Final = 0.05  # between the pieces of an answer sent in pieces

Reply = list[bytes] | None
"""What the scripted server does for one request line: send these chunks (with a short pause
between them; ``[]`` means stay silent), or hang up (``None``)."""


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
    line (without ``\\n``). :meth:`stop` closes the listener and every connection, which also
    unblocks a client stuck waiting for an answer.
    """

    def __init__(self, script: Callable[[bytes], Reply]) -> None:
        self.script = script
        self.received = bytearray()
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
                        if index:
                            time.sleep(_CHUNK_PAUSE)  # make each piece its own segment
                        connection.sendall(chunk)

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
    """Wraps the client's socket and records which methods it calls, in order."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.calls: list[tuple[str, bytes]] = []

    def sendall(self, data: bytes) -> None:
        self.calls.append(("sendall", bytes(data)))
        self._sock.sendall(data)

    def recv(self, size: int) -> bytes:
        data = self._sock.recv(size)
        self.calls.append(("recv", data))
        return data

    def close_socket(self) -> None:
        """Close the real socket (not recorded: the checker does it after the check)."""
        self._sock.close()

    def __getattr__(self, name: str) -> Any:
        self.calls.append((name, b""))
        return getattr(self._sock, name)


@dataclass
class ClientContext:
    """What a client check gets: the class under test, its error, and scripted servers."""

    client_class: type[Any]
    error_class: type[BaseException]
    timeout: float
    connections: list[tuple[tuple[Any, ...], dict[str, Any]]] = field(default_factory=list)
    recorders: list[_SocketRecorder] = field(default_factory=list)
    _servers: list[ScriptedServer] = field(default_factory=list)
    _clients: list[Any] = field(default_factory=list)

    def serve(self, answers: dict[bytes, Reply] | None = None) -> ScriptedServer:
        """Start a scripted server: lines in ``answers`` get that reply, others a right one."""
        script = dict(answers or {})
        server = ScriptedServer(lambda line: script.get(line, conformant_reply(line)))
        self._servers.append(server)
        return server

    def client(self, server: ScriptedServer) -> Any:
        """Make a client of the class under test, connected to ``server``.

        While it connects, ``socket.create_connection`` is wrapped: :attr:`connections`
        records its arguments and :attr:`recorders` the socket calls made afterwards.
        """
        real = socket.create_connection

        def create_connection(*args: Any, **kwargs: Any) -> Any:
            self.connections.append((args, kwargs))
            recorder = _SocketRecorder(real(*args, **kwargs))
            self.recorders.append(recorder)
            return recorder

        socket.create_connection = create_connection
        try:
            client = self.client_class(*server.address, timeout=self.timeout)
        except Exception as exc:
            raise CheckFailed(f"Client({server.address}, timeout=...) raised {exc!r}") from None
        finally:
            socket.create_connection = real
        self._clients.append(client)
        return client

    def stop(self) -> None:
        """Close the clients and stop every scripted server the check started."""
        for client in self._clients:
            # The course does not require close(); the sockets themselves are closed below.
            with contextlib.suppress(Exception):
                client.close()
        for recorder in self.recorders:
            recorder.close_socket()
        for server in self._servers:
            server.stop()


# --- helpers the checks share --------------------------------------------------------------


def call(what: str, function: Callable[[], Any]) -> Any:
    """Call the client; any exception is the check's failure, described with ``what``."""
    try:
        return function()
    except Exception as exc:
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
    """Fail unless the client returned ``expected`` (types included) for ``answer``."""
    if result != expected or _shape(result) != _shape(expected):
        raise CheckFailed(
            f"{what} must return {expected!r} for this answer, returned {result!r}",
            sent=answer,
        )


def _shape(value: object) -> object:
    """The types inside a get result, so 10 and 10.0 (or "10") are told apart."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return (type(value), [_shape(item) for item in value])
    return type(value)


def expect_client_error(
    ctx: ClientContext, what: str, function: Callable[[], Any], **shown: bytes
) -> None:
    """Fail unless ``function`` raises the module's ``ClientError`` (or a subclass)."""
    try:
        result = function()
    except ctx.error_class:
        return
    except Exception as exc:
        raise CheckFailed(
            f"{what} must raise {ctx.error_class.__name__}, raised {exc!r}", **shown
        ) from None
    raise CheckFailed(f"{what} must raise {ctx.error_class.__name__}, returned {result!r}", **shown)


# --- the checks ----------------------------------------------------------------------------

CLIENT_CHECKS: list[Check[ClientContext]] = []
"""Every client check, in the order a report lists them."""


def client_check(
    name: str, description: str
) -> Callable[[Callable[[ClientContext], None]], Callable[[ClientContext], None]]:
    """Register the decorated function as a client check."""

    def register(run: Callable[[ClientContext], None]) -> Callable[[ClientContext], None]:
        CLIENT_CHECKS.append(Check(name, description, run))
        return run

    return register


@client_check(
    "connect", "Client(host, port, timeout) calls socket.create_connection((host, port), timeout)"
)
def _connect(ctx: ClientContext) -> None:
    server = ctx.serve()
    ctx.client(server)
    if not ctx.connections:
        raise CheckFailed("the client did not call socket.create_connection")
    args, kwargs = ctx.connections[0]
    timeout = args[1] if len(args) > 1 else kwargs.get("timeout")
    if tuple(args[0]) != server.address or timeout != ctx.timeout:
        raise CheckFailed(
            f"expected create_connection({server.address!r}, {ctx.timeout!r}), "
            f"got create_connection(*{args!r}, **{kwargs!r})"
        )


@client_check("connect-refused", "a refused connection raises ClientError, not OSError")
def _connect_refused(ctx: ClientContext) -> None:
    # A socket bound but not listening: connecting to it is refused, and no one else can
    # start listening on the port while we hold it.
    with socket.socket() as closed_port:
        closed_port.bind(("127.0.0.1", 0))
        host, port = closed_port.getsockname()[:2]
        expect_client_error(
            ctx,
            f"Client({host!r}, {port}) with nothing listening",
            lambda: ctx.client_class(host, port, timeout=ctx.timeout),
        )


@client_check("put-wire", "put('palm.cpu', 10.5, 1501864247) sends put palm.cpu 10.5 1501864247\\n")
def _put_wire(ctx: ClientContext) -> None:
    server = ctx.serve()
    result = call("put", lambda: ctx.client(server).put("palm.cpu", 10.5, timestamp=1501864247))
    expect_wire(server, b"put palm.cpu 10.5 1501864247\n", "put('palm.cpu', 10.5, 1501864247)")
    if result is not None:
        raise CheckFailed(f"put must return None, returned {result!r}")


@client_check("put-int-value", "put('load', 301, 3) sends put load 301 3\\n (str(value))")
def _put_int_value(ctx: ClientContext) -> None:
    server = ctx.serve()
    call("put", lambda: ctx.client(server).put("load", 301, 3))
    expect_wire(server, b"put load 301 3\n", "put('load', 301, 3)")


@client_check("put-timestamp-now", "put without a timestamp sends int(time.time())")
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


@client_check("put-timestamp-zero", "put(key, value, 0) sends timestamp 0 (0 is not 'now')")
def _put_timestamp_zero(ctx: ClientContext) -> None:
    server = ctx.serve()
    call("put", lambda: ctx.client(server).put("cpu", 0.5, 0))
    expect_wire(server, b"put cpu 0.5 0\n", "put('cpu', 0.5, 0)")


@client_check("one-sendall", "each put and get is one sendall; only sendall and recv are used")
def _one_sendall(ctx: ClientContext) -> None:
    answer = b"ok\ncpu 0.5 1\n\n"
    server = ctx.serve({b"get cpu": [answer]})
    client = ctx.client(server)
    if not ctx.recorders:
        raise CheckFailed("the client did not call socket.create_connection")
    recorder = ctx.recorders[0]
    for request, run in (
        (b"put cpu 0.5 1\n", lambda: client.put("cpu", 0.5, 1)),
        (b"get cpu\n", lambda: client.get("cpu")),
    ):
        recorder.calls.clear()
        call(request.decode().strip(), run)
        names = [name for name, _ in recorder.calls]
        sends = [data for name, data in recorder.calls if name == "sendall"]
        others = sorted({name for name in names if name not in ("sendall", "recv")})
        if sends != [request] or others:
            raise CheckFailed(
                f"{request.decode().strip()!r} must be one sendall of the whole request "
                f"and recv calls; the client called {', '.join(names) or 'nothing'}",
                expected=request,
                got=b" + ".join(sends),
            )


_GET_CASES: Final[tuple[tuple[str, str, str, bytes, object], ...]] = (
    (
        "get-parse",
        "get(key) returns {key: [(int timestamp, float value), ...]}",
        "cpu",
        b"ok\ncpu 0.5 10\ncpu 2.0 20\n\n",
        {"cpu": [(10, 0.5), (20, 2.0)]},
    ),
    (
        "get-sorted",
        "get sorts each key's points by timestamp",
        "cpu",
        b"ok\ncpu 2.0 20\ncpu 0.5 10\ncpu 1.0 15\n\n",
        {"cpu": [(10, 0.5), (15, 1.0), (20, 2.0)]},
    ),
    (
        "get-all",
        "get('*') returns every key in the answer",
        "*",
        b"ok\ncpu 0.5 10\nmem 1e-05 10\ncpu 2.0 20\n\n",
        {"cpu": [(10, 0.5), (20, 2.0)], "mem": [(10, 1e-05)]},
    ),
    ("get-empty", "an answer without data lines gives {}", "nothing", b"ok\n\n", {}),
)


def _get_check(key: str, answer: bytes, expected: object) -> Callable[[ClientContext], None]:
    def run(ctx: ClientContext) -> None:
        request = f"get {key}".encode()
        server = ctx.serve({request: [answer]})
        result = call(f"get({key!r})", lambda: ctx.client(server).get(key))
        expect_wire(server, request + b"\n", f"get({key!r})")
        expect_result(result, expected, f"get({key!r})", answer)

    return run


for _name, _description, _key, _answer, _expected in _GET_CASES:
    CLIENT_CHECKS.append(Check(_name, _description, _get_check(_key, _answer, _expected)))


@client_check("get-split-answer", "an answer that arrives in pieces is read whole")
def _get_split_answer(ctx: ClientContext) -> None:
    pieces = [b"ok\ncpu 0", b".5 10\ncpu 2.0 20\n", b"\n"]
    server = ctx.serve({b"get cpu": pieces})
    result = call("get('cpu')", lambda: ctx.client(server).get("cpu"))
    expect_result(result, {"cpu": [(10, 0.5), (20, 2.0)]}, "get('cpu')", b"".join(pieces))


_ERROR_CASES: Final = (
    (
        "error-on-put",
        "an error answer to put raises ClientError",
        "put",
        b"error\nwrong command\n\n",
    ),
    (
        "error-on-get",
        "an error answer to get raises ClientError",
        "get",
        b"error\nwrong command\n\n",
    ),
    (
        "garbage-status",
        "an answer that is neither ok nor error raises ClientError",
        "get",
        b"hello\n\n",
    ),
    (
        "garbage-line",
        "a data line that cannot be parsed raises ClientError",
        "get",
        b"ok\ncpu x 1\n\n",
    ),
    ("server-closes", "a server that hangs up without answering raises ClientError", "get", None),
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
        expect_client_error(ctx, f"{calling} answered {reply!r}", function, sent=reply or b"")

    return run


for _name, _description, _command, _reply in _ERROR_CASES:
    CLIENT_CHECKS.append(Check(_name, _description, _error_check(_command, _reply)))


@client_check("silent-server", "no answer within the timeout raises ClientError")
def _silent_server(ctx: ClientContext) -> None:
    server = ctx.serve({b"get cpu": []})
    client = ctx.client(server)
    expect_client_error(ctx, "get('cpu') with no answer", lambda: client.get("cpu"))


@client_check("bad-key", "get('wrong command test\\n') raises ClientError")
def _bad_key(ctx: ClientContext) -> None:
    client = ctx.client(ctx.serve())
    bad = "wrong command test\n"
    expect_client_error(ctx, f"get({bad!r})", lambda: client.get(bad))


@client_check("bad-key-not-sent", "a key with spaces or newlines is refused before it is sent")
def _bad_key_not_sent(ctx: ClientContext) -> None:
    server = ctx.serve()
    client = ctx.client(server)
    for bad in ("wrong command test\n", "two words", ""):
        with contextlib.suppress(Exception):
            client.get(bad)
    # The course accepts a client that sends the bad key and raises on the error answer;
    # PROTOCOL.md asks for the stricter behaviour: nothing that would break the wire goes out.
    if server.received:
        raise CheckFailed(
            "get('wrong command test\\n'), get('two words') and get('') must send nothing",
            expected=b"",
            got=bytes(server.received),
        )


# --- loading and running -------------------------------------------------------------------


def load_client(spec: str) -> tuple[type[Any], type[BaseException]]:
    """Import ``MODULE:CLASS`` (or ``path/to/file.py:CLASS``); return the class and its ClientError.

    Raises ``ValueError`` with what to fix when the module, the class or ``ClientError``
    cannot be found.
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
        raise ValueError(f"cannot import {module_name!r}: {exc}") from exc
    client_class = getattr(module, class_name, None)
    if not isinstance(client_class, type):
        raise ValueError(f"{module_name!r} has no class {class_name!r}")
    error_class = getattr(module, "ClientError", None)
    if not (isinstance(error_class, type) and issubclass(error_class, BaseException)):
        raise ValueError(
            f"{module_name!r} must define (or import) ClientError next to {class_name}"
        )
    return client_class, error_class


def check_client(
    client_class: type[Any],
    error_class: type[BaseException] | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    only: Sequence[str] | None = None,
) -> Report:
    """Run the client checks against ``client_class`` and return the report.

    ``error_class`` defaults to the ``ClientError`` of the class's own module. ``timeout``
    is passed to the client; a check that has not finished after a few timeouts (a client
    that ignores its timeout) is stopped and reported as hanging.
    """
    if error_class is None:
        error_class = getattr(sys.modules.get(client_class.__module__), "ClientError", None)
        if not (isinstance(error_class, type) and issubclass(error_class, BaseException)):
            raise ValueError(
                f"{client_class.__module__} has no ClientError next to {client_class.__name__}"
            )
    results = []
    for check in select(CLIENT_CHECKS, only):
        ctx = ClientContext(client_class, error_class, timeout)
        results.append(_run_bounded(check, ctx, deadline=3 * timeout + 1))
    return Report(f"client {client_class.__module__}.{client_class.__qualname__}", tuple(results))


def _run_bounded(check: Check[ClientContext], ctx: ClientContext, deadline: float) -> CheckResult:
    """Run ``check`` in a thread; stop its servers (unblocking the client) after ``deadline``."""
    outcome: list[CheckResult] = []

    def run() -> None:
        outcome.append(run_check(check, ctx))

    worker = threading.Thread(target=run, name=f"client-check-{check.name}", daemon=True)
    worker.start()
    worker.join(deadline)
    hung = worker.is_alive()
    ctx.stop()  # closes the scripted servers' sockets, which wakes a client stuck in recv
    worker.join(1.0)
    if hung or not outcome:
        detail = f"the client did not return within {deadline:g} s (does it ignore its timeout?)"
        return CheckResult(check.name, check.description, False, detail)
    return outcome[0]
