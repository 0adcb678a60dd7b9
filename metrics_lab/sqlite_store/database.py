"""The database file: its tables, how numbers are packed into them, and the connection to it.

Every other part of the store goes through a :class:`Database`: opening checks and loads
it, the worker writes to it, and nothing else touches the connection.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import sys
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Final, TypeVar

from metrics_lab.storage import INT64_TYPECODE, one_line

__all__ = [
    "APPLICATION_ID",
    "FORMAT_VERSION",
    "INSERT_JOURNAL",
    "REPLACE_SERIES",
    "SCHEMA",
    "Damaged",
    "Database",
    "JournalRow",
    "logger",
    "pack",
    "unpack",
]

# One logger for the whole store, named as the module it was: its name is in every log line.
logger = logging.getLogger("metrics_lab.sqlite_store")

APPLICATION_ID: Final = 0x4D4C4142
"""Stamped in the database header (``PRAGMA application_id``, "MLAB") to tell our files apart
from other programs' SQLite databases, which the store refuses to touch."""

FORMAT_VERSION: Final = 2
"""The layout of the tables (``PRAGMA user_version``); a file with another one is refused."""

SCHEMA: Final = (
    """CREATE TABLE series (
        key TEXT PRIMARY KEY,
        timestamps BLOB NOT NULL,  -- int64, little-endian, ascending and unique
        "values" BLOB NOT NULL     -- float64, little-endian, one per timestamp
    ) WITHOUT ROWID""",
    """CREATE TABLE journal (
        id INTEGER PRIMARY KEY,    -- the order of the puts
        keys TEXT NOT NULL,        -- one key per point, joined by newlines
        timestamps BLOB NOT NULL,  -- int64, little-endian, one per point
        "values" BLOB NOT NULL     -- float64, little-endian, one per point
    )""",
)
"""The two tables, as created and as checked at every opening (SQLite keeps them verbatim)."""

INSERT_JOURNAL: Final = 'INSERT INTO journal (keys, timestamps, "values") VALUES (?, ?, ?)'
REPLACE_SERIES: Final = 'INSERT OR REPLACE INTO series (key, timestamps, "values") VALUES (?, ?, ?)'

JournalRow = tuple[str, bytes, bytes]
"""A row of ``journal`` (or of ``series``): keys (or a key), packed timestamps, packed values."""


class Damaged(Exception):
    """The file holds something the store never writes."""


class Database:
    """The open connection to the file, used by one thread at a time: opening's, then the
    worker's."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self.connection = connection
        self._page_size = 0
        self._no_cap = 0

    def read_page_limits(self) -> None:
        """Note the page size and SQLite's own page limit, which the size cap is counted in."""
        self._page_size = self.connection.execute("PRAGMA page_size").fetchone()[0]
        self._no_cap = self.connection.execute("PRAGMA max_page_count").fetchone()[0]

    @contextlib.contextmanager
    def transaction(self, begin: str = "BEGIN") -> Iterator[sqlite3.Connection]:
        """Run the block in one transaction: committed if it returns, rolled back if it raises."""
        db = self.connection
        db.execute(begin)
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            self.roll_back()
            raise

    def roll_back(self) -> None:
        """End the transaction under way, if any, without raising."""
        db = self.connection
        try:
            if db.in_transaction:
                db.execute("ROLLBACK")
        except sqlite3.Error as exc:  # the next BEGIN will tell if the connection is unusable
            logger.warning("rolling back on %s failed: %s", self.path, one_line(exc))

    def apply_size_cap(self, size: int | None) -> None:
        """Let the file grow to ``size`` bytes at most (``None``: as SQLite allows)."""
        pages = self._no_cap if size is None else max(1, size // self._page_size)
        self.connection.execute(f"PRAGMA max_page_count = {int(pages)}")

    def close(self) -> None:
        """Close the connection (and so release the file's lock)."""
        self.connection.close()


# The file holds little-endian numbers whatever machine wrote it.
_SWAP: Final = sys.byteorder != "little"


Number = TypeVar("Number", int, float)


def pack(numbers: array[Number]) -> bytes:
    """``numbers`` as a column of the file holds them."""
    if _SWAP:
        numbers = array(numbers.typecode, numbers)
        numbers.byteswap()
    return numbers.tobytes()


def unpack(timestamps: object, values: object) -> tuple[array[int], array[float]]:
    """The arrays that :func:`pack` wrote as ``timestamps`` and ``values``."""
    if type(timestamps) is not bytes or type(values) is not bytes:
        raise Damaged("a column that should be packed numbers is not")
    if len(timestamps) != len(values) or len(timestamps) % 8:
        raise Damaged("packed columns of mismatched lengths")
    numbers = array(INT64_TYPECODE, timestamps), array("d", values)
    if _SWAP:
        for column in numbers:
            column.byteswap()
    return numbers
