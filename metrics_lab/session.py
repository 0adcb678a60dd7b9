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

Three calls, each doing one thing:

- :meth:`~ServerSession.receive_data` takes bytes and runs the requests they complete, as
  far as the waiting rules let them run now; the others are held back, in order.
- :meth:`~ServerSession.data_to_send` only hands out the answers' bytes, in order.
- :meth:`~ServerSession.run_held_requests` runs the held-back requests that may run now:
  call it after :meth:`~ServerSession.data_to_send`, or once the store future named by
  :attr:`~ServerSession.waiting_for` is done.

The waiting rules are all in :meth:`ServerSession.why_wait`. Besides them:

- Answers go out in the order the requests came, one per request; a blank line gets none.
- A put is answered ``ok`` only once the store says its point is stored. A durable store
  says so later, from a thread of its own: until then :attr:`ServerSession.waiting_for` is
  the store's future, and the answers behind it wait.
- A get reads a snapshot: its answer is the store as of the request, however slowly the peer
  takes it, encoded a piece at a time as :meth:`~ServerSession.data_to_send` is called, so a
  ``get *`` of a million points never sits in memory whole.
- A request line longer than ``max_line`` is answered ``error`` and ends the session.
- While requests are held back, :attr:`~ServerSession.wants_data` is false and the server
  stops reading from the peer.

The asyncio server (:mod:`metrics_lab.server`) only moves bytes between a socket and a session.
How a block of received lines becomes requests is one replaceable step, a parser: the
protocol module's :class:`~metrics_lab.protocol.SimpleParser` reads a line at a time, and
:mod:`metrics_lab.fastpath` offers one that takes a block of puts in one go. Both live below
the session, so a request travels down from here, never back up.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from itertools import chain
from typing import Final, Protocol

from metrics_lab.logs import LogSummary
from metrics_lab.protocol import (
    ALL_KEYS,
    DEFAULT_MAX_LINE,
    ERROR_ANSWER,
    OK_ANSWER,
    GetRequest,
    Item,
    LineReader,
    PointBatch,
    SimpleParser,
    WrongCommandError,
    encode_series_lines,
)
from metrics_lab.storage import STORED, Series, Storage, one_line

__all__ = [
    "ANSWER_BATCH",
    "ANSWER_PIECE",
    "STORE_ERROR_ANSWER",
    "ServerSession",
    "Session",
    "SimpleParser",
]

logger = logging.getLogger("metrics_lab.session")

# During an outage every batch is refused: one line per interval, not one per batch.
_UNSTORED = LogSummary(
    logger,
    "the store failed to take {count} point(s) from {events} batch(es); the last: {example}",
)

ANSWER_BATCH: Final = 256 * 1024
"""About how many bytes :meth:`ServerSession.data_to_send` returns at most in one call,
unless told otherwise."""

ANSWER_PIECE: Final = 16 * 1024
"""About how many bytes of a get's answer are encoded at a time (a few hundred points,
well under a millisecond of work)."""

ENCODE_POINTS: Final = 1024
"""At most this many points are encoded in one go, however long the store's pieces are."""

MAX_QUEUED_ANSWERS: Final = 1024
"""How many answers a session keeps queued before it holds back requests (and its server
stops reading from the peer) until the peer takes some."""

MAX_UNSTORED_POINTS: Final = 65_536
"""How many of its points a session lets wait for the store before it holds back requests
(and its server stops reading from the peer) until the store catches up: a store slower than
its clients holds a bounded number of their points, not whatever they manage to send."""

STORE_ERROR_ANSWER: Final = b"error\nstore unavailable\n\n"
"""The answer to a request that the store could not serve (PROTOCOL.md, "When the store fails")."""


class Session(Protocol):
    """What the server's connection class calls on a session: the whole interface.

    :class:`ServerSession` is the main protocol's; :class:`~metrics_lab.graphite.GraphiteSession`
    (which never answers) is the Graphite port's. The server moves bytes, applies flow control
    and watches deadlines the same way for any session that has these.
    """

    def receive_data(self, data: bytes) -> None:
        """Take bytes from the peer, cut anywhere; ``b""`` means the peer sends no more."""

    def data_to_send(self, limit: int = ANSWER_BATCH) -> bytes:
        """The answers that are ready, at most about ``limit`` bytes; ``b""`` for none."""

    def run_held_requests(self) -> bool:
        """Run the held-back requests that may run now; say whether any ran."""

    @property
    def waiting_for(self) -> Future[None] | None:
        """The store's future to be woken by (then call the two methods above), or ``None``."""

    @property
    def wants_data(self) -> bool:
        """Whether more bytes are welcome (the server stops reading while this is false)."""

    @property
    def finished(self) -> bool:
        """Whether the connection may close: no more requests, every answer taken."""

    @property
    def partial_line(self) -> int:
        """How many bytes of an unfinished line are buffered (for the line timeout)."""


class ServerSession:
    """The server's side of one connection: feed it bytes, send what it gives back.

    ``store`` is shared with the other sessions of the server; ``parser`` turns lines into
    requests (a :class:`SimpleParser` unless given); ``max_line`` bounds a request line.
    A session holds little until it is used: the queues that only a held-back request or a
    durable store needs are made when first needed, so that ten thousand idle connections
    cost little memory.
    """

    __slots__ = (
        "_answering_get",
        "_answers",
        "_ended",
        "_held",
        "_lines",
        "_ready",
        "_unfixed_snapshot",
        "_unstored",
        "_unstored_points",
        "parser",
        "store",
    )

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
        self._held: deque[Item] | None = None  # received, not yet run
        # Run, not yet sent whole: a list, not a deque (56 bytes empty, not 600; at most
        # MAX_QUEUED_ANSWERS long, so taking its head is cheap enough).
        self._answers: list[_Answer] = []
        self._ready: list[bytes] = []  # finished answers, before any in _answers
        self._unstored: deque[tuple[Future[None], int]] | None = None  # writes, their points
        self._unstored_points = 0  # how many points those writes hold
        self._answering_get = False  # a get's answer is queued: the next get waits for it
        self._unfixed_snapshot: Future[None] | None = None  # done once a get's view is fixed
        self._ended = False  # no request will come any more

    def receive_data(self, data: bytes) -> None:
        """Take bytes from the peer, cut anywhere; ``b""`` means the peer sends no more.

        Runs the requests they complete, as far as they may run now (see :meth:`why_wait`).
        """
        if not data:
            self._ended = True
            return
        block = self._lines.receive_block(data)
        items = self.parser.parse(block) if block else []
        if self._lines.too_long and not self._ended:
            logger.warning("a request line over %d bytes; answering error", self._lines.max_line)
            self._ended = True
            items.append(WrongCommandError("line too long"))
        held = self._held
        if held:  # earlier requests wait: these wait behind them
            held.extend(items)
            return
        for index, item in enumerate(items):
            # Nothing queued or pending (the usual case): no waiting rule can apply.
            pending = self._answers or self._unstored or self._unfixed_snapshot
            if pending and self.why_wait(item) is not None:
                self._held = deque(items[index:])
                return
            self._run(item)

    def data_to_send(self, limit: int = ANSWER_BATCH) -> bytes:
        """The answers that are ready, in order: at most about ``limit`` bytes of them.

        ``b""`` means nothing is ready: everything is sent, the next answer waits for the
        store (see :attr:`waiting_for`), or requests are held back (see
        :meth:`run_held_requests`). Fewer than ``limit`` bytes means nothing more is ready.
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
                if isinstance(answers.pop(0), _GetAnswer):
                    self._answering_get = False
            elif isinstance(piece, bytes):
                out.append(piece)
                size += len(piece)
            else:
                break  # a future: the store has not answered yet
        return b"".join(out)

    def run_held_requests(self) -> bool:
        """Run the held-back requests that may run now, in order; say whether any ran."""
        held = self._held
        ran = False
        while held and self.why_wait(held[0]) is None:
            self._run(held.popleft())
            ran = True
        if held is not None and not held:
            self._held = None
        return ran

    def why_wait(self, item: Item) -> str | None:
        """Why ``item``, the next request, cannot run now; ``None`` if it can.

        These are the session's waiting rules, all of them:

        - A get's snapshot is not fixed yet (a store that reads in a thread of its own
          fixes it when its first piece comes): a request run now could be seen by the get.
        - Too many answers are queued, or too many points wait for the store: the peer, or
          the store, must catch up first, so that neither can make us hold without bound.
        - For a get: an earlier put of the connection is not stored yet (the get must see
          it), or the get before it is still being answered (one snapshot at a time).

        A put otherwise runs at once: its store write starts, and the puts of several
        requests (and connections) can share one commit.
        """
        unfixed = self._unfixed_snapshot
        if unfixed is not None:
            if not unfixed.done():
                return "an earlier get's snapshot is not fixed yet"
            self._unfixed_snapshot = None
        if self._unstored is not None:
            self._forget_stored()
        if len(self._answers) >= MAX_QUEUED_ANSWERS:
            return "too many answers are queued (for the store, or for the peer to read them)"
        if self._unstored_points >= MAX_UNSTORED_POINTS:
            return "too many points wait for the store"
        if isinstance(item, GetRequest):
            if self._unstored:
                return "an earlier put is not stored yet"
            if self._answering_get:
                return "the get before it is still being answered"
        return None

    @property
    def waiting_for(self) -> Future[None] | None:
        """The store's future that the next answer waits for, or ``None``.

        It may be done by the time you look (stores finish in threads of their own): call
        :meth:`run_held_requests` and :meth:`data_to_send` once it is done, whether that was
        before or after you looked.
        """
        return self._answers[0].peek() if self._answers else None

    @property
    def wants_data(self) -> bool:
        """Whether more bytes are welcome: no received request is held back.

        A server stops reading while this is false, so a peer that sends faster than it
        reads its answers holds only its socket's buffers, not ours.
        """
        return not self._held and not self._ended

    @property
    def finished(self) -> bool:
        """Whether the conversation is over: no more requests, every answer taken."""
        return self._ended and not self._held and not self._answers and not self._ready

    @property
    def partial_line(self) -> int:
        """How many bytes of an unfinished request line are buffered."""
        return self._lines.pending

    def _forget_stored(self) -> None:
        """Drop the writes the store has finished, oldest first, from the pending ones."""
        unstored = self._unstored
        while unstored and unstored[0][0].done():
            self._unstored_points -= unstored.popleft()[1]
        if not unstored:
            self._unstored = None

    def _run(self, item: Item) -> None:
        """Run one request and queue its answer: finished, or waiting for the store."""
        if isinstance(item, GetRequest):
            get = _GetAnswer(self.store, None if item.key == ALL_KEYS else item.key)
            self._answers.append(get)
            self._answering_get = True
            self._unfixed_snapshot = get.unfixed
            return
        if isinstance(item, WrongCommandError):
            logger.debug("wrong command: %s", item)
            answer = ERROR_ANSWER
        else:
            if isinstance(item, PointBatch):
                batch = item
            else:
                batch = PointBatch((item.key,), (item.timestamp,), (item.value,))
            written = self.store.write(batch)
            count = len(batch.keys)
            if written is not STORED:  # a durable store: answered once it has committed
                if not written.done():
                    if self._unstored is None:
                        self._unstored = deque()
                    self._unstored.append((written, count))
                    self._unstored_points += count
                self._answers.append(_PutAnswers(written, count))
                return
            answer = OK_ANSWER * count  # a memory store stored the points at once
        answers = self._answers
        if not answers:
            self._ready.append(answer)
            return
        last = answers[-1]  # behind an answer still in the making: join the finished ones
        if isinstance(last, _KnownAnswers) and last.data is not None:
            last.data += answer
        else:
            answers.append(_KnownAnswers(answer))


class _Answer:
    """One request's answer on its way out: its bytes come a piece at a time."""

    __slots__ = ()

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


class _KnownAnswers(_Answer):
    """Answers already known (oks, errors), joined while they wait behind another."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data: bytes | None = data

    def next_piece(self) -> bytes | None:
        data, self.data = self.data, None
        return data


class _PutAnswers(_Answer):
    """The answers to ``count`` puts that were written together: ok each, or error each."""

    __slots__ = ("_count", "_written")

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
        _UNSTORED.add(self._count, one_line(failure))
        return STORE_ERROR_ANSWER * self._count

    def peek(self) -> Future[None] | None:
        return self._written


class _GetAnswer(_Answer):
    """The answer to a get: the snapshot taken when it ran, encoded a piece at a time.

    ``ok`` goes out with the first piece, so a store that fails before it still gets an
    honest ``error`` answer. One that fails after it cannot: the answer is half sent, and
    the exception ends the connection, the only signal left.
    """

    __slots__ = ("_key", "_pieces", "_started", "_waiting", "unfixed")

    def __init__(self, store: Storage, key: str | None) -> None:
        self._key = key
        self._started = False  # "ok" (or the error answer) has gone out
        self._waiting: Future[None] | None = None
        self._pieces: Iterator[Series | Future[None] | None] | None = None  # None: all sent
        self.unfixed: Future[None] | None = None
        """Done once the snapshot is fixed; ``None`` if it was at once (see :class:`Storage`)."""
        try:
            snapshot = store.snapshot(key)
            # Its first piece, now: a store that fixes the view later yields a future first.
            first = next(snapshot, None)
        except Exception as exc:
            logger.warning("the store failed to read %r: %s", key, exc)
            return
        self._pieces = chain((first,), snapshot)
        if isinstance(first, Future) and not first.done():
            self.unfixed = first

    def next_piece(self) -> bytes | Future[None] | None:
        if self._waiting is not None:
            if not self._waiting.done():
                return self._waiting
            self._waiting = None
        pieces = self._pieces
        if pieces is None:  # all sent, or the store failed before the first byte
            if self._started:
                return None
            self._started = True
            return STORE_ERROR_ANSWER
        lines: list[bytes] = [] if self._started else [b"ok\n"]
        size = 0
        try:
            while size < ANSWER_PIECE:
                piece = next(pieces, None)
                if piece is None:
                    lines.append(b"\n")
                    self._pieces = None
                    break
                if isinstance(piece, Future):
                    self._waiting = piece
                    break
                if len(piece.timestamps) > ENCODE_POINTS:  # the rest waits for the next turn
                    key, timestamps, values = piece
                    rest = Series(key, timestamps[ENCODE_POINTS:], values[ENCODE_POINTS:])
                    self._pieces = pieces = chain((rest,), pieces)
                    piece = Series(key, timestamps[:ENCODE_POINTS], values[:ENCODE_POINTS])
                encoded = encode_series_lines(*piece)
                lines.append(encoded)
                size += len(encoded)
        except Exception as exc:
            if self._started:
                raise
            logger.warning("the store failed to read %r: %s", self._key, exc)
            self._pieces = None
            self._started = True
            return STORE_ERROR_ANSWER
        if len(lines) == 1 and not self._started and self._waiting is not None:
            return self._waiting  # nothing to say yet, not even "ok"
        self._started = True
        return b"".join(lines)

    def peek(self) -> Future[None] | None:
        return self._waiting
