"""One connection's conversation with the server, without sockets: bytes in, answers out.

A :class:`ServerSession` is the whole server logic for one connection, as h11's
``Connection`` is for HTTP: it splits the bytes into requests, runs them against the store
in order, and hands back the answers' bytes. It never touches a socket or an event loop, so
it can be read, and tested, on its own:

>>> from metrics_lab.storage import MemoryStore
>>> session = ServerSession(MemoryStore())
>>> session.receive_data(b"put a 1 2\\nget a\\n")
>>> session.data_to_send()
b'ok\\n\\nok\\na 1.0 2\\n\\n'

The rules it keeps:

- Answers go out in the order the requests came, one per request; a blank line gets none.
- A put is answered ``ok`` only once the store says its point is stored. A durable store
  says so later, from a thread of its own: until then :attr:`ServerSession.waiting_for` is
  the store's future, and the answers behind it wait.
- A get runs only after every earlier put of the connection is stored, so it sees them,
  and it reads a snapshot: its answer is the store as of the request, however slowly the
  peer takes it. (A store that reads in a thread of its own fixes the snapshot as its first
  piece comes: the requests after the get wait for that, so the get cannot see them.) The
  answer is encoded a piece at a time, as :meth:`~ServerSession.data_to_send` is called, so
  a ``get *`` of a million points never sits in memory whole.
- A request line longer than ``max_line`` is answered ``error`` and ends the session.
- Requests wait, unrun, while :data:`MAX_QUEUED_ANSWERS` answers are queued or
  :data:`MAX_UNSTORED_POINTS` points wait for the store; meanwhile :attr:`~ServerSession.wants_data`
  is false, and the server stops reading from the peer.

The asyncio server (:mod:`metrics_lab.server`) only moves bytes between a socket and a session.
How a block of received lines becomes requests is one replaceable step, a parser: the
protocol module's :class:`~metrics_lab.protocol.SimpleParser` reads a line at a time, and
:mod:`metrics_lab.fastpath` offers one that takes a block of puts in one go. Both live below
the session, so a request travels down from here, never back up.
"""

from __future__ import annotations

import logging
from collections import deque
from concurrent.futures import Future
from typing import Final

from metrics_lab.protocol import (
    ALL_KEYS,
    DEFAULT_MAX_LINE,
    ERROR_ANSWER,
    OK_ANSWER,
    GetRequest,
    Item,
    LineReader,
    PointBatch,
    PutRequest,
    SimpleParser,
    WrongCommandError,
    encode_series_lines,
)
from metrics_lab.storage import STORED, Series, Snapshot, Storage

__all__ = [
    "ANSWER_BATCH",
    "ANSWER_PIECE",
    "STORE_ERROR_ANSWER",
    "Item",
    "ServerSession",
    "SimpleParser",
]

logger = logging.getLogger("metrics_lab.session")

ANSWER_BATCH: Final = 256 * 1024
"""About how many bytes :meth:`ServerSession.data_to_send` returns at most in one call."""

MAX_QUEUED_ANSWERS: Final = 1024
"""How many answers a session keeps queued before it stops running requests (and its server
stops reading from the peer) until the peer takes some."""

MAX_UNSTORED_POINTS: Final = 65_536
"""How many of its points a session lets wait for the store before it stops running requests
(and its server stops reading from the peer) until the store catches up: a store slower than
its clients holds a bounded number of their points, not whatever they manage to send."""

ANSWER_PIECE: Final = 64 * 1024
"""About how many bytes of a get's answer are encoded at a time."""

STORE_ERROR_ANSWER: Final = b"error\nstore unavailable\n\n"
"""The answer to a request that the store could not serve (PROTOCOL.md, "When the store fails")."""


class ServerSession:
    """The server's side of one connection: feed it bytes, send what it gives back.

    ``store`` is shared with the other sessions of the server; ``parser`` turns lines into
    requests (a :class:`SimpleParser` unless given); ``max_line`` bounds a request line.
    """

    def __init__(
        self,
        store: Storage,
        *,
        parser: SimpleParser | None = None,
        max_line: int = DEFAULT_MAX_LINE,
    ) -> None:
        self.store = store
        self.parser = SimpleParser() if parser is None else parser
        self._lines = LineReader(max_line)
        self._requests: deque[Item] = deque()  # received, not yet run
        self._answers: deque[_Answer] = deque()  # run, not yet sent whole
        self._unstored: deque[tuple[Future[None], int]] = deque()  # pending writes, points
        self._unstored_points = 0  # how many points those writes hold
        self._ready: list[bytes] = []  # finished answers before any in _answers
        self._ended = False  # no request will come any more
        self._reading = False  # a get's answer is queued: the next get waits for it
        self._taking: Future[None] | None = None  # a get's snapshot not fixed yet: all wait

    def receive_data(self, data: bytes) -> None:
        """Take bytes from the peer, cut anywhere; ``b""`` means the peer sends no more."""
        if not data:
            self._ended = True
            return
        block = self._lines.receive_block(data)
        if block:
            self._requests.extend(self.parser.parse(block))
        if self._lines.too_long and not self._ended:
            logger.warning("a request line over %d bytes; answering error", self._lines.max_line)
            self._requests.append(WrongCommandError("line too long"))
            self._ended = True
        self._run_ready()

    def data_to_send(self, limit: int = ANSWER_BATCH) -> bytes:
        """The answers that are ready, in order: at most about ``limit`` bytes of them.

        ``b""`` means nothing is ready: everything is sent, or the next answer waits for the
        store (see :attr:`waiting_for`).
        """
        ready = b"".join(self._ready)
        self._ready.clear()
        answers = self._answers
        if not answers:  # the usual case: every answer is finished
            return ready
        out = [ready]
        size = len(ready)
        while answers and size < limit:
            piece = answers[0].next_piece()
            if piece is None:  # that answer is complete
                if isinstance(answers.popleft(), _Points):
                    self._reading = False
                if self._requests:
                    self._run_ready()  # a get may have waited for that answer
            elif isinstance(piece, bytes):
                out.append(piece)
                size += len(piece)
                if self._taking is not None:
                    self._run_ready()  # a get's snapshot may be fixed now: run what it held
            else:
                break  # a future: the store has not answered yet
        return b"".join(out)

    @property
    def waiting_for(self) -> Future[None] | None:
        """The store's future that the next answer waits for, or ``None``.

        It may be done by the time you look (stores finish in threads of their own): call
        :meth:`data_to_send` once it is done, whether that was before or after you looked.
        """
        return self._answers[0].peek() if self._answers else None

    @property
    def wants_data(self) -> bool:
        """Whether more bytes are welcome: no received request is waiting to run.

        A server stops reading while this is false, so a peer that sends faster than it
        reads its answers holds only its socket's buffers, not ours.
        """
        return not self._requests and not self._ended

    @property
    def finished(self) -> bool:
        """Whether the conversation is over: no more requests, every answer taken."""
        return self._ended and not self._requests and not self._answers and not self._ready

    def _run_ready(self) -> None:
        """Run the received requests, in order, as far as they may run now.

        A put runs at once: its store write starts, and the puts of several requests (and
        connections) can share one commit. A get waits until every earlier put of its
        connection is stored, so it sees them, and until the get before it is answered, so
        that one connection holds one snapshot at a time. Any request after a get waits until
        the get's snapshot is fixed, so that the get cannot see it.
        """
        if self._taking is not None:
            if not self._taking.done():
                return
            self._taking = None
        requests = self._requests
        if self._unstored:  # (a memory store leaves none: no call on its hot path)
            self._forget_stored()
        while (
            requests
            and len(self._answers) < MAX_QUEUED_ANSWERS
            and self._unstored_points < MAX_UNSTORED_POINTS
        ):
            if isinstance(requests[0], GetRequest) and not self._may_read():
                return
            self._run(requests.popleft())
            if self._taking is not None:
                return

    def _may_read(self) -> bool:
        """Whether a get may run: its connection's earlier puts are stored, and the get
        before it is answered."""
        self._forget_stored()
        return not self._unstored and not self._reading

    def _forget_stored(self) -> None:
        """Drop the writes the store has finished, oldest first, from the pending ones."""
        unstored = self._unstored
        while unstored and unstored[0][0].done():
            self._unstored_points -= unstored.popleft()[1]

    def _run(self, item: Item) -> None:
        """Run one request and queue its answer: finished, or waiting for the store."""
        if isinstance(item, GetRequest):
            points = _Points(self.store, None if item.key == ALL_KEYS else item.key)
            self._answers.append(points)
            self._reading = True
            self._taking = points.taking
            return
        if isinstance(item, WrongCommandError):
            logger.debug("wrong command: %s", item)
            answer = ERROR_ANSWER
        else:
            batch = item if isinstance(item, PointBatch) else _one_point(item)
            written = self.store.write(batch)
            if written is not STORED:  # a durable store: answered once it has committed
                if not written.done():
                    self._unstored.append((written, len(batch.keys)))
                    self._unstored_points += len(batch.keys)
                self._answers.append(_Written(written, len(batch.keys)))
                return
            answer = OK_ANSWER * len(batch.keys)  # a memory store stored the points at once
        if self._answers:  # behind an answer still in the making
            self._answer_later(answer)
        else:
            self._ready.append(answer)

    def _answer_later(self, answer: bytes) -> None:
        """Queue a finished answer behind one that is not: joined to the finished ones."""
        last = self._answers[-1]
        if isinstance(last, _Bytes) and last.data is not None:
            last.data += answer
        else:
            self._answers.append(_Bytes(answer))


def _one_point(put: PutRequest) -> PointBatch:
    return PointBatch((put.key,), (put.value,), (put.timestamp,))


class _Answer:
    """One request's answer on its way out: its bytes come a piece at a time."""

    def next_piece(self) -> bytes | Future[None] | None:
        """The next bytes; a future to wait for first; ``None`` once all bytes were given."""
        raise NotImplementedError

    def peek(self) -> Future[None] | None:
        """The store's future this answer waits on, if any, even if it is done by now.

        (Done by now counts: the store may finish in its own thread between a
        :meth:`next_piece` that found it pending and this call, and whoever asks must still
        be woken.)
        """
        return None


class _Bytes(_Answer):
    """Answers already known, joined while they wait."""

    def __init__(self, data: bytes) -> None:
        self.data: bytes | None = data

    def next_piece(self) -> bytes | None:
        data, self.data = self.data, None
        return data


class _Written(_Answer):
    """The answers to ``count`` puts that were written together: ok each, or error each."""

    def __init__(self, written: Future[None], count: int) -> None:
        self._written: Future[None] | None = written
        self._count = count

    def next_piece(self) -> bytes | Future[None] | None:
        written = self._written
        if written is None:
            return None
        if not written.done():
            return written
        self._written = None
        failure = written.exception()
        if failure is None:
            return OK_ANSWER * self._count
        logger.warning("the store failed to take %d point(s): %s", self._count, failure)
        return STORE_ERROR_ANSWER * self._count

    def peek(self) -> Future[None] | None:
        return self._written


class _Points(_Answer):
    """The answer to a get: the snapshot taken when it ran, encoded a piece at a time.

    ``ok`` goes out with the first piece, so a store that fails before it still gets an
    honest ``error`` answer. One that fails after it cannot: the answer is half sent, and
    the exception ends the connection, the only signal left.
    """

    def __init__(self, store: Storage, key: str | None) -> None:
        self._key = key
        self._started = False
        self._waiting: Future[None] | None = None
        self._snapshot: Snapshot | None = None
        self._first: Series | Future[None] | None = None  # the piece taken below, until sent
        self.taking: Future[None] | None = None
        """Done once the snapshot is fixed; ``None`` if it was at once (see :class:`Storage`)."""
        try:
            self._snapshot = store.snapshot(key)
            # Its first piece, now: a store that fixes the view later yields a future first.
            self._first = next(self._snapshot, None)
        except Exception as exc:
            logger.warning("the store failed to read %r: %s", key, exc)
            self._snapshot = None
            return
        if isinstance(self._first, Future) and not self._first.done():
            self.taking = self._first

    def next_piece(self) -> bytes | Future[None] | None:
        if self._waiting is not None:
            if not self._waiting.done():
                return self._waiting
            self._waiting = None
        if self._snapshot is None:
            if self._started:
                return None
            self._started = True
            return STORE_ERROR_ANSWER
        lines: list[bytes] = [] if self._started else [b"ok\n"]
        size = 0
        try:
            while size < ANSWER_PIECE:
                piece = self._first
                if piece is None:
                    piece = next(self._snapshot, None)
                else:
                    self._first = None
                if piece is None:
                    lines.append(b"\n")
                    self._snapshot = None
                    break
                if isinstance(piece, Future):
                    self._waiting = piece
                    break
                encoded = encode_series_lines(*piece)
                lines.append(encoded)
                size += len(encoded)
        except Exception as exc:
            if self._started:
                raise
            logger.warning("the store failed to read %r: %s", self._key, exc)
            self._snapshot = None
            self._started = True
            return STORE_ERROR_ANSWER
        if len(lines) == 1 and not self._started and self._waiting is not None:
            return self._waiting  # nothing to say yet, not even "ok"
        self._started = True
        return b"".join(lines)

    def peek(self) -> Future[None] | None:
        return self._waiting
