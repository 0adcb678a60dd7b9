"""The asyncio server: one event loop, many connections, one shared store.

All of the protocol lives in :class:`~metrics_lab.session.ServerSession`, one per connection.
This module only moves bytes between sockets and sessions::

    socket --data_received--> session.receive_data(data)
    socket <----write-------- session.data_to_send()

and does what needs a clock or a socket: it stops reading from a peer that does not read its
answers (flow control), answers at most :data:`~metrics_lab.session.ANSWER_BATCH` bytes of
one connection per turn of the loop before it lets the others run, wakes a session when the
store it waits for is done, and enforces the limits (``max_connections``, ``idle_timeout``).

>>> import asyncio
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
from concurrent.futures import Future
from types import TracebackType
from typing import Any, Final, Self, cast

from metrics_lab.extras import install_hint
from metrics_lab.fastpath import FastParser
from metrics_lab.protocol import DEFAULT_MAX_LINE
from metrics_lab.session import ANSWER_BATCH, ServerSession, SimpleParser
from metrics_lab.storage import MemoryStore, Storage

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "LOOP_CHOICES",
    "PARSER_CHOICES",
    "LoopUnavailableError",
    "MetricsServer",
    "event_loop_factory",
    "make_parser",
    "run_server",
]

logger = logging.getLogger("metrics_lab.server")

DEFAULT_MAX_CONNECTIONS = 1000
"""Open connections a server accepts at once; more are closed as soon as they arrive."""

WRITE_BUFFER_HIGH: Final = 4 * ANSWER_BATCH
"""Bytes of answers a connection buffers before it waits for the peer to read (flow control)."""

REFUSAL_LOG_INTERVAL = 10.0
"""Seconds between two warnings about connections refused over the limit."""

PARSER_CHOICES: Final = ("auto", "simple", "fast")
"""How a server parses requests: ``simple`` line by line, ``fast`` blocks of puts at once
(:mod:`metrics_lab.fastpath`); ``auto`` is ``fast``. The answers are the same."""


def make_parser(parser: str = "auto") -> SimpleParser:
    """The parser that ``parser`` (one of :data:`PARSER_CHOICES`) names, for one server."""
    if parser not in PARSER_CHOICES:
        raise ValueError(f"parser must be one of {PARSER_CHOICES}, not {parser!r}")
    return SimpleParser() if parser == "simple" else FastParser()


class _Connection(asyncio.Protocol):
    """Moves bytes between one socket and its session, and applies flow control."""

    def __init__(self, server: MetricsServer) -> None:
        self._server = server
        self._session = ServerSession(server.store, parser=server.parser, max_line=server.max_line)
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._peer = "?"
        self._writing_paused = False  # the peer does not read: the transport's buffer is full
        self._reading = True
        self._send_scheduled = False
        self._waited: Future[None] | None = None  # the store future we asked to be woken by
        self._last_active = 0.0  # loop time of the last sign of life (a line, or a drained buffer)
        self._bytes_written = 0  # answers handed to the transport, in all
        self._handed_over_at_check = 0  # of those, how many had left its buffer at the last check
        self._idle_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's transports implement the interface without
        # inheriting from asyncio.Transport.
        tcp = cast(asyncio.Transport, transport)
        self._peer = _format_peer(tcp.get_extra_info("peername"))
        if self._server.stopping or not self._server._admit(self._peer):
            tcp.abort()  # over the limit or stopping: no answer, no buffers, gone at once
            return
        self._transport = tcp
        # Room for a few pieces of a big answer, so we encode the next while the system
        # sends the last; a peer that does not read still holds at most this much of ours.
        tcp.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        self._server._connection_opened(self)
        logger.debug("connection from %s opened", self._peer)
        if self._server.idle_timeout is not None:
            self._last_active = self._loop.time()
            self._idle_timer = self._loop.call_later(self._server.idle_timeout, self._check_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is None:
            return  # refused in connection_made: never counted, nothing to undo
        self._server._connection_closed(self)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        logger.debug("connection from %s closed%s", self._peer, f": {exc}" if exc else "")
        self._transport = None

    def data_received(self, data: bytes) -> None:
        if self._idle_timer is not None and b"\n" in data:  # a line is complete: a sign of life
            self._last_active = self._loop.time()
        self._session.receive_data(data)
        self._send()

    def eof_received(self) -> bool:
        # The peer sends no more but may still read: answer what it sent, then close.
        self._session.receive_data(b"")
        self._send()
        return True

    def _send(self) -> None:
        """Write what the session has ready, as far as the peer reads it; then decide whether
        to read more, to wait for the store, or to close."""
        self._send_scheduled = False
        transport = self._transport
        if transport is None:
            return
        session = self._session
        written = 0
        try:
            while not self._writing_paused:
                data = session.data_to_send()
                if data:
                    transport.write(data)
                    written += len(data)
                if len(data) < ANSWER_BATCH:
                    break  # that was all the session had ready
                if written >= ANSWER_BATCH:
                    # Fair to the other connections: go on in the next turn of the loop.
                    self._bytes_written += written
                    self._send_scheduled = True
                    self._loop.call_soon(self._send)
                    return
        except Exception:
            logger.warning("%s: the store failed mid-answer; closing", self._peer, exc_info=True)
            transport.abort()
            return
        self._bytes_written += written
        waiting_for = session.waiting_for
        if waiting_for is not None:
            self._wait_for(waiting_for)
        if session.wants_data:
            if not self._reading and not self._writing_paused:
                self._set_reading(True)
        else:
            self._set_reading(False)
            if session.finished and not self._writing_paused:
                transport.close()

    def _wait_for(self, future: Future[None]) -> None:
        """Have :meth:`_send` run again once ``future`` (done in a store's thread) is done."""
        if future is self._waited:
            return
        self._waited = future
        loop = self._loop

        def wake(_: Future[None]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to answer
                loop.call_soon_threadsafe(self._wake)

        future.add_done_callback(wake)

    def _wake(self) -> None:
        self._waited = None
        if not self._send_scheduled:
            self._send()

    def _set_reading(self, reading: bool) -> None:
        transport = self._transport
        if transport is None or reading == self._reading or transport.is_closing():
            return
        self._reading = reading
        if reading:
            transport.resume_reading()
        else:
            transport.pause_reading()

    # Flow control: asyncio calls these when the transport's write buffer passes its high
    # and low water marks, that is when the peer stops and starts reading its answers.
    def pause_writing(self) -> None:
        self._writing_paused = True
        self._set_reading(False)

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._last_active = self._loop.time()  # the peer read: it is alive
        if not self._send_scheduled:
            self._send()

    def _check_idle(self) -> None:
        """Timer: close the connection if it showed no sign of life for ``idle_timeout``.

        A sign of life is a complete request line, or a peer taking answers off a full
        buffer. Bytes that never finish a line do not count, so a peer that trickles one
        byte a minute is closed too. One timer per connection, re-armed for the time left.
        """
        timeout = self._server.idle_timeout
        transport = self._transport
        if timeout is None or transport is None:
            return
        buffered = transport.get_write_buffer_size()
        # Bytes the system took from our buffer: it takes more only as the peer reads.
        handed_over = self._bytes_written - buffered
        if handed_over > self._handed_over_at_check:
            self._last_active = self._loop.time()
        self._handed_over_at_check = handed_over
        idle = self._loop.time() - self._last_active
        if idle < timeout:
            self._idle_timer = self._loop.call_later(
                min(timeout - idle, timeout / 4), self._check_idle
            )
            return
        logger.info("%s showed no sign of life for %.0f s; closing", self._peer, idle)
        self._idle_timer = None
        if buffered:
            transport.abort()  # it does not read: do not wait for its buffer to drain
        else:
            transport.close()  # what the system already holds still reaches the peer

    @property
    def write_buffer_size(self) -> int:
        """Bytes of answers written but not yet sent to the peer."""
        transport = self._transport
        return 0 if transport is None else transport.get_write_buffer_size()

    def shut_down(self) -> None:
        """Stop taking requests: answer those already received, then close."""
        if self._transport is not None:
            self._session.receive_data(b"")
            self._set_reading(False)
            self._send()

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
    the server never closes the store it was given. ``parser`` is one of
    :data:`PARSER_CHOICES`: the answers are the same, the speed is not.

    Limits, so that no peer can exhaust the server: a request line over ``max_line`` bytes is
    answered with the error answer and its connection closed; beyond ``max_connections`` open
    connections a new one is closed at once (logged as a warning); with ``idle_timeout`` set,
    a connection that shows no sign of life for that many seconds (no request line completed,
    no answer taken) is closed (``None``, the default, keeps quiet connections open, as
    notebooks want).

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
        parser: str = "auto",
        max_line: int = DEFAULT_MAX_LINE,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        idle_timeout: float | None = None,
    ) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, not {max_connections}")
        if idle_timeout is not None and idle_timeout <= 0:
            raise ValueError(f"idle_timeout must be positive or None, not {idle_timeout}")
        self.requested_host = host
        self.requested_port = port
        self.store: Storage = MemoryStore() if store is None else store
        self.parser = make_parser(parser)
        self.max_line = max_line
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self._refused = 0  # connections refused since the last warning about it
        self._refusal_logged_at: float | None = None
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
        self._stopped.clear()
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

    def _admit(self, peer: str) -> bool:
        """Whether a new connection fits under ``max_connections``; warn (at most every
        :data:`REFUSAL_LOG_INTERVAL` seconds, so a flood cannot flood the log) when not."""
        if len(self._connections) < self.max_connections:
            return True
        self._refused += 1
        now = asyncio.get_running_loop().time()
        if self._refusal_logged_at is None or now - self._refusal_logged_at >= REFUSAL_LOG_INTERVAL:
            logger.warning(
                "connection limit (%d) reached: closed %d new connection(s), the last from %s",
                self.max_connections,
                self._refused,
                peer,
            )
            self._refused = 0
            self._refusal_logged_at = now
        return False

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` has begun (or the server never started)."""
        return self._server is None

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
        # A connection accepted just now is set up by a task of the loop. On CPython 3.11 a
        # transport made after server.close() fails and leaks its socket, so let those tasks
        # run first, and after the close let their connection_made see that we are stopping.
        await asyncio.sleep(0)
        server.close()
        await asyncio.sleep(0)
        for connection in list(self._connections):
            connection.shut_down()
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


class LoopUnavailableError(RuntimeError):
    """The event loop asked for cannot be used here (uvloop not installed, or Windows)."""


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
            raise LoopUnavailableError(
                f"uvloop is not installed: {install_hint('fast', 'uvloop')} "
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
    **server_options: Any,
) -> None:
    """Serve metrics on ``host:port`` until Ctrl-C or SIGTERM, then stop gracefully.

    This is the course's entry point: ``run_server("127.0.0.1", 8888)`` blocks and serves.
    On the signal it stops accepting, flushes the answers to every request already read,
    closes the connections and returns (the caller then closes ``store`` if it made it).
    ``server_options`` (``parser``, ``max_line``, ``max_connections``, ``idle_timeout``) go to
    :class:`MetricsServer`. ``loop`` picks the event loop (see :func:`event_loop_factory`).
    """
    server = MetricsServer(host, port, store=store, **server_options)
    with asyncio.Runner(loop_factory=event_loop_factory(loop)) as runner:
        runner.run(_serve_until_signalled(server))


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
