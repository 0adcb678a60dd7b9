"""The client's side of the wire: calls in, request bytes out; answer bytes in, results out.

>>> encode_put("cpu", 0.5, 1)
b'put cpu 0.5 1\\n'
>>> answers = AnswerReader()
>>> answers.receive_data(b"ok\\n\\n")
>>> answers.next_answer()
Answer(status='ok', lines=())
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from enum import Enum
from typing import Final

from metrics_lab.protocol.wire_format import (
    ALL_KEYS,
    DEFAULT_MAX_ANSWER_SIZE,
    FLOAT_LITERAL,
    INT64_MAX,
    INT64_MIN,
    OK_ANSWER,
    Answer,
)
from metrics_lab.storage import GetResult

__all__ = [
    "NEED_DATA",
    "AnswerReader",
    "MalformedAnswerError",
    "NeedData",
    "ProtocolError",
    "RefusedRequestError",
    "StreamEndedError",
    "UnsendableRequestError",
    "check_put_answer",
    "encode_get",
    "encode_put",
    "encode_puts",
    "parse_get_answer",
]


class ProtocolError(Exception):
    """A step of the client's side of the protocol failed; no I/O was involved.

    The sans-IO layer raises only these. The clients turn each into the matching
    :class:`~metrics_lab.errors.ClientError`, with the same message, where they do I/O::

        ProtocolError
        ├── UnsendableRequestError   -> InvalidRequestError
        ├── RefusedRequestError      -> RequestRejectedError
        ├── MalformedAnswerError     -> RemoteProtocolError
        └── StreamEndedError         -> ClientConnectionError
    """


class UnsendableRequestError(ProtocolError, ValueError):
    """A call's arguments cannot go on the wire (a key with spaces, a ``nan`` value, ...)."""


class RefusedRequestError(ProtocolError):
    """The server answered ``error``; ``detail`` is its explanation (may be empty)."""

    def __init__(self, message: str, detail: str) -> None:
        super().__init__(message)
        self.detail = detail


class MalformedAnswerError(ProtocolError):
    """The server's bytes are not a valid answer (or one over ``max_answer_size``)."""


class StreamEndedError(ProtocolError):
    """The server closed the connection before the answer ended."""


_OK_RUN: Final = OK_ANSWER * 65536
"""Bare ``ok`` answers back to back: what :meth:`AnswerReader.skip_ok_answers` compares with."""


def encode_put(key: str, value: float, timestamp: int) -> bytes:
    """Encode ``put <key> <value> <timestamp>\\n``, refusing what would break the wire.

    The value goes out as ``str(value)`` when that is a plain number (``301`` stays ``301``),
    otherwise as ``repr(float(value))``. Raises :class:`UnsendableRequestError` for an empty key,
    a key with whitespace or ``*``, a value that is not a finite number, or a timestamp that is
    not an integer in 64 bits.

    >>> encode_put("load", 301, 3)
    b'put load 301 3\\n'
    """
    _check_key(key, allow_all=False)
    return f"put {key} {_value_text(value)} {_timestamp_text(timestamp)}\n".encode()


# Keys that encode_put has accepted, so a batch to the same keys checks each key once.
# Bounded: a batch inventing keys without end only makes the cache restart.
_SENDABLE_KEYS: set[str] = set()
_SENDABLE_KEYS_LIMIT: Final = 1 << 16


def encode_puts(points: Iterable[tuple[str, float, int | None]], now: int) -> bytes:
    """Encode many puts as one block: the same bytes as joining :func:`encode_put` of each.

    ``points`` are ``(key, value, timestamp)``; a ``None`` timestamp is written as ``now``.
    Raises :class:`UnsendableRequestError` as :func:`encode_put` does, for the first point that
    cannot go on the wire. The common point (a known key, a ``float`` or an ``int`` value, an
    ``int`` timestamp) skips the general checks; any other point takes them.

    >>> encode_puts([("cpu", 0.5, 1), ("cpu", 2, None)], now=7)
    b'put cpu 0.5 1\\nput cpu 2 7\\n'
    """
    known = _SENDABLE_KEYS
    parts: list[str] = []
    append = parts.append
    for key, value, timestamp in points:
        if timestamp is None:
            timestamp = now
        if (
            type(key) is str
            and key in known
            and (
                (type(value) is float and math.isfinite(value))
                or (type(value) is int and INT64_MIN <= value <= INT64_MAX)
            )
            and type(timestamp) is int
            and INT64_MIN <= timestamp <= INT64_MAX
        ):
            append(f"put {key} {value} {timestamp}\n")  # str(float) is repr(float)
            continue
        append(encode_put(key, value, timestamp).decode())
        if type(key) is str:
            if len(known) > _SENDABLE_KEYS_LIMIT:
                known.clear()
            known.add(key)
    return "".join(parts).encode()


def encode_get(key: str) -> bytes:
    """Encode ``get <key>\\n``; ``key`` may be ``"*"`` for every key.

    >>> encode_get("*")
    b'get *\\n'
    """
    _check_key(key, allow_all=True)
    return f"get {key}\n".encode()


def _check_key(key: object, *, allow_all: bool) -> None:
    if not isinstance(key, str):
        raise UnsendableRequestError(f"a key must be a str, not {type(key).__name__}: {key!r}")
    if not key:
        raise UnsendableRequestError("a key cannot be empty")
    if " " in key or not key.isprintable():
        raise UnsendableRequestError(
            f"key {key!r} contains whitespace or a control character; "
            "use a name like 'host1.cpu' (no spaces, tabs or newlines)"
        )
    if key == ALL_KEYS and not allow_all:
        raise UnsendableRequestError("'*' means 'all keys' in get; it cannot be stored as a key")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsendableRequestError(f"key {key!r} cannot be encoded as UTF-8") from None


def _value_text(value: object) -> str:
    if isinstance(value, bool) or not hasattr(value, "__float__"):
        raise UnsendableRequestError(
            f"a value must be a number, not {type(value).__name__} {value!r}"
        )
    text = str(value)
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise UnsendableRequestError(f"value {value!r} is not a number") from None
    if not math.isfinite(number):
        raise UnsendableRequestError(
            f"value {value!r} is not finite; only finite numbers can be sent"
        )
    if FLOAT_LITERAL.fullmatch(text.encode("ascii", "replace")) is None:
        text = repr(number)  # Decimal('1.5') or numpy scalars print differently
    return text


def _timestamp_text(timestamp: object) -> str:
    if isinstance(timestamp, bool) or not isinstance(timestamp, int):
        hint = " (use int(time.time()))" if isinstance(timestamp, float) else ""
        raise UnsendableRequestError(
            "a timestamp must be an int of Unix seconds, "
            f"not {type(timestamp).__name__} {timestamp!r}{hint}"
        )
    if not INT64_MIN <= timestamp <= INT64_MAX:
        raise UnsendableRequestError(
            f"timestamp {timestamp} does not fit in a signed 64-bit integer"
        )
    return str(timestamp)


class NeedData(Enum):
    """The type of :data:`NEED_DATA`."""

    NEED_DATA = "NEED_DATA"


NEED_DATA: Final = NeedData.NEED_DATA
"""Returned by :meth:`AnswerReader.next_answer` while no complete answer is buffered."""


class AnswerReader:
    """Collects answers from a byte stream cut into chunks of any size.

    An answer ends at the first ``\\n\\n`` (data lines are never empty); bytes after it
    belong to the next answer and are kept. ``receive_data(b"")`` means the stream ended.
    An answer's size counts every byte from its status line to its final ``\\n\\n``; one
    over ``max_answer_size`` is refused, however the stream was cut into chunks.

    >>> reader = AnswerReader()
    >>> reader.receive_data(b"ok\\ncpu 0.5 1\\n")
    >>> reader.next_answer()
    <NeedData.NEED_DATA: 'NEED_DATA'>
    >>> reader.receive_data(b"\\nok\\n\\n")
    >>> reader.next_answer()
    Answer(status='ok', lines=('cpu 0.5 1',))
    >>> reader.next_answer()
    Answer(status='ok', lines=())
    """

    __slots__ = ("_buffer", "_ended", "_scanned", "max_answer_size")

    def __init__(self, max_answer_size: int = DEFAULT_MAX_ANSWER_SIZE) -> None:
        self.max_answer_size = max_answer_size
        self._buffer = bytearray()
        self._scanned = 0  # the buffer holds no "\n\n" before this offset
        self._ended = False

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the server; ``b""`` means the server closed the connection."""
        if data:
            self._buffer += data
        else:
            self._ended = True

    def next_answer(self) -> Answer | NeedData:
        """Return the next complete answer, or ``NEED_DATA`` if more bytes are needed.

        Raises :class:`MalformedAnswerError` if the bytes cannot be an answer or the answer grows
        past ``max_answer_size``, and :class:`StreamEndedError` if the stream ended
        before the answer did.
        """
        end = self._buffer.find(b"\n\n", self._scanned)
        if end < 0:
            self._check_partial()
            return NEED_DATA
        if end + 2 > self.max_answer_size:
            self._check_head()
            raise MalformedAnswerError(
                f"the server's answer is {end + 2} bytes, over {self.max_answer_size} bytes "
                "(the client's max_answer_size)"
            )
        raw = bytes(self._buffer[:end])
        del self._buffer[: end + 2]
        self._scanned = 0
        return _parse_answer(raw)

    def skip_ok_answers(self, limit: int) -> int:
        """Consume up to ``limit`` bare ``ok`` answers at the head of the buffer; say how many.

        What a batch of puts reads: the same answers as that many :meth:`next_answer` calls
        returning ``Answer("ok", ())``, checked in a few C calls instead of one Python call
        each. It stops at the first other answer (or partial one), for :meth:`next_answer`.
        """
        if self.max_answer_size < len(OK_ANSWER):
            return 0  # even "ok\n\n" is over the limit: next_answer says so
        count = min(limit, len(self._buffer) // len(OK_ANSWER), len(_OK_RUN) // len(OK_ANSWER))
        if count and not self._buffer.startswith(_OK_RUN[: count * len(OK_ANSWER)]):
            low, high = 0, count  # the longest run of bare oks: a prefix, so halve it
            while low < high:
                middle = (low + high + 1) // 2
                if self._buffer.startswith(_OK_RUN[: middle * len(OK_ANSWER)]):
                    low = middle
                else:
                    high = middle - 1
            count = low
        if count:
            del self._buffer[: count * len(OK_ANSWER)]
            self._scanned = 0
        return count

    @property
    def buffered(self) -> int:
        """How many received bytes are not yet part of a returned answer."""
        return len(self._buffer)

    def _check_head(self) -> None:
        # Fail on the first bytes that cannot begin "ok\n" or "error\n", rather than buffer
        # a stranger's flood up to max_answer_size.
        head = bytes(self._buffer[:6])
        if not (b"ok\n".startswith(head[:3]) or b"error\n".startswith(head)):
            raise MalformedAnswerError(_not_an_answer(self._buffer))

    def _check_partial(self) -> None:
        self._scanned = max(0, len(self._buffer) - 1)
        self._check_head()
        # No "\n\n" in max_answer_size bytes: the answer, once ended, would be over the limit.
        if len(self._buffer) >= self.max_answer_size:
            raise MalformedAnswerError(
                f"the server's answer runs over {self.max_answer_size} bytes without ending "
                "(the client's max_answer_size)"
            )
        if self._ended:
            if self._buffer:
                raise StreamEndedError(
                    "the server closed the connection in the middle of an answer "
                    f"(after {len(self._buffer)} bytes of it): {_preview(self._buffer)}"
                )
            raise StreamEndedError("the server closed the connection before answering")


def _parse_answer(raw: bytes) -> Answer:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedAnswerError(f"the server's answer is not UTF-8: {_preview(raw)}") from None
    status, *lines = text.split("\n")
    if status == "ok":
        return Answer("ok", tuple(lines))
    if status == "error":
        return Answer("error", tuple(lines))
    raise MalformedAnswerError(_not_an_answer(raw))


def _not_an_answer(raw: bytes | bytearray) -> str:
    return f"the server's answer starts with {_preview(raw)}, not 'ok' or 'error'"


def _preview(raw: bytes | bytearray, limit: int = 60) -> str:
    shown = bytes(raw[:limit])
    return repr(shown) + ("..." if len(raw) > limit else "")


def _raise_for_error(answer: Answer, request: str) -> None:
    if answer.status == "error":
        detail = " ".join(answer.lines)
        raise RefusedRequestError(f"the server refused {request!r}: {detail or 'error'}", detail)


def check_put_answer(answer: Answer, request: str = "put") -> None:
    """Accept the answer to a ``put`` (``ok`` and no data) or raise a :class:`ProtocolError`."""
    _raise_for_error(answer, request)
    if answer.lines:
        raise MalformedAnswerError(
            f"the answer to {request!r} has data lines: {answer.lines[:3]!r}"
        )


def parse_get_answer(answer: Answer, request: str = "get") -> GetResult:
    """Turn the answer to a ``get`` into ``{key: [(timestamp, value), ...]}``.

    Each key's list is sorted by timestamp. Raises :class:`RefusedRequestError` for an
    ``error`` answer and :class:`MalformedAnswerError` for a data line that is not
    ``<key> <value> <timestamp>``.

    >>> parse_get_answer(Answer("ok", ("cpu 0.4 2", "cpu 0.5 1")))
    {'cpu': [(1, 0.5), (2, 0.4)]}
    """
    _raise_for_error(answer, request)
    points: GetResult = {}
    for line in answer.lines:
        try:
            key, value, timestamp = line.split()
            point = (int(timestamp), float(value))
        except ValueError:
            raise MalformedAnswerError(
                f"the answer to {request!r} has a line that is not "
                f"'<key> <value> <timestamp>': {line[:80]!r}"
            ) from None
        series = points.get(key)
        if series is None:
            points[key] = [point]
        else:
            series.append(point)
    for series in points.values():
        series.sort(key=_timestamp_of)
    return points


def _timestamp_of(point: tuple[int, float]) -> int:
    return point[0]
