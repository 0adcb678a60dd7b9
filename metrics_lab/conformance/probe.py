"""A raw, bounded TCP conversation with a server that may be broken or hostile.

Unlike :class:`~metrics_lab.Client`, a :class:`Probe` understands nothing of the protocol
beyond "an answer ends with an empty line": it sends exact bytes and hands back exact bytes,
so the checks can compare them with the literal bytes of ``docs/PROTOCOL.md``. Every read
stops at a deadline and at a size bound, whatever the server does (stays silent, floods
bytes, closes).
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Literal, Self

__all__ = ["DEFAULT_MAX_ANSWER", "Probe", "Reading"]

DEFAULT_MAX_ANSWER: Final = 1024 * 1024
"""Bytes a probe reads for one request's answers before it calls the server a flood."""

_RECV_SIZE: Final = 65536

Ending = Literal["complete", "timeout", "closed", "reset", "too big"]


@dataclass(frozen=True, slots=True)
class Reading:
    """The bytes a read collected and why it stopped.

    ``ending`` is ``"complete"`` when the wanted number of answers arrived, otherwise what
    stopped the read: the deadline, the server closing (or resetting) the connection, or the
    size bound.
    """

    data: bytes
    ending: Ending

    @property
    def complete(self) -> bool:
        """Whether all the wanted answers arrived."""
        return self.ending == "complete"

    def describe(self) -> str:
        """Why the read stopped, as the end of a sentence ("then the server closed ...")."""
        return {
            "complete": "",
            "timeout": "no complete answer before the timeout",
            "closed": "the server closed the connection",
            "reset": "the server reset the connection",
            "too big": "the server sent more bytes than any right answer has",
        }[self.ending]


class Probe:
    """One TCP connection to the server under test, with a timeout on every operation.

    ``timeout`` bounds each connect, send and read (a read of several answers shares one
    deadline); ``max_answer`` bounds the bytes one read collects.
    """

    def __init__(
        self, host: str, port: int, timeout: float, max_answer: int = DEFAULT_MAX_ANSWER
    ) -> None:
        self.timeout = timeout
        self.max_answer = max_answer
        self._sock = socket.create_connection((host, port), timeout)
        # Each send must leave as its own segment, or the split-request checks prove nothing.
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._pending = b""  # received bytes not yet returned by a read
        self.heard = False
        """Whether the server sent any byte on this connection."""
        self.waited_out = False
        """Whether a read for an answer ended at its deadline."""

    def send(self, data: bytes) -> None:
        """Send all of ``data`` (raises ``OSError`` if the server is gone or not reading)."""
        self._sock.settimeout(self.timeout)
        self._sock.sendall(data)

    def read_answers(self, count: int = 1, *, max_bytes: int | None = None) -> Reading:
        """Read until ``count`` answers (``count`` empty-line endings) have arrived.

        Returns everything received up to the point where the ``count``-th answer ends; any
        bytes after it are kept for the next read. Stops early at the deadline
        (``timeout`` from now), when the server closes, or after ``max_bytes``
        (``max_answer`` by default).
        """
        limit = self.max_answer if max_bytes is None else max_bytes
        deadline = time.monotonic() + self.timeout
        data = bytearray(self._pending)
        self._pending = b""
        found, scanned = 0, 0  # answers ended so far; where to search for the next "\n\n"
        while True:
            while found < count:
                end = data.find(b"\n\n", scanned)
                if end < 0:
                    scanned = max(scanned, len(data) - 1)
                    break
                found, scanned = found + 1, end + 2
            if found == count:
                self._pending = bytes(data[scanned:])
                return Reading(bytes(data[:scanned]), "complete")
            if len(data) > limit:
                return Reading(bytes(data), "too big")
            stopped = self._receive_more(data, deadline)
            if stopped is not None:
                return stopped

    def read_nothing(self, wait: float) -> bytes:
        """Wait ``wait`` seconds for bytes that should not come; return any that did."""
        self._sock.settimeout(wait)
        try:
            chunk = self._sock.recv(_RECV_SIZE)
        except (TimeoutError, OSError):
            return b""
        self.heard = self.heard or bool(chunk)
        self._pending += chunk
        return chunk

    def closed_by_peer(self) -> Reading:
        """Wait (up to the timeout) for the server to close; ``ending`` says if it did."""
        deadline = time.monotonic() + self.timeout
        data = bytearray()
        while len(data) <= self.max_answer:
            stopped = self._receive_more(data, deadline)
            if stopped is not None:
                return stopped
        return Reading(bytes(data), "too big")

    def _receive_more(self, data: bytearray, deadline: float) -> Reading | None:
        """Add one received chunk to ``data``; return the Reading that ends the wait, if any."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            self.waited_out = True
            return Reading(bytes(data), "timeout")
        self._sock.settimeout(remaining)
        try:
            chunk = self._sock.recv(_RECV_SIZE)
        except TimeoutError:
            self.waited_out = True
            return Reading(bytes(data), "timeout")
        except OSError:
            return Reading(bytes(data), "reset")
        if not chunk:
            return Reading(bytes(data), "closed")
        self.heard = True
        data += chunk
        return None

    def close(self) -> None:
        """Close the connection (safe to call twice)."""
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
