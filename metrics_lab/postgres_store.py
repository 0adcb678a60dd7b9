"""A shared store: the points in a PostgreSQL database, so several servers can serve one data set.

``metrics-lab serve --db postgresql://user@host:port/dbname`` (and ``serve_in_background(db=URL)``)
opens a :class:`PostgresStore`. The servers hold no data of their own: any number of them,
on any machines, can share one database, behind a TCP load balancer. Needs psycopg 3, the
``postgres`` extra (``pip install -e '.[postgres]'`` in the checkout).

How it keeps the :class:`~metrics_lab.storage.Storage` contract without ever blocking the
server's event loop:

- **Writes: group commit.** :meth:`PostgresStore.write` queues the batch and returns a future.
  A writer thread takes everything queued meanwhile (from all connections of the server)
  and stores it in one transaction: one statement, then one ``COMMIT``; the futures are
  done after the commit, or failed with :class:`~metrics_lab.storage.StoreFailure`, so the
  server answers ``ok`` only for committed points. ``writers`` threads (four by default),
  each with its connection, share the keys by hash, so the database works on several
  transactions at once while one key's points are still written in order, by one writer.
  Within a group a later write of a key and timestamp wins; across groups and servers, the
  later commit wins. (A batch one writer committed and another could not is answered
  ``error``: never ``ok`` for a point that is not committed.)
- **Reads: a chunked, consistent scan per get.** :meth:`PostgresStore.snapshot` hands the
  query to a reader thread (``readers`` of them, each with its own connection), which reads
  the points a chunk of :data:`FETCH_ROWS` at a time, at most ``prefetch`` chunks ahead of
  the peer, so a ``get *`` of any size needs bounded memory. All chunks of a get are read
  in one REPEATABLE READ transaction, so they see one snapshot of the database, taken when
  the first chunk is read (after the call, before the first piece, and until then the
  snapshot yields a future): every point committed before the get was received, by any
  server, and nothing committed after the first piece came. The session holds back a
  connection's requests after a get until then, so a get never sees a later put of its own
  connection. Each chunk goes
  on from the last key and timestamp of the one before, along the primary key's index
  (keyset paging: it works like a server-side cursor, one round trip per chunk), and
  comes back as one row per key with its timestamps and values in two arrays, built by the
  database. That leaves the reader thread little Python work (no tuple and no key string
  per point), so it mostly waits for PostgreSQL, in another process, while the event loop
  encodes the answer. When the next chunk is not there yet the snapshot yields a future.
- **Faults.** Every statement runs under ``statement_timeout`` and connections use TCP
  keepalives, so a stuck database fails requests instead of hanging them. A lost connection
  fails the requests that needed it; the next request reconnects, with a growing pause
  (up to 2 s) between failed attempts during which requests fail at once. An
  unreachable database, a wrong password, a missing database or a bad URL when the store
  opens raise :class:`~metrics_lab.storage.StoreOpenError`, one line.

The schema, created on first use, in one transaction, when neither table exists::

    CREATE TABLE metric_points (
        key text COLLATE "C" NOT NULL, ts bigint NOT NULL, value double precision NOT NULL,
        PRIMARY KEY (key, ts))
    CREATE TABLE metrics_lab_schema (version integer PRIMARY KEY)

``COLLATE "C"``: keys compare byte by byte, which for UTF-8 is code point order, the
protocol's (Python's) order, so ``ORDER BY key, ts`` is the wire order and walks the primary
key's index. A database where either table has another shape (columns, types, collation,
primary key) or another version is refused with a one-line error, and nothing is changed.

Only statements that PostgreSQL-compatible distributed databases (CockroachDB, YugabyteDB)
also accept are used, so the same store can move there when one PostgreSQL is not enough:
plain ``CREATE TABLE``; ``information_schema`` for the shape check; ``SET statement_timeout``;
``INSERT ... SELECT DISTINCT ON ... FROM unnest(array, array, array) WITH ORDINALITY
... ON CONFLICT (key, ts) DO UPDATE`` for writes (three array parameters: one round trip per
group, no temporary table, since CockroachDB's temporary tables are experimental, and no
``COPY`` into one; ``DISTINCT ON`` keeps the last write of each key and timestamp, because
``ON CONFLICT`` may not touch one row twice in a statement, and ``ORDER BY key, ts`` takes
row locks in one order, so two servers writing the same keys do not deadlock); and for
reads ``SELECT key, array_agg(ts ORDER BY ts), array_agg(value ORDER BY ts) FROM (SELECT
... WHERE (key, ts) > (last key, last ts) ORDER BY key, ts LIMIT n) GROUP BY key`` in a
``REPEATABLE READ`` transaction (row-value comparison, ``array_agg``, ``LIMIT``; CockroachDB
runs it as SERIALIZABLE, which is stronger). No cursors that outlive a statement, advisory
locks, ``LISTEN``, triggers, sequences or stored procedures.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Final

from metrics_lab.extras import missing_extra

try:
    import psycopg
    from psycopg import errors
except ModuleNotFoundError as exc:  # the postgres extra is not installed
    raise missing_extra(__name__, "postgres", "psycopg[binary]", exc) from None

from metrics_lab.storage import (
    SNAPSHOT_PIECE,
    PointBatch,
    Series,
    Snapshot,
    Storage,
    StoreFailure,
    StoreOpenError,
    failed_write,
    one_line,
)

__all__ = [
    "FETCH_ROWS",
    "GROUP_LIMIT",
    "POINTS_TABLE",
    "SCHEMA_TABLE",
    "SCHEMA_VERSION",
    "UPSERT_STATEMENT",
    "PostgresStore",
]

logger = logging.getLogger("metrics_lab.postgres_store")

POINTS_TABLE: Final = "metric_points"
"""The table of points: one row per key and timestamp, readable by any SQL tool."""

SCHEMA_TABLE: Final = "metrics_lab_schema"
"""A one-row table with the schema's version."""

SCHEMA_VERSION: Final = 1
"""The version of the tables' layout; a database with another one is refused."""

_CREATE: Final = (
    f"""CREATE TABLE {POINTS_TABLE} (
        key text COLLATE "C" NOT NULL,
        ts bigint NOT NULL,
        value double precision NOT NULL,
        PRIMARY KEY (key, ts)
    )""",
    f"CREATE TABLE {SCHEMA_TABLE} (version integer PRIMARY KEY)",
    f"INSERT INTO {SCHEMA_TABLE} (version) VALUES ({SCHEMA_VERSION})",
)

_SHAPE: Final = [("key", "text", "C"), ("ts", "bigint", None), ("value", "double precision", None)]

UPSERT_STATEMENT: Final = f"""
    INSERT INTO {POINTS_TABLE} (key, ts, value)
    SELECT DISTINCT ON (key, ts) key, ts, value
    FROM unnest(%b::text[], %b::bigint[], %b::float8[]) WITH ORDINALITY AS p(key, ts, value, n)
    ORDER BY key, ts, n DESC
    ON CONFLICT (key, ts) DO UPDATE SET value = excluded.value"""
"""How a group of points is written: three arrays (keys, timestamps, values) in one statement,
the last write of each key and timestamp kept, rows locked in key order."""

GROUP_LIMIT: Final = 100_000
"""At most about this many points go into one transaction; more wait for the next one."""

FETCH_ROWS: Final = 4 * SNAPSHOT_PIECE
"""Points read in one chunk (one round trip), cut into pieces for the session."""

_Groups = list[tuple[str, list[int], list[float]]]  # one chunk: (key, timestamps, values) each

_CHUNK: Final = f"""
    SELECT key, array_agg(ts ORDER BY ts), array_agg(value ORDER BY ts)
    FROM (SELECT key, ts, value FROM {POINTS_TABLE} {{where}} ORDER BY key, ts LIMIT %s) AS chunk
    GROUP BY key ORDER BY key"""

_MAX_PAUSE: Final = 2.0  # seconds between reconnection attempts, at most
_RETRIES: Final = 3  # attempts of a group that a deadlock or serialization failure rolled back


class _Health:
    """When to try the database again after a failed connection: pauses that double to 2 s."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pause = 0.0
        self._next_try = 0.0
        self.last_error = ""

    def check(self) -> None:
        """Raise :class:`StoreFailure` while the pause after a failed attempt lasts."""
        with self._lock:
            wait = self._next_try - time.monotonic()
            if wait > 0:
                raise StoreFailure(
                    f"the database is unavailable ({self.last_error}); next try in {wait:.1f} s"
                )

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            self._pause = min(max(self._pause * 2, 0.05), _MAX_PAUSE)
            self._next_try = time.monotonic() + self._pause
            self.last_error = one_line(exc)

    def succeeded(self) -> bool:
        """Forget the failures; return whether there were any."""
        with self._lock:
            recovered = self._pause > 0
            self._pause = self._next_try = 0.0
            return recovered


class PostgresStore(Storage):
    """Points in a PostgreSQL database, shared with every other server that uses it.

    ``url`` is a ``postgresql://user:password@host:port/dbname`` URL (libpq's parameters
    may follow ``?``). Opening connects, checks or creates the schema, and raises
    :class:`~metrics_lab.storage.StoreOpenError` if any of that fails.
    ``statement_timeout`` (seconds) bounds every statement; ``connect_timeout`` every
    connection attempt. ``writers`` is how many connections write, each its share of the
    keys; ``readers`` how many gets stream at once (each holds a
    connection while it streams; more wait their turn); ``prefetch`` how many chunks of
    :data:`FETCH_ROWS` rows a get reads ahead of its peer. ``stall_timeout`` is how long a
    get may wait for its peer to take the next piece before its transaction is ended.

    Calls may come from any thread.
    """

    def __init__(
        self,
        url: str,
        *,
        statement_timeout: float = 30.0,
        connect_timeout: float = 5.0,
        writers: int = 4,
        readers: int = 4,
        prefetch: int = 2,
        stall_timeout: float = 300.0,
    ) -> None:
        self.url = url
        self.statement_timeout = statement_timeout
        self.connect_timeout = connect_timeout
        self.prefetch = prefetch
        self.stall_timeout = stall_timeout
        self._health = _Health()
        self._closed = False
        try:
            first = self._connect()
        except psycopg.Error as exc:
            raise StoreOpenError(f"cannot open database {_safe(url)}: {one_line(exc)}") from exc
        try:
            self._prepare(first)
        except BaseException:
            first.close()
            raise
        # One lane per writer: every batch is queued in each; writer i takes the keys whose
        # hash is i modulo the number of writers, so one key is always written by one writer,
        # in order, and the writers never wait for each other's row locks.
        self._lanes: list[deque[_Pending]] = [deque() for _ in range(writers)]
        self._queue_ready = threading.Condition()
        self._writers = [
            threading.Thread(
                target=self._write_loop,
                args=(number, first if number == 0 else None),
                name=f"metrics-lab-pg-writer-{number}",
                daemon=True,
            )
            for number in range(writers)
        ]
        for thread in self._writers:
            thread.start()
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="metrics-lab-pg-reader")
        self._reader_local = threading.local()
        self._reader_dbs: set[psycopg.Connection[Any]] = set()
        self._streams: set[_Stream] = set()
        self._lock = threading.Lock()  # guards _reader_dbs and _streams

    # --- connections and schema -----------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        """A new connection with the statement timeout set (raises psycopg's errors)."""
        db = psycopg.connect(
            self.url,
            connect_timeout=max(1, round(self.connect_timeout)),
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
        )
        try:
            timeout_ms = max(1, round(self.statement_timeout * 1000))
            db.execute(f"SET statement_timeout = {timeout_ms}")
            db.commit()
        except BaseException:
            db.close()
            raise
        return db

    def _prepare(self, db: psycopg.Connection[Any]) -> None:
        """Check the schema, or create it if neither table exists (raise StoreOpenError)."""
        for _ in range(_RETRIES):
            try:
                with db.transaction():
                    if self._check_schema(db):
                        return
                    for statement in _CREATE:
                        db.execute(statement)
                return
            except (errors.UniqueViolation, errors.DuplicateTable):
                continue  # another server created the tables at the same moment: check again
            except psycopg.Error as exc:
                raise StoreOpenError(
                    f"cannot use database {_safe(self.url)}: {one_line(exc)}"
                ) from exc
        raise StoreOpenError(f"cannot create the tables in {_safe(self.url)}")

    def _check_schema(self, db: psycopg.Connection[Any]) -> bool:
        """Whether our tables exist as they should; False if neither exists; raise if wrong."""
        where = f"database {_safe(self.url)}"
        columns = db.execute(
            """SELECT table_name, column_name, data_type, collation_name
               FROM information_schema.columns
               WHERE table_schema = current_schema() AND table_name IN (%s, %s)
               ORDER BY table_name, ordinal_position""",
            (POINTS_TABLE, SCHEMA_TABLE),
        ).fetchall()
        found = {table for table, *_ in columns}
        if not found:
            return False
        refuse = f"refusing to use {where}: "
        if found != {POINTS_TABLE, SCHEMA_TABLE}:
            raise StoreOpenError(
                refuse + f"it has a table {found.pop()} that metrics_lab did not make; "
                "use another database (or schema)"
            )
        shape = [(c, t, col) for table, c, t, col in columns if table == POINTS_TABLE]
        primary = [
            name
            for (name,) in db.execute(
                """SELECT k.column_name
                   FROM information_schema.table_constraints t
                   JOIN information_schema.key_column_usage k
                     ON k.constraint_name = t.constraint_name
                    AND k.table_schema = t.table_schema AND k.table_name = t.table_name
                   WHERE t.table_schema = current_schema() AND t.table_name = %s
                     AND t.constraint_type = 'PRIMARY KEY'
                   ORDER BY k.ordinal_position""",
                (POINTS_TABLE,),
            )
        ]
        if shape != _SHAPE or primary != ["key", "ts"]:
            raise StoreOpenError(
                refuse + f"its table {POINTS_TABLE} has another shape than metrics_lab's "
                "(key text, ts bigint, value double precision, primary key (key, ts))"
            )
        versions = [v for (v,) in db.execute(f"SELECT version FROM {SCHEMA_TABLE}")]
        if versions != [SCHEMA_VERSION]:
            raise StoreOpenError(
                refuse + f"its tables are of schema version {versions or 'none'}, this "
                f"metrics_lab reads version {SCHEMA_VERSION}"
            )
        return True

    # --- writes ---------------------------------------------------------------------------

    def write(self, batch: PointBatch) -> Future[None]:
        """Queue the points for the next group commit; see :class:`Storage`.

        The future is done once they are committed, or failed with :class:`StoreFailure`.
        """
        if not len(batch.keys) == len(batch.values) == len(batch.timestamps):
            return failed_write("a batch's columns differ in length")
        future: Future[None] = Future()
        pending = _Pending(batch, future, len(self._lanes))
        with self._queue_ready:
            if self._closed:
                return failed_write("the store is closed")
            for lane in self._lanes:
                lane.append(pending)
            self._queue_ready.notify_all()
        return future

    def _write_loop(self, lane: int, db: psycopg.Connection[Any] | None) -> None:
        """Writer ``lane``: commit its keys' share of everything queued, in one transaction."""
        while True:
            group = self._next_group(self._lanes[lane])
            if group is None:
                break
            keys, timestamps, values = _share(group, lane, len(self._lanes))
            failure: StoreFailure | None = None
            if keys:
                db, failure = self._execute(db, keys, timestamps, values)
                if failure is None and db is not None:
                    db, failure = self._commit(db)
            for pending in group:
                pending.part_done(failure)
        if db is not None:
            db.close()

    def _next_group(self, lane: deque[_Pending]) -> list[_Pending] | None:
        """Wait for queued batches and take up to :data:`GROUP_LIMIT` points of them;
        ``None`` once the store is closed and everything queued has been taken."""
        with self._queue_ready:
            while not lane and not self._closed:
                self._queue_ready.wait()
            if not lane:
                return None
            group, size = [], 0
            while lane and size < GROUP_LIMIT:
                pending = lane.popleft()
                group.append(pending)
                size += len(pending.batch)
            return group

    def _execute(
        self,
        db: psycopg.Connection[Any] | None,
        keys: list[str],
        timestamps: list[int],
        values: list[float],
    ) -> tuple[psycopg.Connection[Any] | None, StoreFailure | None]:
        """Run the upsert in a new transaction on ``db`` (connecting if needed)."""
        failure: StoreFailure | None = None
        for _ in range(_RETRIES):
            try:
                if db is None or db.closed or db.broken:
                    db = self._reconnect(db)
                db.execute(UPSERT_STATEMENT, (keys, timestamps, values))
                return db, None
            except StoreFailure as exc:
                return db, exc
            except psycopg.Error as exc:
                db = self._after_error(db)
                failure = StoreFailure(f"the database failed: {one_line(exc)}")
                if not isinstance(exc, errors.SerializationFailure | errors.DeadlockDetected):
                    break
        return db, failure

    def _commit(
        self, db: psycopg.Connection[Any]
    ) -> tuple[psycopg.Connection[Any] | None, StoreFailure | None]:
        try:
            db.commit()
        except psycopg.Error as exc:
            return self._after_error(db), StoreFailure(f"the commit failed: {one_line(exc)}")
        return db, None

    def _reconnect(self, db: psycopg.Connection[Any] | None) -> psycopg.Connection[Any]:
        """A new connection in place of ``db`` (raises StoreFailure while the database is down)."""
        if db is not None:
            db.close()
        self._health.check()
        try:
            fresh = self._connect()
        except psycopg.Error as exc:
            self._health.failed(exc)
            logger.warning("cannot reach the database: %s", one_line(exc))
            raise StoreFailure(f"cannot reach the database: {one_line(exc)}") from exc
        if self._health.succeeded():
            logger.warning("reconnected to the database")
        return fresh

    @staticmethod
    def _after_error(db: psycopg.Connection[Any] | None) -> psycopg.Connection[Any] | None:
        """Roll back after a failed statement; ``None`` if the connection is lost."""
        if db is None or db.broken or db.closed:
            if db is not None:
                logger.warning("lost the connection to the database")
                db.close()
            return None
        try:
            db.rollback()
        except psycopg.Error:
            db.close()
            return None
        return db

    # --- reads ----------------------------------------------------------------------------

    def snapshot(self, key: str | None = None) -> Snapshot:
        """``key``'s points, or every key's for ``None``, read a chunk at a time.

        See :class:`Storage`. The query starts on a reader thread soon after the call; until
        a chunk of rows is there, the snapshot yields a future. Fails (raises
        :class:`StoreFailure` while iterating) if the database cannot be read.
        """
        if key is not None and not _storable(key):
            return iter(())  # no put could have stored it (a get of bad UTF-8, say)
        stream = _Stream(self.prefetch, self.stall_timeout)
        with self._lock:
            if self._closed:
                raise StoreFailure("the store is closed")
            self._streams.add(stream)
        try:
            self._readers.submit(self._fill, stream, key)
        except RuntimeError as exc:  # shut down meanwhile
            raise StoreFailure("the store is closed") from exc
        return stream.pieces()

    def _reader_db(self) -> psycopg.Connection[Any]:
        """This reader thread's connection, (re)connected if needed."""
        db: psycopg.Connection[Any] | None = getattr(self._reader_local, "db", None)
        if db is not None and not db.closed and not db.broken:
            return db
        with self._lock:
            self._reader_dbs.discard(db)
        self._reader_local.db = None
        fresh = self._reconnect(db)
        # Every chunk of a get must see the snapshot of its first one.
        fresh.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        self._reader_local.db = fresh
        with self._lock:
            self._reader_dbs.add(fresh)
        return fresh

    def _fill(self, stream: _Stream, key: str | None) -> None:
        """On a reader thread: run the query and feed its rows to ``stream``."""
        try:
            if stream.abandoned:
                return
            db = self._reader_db()
            try:
                self._stream_rows(db, stream, key)
            except psycopg.Error as exc:
                if db.broken or db.closed:
                    with self._lock:
                        self._reader_dbs.discard(db)
                    self._reader_local.db = None
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

    def _stream_rows(self, db: psycopg.Connection[Any], stream: _Stream, key: str | None) -> None:
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

    def close(self) -> None:
        """Commit what is queued, stop the threads, close the connections."""
        with self._queue_ready:
            if self._closed:
                return
            self._closed = True
            self._queue_ready.notify_all()
        with self._lock:  # orders close against a snapshot registering its stream
            streams = list(self._streams)
        for stream in streams:
            stream.abandon()
        for thread in self._writers:
            thread.join()
        self._readers.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            dbs = list(self._reader_dbs)
            self._reader_dbs.clear()
        for db in dbs:
            db.close()


class _Pending:
    """A written batch on its way: done when every writer has committed its share."""

    __slots__ = ("_shares", "batch", "failure", "future", "remaining")
    _lock = threading.Lock()

    def __init__(self, batch: PointBatch, future: Future[None], writers: int) -> None:
        self.batch = batch
        self.future = future
        self.remaining = writers
        self.failure: StoreFailure | None = None
        self._shares: Sequence[_Columns] | None = None

    def share(self, lane: int, lanes: int) -> _Columns:
        """The points whose key falls to writer ``lane`` (the batch is cut once, for all)."""
        if lanes == 1:
            return self.batch.keys, self.batch.timestamps, self.batch.values
        with self._lock:
            if self._shares is None:
                shares: list[tuple[list[str], list[int], list[float]]]
                shares = [([], [], []) for _ in range(lanes)]
                batch = self.batch
                for key, value, timestamp in zip(
                    batch.keys, batch.values, batch.timestamps, strict=True
                ):
                    keys, timestamps, values = shares[hash(key) % lanes]
                    keys.append(key)
                    timestamps.append(timestamp)
                    values.append(value)
                self._shares = shares
            return self._shares[lane]

    def part_done(self, failure: StoreFailure | None) -> None:
        """One writer is through with its share, committed or ``failure``."""
        with self._lock:
            self.remaining -= 1
            if failure is not None and self.failure is None:
                self.failure = failure
            last = self.remaining == 0
        if last:
            if self.failure is None:
                self.future.set_result(None)
            else:
                self.future.set_exception(self.failure)


_Columns = tuple[Sequence[str], Sequence[int], Sequence[float]]


def _share(
    group: list[_Pending], lane: int, lanes: int
) -> tuple[list[str], list[int], list[float]]:
    """The points of ``group`` whose key falls to writer ``lane``, as three columns."""
    keys: list[str] = []
    timestamps: list[int] = []
    values: list[float] = []
    for pending in group:
        share_keys, share_timestamps, share_values = pending.share(lane, lanes)
        keys.extend(share_keys)
        timestamps.extend(share_timestamps)
        values.extend(share_values)
    return keys, timestamps, values


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


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        parts = conninfo_to_dict(url)
    except psycopg.Error:
        return "(an unreadable URL)"
    host, port, name = parts.get("host", ""), parts.get("port", ""), parts.get("dbname", "")
    user = parts.get("user", "")
    return f"postgresql://{user}{'@' if user else ''}{host}{':' if port else ''}{port}/{name}"
