"""Reading: a get streams from a reader thread, a chunk at a time, all in one snapshot.

Each get runs on one of the reader threads, each with its own connection, in one
REPEATABLE READ transaction: its chunks of :data:`FETCH_ROWS` rows go on from the last key
and timestamp of the one before (keyset paging, along the primary key's index) into a
:class:`_Stream`, at most ``prefetch`` chunks ahead of the session that takes them.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Final

import psycopg

from metrics_lab.postgres_store.connections import Connector
from metrics_lab.postgres_store.opening import POINTS_TABLE
from metrics_lab.storage import SNAPSHOT_PIECE, Series, Snapshot, StoreFailure, one_line

__all__ = ["FETCH_ROWS", "Readers"]

FETCH_ROWS: Final = 16 * SNAPSHOT_PIECE
"""Points read in one chunk (one round trip), cut into pieces for the session."""

_Groups = list[tuple[str, list[int], list[float]]]  # one chunk: (key, timestamps, values) each

_CHUNK: Final = f"""
    SELECT key, array_agg(ts ORDER BY ts), array_agg(value ORDER BY ts)
    FROM (SELECT key, ts, value FROM {POINTS_TABLE} {{where}} ORDER BY key, ts LIMIT %s) AS chunk
    GROUP BY key ORDER BY key"""


class Readers:
    """``count`` reader threads, each with its connection, made when first needed.

    :meth:`snapshot` may be called from any thread; :meth:`stop` then :meth:`close` end them.
    """

    def __init__(
        self, connector: Connector, count: int, *, prefetch: int, stall_timeout: float
    ) -> None:
        self.prefetch = prefetch
        self.stall_timeout = stall_timeout
        self._connector = connector
        self._executor = ThreadPoolExecutor(count, thread_name_prefix="metrics-lab-pg-reader")
        self._local = threading.local()
        self._dbs: set[psycopg.Connection[Any]] = set()
        self._streams: set[_Stream] = set()
        self._closed = False
        self._lock = threading.Lock()  # guards _dbs, _streams and _closed

    def snapshot(self, key: str | None = None) -> Snapshot:
        """A get's snapshot, streamed by a reader thread; see :meth:`PostgresStore.snapshot`."""
        if key is not None and not _storable(key):
            return iter(())  # no put could have stored it (a get of bad UTF-8, say)
        stream = _Stream(self.prefetch, self.stall_timeout)
        with self._lock:
            if self._closed:
                raise StoreFailure("the store is closed")
            self._streams.add(stream)
        try:
            self._executor.submit(self._fill, stream, key)
        except RuntimeError as exc:  # shut down meanwhile
            with self._lock:
                self._streams.discard(stream)
            raise StoreFailure("the store is closed") from exc
        return stream.pieces()

    def stop(self) -> bool:
        """Refuse new gets and let the running ones stop; ``False`` if stopped already."""
        with self._lock:  # orders the stop against a snapshot registering its stream
            if self._closed:
                return False
            self._closed = True
            streams = list(self._streams)
        for stream in streams:
            stream.abandon()
        return True

    def close(self) -> None:
        """Wait for the reader threads to end, and close their connections.

        A get still waiting for a reader then never gets one: it fails, so whoever waits
        on it is woken.
        """
        self._executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            dbs = list(self._dbs)
            self._dbs.clear()
            never_read = list(self._streams)
            self._streams.clear()
        for stream in never_read:
            stream.finish(StoreFailure("the store is closed"))
        for db in dbs:
            db.close()

    def _reader_db(self) -> psycopg.Connection[Any]:
        """This reader thread's connection, (re)connected if needed."""
        db: psycopg.Connection[Any] | None = getattr(self._local, "db", None)
        if db is not None and not db.closed and not db.broken:
            return db
        with self._lock:
            self._dbs.discard(db)
        self._local.db = None
        fresh = self._connector.reconnect(db)
        # Every chunk of a get must see the snapshot of its first one.
        fresh.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        self._local.db = fresh
        with self._lock:
            self._dbs.add(fresh)
        return fresh

    def _fill(self, stream: _Stream, key: str | None) -> None:
        """On a reader thread: run the query and feed its rows to ``stream``."""
        try:
            if stream.abandoned:  # nobody may be waiting, but if one is, it must be woken
                raise StoreFailure("the store is closed" if self._closed else "get dropped")
            db = self._reader_db()
            try:
                _stream_rows(db, stream, key)
            except psycopg.Error as exc:
                if db.broken or db.closed:
                    with self._lock:
                        self._dbs.discard(db)
                    self._local.db = None
                    db.close()
                else:
                    with contextlib.suppress(psycopg.Error):
                        db.rollback()
                raise StoreFailure(f"the database failed: {one_line(exc)}") from exc
            stream.finish(None)
        except StoreFailure as exc:
            stream.finish(exc)
        except BaseException as exc:
            stream.finish(StoreFailure(f"reading failed: {one_line(exc)}"))
            raise
        finally:
            with self._lock:
                self._streams.discard(stream)


def _stream_rows(db: psycopg.Connection[Any], stream: _Stream, key: str | None) -> None:
    """Read ``key``'s points (every key's for ``None``) a chunk at a time into ``stream``.

    One REPEATABLE READ transaction, so every chunk sees the snapshot of the first; each
    chunk continues after the last key and timestamp of the one before (keyset paging,
    along the primary key's index), at most :data:`FETCH_ROWS` rows, grouped per key
    into arrays by the database.
    """
    after: tuple[str, int] | None = None
    with db.transaction():
        while not stream.abandoned:
            if key is None and after is None:
                params: tuple[object, ...] = (FETCH_ROWS,)
                query = _CHUNK.format(where="")
            elif key is None:
                params = (*after, FETCH_ROWS)  # type: ignore[misc]
                query = _CHUNK.format(where="WHERE (key, ts) > (%s, %s)")
            elif after is None:
                params = (key, FETCH_ROWS)
                query = _CHUNK.format(where="WHERE key = %s")
            else:
                params = (key, after[1], FETCH_ROWS)
                query = _CHUNK.format(where="WHERE key = %s AND ts > %s")
            groups = db.execute(query, params, binary=True).fetchall()
            if not groups:
                break
            if not stream.put(groups):
                break
            last_key, last_timestamps, _ = groups[-1]
            after = (last_key, last_timestamps[-1])
            if sum(len(timestamps) for _, timestamps, _ in groups) < FETCH_ROWS:
                break  # a short chunk is the last


class _Stream:
    """Rows on their way from a reader thread to a session: at most ``prefetch`` chunks."""

    def __init__(self, prefetch: int, stall_timeout: float) -> None:
        self._chunks: deque[_Groups] = deque()
        self._prefetch = prefetch
        self._stall_timeout = stall_timeout
        self._changed = threading.Condition()
        self._wakeup: Future[None] | None = None  # given to the session while it waits
        self._done = False
        self._failure: StoreFailure | None = None
        self.abandoned = False

    # the reader thread's side
    def put(self, groups: _Groups) -> bool:
        """Hand over a chunk, waiting for room; False if the reader should stop."""
        with self._changed:
            if not self._changed.wait_for(
                lambda: self.abandoned or len(self._chunks) < self._prefetch,
                timeout=self._stall_timeout,
            ):
                self._failure = StoreFailure("the peer stopped taking the answer")
                self.abandoned = True
            if self.abandoned:
                return False
            self._chunks.append(groups)
            wakeup, self._wakeup = self._wakeup, None
        if wakeup is not None:
            wakeup.set_result(None)
        return True

    def finish(self, failure: StoreFailure | None) -> None:
        """No more chunks: the rows are all there, or ``failure`` says why not."""
        with self._changed:
            self._done = True
            if self._failure is None:
                self._failure = failure
            wakeup, self._wakeup = self._wakeup, None
        if wakeup is not None:
            wakeup.set_result(None)

    def abandon(self) -> None:
        """The session will take no more: let the reader stop."""
        with self._changed:
            self.abandoned = True
            self._changed.notify_all()

    # the session's side
    def pieces(self) -> Snapshot:
        try:
            while True:
                with self._changed:
                    if self._chunks:
                        rows: _Groups | None = self._chunks.popleft()
                        self._changed.notify_all()
                    elif self._done:
                        if self._failure is not None:
                            raise self._failure
                        return
                    else:
                        rows = None
                        wakeup = self._wakeup = Future()
                if rows is None:
                    yield wakeup
                else:
                    yield from _series(rows)
        finally:
            self.abandon()


def _series(groups: _Groups) -> Iterator[Series]:
    """One chunk's ``(key, timestamps, values)`` groups as :class:`Series` pieces."""
    for key, timestamps, values in groups:
        if len(timestamps) <= SNAPSHOT_PIECE:
            yield Series(key, timestamps, values)
            continue
        for start in range(0, len(timestamps), SNAPSHOT_PIECE):
            end = start + SNAPSHOT_PIECE
            yield Series(key, timestamps[start:end], values[start:end])


def _storable(key: str) -> bool:
    """Whether a PostgreSQL ``text`` can hold ``key``: UTF-8, without NUL."""
    if "\x00" in key:
        return False
    try:
        key.encode()
    except UnicodeEncodeError:
        return False
    return True
