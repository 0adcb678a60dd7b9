"""The asyncio server: one event loop, many connections, one shared store.

All of the protocol lives in :class:`~metrics_lab.session.ServerSession`, one per connection.
This module only moves bytes between sockets and sessions::

    socket --data_received--> session.receive_data(data)
    socket <----write-------- session.data_to_send()

and does what needs a clock or a socket:

- flow control (:class:`_FlowControl`): stop reading from a peer that does not read its
  answers, or whose requests the session holds back;
- fair turns (:class:`_Pump`): a big answer is written a piece at a time, taking turns with
  the other big answers, and the loop goes back to its sockets every
  :data:`TURN_BUDGET` seconds, so a small request is answered promptly whatever the heavy
  readers do;
- waking a session when the store it waits for is done;
- the limits (:class:`_ServerState`, :class:`_Watchdog`): ``max_connections``, where a
  newcomer at the limit closes the connection that has gone longest without a sign of life;
  ``line_timeout`` for a request line begun and never finished; the optional
  ``idle_timeout``.

The usual case, a small answer ready at once, is :meth:`_Connection.data_received` and
:meth:`_Connection._send`, a few lines each; the rest has places of its own that the usual
case does not enter.

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
import itertools
import logging
import signal
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from types import TracebackType
from typing import Any, Final, Self, cast

from metrics_lab.extras import install_hint
from metrics_lab.fastpath import FastParser
from metrics_lab.graphite import GraphiteIngest
from metrics_lab.logs import nonblocking_logging
from metrics_lab.protocol import DEFAULT_MAX_LINE, SimpleParser
from metrics_lab.session import ServerSession, Session
from metrics_lab.storage import MemoryStore, Storage

__all__ = [
    "ANSWER_PIECE",
    "DEFAULT_LINE_TIMEOUT",
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
"""Open connections a server keeps at once. A newcomer beyond them is served, and the
connection that has gone longest without a sign of life is closed to make room."""

DEFAULT_LINE_TIMEOUT = 30.0
"""Seconds a connection may hold an unfinished request line without completing any line;
then it is closed (a peer trickling bytes that never end a line cannot hold a slot)."""

WRITE_BUFFER_HIGH: Final = 1024 * 1024
"""Bytes of answers a connection buffers before it waits for the peer to read (flow control):
room for several pieces of a long answer, so the next is encoded while the system sends."""

ANSWER_PIECE: Final = 16 * 1024
"""About how many bytes of answers a connection asks its session for when it answers what
the peer just sent (about a store's piece of a get's answer, well under a millisecond of
work); more than that goes out in the pump's turns for long answers."""

PUMP_PIECE: Final = 2 * ANSWER_PIECE
"""Bytes of a big answer written in one of its turns (few system calls, under a millisecond)."""

TURN_BUDGET: Final = 0.002
"""Seconds of answer encoding per run of the pump, shared by all big answers, before the loop
looks at its sockets again: a small request that comes during a run waits for the rest of
that run only, at most about this long (plus the piece that crosses it), and not for the
next run, which comes after the sockets (see :class:`_Pump`)."""

EVICTION_LOG_INTERVAL = 10.0
"""Seconds between two warnings about connections closed to make room at the limit."""

_SIGNS_OF_LIFE: Final = itertools.count(1)
"""Numbers the signs of life of every connection, in the order they happen: which connection
was quiet the longest is a comparison, and taking a number is cheaper than reading a clock."""

PARSER_CHOICES: Final = ("fast", "simple", "auto")
"""How a server parses requests: ``fast`` takes blocks of puts at once
(:mod:`metrics_lab.fastpath`), ``simple`` reads line by line, as a learner does; ``auto``,
kept for old command lines, is ``fast``. The answers are the same."""


def make_parser(parser: str = "fast") -> SimpleParser:
    """The parser that ``parser`` (one of :data:`PARSER_CHOICES`) names, for one server."""
    if parser not in PARSER_CHOICES:
        raise ValueError(f"parser must be one of {PARSER_CHOICES}, not {parser!r}")
    return SimpleParser() if parser == "simple" else FastParser()


class _ServerState:
    """What a server's connections share: the settings, the pump, each other.

    Handed to every :class:`_Connection`, which calls only its public methods. The settings
    (store, parser, limits) are read from ``settings``, the :class:`MetricsServer` itself,
    each time they are needed, so that they live in one place.
    """

    def __init__(self, settings: MetricsServer) -> None:
        self.settings = settings
        self.pump = _Pump()
        self.accepting = False
        self.connections: set[_Connection] = set()
        self.all_closed = asyncio.Event()  # set once the last connection is gone, when stopping
        self._evicted = 0  # connections closed to make room since the last warning about it
        self._eviction_logged_at: float | None = None

    def new_session(self) -> ServerSession:
        """A main-port connection's session."""
        settings = self.settings
        return ServerSession(settings.store, parser=settings.parser, max_line=settings.max_line)

    def admit(self, connection: _Connection) -> bool:
        """Count a new connection in, unless the server is stopping; at ``max_connections``,
        make room first (see :meth:`_make_room`)."""
        if not self.accepting:
            return False
        # (A limit below 1, set on a running server, counts as 1: there is one to close.)
        if self.connections and len(self.connections) >= self.settings.max_connections:
            self._make_room()
        self.connections.add(connection)
        return True

    def forget(self, connection: _Connection) -> None:
        """Count a closed connection out."""
        self.connections.discard(connection)
        if not self.connections and not self.accepting:  # the last one, and we are stopping
            self.all_closed.set()

    def _make_room(self) -> None:
        """Close the connection that has gone longest without a sign of life (see
        :attr:`_Connection.last_sign_of_life`), and say so in a warning, at most every
        :data:`EVICTION_LOG_INTERVAL` seconds, so that a flood cannot flood the log."""
        quietest = min(self.connections, key=_last_sign_of_life)
        self.forget(quietest)
        quietest.abort()
        self._evicted += 1
        now = time.monotonic()
        logged_at = self._eviction_logged_at
        if logged_at is None or now - logged_at >= EVICTION_LOG_INTERVAL:
            logger.warning(
                "connection limit (%d) reached: closed %d quiet connection(s) to make room, "
                "the last from %s",
                self.settings.max_connections,
                self._evicted,
                quietest.peer,
            )
            self._evicted = 0
            self._eviction_logged_at = now


def _last_sign_of_life(connection: _Connection) -> int:
    return connection.last_sign_of_life


class _Pump:
    """Fair turns for big answers: one piece of each in turn, then back to the sockets.

    A connection with more answer bytes ready than one piece joins the pump. Each run hands
    one piece (about :data:`PUMP_PIECE` bytes) to each waiting connection in turn until
    :data:`TURN_BUDGET` is spent, then lets the event loop look at its sockets before the
    next run, so a small request waits for the run in progress at most, however many big
    readers there are, and a lone big answer still goes out at full speed.
    """

    __slots__ = ("_queue", "_scheduled")

    def __init__(self) -> None:
        self._queue: deque[_Connection] = deque()
        self._scheduled = False

    def add(self, connection: _Connection) -> None:
        """Give ``connection`` turns until its session has no more bytes ready."""
        if connection.pumped:
            return
        connection.pumped = True
        self._queue.append(connection)
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            # A timer due now, not call_soon: asyncio runs the callbacks queued with call_soon
            # before those of the sockets that became ready meanwhile, and due timers after
            # them, so the requests that came during a run are served before the next run.
            # (uvloop makes call_later(0) a call_soon, but runs those after polling sockets.)
            asyncio.get_running_loop().call_later(0, self._run)

    def _run(self) -> None:
        self._scheduled = False
        queue = self._queue
        deadline = time.perf_counter() + TURN_BUDGET
        while queue:
            connection = queue.popleft()
            if connection.take_turn():
                queue.append(connection)
            else:
                connection.pumped = False
            if time.perf_counter() >= deadline:
                break
        if queue:
            self._schedule()


class _FlowControl:
    """Whether we may write to the peer; reading is paused or resumed on the transport, which
    keeps that state (as uvicorn's ``FlowControl``).

    asyncio pauses our writing when the transport's buffer passes its high-water mark, that
    is when the peer does not read its answers; we then stop reading its requests too, so a
    peer that sends without reading holds only its own socket's buffers, not ours.
    """

    __slots__ = ("_transport", "writing")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self.writing = True
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)

    def read(self, wanted: bool) -> None:
        """Read from the peer if ``wanted`` and its answers are being taken; else pause."""
        transport = self._transport
        if transport.is_closing():
            return
        # Both calls do nothing if the transport already reads, or pauses (asyncio's, uvloop's).
        if wanted and self.writing:
            transport.resume_reading()
        else:
            transport.pause_reading()


class _Watchdog:
    """One connection's deadlines, made only once one is watched (idle connections without
    deadlines do not pay for it).

    With ``idle_timeout`` set, a connection with no sign of life for that long is closed; a
    connection that holds an unfinished request line (bytes that never end a line do not
    count as life) is closed after ``line_timeout``. Besides the connection's own signs of
    life, the watchdog sees the peer take answer bytes: our write buffer shrank since the
    last look (it shrinks only as the system sends, that is as the peer reads). One timer,
    re-armed for the time left.
    """

    __slots__ = ("_active_at", "_buffered", "_connection", "_seen", "_settings", "_timer")

    def __init__(self, connection: _Connection, settings: MetricsServer) -> None:
        self._connection = connection
        self._settings = settings  # the limits
        self._timer: asyncio.TimerHandle | None = None
        self._seen = connection.last_sign_of_life  # its last sign of life at the last look
        self._buffered = 0  # bytes in its write buffer at the last look
        self._active_at = asyncio.get_running_loop().time()  # when that look was

    def look_in(self, delay: float) -> None:
        """Look at the deadlines in ``delay`` seconds, unless a look is already due."""
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(delay, self._look)

    def cancel(self) -> None:
        """Look no more: the connection is closed."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _look(self) -> None:
        self._timer = None
        connection, settings = self._connection, self._settings
        now = asyncio.get_running_loop().time()
        buffered = connection.write_buffer_size
        if buffered < self._buffered:  # the peer took answer bytes: alive
            connection.last_sign_of_life = next(_SIGNS_OF_LIFE)
        self._buffered = buffered
        if connection.last_sign_of_life != self._seen:
            self._seen = connection.last_sign_of_life
            self._active_at = now
        quiet = now - self._active_at
        deadlines = {"showed no sign of life": settings.idle_timeout}
        if connection.session.partial_line:
            deadlines["left a request line unfinished"] = settings.line_timeout
        missed = [name for name, limit in deadlines.items() if limit is not None and quiet >= limit]
        if not missed:
            limits = [limit for limit in deadlines.values() if limit is not None]
            if limits:  # else nothing to watch any more: the line was finished
                # Signs of life are seen only when we look: look often enough to be fair.
                self.look_in(min(min(limits) - quiet, min(limits) / 4))
            return
        logger.info("%s %s for %.0f s; closing", connection.peer, missed[0], quiet)
        if buffered:
            connection.abort()  # it does not read: do not wait for its buffer to drain
        else:
            connection.close()  # what the system already holds still reaches the peer


class _Connection(asyncio.Protocol):
    """Moves bytes between one socket and its session; watches its deadlines.

    The session is the main protocol's or a Graphite port's (:mod:`metrics_lab.graphite`).
    Both are a :class:`~metrics_lab.session.Session`, so the limits, flow control and
    deadlines here apply to both.

    The usual case is short: bytes in (:meth:`data_received`), a small answer out
    (:meth:`_send`). The rest has its own places, entered only when needed: the pump's turns
    for long answers (:meth:`take_turn`), held-back requests and waits for the store
    (:meth:`_more_to_do`), flow control (:class:`_FlowControl`), deadlines (:class:`_Watchdog`).
    """

    # What most connections never need; set on a connection once it does.
    pumped = False
    """Whether the pump gives it turns: more of its answers are ready than one piece."""
    _waited: Future[None] | None = None  # the store future we asked to be woken by
    _watchdog: _Watchdog | None = None  # made when a deadline is first watched

    last_sign_of_life: int
    """The number of its last sign of life: a chunk that completes a line (any line, blank
    too: a peer that wants to look alive may as well send requests), or the peer taking
    answer bytes. The connection with the lowest has been quiet the longest."""

    def __init__(self, state: _ServerState, session: Session) -> None:
        self._state = state
        self.session = session
        self.last_sign_of_life = next(_SIGNS_OF_LIFE)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's transports implement the interface without
        # inheriting from asyncio.Transport.
        self._transport = tcp = cast(asyncio.Transport, transport)
        if not self._state.admit(self):
            tcp.abort()  # stopping: no answer, no buffers, gone at once
            return
        self.flow = _FlowControl(tcp)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("connection from %s opened", self.peer)
        if self._state.settings.idle_timeout is not None:
            self._watch(self._state.settings.idle_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._state.forget(self)
        if self._watchdog is not None:
            self._watchdog.cancel()
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("connection from %s closed%s", self.peer, f": {exc}" if exc else "")

    def data_received(self, data: bytes) -> None:
        if data[-1:] == b"\n":  # whole lines (blank ones too): a sign of life
            self.last_sign_of_life = next(_SIGNS_OF_LIFE)
        else:
            self._line_begun(data)
        self.session.receive_data(data)
        self._send()

    def eof_received(self) -> bool:
        # The peer sends no more but may still read: answer what it sent, then close.
        self.session.receive_data(b"")
        self._send()
        return True

    def _send(self) -> None:
        """Write the answers that are ready, about a piece of them (whole pieces of an answer:
        it may be up to one piece more).

        In the usual case that is all: a small answer, and the session wants more bytes and
        waits for nothing. Anything else is :meth:`_more_to_do`'s (held-back requests too: a
        session that holds requests back wants no data).
        """
        if self.pumped or not self.flow.writing:  # the pump writes the rest (once resumed)
            self.flow.read(self.session.wants_data)
            return
        try:
            data = self.session.data_to_send(ANSWER_PIECE)
            self._transport.write(data)
            if len(data) >= ANSWER_PIECE or not self.session.wants_data or self.session.waiting_for:
                self._more_to_do(len(data))
        except Exception:
            self._store_failed()

    def _more_to_do(self, sent: int) -> None:
        """After writing ``sent`` bytes, what is not the usual case: the peer is done, the
        session holds requests back or waits for the store, or more than a piece is ready."""
        if self.session.finished:  # the peer is done, and has every answer
            self._transport.close()
        else:
            more = sent >= ANSWER_PIECE or self._write_answers(ANSWER_PIECE - sent)
            self._settle()
            if more:
                self._state.pump.add(self)  # the rest in turns, with the other long answers

    def take_turn(self) -> bool:
        """The pump's turn: write a piece of the answers; say whether more is ready."""
        transport = self._transport
        if transport.is_closing() or not self.flow.writing:
            return False  # closed to make room, or paused until the peer reads (and resumes)
        if not transport.get_write_buffer_size():
            self.last_sign_of_life = next(_SIGNS_OF_LIFE)  # the peer took all we wrote
        try:
            more = self._write_answers(PUMP_PIECE)
            self._settle()
        except Exception:  # inside: an exception out of a turn would stop the pump for all
            self._store_failed()
            return False
        return more

    def _write_answers(self, limit: int) -> bool:
        """Write the answers that are ready, about ``limit`` bytes (up to one piece of an
        answer more), running the held-back requests as they may run; say whether the pump
        should write more: a piece's worth went out, and the peer takes its answers."""
        session, sent = self.session, 0
        while True:
            data = session.data_to_send(limit - sent)
            self._transport.write(data)
            sent += len(data)
            if sent >= limit:  # a piece's worth, of one answer or of several
                return self.flow.writing
            # Answers that the peer does not take stop us, however small each is.
            if not self.flow.writing or not session.run_held_requests():
                return False

    def _settle(self) -> None:
        """Have the store's future that the session names wake us; read from the peer if the
        session wants data; close once it is finished."""
        session = self.session
        waiting_for = session.waiting_for
        if waiting_for is not None:
            self._wait_for(waiting_for)
        self.flow.read(session.wants_data)
        if session.finished:
            self._transport.close()

    def _store_failed(self) -> None:
        logger.warning("%s: the store failed mid-answer; closing", self.peer, exc_info=True)
        self._transport.abort()

    def _wait_for(self, future: Future[None]) -> None:
        """Have :meth:`_send` run again once ``future`` (done in a store's thread) is done."""
        if future is self._waited:
            return
        self._waited = future
        loop = asyncio.get_running_loop()

        def wake(_: Future[None]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to answer
                loop.call_soon_threadsafe(self._wake)

        future.add_done_callback(wake)

    def _wake(self) -> None:
        self._waited = None
        if not self._transport.is_closing():
            self._send()
            # A session may want data again without answering (the Graphite port, once its
            # writes are stored), and _send's usual case does not touch reading.
            self.flow.read(self.session.wants_data)

    # Flow control: asyncio calls these when the transport's write buffer passes its high
    # and low water marks, that is when the peer stops and starts reading its answers.
    def pause_writing(self) -> None:
        self.flow.writing = False
        self.flow.read(False)

    def resume_writing(self) -> None:
        self.flow.writing = True
        self.last_sign_of_life = next(_SIGNS_OF_LIFE)  # the peer read: it is alive
        self._state.pump.add(self)  # the rest of the answer takes its turns with the others

    # Deadlines: a sign of life is a chunk that completes a line, or a peer taking answers.
    def _line_begun(self, data: bytes) -> None:
        """A chunk that ends inside a line: note the lines it ends; watch the one it begins."""
        if b"\n" in data:
            self.last_sign_of_life = next(_SIGNS_OF_LIFE)
        if self._state.settings.line_timeout is not None:
            self._watch(self._state.settings.line_timeout)

    def _watch(self, delay: float) -> None:
        """Have the watchdog look at the deadlines in ``delay`` seconds, if it is not due to."""
        if self._watchdog is None:
            self._watchdog = _Watchdog(self, self._state.settings)
        self._watchdog.look_in(delay)

    @property
    def peer(self) -> str:
        """The peer's address, for the log."""
        return _format_peer(self._transport.get_extra_info("peername"))

    @property
    def write_buffer_size(self) -> int:
        """Bytes of answers written but not yet sent to the peer."""
        return self._transport.get_write_buffer_size()

    def shut_down(self) -> None:
        """Stop taking requests: answer those already received, then close."""
        self.session.receive_data(b"")
        self.flow.read(False)
        self._send()

    def close(self) -> None:
        """Close once the answers already written are sent."""
        self._transport.close()

    def abort(self) -> None:
        """Close at once, dropping unsent answers."""
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

    Limits, so that no peer can exhaust the server or lock others out:

    - a request line over ``max_line`` bytes is answered with the error answer and its
      connection closed;
    - at ``max_connections`` open connections (default :data:`DEFAULT_MAX_CONNECTIONS`), a
      newcomer is still served: the connection that has gone longest without a sign of life
      (a chunk that completes a line, or answer bytes taken) is closed to make room, with a warning
      in the log. Raise it for more concurrent clients;
    - a connection that holds an unfinished request line and completes no line for
      ``line_timeout`` seconds (default :data:`DEFAULT_LINE_TIMEOUT`; ``None`` never) is
      closed;
    - with ``idle_timeout`` set, a connection that shows no sign of life for that many
      seconds is closed (``None``, the default, keeps quiet connections open, as notebooks
      want).

    The limits are attributes of the same names, kept there only: one changed on a running
    server applies from then on, except ``max_line`` and turning ``idle_timeout`` on, which
    apply to the main port's connections that come after the change (a Graphite port keeps
    the ``max_line`` it started with).

    ``graphite_port`` (off with ``None``, the default) also accepts Graphite's plaintext
    protocol on that port of the same host, into the same store, under the same limits (its
    connections count towards ``max_connections``); see :mod:`metrics_lab.graphite`.

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
        parser: str = "fast",
        max_line: int = DEFAULT_MAX_LINE,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        idle_timeout: float | None = None,
        line_timeout: float | None = DEFAULT_LINE_TIMEOUT,
        graphite_port: int | None = None,
    ) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, not {max_connections}")
        for name, timeout in (("idle_timeout", idle_timeout), ("line_timeout", line_timeout)):
            if timeout is not None and timeout <= 0:
                raise ValueError(f"{name} must be positive or None, not {timeout}")
        self.requested_host = host
        self.requested_port = port
        self.store: Storage = MemoryStore() if store is None else store
        self.parser = make_parser(parser)
        self.max_line = max_line
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.line_timeout = line_timeout
        self._state = _ServerState(self)  # reads the settings above from here, when needed
        self._server: asyncio.Server | None = None
        self._address: tuple[str, int] | None = None
        self._stopped = asyncio.Event()
        # Graphite plaintext on a second port (metrics_lab.graphite), when asked for.
        self.requested_graphite_port = graphite_port
        self.graphite = (
            None if graphite_port is None else GraphiteIngest(self.store, max_line=max_line)
        )
        self._graphite_server: asyncio.Server | None = None
        self._graphite_address: tuple[str, int] | None = None

    async def start(self) -> None:
        """Bind and start accepting connections; returns once the port is open."""
        if self._server is not None:
            raise RuntimeError("the server is already started")
        self._stopped.clear()
        loop = asyncio.get_running_loop()
        state = self._state
        state.accepting = True
        self._server = await loop.create_server(
            lambda: _Connection(state, state.new_session()),
            self.requested_host,
            self.requested_port,
        )
        host, port = self._server.sockets[0].getsockname()[:2]
        self._address = (str(host), int(port))
        logger.info("serving metrics on %s:%d", self.host, self.port)
        if self.graphite is not None:
            await self._start_graphite(self.graphite)

    async def _start_graphite(self, graphite: GraphiteIngest) -> None:
        """Listen for Graphite plaintext too (after the main port: see ``stopping``)."""
        state = self._state
        try:
            self._graphite_server = await asyncio.get_running_loop().create_server(
                lambda: _Connection(state, graphite.session()),
                self.requested_host,
                self.requested_graphite_port,
            )
        except OSError as exc:
            await self.stop()
            where = f"{self.requested_host}:{self.requested_graphite_port}"
            raise OSError(f"cannot take Graphite lines on {where}: {exc.strerror or exc}") from exc
        host, port = self._graphite_server.sockets[0].getsockname()[:2]
        self._graphite_address = (str(host), int(port))
        logger.info("serving Graphite plaintext on %s:%d", host, port)

    @property
    def graphite_address(self) -> tuple[str, int]:
        """``(host, port)`` of the Graphite plaintext port (the real port, also for 0)."""
        if self._graphite_address is None:
            raise RuntimeError("the server has no Graphite port, or has not been started")
        return self._graphite_address

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
        return len(self._state.connections)

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` has begun (or the server never started)."""
        return self._server is None

    @property
    def buffered_output(self) -> int:
        """Bytes of answers waiting in all connections' write buffers (flow control bounds it).

        Read it from the server's own thread (or while no client is active).
        """
        return sum(connection.write_buffer_size for connection in self._state.connections)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop gracefully: refuse new connections, send every answer already due, close.

        Requests already received have been answered (the server answers a chunk as soon as it
        arrives); those answers are flushed before each connection closes. Connections still
        open after ``grace`` seconds (a peer that does not read) are aborted.
        """
        server, self._server = self._server, None
        if server is None:
            return
        state = self._state
        # A connection accepted just now is set up by a task of the loop. On CPython 3.11 a
        # transport made after server.close() fails and leaks its socket, so let those tasks
        # run first, and after the close let their connection_made see that we are stopping.
        await asyncio.sleep(0)
        server.close()
        graphite, self._graphite_server = self._graphite_server, None
        if graphite is not None:
            graphite.close()
        state.accepting = False
        state.all_closed.clear()
        await asyncio.sleep(0)
        for connection in list(state.connections):
            connection.shut_down()
        if state.connections:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await state.all_closed.wait()
        for connection in list(state.connections):
            connection.abort()
        await server.wait_closed()
        if graphite is not None:
            await graphite.wait_closed()
        if self.graphite is not None:
            self.graphite.close()  # log what it counted and has not logged yet
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
    ``server_options`` (``parser``, ``max_line``, ``max_connections``, ``idle_timeout``,
    ``line_timeout``, ``graphite_port``) go to :class:`MetricsServer`. ``loop`` picks the
    event loop (see :func:`event_loop_factory`). Logging goes through a queue to a writer
    thread meanwhile (:func:`~metrics_lab.logs.nonblocking_logging`): a stuck stderr cannot
    stall the server.
    """
    server = MetricsServer(host, port, store=store, **server_options)
    with nonblocking_logging(), asyncio.Runner(loop_factory=event_loop_factory(loop)) as runner:
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
