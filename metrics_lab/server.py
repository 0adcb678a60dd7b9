"""The asyncio server: one event loop, many connections, one shared store.

Each connection is an :class:`asyncio.Protocol`. Its ``data_received`` hands the chunk to the
protocol module's :class:`~metrics_lab.protocol.LineReader`, runs every complete request
against the store, and answers the whole chunk with one write, so a pipelining client pays
one system call per chunk rather than one per request.

>>> import asyncio
>>> from metrics_lab import Client
>>> async def main():
...     async with MetricsServer("127.0.0.1", 0) as server:
...         print(server.host, server.port > 0)
>>> asyncio.run(main())
127.0.0.1 True
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from types import TracebackType
from typing import Final, Self, cast

from metrics_lab.protocol import (
    ALL_KEYS,
    DEFAULT_MAX_LINE,
    ERROR_ANSWER,
    OK_ANSWER,
    LineReader,
    PutRequest,
    WrongCommandError,
    iter_points_answer,
    parse_put_block,
    parse_put_line,
    parse_request,
)
from metrics_lab.storage import MemoryStore, Point, Storage

__all__ = ["LOOP_CHOICES", "MetricsServer", "event_loop_factory", "run_server"]

logger = logging.getLogger("metrics_lab.server")


ANSWER_CHUNK: Final = 1024 * 1024
"""How many bytes of answers a connection produces before it checks whether its peer reads."""


FAST_PATH_LINES: Final = 8
"""From how many lines a received block is tried as one batch of puts."""


class _Connection(asyncio.Protocol):
    """One client's connection: read lines, run requests, write answers in order.

    Flow control: a peer that pipelines requests without reading the answers fills our write
    buffer. Once the transport says the buffer is high (``pause_writing``), the connection
    stops reading and keeps the requests it already has (at most one received chunk) until
    the buffer drains (``resume_writing``). Answers are produced ``ANSWER_CHUNK`` bytes at a
    time, so one chunk full of ``get *`` requests cannot produce gigabytes at once either.
    """

    def __init__(self, server: MetricsServer) -> None:
        self._server = server
        self._store = server.store
        self._reader = LineReader(server.max_line)
        self._transport: asyncio.Transport | None = None
        self._peer = "?"
        self._held: list[bytes] = []  # request lines received but not yet answered
        self._held_from = 0  # the first of them still to answer
        self._writing_paused = False

    @property
    def write_buffer_size(self) -> int:
        """Bytes of answers written but not yet sent to the peer."""
        transport = self._transport
        return 0 if transport is None else transport.get_write_buffer_size()

    @property
    def held_requests(self) -> int:
        """Request lines received but waiting for the peer to read earlier answers."""
        return len(self._held) - self._held_from

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: uvloop's transports implement the interface without
        # inheriting from asyncio.Transport.
        self._transport = cast(asyncio.Transport, transport)
        self._peer = _format_peer(transport.get_extra_info("peername"))
        self._server._connection_opened(self)
        logger.debug("connection from %s opened", self._peer)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server._connection_closed(self)
        if self._reader.pending:
            logger.debug("%s left mid-line (%d bytes dropped)", self._peer, self._reader.pending)
        logger.debug("connection from %s closed%s", self._peer, f": {exc}" if exc else "")
        self._transport = None
        self._held = []

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        if transport is None:
            return
        block = self._reader.receive_block(data)
        if block:
            # The block parse pays off from a few lines on; a lone put has a fast path too.
            lines = 0 if self._held else block.count(b"\n")
            batch = parse_put_block(block) if lines >= FAST_PATH_LINES else None
            point = parse_put_line(block) if lines == 1 else None
            if batch is not None:
                transport.write(self._store_batch(*batch))
            elif point is not None:
                transport.write(self._store_batch([point[0]], [point[1]], [point[2]]))
            else:
                self._held.extend(block.split(b"\n")[:-1])
        self._answer_held()

    def _answer_held(self) -> None:
        """Answer held requests until none is left or the peer stops reading."""
        transport = self._transport
        while self._held and not self._writing_paused and transport is not None:
            self._answer(transport)  # its writes may call pause_writing at once
        if transport is None or transport.is_closing():
            return
        if self._held:
            transport.pause_reading()  # resume_writing goes on from here
        elif self._reader.too_long:
            logger.warning(
                "%s sent a line over %d bytes; answering error and closing",
                self._peer,
                self._reader.max_line,
            )
            transport.write(ERROR_ANSWER)
            transport.close()

    def _store_batch(self, keys: list[str], timestamps: list[int], values: list[float]) -> bytes:
        """Store a block of puts at once (the pipelined case) and return its answers."""
        try:
            self._store.put_many(zip(keys, timestamps, values, strict=True))
        except Exception:
            logger.warning(
                "%s: the store failed to take %d points", self._peer, len(keys), exc_info=True
            )
            return ERROR_ANSWER * len(keys)
        return OK_ANSWER * len(keys)

    def _answer(self, transport: asyncio.Transport) -> None:
        """Run held requests in order and write their answers, up to about ``ANSWER_CHUNK``."""
        answers: list[bytes] = []  # short answers, joined into one write
        pending: list[Point] = []  # puts not yet in the store; flushed before any get
        size = 0
        lines, index = self._held, self._held_from
        while index < len(lines) and size < ANSWER_CHUNK:
            line = lines[index]
            index += 1
            try:
                request = parse_request(line)
            except WrongCommandError as exc:
                logger.debug("%s: wrong command %r: %s", self._peer, line[:80], exc)
                answers.append(ERROR_ANSWER)
                continue
            if request is None:
                continue
            if type(request) is PutRequest:
                pending.append((request.key, request.timestamp, request.value))
                answers.append(OK_ANSWER)
                continue
            if pending:
                self._store_points(pending, answers)
                pending = []
            if answers:
                transport.write(b"".join(answers))
                answers = []
            size += self._write_read(transport, request.key)
        if pending:
            self._store_points(pending, answers)
        if answers:
            transport.write(b"".join(answers))
        if index < len(lines):
            self._held_from = index
        else:
            self._held, self._held_from = [], 0

    def _store_points(self, points: list[Point], answers: list[bytes]) -> None:
        try:
            self._store.put_many(points)
        except Exception:
            # The puts were answered "ok" in advance; none of them may claim success now.
            logger.warning(
                "%s: the store failed to take %d points", self._peer, len(points), exc_info=True
            )
            unstored = len(points)
            for index in range(len(answers) - 1, -1, -1):
                if unstored == 0:
                    break
                if answers[index] is OK_ANSWER:
                    answers[index] = ERROR_ANSWER
                    unstored -= 1

    def _write_read(self, transport: asyncio.Transport, key: str) -> int:
        """Write the answer to ``get key`` piece by piece, so it starts out while encoding."""
        try:
            series = self._store.read(None if key == ALL_KEYS else key)
        except Exception:
            logger.warning("%s: the store failed to read %r", self._peer, key, exc_info=True)
            transport.write(ERROR_ANSWER)
            return len(ERROR_ANSWER)
        size = 0
        for piece in iter_points_answer(series):
            transport.write(piece)
            size += len(piece)
        return size

    def pause_writing(self) -> None:
        self._writing_paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._answer_held()
        transport = self._transport
        if transport is not None and not transport.is_closing() and not self._held:
            transport.resume_reading()

    def close(self) -> None:
        """Close after the answers already written have gone out."""
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Close at once, dropping unsent answers."""
        if self._transport is not None:
            self._transport.abort()


def _format_peer(peername: object) -> str:
    if isinstance(peername, tuple) and len(peername) >= 2:
        return f"{peername[0]}:{peername[1]}"
    return repr(peername)


class MetricsServer:
    """A metrics server for asyncio programs: start, serve, stop cleanly.

    ``port=0`` asks the system for a free port; :attr:`port` tells which one was bound. The
    server binds to 127.0.0.1 unless told otherwise, and uses ``store`` (a new
    :class:`~metrics_lab.storage.MemoryStore` by default). Whoever creates a store closes it:
    the server never closes the store it was given.

    Use it as an async context manager::

        async with MetricsServer(port=0) as server:
            ...  # connect to server.host, server.port

    or call :meth:`start` and :meth:`stop`, or :meth:`serve_forever`.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        store: Storage | None = None,
        max_line: int = DEFAULT_MAX_LINE,
    ) -> None:
        self.requested_host = host
        self.requested_port = port
        self.store: Storage = MemoryStore() if store is None else store
        self.max_line = max_line
        self._server: asyncio.Server | None = None
        self._address: tuple[str, int] | None = None
        self._connections: set[_Connection] = set()
        self._all_closed = asyncio.Event()  # set while no connection is open
        self._all_closed.set()
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        """Bind and start accepting connections; returns once the port is open."""
        if self._server is not None:
            raise RuntimeError("the server is already started")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), self.requested_host, self.requested_port
        )
        host, port = self._server.sockets[0].getsockname()[:2]
        self._address = (str(host), int(port))
        logger.info("serving metrics on %s:%d", self.host, self.port)

    @property
    def host(self) -> str:
        """The address the server is bound to (still known after :meth:`stop`)."""
        return self.address[0]

    @property
    def port(self) -> int:
        """The port the server is bound to (the real one, also when 0 was asked for)."""
        return self.address[1]

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)``, ready for :class:`~metrics_lab.Client`."""
        if self._address is None:
            raise RuntimeError("the server has not been started")
        return self._address

    @property
    def connection_count(self) -> int:
        """How many clients are connected now."""
        return len(self._connections)

    @property
    def buffered_output(self) -> int:
        """Bytes of answers waiting in all connections' write buffers (flow control bounds it).

        Read it from the server's own thread (or while no client is active).
        """
        return sum(connection.write_buffer_size for connection in self._connections)

    def _connection_opened(self, connection: _Connection) -> None:
        self._connections.add(connection)
        self._all_closed.clear()

    def _connection_closed(self, connection: _Connection) -> None:
        self._connections.discard(connection)
        if not self._connections:
            self._all_closed.set()

    async def stop(self, grace: float = 5.0) -> None:
        """Stop gracefully: refuse new connections, send every answer already due, close.

        Requests already received have been answered (the server answers a chunk as soon as it
        arrives); those answers are flushed before each connection closes. Connections still
        open after ``grace`` seconds (a peer that does not read) are aborted.
        """
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for connection in list(self._connections):
            connection.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self._all_closed.wait()
        for connection in list(self._connections):
            connection.abort()
        await server.wait_closed()
        self._stopped.set()
        logger.info("server stopped")

    async def serve_forever(self) -> None:
        """Start if needed and serve until :meth:`stop` is called (or the task is cancelled)."""
        if self._server is None:
            await self.start()
        try:
            await self._stopped.wait()
        finally:
            await self.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()


LOOP_CHOICES: Final = ("auto", "asyncio", "uvloop")
"""The event loops :func:`run_server` can use; ``auto`` is uvloop where installed, else asyncio."""


def event_loop_factory(loop: str = "auto") -> Callable[[], asyncio.AbstractEventLoop] | None:
    """Return the factory for ``asyncio.Runner(loop_factory=...)`` that ``loop`` names.

    ``None`` means asyncio's own loop. ``"auto"`` takes uvloop when it is installed (the
    optional ``fast`` extra; it does not exist for Windows, which gets asyncio) and asyncio
    otherwise. Raises :class:`RuntimeError` for ``"uvloop"`` when uvloop cannot be imported.
    """
    if loop not in LOOP_CHOICES:
        raise ValueError(f"loop must be one of {LOOP_CHOICES}, not {loop!r}")
    if loop == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if loop == "uvloop":
            raise RuntimeError(
                "uvloop is not installed; install it with: pip install 'metrics-lab[fast]' "
                "(not available on Windows), or use --loop asyncio"
            ) from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_server(
    host: str = "127.0.0.1",
    port: int = 8888,
    *,
    store: Storage | None = None,
    loop: str = "auto",
) -> None:
    """Serve metrics on ``host:port`` until Ctrl-C or SIGTERM, then stop gracefully.

    This is the course's entry point: ``run_server("127.0.0.1", 8888)`` blocks and serves.
    ``loop`` picks the event loop (see :func:`event_loop_factory`).
    """
    with asyncio.Runner(loop_factory=event_loop_factory(loop)) as runner:
        runner.run(_serve_until_signalled(MetricsServer(host, port, store=store)))


async def _serve_until_signalled(server: MetricsServer) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    await server.start()
    restore = [_on_signal(signum, loop, stop.set) for signum in (signal.SIGINT, signal.SIGTERM)]
    try:
        await stop.wait()
    finally:
        for undo in restore:
            undo()
        await server.stop()


def _on_signal(
    signum: int, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]
) -> Callable[[], object]:
    """Call ``callback`` on the loop when ``signum`` arrives; return how to undo that."""
    try:
        loop.add_signal_handler(signum, callback)
        return lambda: loop.remove_signal_handler(signum)
    except NotImplementedError:
        pass  # Windows event loops: fall back to a plain handler that wakes the loop
    except RuntimeError:  # not the main thread: only task cancellation can stop us
        return lambda: None
    previous = signal.signal(signum, lambda *_: loop.call_soon_threadsafe(callback))
    return lambda: signal.signal(signum, previous)
