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
  takes it. One piece of the snapshot or none (most gets) is encoded at once; a bigger
  answer is encoded a piece at a time as :meth:`~ServerSession.data_to_send` is called, so
  a ``get *`` of a million points never sits in memory whole.
- A request line longer than ``max_line`` is answered ``error`` and ends the session.
- While requests are held back, :attr:`~ServerSession.wants_data` is false and the server
  stops reading from the peer.

What only waiting needs (answers in the making, requests held back, the store's unfinished
writes) is kept in a backlog that the session makes when something must wait, and drops once
nothing does: in the usual case, where every answer is finished at once, there is none.

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
    PutRequest,
    SimpleParser,
    WrongCommandError,
    encode_points_answer,
    encode_series_lines,
)
from metrics_lab.storage import STORED, Series, Snapshot, Storage, one_line

__all__ = [
    "ANSWER_BATCH",
    "STORE_ERROR_ANSWER",
    "ServerSession",
    "Session",
    "SimpleParser",
    "UnstoredWrites",
]

logger = logging.getLogger("metrics_lab.session")

# During an outage every batch is refused: one line per interval, not one per batch.
_UNSTORED = LogSummary(
    logger,
    "the store failed to take {count} point(s) from {events} batch(es); the last: {example}",
)

ANSWER_BATCH: Final = 256 * 1024
"""How many bytes :meth:`ServerSession.data_to_send` aims at in one call, unless told
otherwise (see there for how far past it one call may go)."""

MAX_QUEUED_ANSWERS: Final = 1024
"""How many answers a session keeps queued behind one still in the making (a long get's, or
puts a durable store has not committed) before it holds back requests (and its server stops
reading from the peer) until the peer, or the store, takes some."""

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
        """The answers that are ready, about ``limit`` bytes of them; ``b""`` for none."""

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
    A session holds little until it is used: what only a waiting answer or request needs is
    in a :class:`_Backlog`, made when first needed and dropped once nothing waits, so that
    ten thousand idle connections cost little memory.
    """

    __slots__ = ("_backlog", "_ended", "_lines", "_ready", "parser", "store")

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
        self._ready: list[bytes] = []  # finished answers, before any in the backlog
        self._backlog: _Backlog | None = None  # while an answer or a request waits
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
        for index, item in enumerate(items):
            if self._backlog is not None:  # something waits: the rest queue, and run by the rules
                self._backlog.held.extend(items[index:])  # in order, behind any held already
                self.run_held_requests()
                return
            self._run(item)  # nothing waits (the usual case), so no waiting rule can apply

    def data_to_send(self, limit: int = ANSWER_BATCH) -> bytes:
        """The answers that are ready, in order: about ``limit`` bytes of them.

        ``limit`` is where it stops taking more, not a ceiling: the answers finished when
        their requests ran all go out, then whole pieces of the answers in the making until
        ``limit`` is reached (so one call may go past it by a piece).

        ``b""`` means nothing is ready: everything is sent, the next answer waits for the
        store (see :attr:`waiting_for`), or requests are held back (see
        :meth:`run_held_requests`). Fewer than ``limit`` bytes means nothing more is ready.
        """
        ready = b"".join(self._ready)
        self._ready.clear()
        if self._backlog is None:  # the usual case: every answer is finished
            return ready
        return self._pieces_of_answers(self._backlog, ready, limit)

    def run_held_requests(self) -> bool:
        """Run the held-back requests that may run now, in order; say whether any ran."""
        backlog = self._backlog
        if backlog is None:  # the usual case
            return False
        held = backlog.held
        ran = False
        while held and self.why_wait(held[0]) is None:
            self._run(held.popleft())
            ran = True
        if backlog.idle:
            self._backlog = None
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
        backlog = self._backlog
        if backlog is None:
            return None  # nothing waits, so nothing to wait for
        unfixed = backlog.unfixed_snapshot
        if unfixed is not None:
            if not unfixed.done():
                return "an earlier get's snapshot is not fixed yet"
            backlog.unfixed_snapshot = None
        unstored = backlog.unstored
        unstored.forget_stored()
        if len(backlog.answers) >= MAX_QUEUED_ANSWERS:
            return "too many answers are queued (for the store, or for the peer to read them)"
        if unstored.points >= MAX_UNSTORED_POINTS:
            return "too many points wait for the store"
        if isinstance(item, GetRequest):
            if unstored.oldest is not None:
                return "an earlier put is not stored yet"
            if backlog.getting is not None:
                return "the get before it is still being answered"
        return None

    @property
    def waiting_for(self) -> Future[None] | None:
        """The store's future that the next answer waits for, as :meth:`data_to_send` last
        found it, or ``None``.

        It may be done by the time you look (stores finish in threads of their own): call
        :meth:`run_held_requests` and :meth:`data_to_send` once it is done, whether that was
        before or after you looked.
        """
        return None if self._backlog is None else self._backlog.waiting

    @property
    def wants_data(self) -> bool:
        """Whether more bytes are welcome: no received request is held back.

        A server stops reading while this is false, so a peer that sends faster than it
        reads its answers holds only its socket's buffers, not ours.
        """
        return not self._ended and (self._backlog is None or not self._backlog.held)

    @property
    def finished(self) -> bool:
        """Whether the conversation is over: no more requests, every answer taken."""
        return self._ended and self._backlog is None and not self._ready

    @property
    def partial_line(self) -> int:
        """How many bytes of an unfinished request line are buffered."""
        return self._lines.pending

    def _run(self, item: Item) -> None:
        """Run one request and queue its answer: finished, or in the making."""
        if isinstance(item, GetRequest):
            answer = self._run_get(None if item.key == ALL_KEYS else item.key)
            if answer is None:
                return
        elif isinstance(item, WrongCommandError):
            logger.debug("wrong command: %s", item)
            answer = ERROR_ANSWER
        else:
            if isinstance(item, PutRequest):
                item = PointBatch((item.key,), (item.timestamp,), (item.value,))
            written = self.store.write(item)
            if written is not STORED:  # a durable store: answered once it has committed
                self._wait_for_store(written, len(item.keys))
                return
            answer = OK_ANSWER * len(item.keys)  # a memory store stored the points at once
        if self._backlog is not None and self._backlog.answers:  # behind one in the making
            self._backlog.answers.append(iter((answer,)))
        else:
            self._ready.append(answer)

    def _run_get(self, key: str | None) -> bytes | None:
        """Take a get's snapshot now; return its answer if it is finished already.

        Most answers are one piece of the snapshot, or none: those are encoded at once, if
        no other answer is ready yet. Any other is queued here and goes out a piece at a time
        as :meth:`data_to_send` takes it (see :func:`_get_answer`), so the waiting rules
        bound it: a peer that pipelines thousands of small gets without reading gets them
        encoded as it reads, not all in one go.
        """
        try:
            snapshot = self.store.snapshot(key)
            first = next(snapshot, None)
            second = next(snapshot, None) if isinstance(first, Series) else None
        except Exception as exc:
            return _unreadable(key, exc)
        # One piece or none, from a store that needs no waiting (as most gets): done now.
        if not isinstance(first, Future) and second is None and not self._ready:
            return encode_points_answer([] if first is None else [first])
        taken = [piece for piece in (first, second) if piece is not None]  # 0 to 2 pieces
        pieces = chain(taken, snapshot)
        backlog = self._made_backlog()
        if isinstance(first, Future) and not first.done():
            backlog.unfixed_snapshot = first  # done once the store has fixed the view
        backlog.getting = _get_answer(key, pieces)
        backlog.answers.append(backlog.getting)
        return None

    def _wait_for_store(self, written: Future[None], count: int) -> None:
        """Queue the answers to ``count`` puts whose points a durable store is committing."""
        backlog = self._made_backlog()
        backlog.unstored.add(written, count)
        backlog.answers.append(_put_answers(written, count))

    def _made_backlog(self) -> _Backlog:
        """The backlog, made now if nothing waited so far."""
        if self._backlog is None:
            self._backlog = _Backlog()
        return self._backlog

    def _pieces_of_answers(self, backlog: _Backlog, ready: bytes, limit: int) -> bytes:
        """``ready``, then the pieces of the backlog's answers, in order, up to about ``limit``
        bytes: :meth:`data_to_send` when not every answer is finished.

        Stops early at an answer that waits for the store, and keeps its future for
        :attr:`waiting_for`.
        """
        out = [ready]
        size = len(ready)
        answers = backlog.answers
        backlog.waiting = None
        while answers and size < limit:
            piece = next(answers[0], None)
            if isinstance(piece, Future):
                backlog.waiting = piece
                break
            if piece is None:  # that answer is complete
                if answers.pop(0) is backlog.getting:
                    backlog.getting = None
            else:
                out.append(piece)
                size += len(piece)
        if backlog.idle:
            self._backlog = None
        return b"".join(out)


_Answer = Iterator[bytes | Future[None]]
"""An answer in the making: its bytes, a piece at a time, or a store's future to wait for
first (it is yielded until it is done)."""


class _Backlog:
    """What a session holds only while something waits: the answers from the first one in
    the making on, the requests held back, and the writes the store has not finished.

    A session makes it when an answer cannot be finished at once (a big get's, a durable
    store's puts) and drops it once it is :attr:`idle` again.
    """

    __slots__ = (
        "answers",
        "getting",
        "held",
        "unfixed_snapshot",
        "unstored",
        "waiting",
    )

    def __init__(self) -> None:
        # A list, not a deque: at most MAX_QUEUED_ANSWERS long, so taking its head is cheap.
        self.answers: list[_Answer] = []
        self.held: deque[Item] = deque()  # received, not yet run
        self.waiting: Future[None] | None = None  # what the first answer waits for
        self.getting: _Answer | None = None  # a get's answer among them (one at a time)
        self.unfixed_snapshot: Future[None] | None = None  # done once a get's view is fixed
        self.unstored = UnstoredWrites()

    @property
    def idle(self) -> bool:
        """Whether nothing waits any more: every answer is out, no request is held back.

        (Every write's answer is out only once the write is done, and every get's only once
        its snapshot is fixed, so nothing else can be left.)
        """
        return not self.answers and not self.held


class UnstoredWrites:
    """A connection's writes that the store has not finished yet, oldest first, and how many
    points they hold: what a session waits for before a get, and bounds by
    :data:`MAX_UNSTORED_POINTS`. (The Graphite port's session keeps one too.)"""

    __slots__ = ("_writes", "points")

    def __init__(self) -> None:
        self._writes: deque[tuple[Future[None], int]] = deque()
        self.points = 0
        """How many points the writes hold."""

    def add(self, written: Future[None], count: int) -> None:
        """Count a write of ``count`` points, unless the store has finished it already."""
        if not written.done():
            self._writes.append((written, count))
            self.points += count

    def forget_stored(self) -> None:
        """Drop the writes the store has finished, oldest first."""
        writes = self._writes
        while writes and writes[0][0].done():
            self.points -= writes.popleft()[1]

    @property
    def oldest(self) -> Future[None] | None:
        """The oldest write not known to be finished (call :meth:`forget_stored` first)."""
        return self._writes[0][0] if self._writes else None


def _put_answers(written: Future[None], count: int) -> _Answer:
    """The answers to ``count`` puts that were written together: ok each, or error each."""
    while not written.done():
        yield written
    failure = written.exception()
    if failure is None:
        yield OK_ANSWER * count
    else:
        _UNSTORED.add(count, one_line(failure))
        yield STORE_ERROR_ANSWER * count


def _unreadable(key: str | None, failure: Exception) -> bytes:
    """The answer to a get whose store failed before its first byte went out, logged."""
    logger.warning("the store failed to read %r: %s", key, failure)
    return STORE_ERROR_ANSWER


def _get_answer(key: str | None, pieces: Snapshot) -> _Answer:
    """A big get's answer, encoded one piece of its snapshot at a time.

    ``ok`` goes out with the first piece, so a store that fails before it still gets an
    honest ``error`` answer. One that fails after it cannot: the answer is half sent, and
    the exception ends the connection, the only signal left.
    """
    status = b"ok\n"  # until it has gone out with the first piece
    try:
        for piece in pieces:
            if isinstance(piece, Future):
                while not piece.done():
                    yield piece
            else:
                yield status + encode_series_lines(*piece)
                status = b""
    except Exception as exc:
        if not status:
            raise
        yield _unreadable(key, exc)
        return
    yield status + b"\n"
