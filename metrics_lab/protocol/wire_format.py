"""The wire format both sides share: its constants, its requests and answers, its grammar.

What a request and an answer are, on the wire and as objects. The server side
(:mod:`metrics_lab.protocol.server_side`) and the client side
(:mod:`metrics_lab.protocol.client_side`) build on this module and on nothing of each other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "ALL_KEYS",
    "DEFAULT_MAX_ANSWER_SIZE",
    "DEFAULT_MAX_LINE",
    "ERROR_ANSWER",
    "FLOAT_LITERAL",
    "INT64_MAX",
    "INT64_MIN",
    "INT_LITERAL",
    "OK_ANSWER",
    "Answer",
    "GetRequest",
    "PutRequest",
    "Request",
]

ALL_KEYS: Final = "*"
"""The key that ``get`` reads as "every key"; it can never be stored."""

DEFAULT_MAX_LINE: Final = 64 * 1024
"""The longest request line a server accepts, in bytes, before it answers error and hangs up."""

DEFAULT_MAX_ANSWER_SIZE: Final = 1024**3
"""The largest answer a client reads before it gives up on the server (a ``get *`` of a
million points is about 30 MB, so this leaves room for thirty times that)."""

OK_ANSWER: Final = b"ok\n\n"
ERROR_ANSWER: Final = b"error\nwrong command\n\n"


INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
# Python's float() and int() also accept "1_000", " 1.5", "inf" and "nan"; the protocol does not.
FLOAT_LITERAL: Final = re.compile(rb"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
INT_LITERAL: Final = re.compile(rb"[+-]?[0-9]+")


@dataclass(frozen=True, slots=True)
class PutRequest:
    """``put <key> <value> <timestamp>``: store one point (replacing an equal timestamp's)."""

    key: str
    value: float
    timestamp: int


@dataclass(frozen=True, slots=True)
class GetRequest:
    """``get <key>``: read a key's points; ``key == ALL_KEYS`` reads every key."""

    key: str


Request = PutRequest | GetRequest


@dataclass(frozen=True, slots=True)
class Answer:
    """One answer: its status line and its data lines (without the final empty line)."""

    status: Literal["ok", "error"]
    lines: tuple[str, ...]
