"""The fast path: a parser that takes a whole block of puts in one go.

It replaces one step of :class:`~metrics_lab.session.ServerSession`, how a block of received
lines becomes requests, and nothing else. Where :class:`~metrics_lab.protocol.SimpleParser`
makes one :class:`~metrics_lab.protocol.PutRequest` per line, :class:`FastParser` turns a
block of nothing but valid puts into one :class:`~metrics_lab.storage.PointBatch`, checked
with a few C-speed passes over the whole block, which the session writes to the store at
once. Any block it is not sure of goes to the simple parser, line by line. The answers are
the same bytes either way (``tests/test_fast_path.py`` proves it on random streams); only
the time differs, which notebook 05 measures.

>>> parser = FastParser()
>>> parser.parse(b"put cpu 0.5 1\\nput cpu 0.25 2\\r\\n" * 4)[0]
PointBatch(keys=['cpu', 'cpu', 'cpu', 'cpu', 'cpu', 'cpu', 'cpu', 'cpu'], \
timestamps=[1, 2, 1, 2, 1, 2, 1, 2], values=[0.5, 0.25, 0.5, 0.25, 0.5, 0.25, 0.5, 0.25])
"""

from __future__ import annotations

import struct
from math import isfinite
from typing import Final

from metrics_lab.protocol import (
    INT64_MAX,
    INT64_MIN,
    Item,
    PointBatch,
    SimpleParser,
    WrongCommandError,
    parse_key,
)
from metrics_lab.storage import INT64_TYPECODE, round_robin_period

__all__ = ["KEY_CACHE_BYTES", "FastParser", "KeyCache"]

KEY_CACHE_BYTES: Final = 1 << 20
"""How many bytes of keys a :class:`KeyCache` holds before it starts over."""

# The characters of the protocol's number literals. Bytes made only of these that float() or
# int() accepts are exactly the grammar's literals (no "1_000", "inf", "nan", "0x10", spaces).
_VALUE_CHARACTERS: Final = b"0123456789.eE+-"
_TIMESTAMP_CHARACTERS: Final = b"0123456789+-"
# Fewer digits than this is below 10**18, inside 64 bits whatever they are.
_SAFE_TIMESTAMP_DIGITS: Final = 19
# Every byte that bytes.split() does not split on, and the whitespace of one put line.
_NOT_WHITESPACE: Final = bytes(byte for byte in range(256) if not bytes([byte]).isspace())
_LINE_SEPARATORS: Final = b"   \n"


class KeyCache(dict[bytes, str]):
    """Keys already checked, raw bytes to text, so a stream of puts to the same keys decodes
    and checks each key once. Bounded by the bytes it holds: a peer that invents keys
    without end only makes it start over. (A dict itself, so that a known key costs one
    ``get``: this is the hot path of every put.)"""

    def __init__(self, limit: int = KEY_CACHE_BYTES) -> None:
        super().__init__()
        self.limit = limit
        self.size = 0
        """About how many bytes of memory the remembered keys take."""

    def keys_of(self, raw_keys: list[bytes]) -> list[str] | None:
        """The keys for ``raw_keys``, or ``None`` if one of them cannot be a key."""
        try:
            return list(map(self.__getitem__, raw_keys))
        except KeyError:
            pass
        for raw in set(raw_keys).difference(self):
            if self.learn(raw) is None:
                return None
        return [self.get(raw) or parse_key(raw) for raw in raw_keys]

    def learn(self, raw: bytes) -> str | None:
        """Check a key not seen yet: its text, remembered; ``None`` if it cannot be a key."""
        try:
            key = parse_key(raw)
        except WrongCommandError:
            return None
        size = 2 * len(raw) + 100  # the raw bytes and the text both stay in memory
        if size <= self.limit:
            if self.size + size > self.limit:
                self.clear()
                self.size = 0
            self[raw] = key
            self.size += size
        return key


class FastParser(SimpleParser):
    """A :class:`~metrics_lab.protocol.SimpleParser` that parses blocks of puts at once.

    One per server: its :class:`KeyCache` is shared by the server's connections.
    """

    def __init__(self, key_cache: KeyCache | None = None) -> None:
        self.key_cache = KeyCache() if key_cache is None else key_cache

    def parse(self, block: bytes) -> list[Item]:
        """The same requests as :meth:`SimpleParser.parse`, a block of puts as one batch."""
        if block.find(b"\n") == len(block) - 1:  # one line
            batch = self.parse_put_line(block)
        else:
            batch = self.parse_put_block(block)
        return super().parse(block) if batch is None else [batch]

    def parse_put_line(self, line: bytes) -> PointBatch | None:
        """Parse one put line *with* its ``\\n``, or return ``None`` ("ask the simple parser").

        For the common shape only: single spaces, at most one ``\\r`` before the ``\\n``.

        >>> FastParser().parse_put_line(b"put cpu 0.5 1\\n")
        PointBatch(keys=('cpu',), timestamps=(1,), values=(0.5,))
        """
        try:
            command, raw_key, raw_value, raw_timestamp = line.split(b" ")
        except ValueError:  # not four fields
            return None
        if command != b"put" or raw_timestamp[-1:] != b"\n":
            return None
        raw_timestamp = raw_timestamp[:-1]
        if raw_timestamp.isdigit() and len(raw_timestamp) < _SAFE_TIMESTAMP_DIGITS:
            timestamp = int(raw_timestamp)  # the usual case: digits that fit 64 bits for sure
        else:
            if raw_timestamp[-1:] == b"\r":
                raw_timestamp = raw_timestamp[:-1]  # one \r before the \n is ignored
            if not raw_timestamp or raw_timestamp.translate(None, _TIMESTAMP_CHARACTERS):
                return None
            try:
                timestamp = int(raw_timestamp)
            except ValueError:  # "+-1", or more digits than int() agrees to read
                return None
            if not INT64_MIN <= timestamp <= INT64_MAX:
                return None
        if not raw_value or raw_value.translate(None, _VALUE_CHARACTERS):
            return None
        try:
            value = float(raw_value)
        except ValueError:  # "1.2.3", "+-1", "e5"
            return None
        if not isfinite(value):
            return None
        key = self.key_cache.get(raw_key) or self.key_cache.learn(raw_key)
        if key is None:
            return None
        return PointBatch((key,), (timestamp,), (value,))

    def parse_put_block(self, block: bytes) -> PointBatch | None:
        """Parse a block of whole lines that are all valid puts, in one pass; else ``None``.

        Every check below works on the whole block in C loops (split, count, translate, map)
        rather than on one line at a time in Python.

        >>> FastParser().parse_put_block(b"put cpu 0.5 1\\nget cpu\\n") is None
        True
        """
        if b"\r" in block:
            block = block.replace(b"\r\n", b"\n")  # one trailing \r per line is ignored
        fields = block.split()  # on any whitespace runs; the check below makes sure of the shape
        count = len(fields) // 4
        if not count or len(fields) != 4 * count:
            return None
        # The block's whitespace, in order, must be three spaces and a line end for each
        # line. Each run of split()'s fields ends at one whitespace character; with as many
        # fields as whitespace characters, none is doubled or leading, so each line is
        # exactly four fields with single spaces between them.
        if block.translate(None, _NOT_WHITESPACE) != _LINE_SEPARATORS * count:
            return None
        commands, raw_keys, raw_values, raw_timestamps = (fields[i::4] for i in range(4))
        if commands.count(b"put") != count:
            return None
        if b"".join(raw_values).translate(None, _VALUE_CHARACTERS):
            return None
        if b"".join(raw_timestamps).translate(None, _TIMESTAMP_CHARACTERS):
            return None
        try:
            values = list(map(float, raw_values))
            timestamps = list(map(int, raw_timestamps))
        except ValueError:  # "1.2.3", "+-1", "e5", or more digits than int() agrees to read
            return None
        # (A sum that overflows sends finite values to the simple path too: merely slower.)
        if not isfinite(sum(values)):
            return None
        try:  # one C pass that fails outside 64 bits, cheaper than min() and max()
            struct.pack(f"{count}{INT64_TYPECODE}", *timestamps)
        except struct.error:
            return None
        # Keys that come round in one order (the usual block) are looked up once a round:
        # comparing the block's keys to themselves shifted costs less than hashing each.
        period = round_robin_period(raw_keys)
        if period is None:
            keys = self.key_cache.keys_of(raw_keys)
        else:
            keys = self.key_cache.keys_of(raw_keys[:period])
            if keys is not None:
                keys = keys * (count // period) + keys[: count % period]
        if keys is None:
            return None
        return PointBatch(keys, timestamps, values)
