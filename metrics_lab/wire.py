"""A record of what crossed the wire: every chunk a client sent and received, as bytes.

Give a client a :class:`WireLog` and it appends one :class:`WireEvent` per ``sendall`` and
per ``recv``. The notebooks show it as a table so a learner sees each byte of the protocol;
tests use it to assert exactly what went out.

>>> log = WireLog()
>>> log.record("sent", b"put cpu 0.5 1\\n")
>>> log.record("received", b"ok\\n\\n")
>>> print(log.transcript())
> put cpu 0.5 1\\n
< ok\\n\\n
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Direction", "WireEvent", "WireLog"]

Direction = Literal["sent", "received"]


@dataclass(frozen=True, slots=True)
class WireEvent:
    """One chunk of bytes and which way it went (seen from the client)."""

    direction: Direction
    data: bytes

    @property
    def text(self) -> str:
        """The bytes as one readable line: ``\\n`` and other control bytes shown escaped."""
        return repr(self.data)[2:-1]


@dataclass
class WireLog:
    """An append-only list of :class:`WireEvent`, in the order they happened."""

    events: list[WireEvent] = field(default_factory=list)

    def record(self, direction: Direction, data: bytes) -> None:
        """Append one event (clients call this; learners read :attr:`events`)."""
        self.events.append(WireEvent(direction, bytes(data)))

    def clear(self) -> None:
        """Forget what was recorded so far."""
        self.events.clear()

    def transcript(self) -> str:
        """Every event on a line: ``>`` for sent, ``<`` for received."""
        return "\n".join(f"{'>' if e.direction == 'sent' else '<'} {e.text}" for e in self.events)

    def __iter__(self) -> Iterator[WireEvent]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)
