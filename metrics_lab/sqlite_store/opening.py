"""Opening the file, hardened: refuse what is not ours, damaged or locked, in one line; load it.

:func:`open_database` takes the file's exclusive lock, checks the header, the tables and the
structure of every page, loads ``series`` and replays ``journal`` on top of it into a
:class:`~metrics_lab.storage.MemoryStore`. Whatever goes wrong raises
:class:`~metrics_lab.storage.StoreOpenError` with a message that says why and what to do,
and leaves the file as it was.
"""

from __future__ import annotations

import errno
import operator
import sqlite3
import struct
from itertools import islice
from pathlib import Path
from typing import Final, Literal, NamedTuple

from metrics_lab.sqlite_store.database import (
    APPLICATION_ID,
    FORMAT_VERSION,
    SCHEMA,
    Damaged,
    Database,
    unpack,
)
from metrics_lab.storage import MemoryStore, PointBatch, StoreOpenError, one_line

__all__ = ["Opened", "Synchronous", "open_database"]

Synchronous = Literal["FULL", "NORMAL"]

_DAMAGED_HINT: Final = "restore it from a backup, or give --db a new file name"
_WRITABLE_HINT: Final = "check that the file and its directory are writable"

# What a damaged file can make the loading code raise, besides sqlite3.Error: a blob of the
# wrong length or type (ValueError, TypeError, struct.error), text that is not UTF-8
# (UnicodeDecodeError, a ValueError), a number out of range (OverflowError).
_DAMAGE_ERRORS: Final = (
    sqlite3.Error,
    ValueError,
    TypeError,
    OverflowError,
    struct.error,
    IndexError,
    KeyError,
)


class Opened(NamedTuple):
    """An open, checked and loaded file."""

    database: Database
    memory: MemoryStore  # every point in the file
    changed: dict[str, None]  # the keys of the journal's points (a dict: see Compaction)
    journaled: int  # the journal's points: a journal left by a crash, to fold soon


def open_database(
    path: Path, *, synchronous: Synchronous, lock_timeout: float, max_size: int | None
) -> Opened:
    """Open ``path`` (created if it does not exist), lock it, check it, load it, cap its size
    at ``max_size`` bytes; raise :class:`StoreOpenError` if any of that fails."""
    _check_path(path)
    try:
        # isolation_level=None: no hidden BEGIN; every transaction here is explicit.
        # check_same_thread=False: opened here, then used by the worker thread only.
        connection = sqlite3.connect(
            path, timeout=lock_timeout, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise StoreOpenError(_explain(path, exc)) from exc
    database = Database(path, connection)
    try:
        _prepare(database, synchronous)
        database.read_page_limits()
        opened = _load(database)
        database.apply_size_cap(max_size)
    except StoreOpenError:
        database.close()
        raise
    except sqlite3.Error as exc:
        database.close()
        raise StoreOpenError(_explain(path, exc)) from exc
    except (*_DAMAGE_ERRORS, Damaged) as exc:
        database.close()
        raise StoreOpenError(
            f"cannot open database {path}: the file is damaged ({one_line(exc)}); {_DAMAGED_HINT}"
        ) from exc
    return opened


def _check_path(path: Path) -> None:
    parent = path.parent
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise StoreOpenError(f"cannot open database {path}: directory {parent} {what}")
    if path.exists() and not path.is_file():
        raise StoreOpenError(f"cannot open database {path}: it is not a regular file")
    if path.exists():
        # SQLite opens a file it may not write read-only without a word, and then fails
        # with "disk I/O error" at the first lock. Asking the system first gives the
        # real reason. Opening for update without writing changes nothing.
        try:
            with open(path, "r+b"):
                pass
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise StoreOpenError(
                    f"cannot open database {path}: it is read-only for this "
                    f"process; {_WRITABLE_HINT}"
                ) from exc
            raise StoreOpenError(f"cannot open database {path}: {exc}") from exc


def _prepare(database: Database, synchronous: Synchronous) -> None:
    path, db = database.path, database.connection
    # Exclusive locking before WAL: no shared-memory index, and the lock is held from the
    # first write until close, so exactly one process writes this file.
    db.execute("PRAGMA locking_mode = EXCLUSIVE")
    # Take the lock before looking at anything, and fail now (not at the first put) if
    # another process has it. Reading the header also rejects files that are not SQLite.
    with database.transaction("BEGIN EXCLUSIVE"):
        application_id = db.execute("PRAGMA application_id").fetchone()[0]
        tables = db.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
        if application_id != APPLICATION_ID and (application_id != 0 or tables):
            raise StoreOpenError(
                f"{path} is an SQLite database of another program, not a metrics_lab "
                "one; give --db a new file name"
            )
        if application_id == 0:
            for statement in SCHEMA:
                db.execute(statement)
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute(f"PRAGMA user_version = {FORMAT_VERSION}")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version != FORMAT_VERSION:
            raise StoreOpenError(
                f"{path} was written by another version of metrics_lab (format "
                f"{version}, this one reads {FORMAT_VERSION}); give --db a new file name"
            )
        # SQLite keeps each table's CREATE statement as written: a damaged one would
        # only show at the first put, as a refused commit.
        schema = dict(db.execute("SELECT name, sql FROM sqlite_schema"))
        if schema != {"series": SCHEMA[0], "journal": SCHEMA[1]}:
            raise Damaged("its tables are not the ones metrics_lab writes")
    mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StoreOpenError(f"cannot switch {path} to WAL mode (got {mode!r})")
    db.execute(f"PRAGMA synchronous = {synchronous}")
    # The structure of every page (the loading below reads only the tables' pages): a
    # damaged free list or header would otherwise show up at some later put.
    problems = [row[0] for row in db.execute("PRAGMA quick_check(1)")]
    if problems != ["ok"]:
        raise Damaged(str(problems[0]))


def _load(database: Database) -> Opened:
    """Load ``series``, replay ``journal`` on top; a journal left by a crash is folded
    soon after (by the worker, so the server starts at once)."""
    db = database.connection
    memory = MemoryStore()
    changed: dict[str, None] = {}
    journaled = 0
    for key, stamps, numbers in db.execute('SELECT key, timestamps, "values" FROM series'):
        if type(key) is not str or key.split() != [key]:
            raise Damaged(f"a series key is {key!r}")
        timestamps, values = unpack(stamps, numbers)
        if not timestamps:
            raise Damaged(f"series {key!r} is empty")
        if len(timestamps) > 1 and not all(
            map(operator.lt, timestamps, islice(timestamps, 1, None))
        ):
            raise Damaged(f"the timestamps of series {key!r} are out of order")
        memory.restore(key, timestamps, values)
    for joined, stamps, numbers in db.execute(
        'SELECT keys, timestamps, "values" FROM journal ORDER BY id'
    ):
        if type(joined) is not str:
            raise Damaged(f"journal keys of type {type(joined).__name__}")
        keys = joined.split("\n")
        timestamps, values = unpack(stamps, numbers)
        if len(joined.split()) != len(keys) or len(timestamps) != len(keys):
            raise Damaged("a journal row whose keys and points do not match")
        memory.write(PointBatch(keys, timestamps, values)).result()
        changed.update(dict.fromkeys(keys))
        journaled += len(keys)
    return Opened(database, memory, changed, journaled)


def _explain(path: Path, exc: sqlite3.Error) -> str:
    message = one_line(exc)
    name = getattr(exc, "sqlite_errorname", "")
    if "locked" in message or "busy" in message:
        hint = "another process (a second server?) is using it"
    elif "not a database" in message:
        hint = "the file is not an SQLite database; give --db a new file name"
    elif "malformed" in message or name.startswith("SQLITE_CORRUPT"):
        hint = f"the file is damaged; {_DAMAGED_HINT}"
    elif name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM")) or (
        "readonly" in message or "unable to open" in message
    ):
        hint = _WRITABLE_HINT
    else:
        return f"cannot open database {path}: {message}"
    return f"cannot open database {path}: {hint} ({message})"
