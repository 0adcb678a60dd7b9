"""The asyncio server: one event loop, many connections, one shared store.

Each connection is an :class:`asyncio.Protocol`. Its ``data_received`` hands the chunk to the
protocol module's :class:`~metrics_lab.protocol.LineReader`, runs every complete request
against the store, and answers the whole chunk with one write, so a pipelining client pays
one system call per chunk rather than one per request. (A chunk whose ``get`` answers grow
past :data:`ANSWER_BATCH` is answered in several writes, and the rest waits while the peer
does not read: a chunk of ``get *`` cannot make the server build gigabytes.)

With a store that commits to disk (a :class:`~metrics_lab.storage.GroupCommitStorage`, such
as :class:`~metrics_lab.sqlite_store.SQLiteStore`), blocks of puts are staged and committed
once per turn of the event loop, so the chunks of all connections that arrived together
share one disk sync; their ``ok`` answers are written after it.

Limits keep any one peer from exhausting the server: ``max_line``, ``max_connections`` and
``idle_timeout`` (see :class:`MetricsServer`).

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
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Final, Self, cast

from metrics_lab.protocol import (
    ALL_KEYS,
    DEFAULT_MAX_LINE,
    ERROR_ANSWER,
    OK_ANSWER,
    LineReader,
    PutRequest,
    WrongCommandError,
    encode_points_answer,
    parse_put_block,
    parse_put_line,
    parse_request,
)
from metrics_lab.storage import GroupCommitStorage, MemoryStore, Point, Storage

__all__ = ["DEFAULT_MAX_CONNECTIONS", "MetricsServer", "run_server"]

logger = logging.getLogger("metrics_lab.server")

DEFAULT_MAX_CONNECTIONS = 1000
"""Open connections a server accepts at once; more are closed as soon as they arrive."""

ANSWER_BATCH = 1024 * 1024
"""Bytes of ``get`` answers one connection builds before it checks that the peer reads them."""

REFUSAL_LOG_INTERVAL = 10.0
"""Seconds between two warnings about connections refused over the limit."""


FAST_PATH_LINES: Final = 8
"""From how many lines a received block is tried as one batch of puts."""


class _Connection(asyncio.Protocol):
    """One client's connection: read lines, run requests, write answers in order."""

    def __init__(self, server: MetricsServer) -> None:
        self._server = server
        self._store = server.store
        self._reader = LineReader(server.max_line)
        self._transport: asyncio.Transport | None = None
        self._peer = "?"
        self._clock = asyncio.get_running_loop().time
        self._last_line_at = 0.0  # loop time of the last complete request line (or the accept)
        self._idle_timer: asyncio.TimerHandle | None = None
        self._backlog: list[bytes] = []  # request lines received but not yet answered
        self._writing_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's transports implement the interface without
        # inheriting from asyncio.Transport.
        tcp = cast(asyncio.Transport, transport)
        self._peer = _format_peer(tcp.get_extra_info("peername"))
        if self._server.stopping or not self._server._admit(self._peer):
            tcp.abort()  # over the limit or stopping: no answer, no buffers, gone at once
            return
        self._transport = tcp
        self._server._connection_opened(self)
        logger.debug("connection from %s opened", self._peer)
        if self._server.idle_timeout is not None:
            self._last_line_at = self._clock()
            self._idle_timer = asyncio.get_running_loop().call_later(
                self._server.idle_timeout, self._check_idle
            )

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is None:
            return  # refused in connection_made: never counted, nothing to undo
        self._server._connection_closed(self)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        if self._reader.pending:
            logger.debug("%s left mid-line (%d bytes dropped)", self._peer, self._reader.pending)
        logger.debug("connection from %s closed%s", self._peer, f": {exc}" if exc else "")
        self._transport = None

    def _check_idle(self) -> None:
        """Timer: close the connection if no request line was completed for ``idle_timeout``.

        One timer per connection, re-armed for the time that is left, rather than a timer
        reset on every chunk: a busy connection costs one float store per chunk.
        """
        timeout = self._server.idle_timeout
        transport = self._transport
        if timeout is None or transport is None:
            return
        idle = self._clock() - self._last_line_at
        if idle < timeout:
            self._idle_timer = asyncio.get_running_loop().call_later(
                timeout - idle, self._check_idle
            )
            return
        # Bytes that never finish a line do not count as activity, so a peer that trickles one
        # byte a minute is closed too. abort(): an idle peer is owed nothing, and one that does
        # not read its answers must not keep us waiting for its buffer to drain.
        logger.info("%s sent no request for %.0f s; closing", self._peer, idle)
        self._idle_timer = None
        transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._transport is None:
            return
        block = self._reader.receive_block(data)
        if not block:
            self._work()
            return
        self._last_line_at = self._clock()
        if not self._backlog and not self._writing_paused:
            # Pipelined puts parse as one block, a lone put as one line; the rest, line by line.
            count = block.count(b"\n")
            batch: tuple[Sequence[str], Sequence[int], Sequence[float]] | None
            if count == 1:
                point = parse_put_line(block)
                batch = None if point is None else ((point[0],), (point[1],), (point[2],))
            else:
                batch = parse_put_block(block) if count >= FAST_PATH_LINES else None
            if batch is not None:
                self._put_batch(*batch)
                if self._reader.too_long:
                    self._work()  # answers the line that was too long, and closes
                return
        lines = block.split(b"\n")[:-1]
        if self._backlog:
            self._backlog.extend(lines)
        else:
            self._backlog = lines
        self._work()

    def _work(self) -> None:
        """Answer the backlog in order, pausing while the peer does not read its answers.

        ``_answer`` stops once it has built about :data:`ANSWER_BATCH` bytes, so a chunk full
        of ``get *`` (each answer megabytes) cannot make us build gigabytes at once: when the
        transport's buffer is full, ``pause_writing`` sets ``_writing_paused`` and the rest
        waits in the backlog until ``resume_writing``.
        """
        transport = self._transport
        if transport is None:
            return
        if self._backlog or self._reader.too_long:
            # Answers go out in order: puts staged earlier are answered (committed) first.
            self._server.commit_staged()
        lines = self._backlog
        start = 0
        while start < len(lines) and not self._writing_paused:
            answer, start = self._answer(lines, start)
            if answer:
                transport.write(answer)
        self._backlog = lines[start:] if start < len(lines) else []
        if self._reader.too_long and not self._backlog and not transport.is_closing():
            logger.warning(
                "%s sent a line over %d bytes; answering error and closing",
                self._peer,
                self._reader.max_line,
            )
            transport.write(ERROR_ANSWER)
            transport.close()

    def _answer(self, lines: list[bytes], start: int = 0) -> tuple[bytes, int]:
        """Run requests from ``lines[start]`` on, in order; return their answers joined into
        one write, and the index of the first line not run (a batch ends once its answers
        pass :data:`ANSWER_BATCH` bytes)."""
        answers: list[bytes] = []
        pending: list[Point] = []  # puts not yet in the store; flushed before any get
        size = 0
        index = start
        end = len(lines)
        while index < end and size <= ANSWER_BATCH:
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
            answer = self._read(request.key)
            size += len(answer)
            answers.append(answer)
        if pending:
            self._store_points(pending, answers)
        return b"".join(answers), index

    def _put_batch(
        self, keys: Sequence[str], timestamps: Sequence[int], values: Sequence[float]
    ) -> None:
        """Answer a block of puts: staged for the next group commit, or stored at once."""
        server = self._server
        if server.group_commit is not None:
            points = zip(keys, timestamps, values, strict=True)
            if server.stage(self, points, len(keys)):
                return  # answered by commit_staged
        self.send(self._store_batch(keys, timestamps, values))

    def send(self, answer: bytes) -> None:
        """Write answers to the peer, unless the connection is gone."""
        if self._transport is not None:
            self._transport.write(answer)

    def _store_batch(
        self, keys: Sequence[str], timestamps: Sequence[int], values: Sequence[float]
    ) -> bytes:
        """Store a block of puts at once (the pipelined case) and return its answers."""
        try:
            self._store.put_many(zip(keys, timestamps, values, strict=True))
        except Exception:
            logger.warning(
                "%s: the store failed to take %d points", self._peer, len(keys), exc_info=True
            )
            return ERROR_ANSWER * len(keys)
        return OK_ANSWER * len(keys)

    @property
    def write_buffer_size(self) -> int:
        """Bytes of answers written but not yet sent to the peer."""
        transport = self._transport
        return 0 if transport is None else transport.get_write_buffer_size()

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

    def _read(self, key: str) -> bytes:
        try:
            return encode_points_answer(self._store.read(None if key == ALL_KEYS else key))
        except Exception:
            logger.warning("%s: the store failed to read %r", self._peer, key, exc_info=True)
            return ERROR_ANSWER

    # Flow control: a peer that pipelines without reading its answers fills our write buffer;
    # stop reading from it until the buffer drains, so its requests cannot grow memory.
    def pause_writing(self) -> None:
        self._writing_paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()
            self._work()

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

    Limits, so that no peer can exhaust the server: a request line over ``max_line`` bytes is
    answered with the error answer and its connection closed; beyond ``max_connections`` open
    connections a new one is closed at once (logged as a warning); with ``idle_timeout`` set,
    a connection that completes no request line for that many seconds is closed (``None``, the
    default, keeps quiet connections open, as notebooks want).

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
        self.max_line = max_line
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self._refused = 0  # connections refused since the last warning about it
        self._refusal_logged_at: float | None = None
        self._server: asyncio.Server | None = None
        self._address: tuple[str, int] | None = None
        self._connections: set[_Connection] = set()
        # Group commit: the store again if it offers stage/commit, else None; and the puts
        # staged in this turn of the loop, per connection in staging order, answered once the
        # store commits them.
        self.group_commit: GroupCommitStorage | None = (
            self.store if isinstance(self.store, GroupCommitStorage) else None
        )
        self._staged: dict[_Connection, int] = {}
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

    def stage(self, connection: _Connection, points: Iterable[Point], count: int) -> bool:
        """Stage ``count`` puts of ``connection`` for the next group commit.

        The first staged batch schedules :meth:`commit_staged` for the next turn of the loop,
        so the batches that every connection sent meanwhile share its one commit. Returns
        ``False`` (after committing what was staged, so answers stay in order) if the store
        refused the points; the caller then stores them the ordinary way, which answers error.
        """
        assert self.group_commit is not None, "stage() needs a GroupCommitStorage"
        try:
            self.group_commit.stage(points)
        except Exception:
            self.commit_staged()
            return False
        if not self._staged:
            asyncio.get_running_loop().call_soon(self.commit_staged)
        self._staged[connection] = self._staged.get(connection, 0) + count
        return True

    def commit_staged(self) -> None:
        """Commit the staged puts and answer them: ``ok`` each, or ``error`` if it failed."""
        if not self._staged:
            return
        staged, self._staged = self._staged, {}
        try:
            assert self.group_commit is not None  # something was staged
            self.group_commit.commit()
            answer = OK_ANSWER
        except Exception:
            logger.warning(
                "the store failed to commit %d points", sum(staged.values()), exc_info=True
            )
            answer = ERROR_ANSWER
        for connection, count in staged.items():
            connection.send(answer * count)

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
        self.commit_staged()
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
    **server_options: Any,
) -> None:
    """Serve metrics on ``host:port`` until Ctrl-C or SIGTERM, then stop gracefully.

    This is the course's entry point: ``run_server("127.0.0.1", 8888)`` blocks and serves.
    On the signal it stops accepting, flushes the answers to every request already read,
    closes the connections and returns (the caller then closes ``store`` if it made it).
    ``server_options`` (``max_line``, ``max_connections``, ``idle_timeout``) go to
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
