"""Graphite's plaintext protocol, for real agents: ``path value timestamp`` lines in, no reply.

collectd (its write_graphite plugin), Telegraf (outputs.graphite) and most other agents send
metrics this way: one point per line over TCP, and the receiver never answers.
``metrics-lab serve --graphite-port 2003`` (or ``MetricsServer(graphite_port=...)``) takes
them on a second port, into the same store, so they read back with ``get`` like any put.

A line is read as carbon, Graphite's own receiver, reads it:

- fields are split by runs of whitespace (a ``\\r`` before the ``\\n`` is whitespace too);
  a blank line is skipped;
- exactly three fields: the path, the value, the timestamp;
- the path is the key, and must be one that the main protocol's ``put`` accepts
  (``PROTOCOL.md``: UTF-8, printable, not ``*``);
- the value is a number as Python's ``float()`` reads it; ``nan`` is skipped without a word,
  as carbon skips it (agents send it for "no reading yet"), and infinities are refused;
- the timestamp is an integer or a float of Unix seconds, truncated toward zero to whole
  seconds (``1796514933.9`` is ``1796514933``); ``-1`` means "now", as carbon has it; it must
  fit in 64 bits.

Any other line is refused: counted, logged (one line per 10 s at most, with the count and
the latest example), and the connection goes on. A line over ``max_line`` bytes ends the
connection, as on the main port but without an answer, once the points before it are stored.

The layers, as for the main protocol: :class:`GraphiteReader` turns bytes into points and
refused lines, with no I/O; :class:`GraphiteSession` is one connection's conversation, with
the same interface as :class:`~metrics_lab.session.ServerSession`
(:class:`~metrics_lab.session.Session`), so the server's connection class moves its bytes and
applies the same flow control, connection limit, line timeout and idle timeout;
:class:`GraphiteIngest` is what a server's Graphite connections share.

>>> reader = GraphiteReader()
>>> received = reader.receive_data(b"web1.load 0.5 1796514933.7\\nweb1.mem x 1796514933\\nweb1")
>>> list(received.points)
[('web1.load', 1796514933, 0.5)]
>>> received.refused
(RefusedLine(line=b'web1.mem x 1796514933', reason="value b'x' is not a number"),)
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Final

from metrics_lab.logs import LogSummary
from metrics_lab.protocol import (
    DEFAULT_MAX_LINE,
    INT64_MAX,
    INT64_MIN,
    LineReader,
    WrongCommandError,
    parse_key,
)
from metrics_lab.session import ANSWER_BATCH, MAX_UNSTORED_POINTS, UnstoredWrites
from metrics_lab.storage import STORED, PointBatch, Storage, one_line

__all__ = [
    "GraphiteIngest",
    "GraphiteLineError",
    "GraphiteReader",
    "GraphiteSession",
    "Received",
    "RefusedLine",
    "parse_graphite_line",
]

logger = logging.getLogger("metrics_lab.graphite")

NOW: Final = -1
"""The timestamp that carbon reads as "the time the line arrived"."""

LINE_PREVIEW: Final = 200
"""How many bytes of a refused line are kept for the log."""


class GraphiteLineError(ValueError):
    """A line that is not ``path value timestamp`` as carbon reads it; the message says why."""


def parse_graphite_line(
    line: bytes, clock: Callable[[], float] = time.time
) -> tuple[str, float, int] | None:
    """Read one plaintext line (without its ``\\n``) as ``(key, value, timestamp)``.

    ``None`` for a line to skip (blank, or a ``nan`` value); :class:`GraphiteLineError` for a
    line to refuse. ``clock`` gives the time that a ``-1`` timestamp stands for.

    >>> parse_graphite_line(b"collectd.web1.load.load.shortterm 0.49 1796514933\\r")
    ('collectd.web1.load.load.shortterm', 0.49, 1796514933)
    >>> parse_graphite_line(b"web1.load 0.5 1796514933.99")
    ('web1.load', 0.5, 1796514933)
    """
    fields = line.split()
    if not fields:
        return None
    if len(fields) != 3:
        raise GraphiteLineError(f"{len(fields)} field(s), not 3 (path value timestamp)")
    path, value_text, timestamp_text = fields
    try:
        key = parse_key(path)
    except WrongCommandError as exc:
        raise GraphiteLineError(f"path: {exc}") from None
    try:
        value = float(value_text)
    except ValueError:
        raise GraphiteLineError(f"value {value_text[:32]!r} is not a number") from None
    if math.isnan(value):
        return None
    if math.isinf(value):
        raise GraphiteLineError(f"value {value_text[:32]!r} is not finite")
    timestamp = _parse_timestamp(timestamp_text)
    if timestamp == NOW:
        timestamp = int(clock())
    return key, value, timestamp


def _parse_timestamp(text: bytes) -> int:
    try:
        timestamp = int(text)  # exact for integers of any size, which float() would round
    except ValueError:
        try:
            seconds = float(text)
        except ValueError:
            raise GraphiteLineError(f"timestamp {text[:32]!r} is not a number") from None
        if not math.isfinite(seconds):
            raise GraphiteLineError(f"timestamp {text[:32]!r} is not finite") from None
        timestamp = int(seconds)  # toward zero, as carbon's int() truncates
    if not INT64_MIN <= timestamp <= INT64_MAX:
        raise GraphiteLineError(f"timestamp {text[:32]!r} does not fit in 64 bits")
    return timestamp


@dataclass(frozen=True, slots=True)
class RefusedLine:
    """A line that could not be read: its first :data:`LINE_PREVIEW` bytes, and why."""

    line: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class Received:
    """What some bytes completed: the points read, in order, and the lines refused."""

    points: PointBatch
    refused: tuple[RefusedLine, ...]


class GraphiteReader:
    """Splits a plaintext stream into points, however the stream was cut into chunks.

    Sans-IO: :meth:`receive_data` takes bytes and returns what the lines they complete hold;
    an unfinished line waits for the next chunk. A line over ``max_line`` bytes sets
    :attr:`too_long`, and nothing more is read (the lines before it still count).
    """

    def __init__(
        self, max_line: int = DEFAULT_MAX_LINE, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._lines = LineReader(max_line)
        self._clock = clock

    def receive_data(self, data: bytes) -> Received:
        """Add ``data``; return the points and refused lines of the lines it completes."""
        keys: list[str] = []
        values: list[float] = []
        timestamps: list[int] = []
        refused: list[RefusedLine] = []
        for line in self._lines.receive_data(data):
            try:
                point = parse_graphite_line(line, self._clock)
            except GraphiteLineError as exc:
                refused.append(RefusedLine(line[:LINE_PREVIEW], str(exc)))
                continue
            if point is not None:
                keys.append(point[0])
                values.append(point[1])
                timestamps.append(point[2])
        return Received(PointBatch(keys, timestamps, values), tuple(refused))

    @property
    def too_long(self) -> bool:
        """Whether a line ran over ``max_line`` bytes: the stream is not read any further."""
        return self._lines.too_long

    @property
    def max_line(self) -> int:
        """The longest line read, in bytes."""
        return self._lines.max_line

    @property
    def pending(self) -> int:
        """How many bytes of an unfinished line are buffered."""
        return self._lines.pending


class GraphiteIngest:
    """What a server's Graphite connections share: the store, the line limit, and the counts
    and rate-limited log lines of what was refused.

    :attr:`refused_lines` counts lines that could not be read (``.total``); :attr:`unstored`
    counts points that the store refused (a full disk, a database down).
    """

    def __init__(
        self,
        store: Storage,
        *,
        max_line: int = DEFAULT_MAX_LINE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.max_line = max_line
        self.clock = clock
        self.refused_lines = LogSummary(
            logger, "Graphite: refused {count} line(s); the last: {example}"
        )
        self.unstored = LogSummary(
            logger,
            "Graphite: the store failed to take {count} point(s) from {events} batch(es); "
            "the last failure: {example}",
        )

    def session(self) -> GraphiteSession:
        """A new connection's session."""
        return GraphiteSession(self)

    def refuse(self, refused: RefusedLine) -> None:
        """Count and (rate-limited) log a line that could not be read."""
        self.refused_lines.add(1, f"{refused.line!r} ({refused.reason})")

    def watch(self, written: Future[None], count: int) -> None:
        """Count the ``count`` points of ``written`` if the store refuses them."""
        if written.done():
            self._check(written, count)
        else:  # done in the store's thread: LogSummary is thread-safe
            written.add_done_callback(lambda done: self._check(done, count))

    def _check(self, written: Future[None], count: int) -> None:
        failure = written.exception()
        if failure is not None:
            self.unstored.add(count, one_line(failure))

    def close(self) -> None:
        """Log what is counted and not yet logged (the server stops)."""
        self.refused_lines.close()
        self.unstored.close()


class GraphiteSession:
    """One Graphite connection, without sockets: bytes in, points to the store, nothing out.

    A :class:`~metrics_lab.session.Session`, as :class:`~metrics_lab.session.ServerSession`
    is, so the server drives it with the same connection class. While
    :data:`MAX_UNSTORED_POINTS` of its points wait for the store, it wants no more data (the
    server stops reading from the agent, whose socket buffers then hold the rest); once the
    peer is done, it is finished when the store has answered for all of its points.
    """

    def __init__(self, ingest: GraphiteIngest) -> None:
        self._ingest = ingest
        self._reader = GraphiteReader(ingest.max_line, clock=ingest.clock)
        self._unstored = UnstoredWrites()
        self._ended = False

    def receive_data(self, data: bytes) -> None:
        """Take bytes from the peer, cut anywhere; ``b""`` means the peer sends no more."""
        if not data:
            self._ended = True
            return
        if self._ended:
            return
        received = self._reader.receive_data(data)
        for refused in received.refused:
            self._ingest.refuse(refused)
        points = received.points
        if points.keys:
            written = self._ingest.store.write(points)
            if written is not STORED:
                self._ingest.watch(written, len(points))
                self._unstored.add(written, len(points))
        if self._reader.too_long:
            reason = f"a line over {self._reader.max_line} bytes; closing the connection"
            self._ingest.refuse(RefusedLine(b"", reason))
            self._ended = True

    def data_to_send(self, limit: int = ANSWER_BATCH) -> bytes:
        """Always ``b""``: the plaintext protocol never answers. (It forgets finished writes.)"""
        self._unstored.forget_stored()
        return b""

    def run_held_requests(self) -> bool:
        """Always ``False``: each line is taken as it comes, none is ever held back."""
        return False

    @property
    def waiting_for(self) -> Future[None] | None:
        """The store's future to be woken by: the oldest pending write, while the session
        waits for it (too many points pending, or the peer is done); else ``None``."""
        if self._ended or self._unstored.points >= MAX_UNSTORED_POINTS:
            return self._unstored.oldest
        return None

    @property
    def wants_data(self) -> bool:
        """Whether more bytes are welcome: the peer may send, and the store keeps up."""
        return not self._ended and self._unstored.points < MAX_UNSTORED_POINTS

    @property
    def finished(self) -> bool:
        """Whether the connection may close: the peer is done and every write is answered."""
        return self._ended and self._unstored.oldest is None

    @property
    def partial_line(self) -> int:
        """How many bytes of an unfinished line are buffered (the server's line timeout)."""
        return self._reader.pending
