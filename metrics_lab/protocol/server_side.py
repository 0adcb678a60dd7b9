"""The server's side of the wire: request lines in, requests out; points in, answer lines out.

>>> reader = LineReader()
>>> [parse_request(line) for line in reader.receive_data(b"put cpu 0.5 1\\nget cpu\\n")]
[PutRequest(key='cpu', value=0.5, timestamp=1), GetRequest(key='cpu')]
>>> encode_points_answer([("palm.cpu", [1501864247], [10.5])])
b'ok\\npalm.cpu 10.5 1501864247\\n\\n'
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from itertools import starmap

from metrics_lab.protocol.wire_format import (
    ALL_KEYS,
    DEFAULT_MAX_LINE,
    FLOAT_LITERAL,
    INT64_MAX,
    INT64_MIN,
    INT_LITERAL,
    GetRequest,
    PutRequest,
    Request,
)
from metrics_lab.storage import PointBatch

__all__ = [
    "Item",
    "LineReader",
    "SimpleParser",
    "WrongCommandError",
    "encode_points_answer",
    "encode_series_lines",
    "parse_key",
    "parse_request",
]


class WrongCommandError(ValueError):
    """A request line that the protocol does not allow; the server answers ``ERROR_ANSWER``."""


def parse_request(line: bytes) -> Request | None:
    """Parse one request line (without its ``\\n``) into a request.

    Returns ``None`` for a line that is empty or spaces only: it is not a request and gets no
    answer. Raises :class:`WrongCommandError` for anything else the protocol does not allow.

    >>> parse_request(b"get *")
    GetRequest(key='*')
    >>> parse_request(b"   ") is None
    True
    >>> parse_request(b"PUT cpu 1 2")
    Traceback (most recent call last):
    ...
    metrics_lab.protocol.server_side.WrongCommandError: unknown command b'PUT'
    """
    fields = line.removesuffix(b"\r").split(b" ")
    if b"" in fields:  # runs of spaces count as one separator
        fields = [field for field in fields if field]
    match fields:
        case [b"put", key, value, timestamp]:
            return PutRequest(parse_key(key), _parse_value(value), _parse_timestamp(timestamp))
        case [b"get", key]:
            # A get key that no put could have stored (bad UTF-8, say) simply matches nothing.
            return GetRequest(key.decode("utf-8", "surrogateescape"))
        case []:
            return None
        case [b"put", *rest]:
            raise WrongCommandError(f"put takes 3 fields, got {len(rest)}")
        case [b"get", *rest]:
            raise WrongCommandError(f"get takes 1 field, got {len(rest)}")
        case _:
            raise WrongCommandError(f"unknown command {fields[0][:32]!r}")


Item = Request | PointBatch | WrongCommandError
"""One thing to answer: a request, a batch of puts (the fast path's), or a wrong command."""


class SimpleParser:
    """Turns a block of complete lines into requests, one line at a time, as PROTOCOL.md reads.

    >>> SimpleParser().parse(b"put a 1 2\\n\\nget\\n")
    [PutRequest(key='a', value=1.0, timestamp=2), WrongCommandError('get takes 1 field, got 0')]
    """

    def parse(self, block: bytes) -> list[Item]:
        """The requests in ``block`` (whole lines, each ended by ``\\n``), blank lines left out."""
        items: list[Item] = []
        for line in block.split(b"\n")[:-1]:
            try:
                if (request := parse_request(line)) is not None:  # a blank line gets no answer
                    items.append(request)
            except WrongCommandError as wrong:
                items.append(wrong)  # answered error, in its turn
        return items


def parse_key(raw: bytes) -> str:
    """Decode and check a put key; raise :class:`WrongCommandError` if it cannot be one."""
    try:
        key = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise WrongCommandError("key is not UTF-8") from None
    if not key or key == ALL_KEYS or not key.isprintable():
        raise WrongCommandError(f"{key!r} cannot be a key")
    return key


def _parse_value(raw: bytes) -> float:
    if FLOAT_LITERAL.fullmatch(raw) is None:
        raise WrongCommandError(f"value {raw[:32]!r} is not a number")
    value = float(raw)
    if not math.isfinite(value):
        raise WrongCommandError(f"value {raw[:32]!r} is not finite")
    return value


def _parse_timestamp(raw: bytes) -> int:
    if not raw.isdigit() and INT_LITERAL.fullmatch(raw) is None:
        raise WrongCommandError(f"timestamp {raw[:32]!r} is not an integer")
    try:
        timestamp = int(raw)
    except ValueError:  # more digits than int() agrees to read: far outside 64 bits anyway
        raise WrongCommandError("timestamp does not fit in 64 bits") from None
    if not INT64_MIN <= timestamp <= INT64_MAX:
        raise WrongCommandError("timestamp does not fit in 64 bits")
    return timestamp


class LineReader:
    """Splits a byte stream into request lines, however the stream was cut into chunks.

    ``receive_data`` returns the lines that a chunk completes and keeps the unfinished tail
    for the next chunk. A line longer than ``max_line`` bytes sets :attr:`too_long`: the lines
    before it are still returned, everything from it on is dropped, and the server answers
    ``ERROR_ANSWER`` and closes the connection, so a peer cannot make the buffer grow without
    bound.

    >>> reader = LineReader()
    >>> reader.receive_data(b"get a\\nget")
    [b'get a']
    >>> reader.receive_data(b" b\\n")
    [b'get b']
    """

    __slots__ = ("_buffer", "max_line", "too_long")

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        self.max_line = max_line
        self.too_long = False
        self._buffer = b""

    def receive_data(self, data: bytes) -> list[bytes]:
        """Add ``data`` and return the complete lines it finishes, without their ``\\n``."""
        block = self.receive_block(data)
        return block.split(b"\n")[:-1] if block else []

    def receive_block(self, data: bytes) -> bytes:
        """Add ``data`` and return the complete lines it finishes as one block.

        The block is ``b""`` or whole lines each ended by ``\\n``: the same lines as
        :meth:`receive_data` gives, not yet split, so a fast path can parse them all at once.
        """
        if self.too_long:
            return b""
        if data[-1:] == b"\n" and not self._buffer and len(data) <= self.max_line:
            return data  # the usual case: whole lines, and nothing left from the last chunk
        end = data.rfind(b"\n") + 1
        if not end:
            self._buffer += data
            if len(self._buffer) > self.max_line:
                self._overflow()
            return b""
        block = self._buffer + data[:end] if self._buffer else data[:end]
        self._buffer = data[end:]
        if len(self._buffer) > self.max_line:
            self._overflow()
        if len(block) > self.max_line and _may_hold_a_long_line(block, self.max_line):
            lines = block.split(b"\n")
            if max(map(len, lines)) > self.max_line:
                self._overflow()
                kept = next(i for i, line in enumerate(lines) if len(line) > self.max_line)
                return b"".join(line + b"\n" for line in lines[:kept])
        return block

    @property
    def pending(self) -> int:
        """How many bytes of an unfinished line are buffered."""
        return len(self._buffer)

    def _overflow(self) -> None:
        self.too_long = True
        self._buffer = b""


def _may_hold_a_long_line(block: bytes, max_line: int) -> bool:
    """``False`` if no line of ``block`` is longer than ``max_line`` bytes; ``True`` if one may be.

    A line of more than ``max_line`` bytes holds a whole window of ``max_line // 2`` bytes
    starting at a multiple of it, with no ``\\n`` in it. So one ``find`` per window, which stops
    at the window's first ``\\n``, rules out what splitting the block into lines (a bytes object
    per line, about 3,000 of them in 90 KiB of puts) would.
    """
    window = max_line // 2
    if not window:
        return True
    return any(
        block.find(b"\n", start, start + window) < 0
        for start in range(0, len(block) - window + 1, window)
    )


def encode_points_answer(series: Iterable[tuple[str, Sequence[int], Sequence[float]]]) -> bytes:
    """Encode the ``ok`` answer to a ``get``: one line per point, then the empty line.

    ``series`` yields ``(key, timestamps, values)`` in the order the lines should go out
    (keys ascending, timestamps ascending).
    """
    return b"".join([b"ok\n", *starmap(encode_series_lines, series), b"\n"])


def encode_series_lines(key: str, timestamps: Sequence[int], values: Sequence[float]) -> bytes:
    """Encode the data lines of one key's points: ``<key> <value> <timestamp>\\n`` each.

    Values are written as ``repr(float)``, the shortest text that reads back to the same float.

    >>> encode_series_lines("cpu", [1, 2], [0.5, 2.0])
    b'cpu 0.5 1\\ncpu 2.0 2\\n'
    """
    prefix = key + " "
    pairs = zip(timestamps, values, strict=True)
    return "".join([f"{prefix}{value!r} {timestamp}\n" for timestamp, value in pairs]).encode()
