"""Writing: the writer threads, each committing its share of the keys in group commits.

Every batch is queued in each writer's lane; writer ``i`` takes everything queued in its
lane meanwhile, up to :data:`GROUP_LIMIT` points, and writes the points whose key's hash is
``i`` modulo the number of writers in one statement, then commits. A batch's future is done
once every writer has committed its share (:class:`~metrics_lab.pending_write.PendingWrite`).
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future
from typing import Any, Final

import psycopg
from psycopg import errors

from metrics_lab.pending_write import PendingWrite
from metrics_lab.postgres_store.connections import Connector
from metrics_lab.postgres_store.opening import POINTS_TABLE
from metrics_lab.storage import PointBatch, StoreFailure, failed_write, one_line

__all__ = ["GROUP_LIMIT", "UPSERT_STATEMENT", "Writers"]

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

_RETRIES: Final = 3  # attempts of a group that a deadlock or serialization failure rolled back


class Writers:
    """``count`` writer threads, each with its connection (the first one uses ``first``).

    :meth:`write` may be called from any thread; :meth:`close` commits what is queued and
    stops the threads.
    """

    def __init__(self, connector: Connector, first: psycopg.Connection[Any], count: int) -> None:
        self._connector = connector
        # One lane per writer: every batch is queued in each; writer i takes the keys whose
        # hash is i modulo the number of writers, so one key is always written by one writer,
        # in order, and the writers never wait for each other's row locks.
        self._lanes: list[deque[PendingWrite]] = [deque() for _ in range(count)]
        self._queue_ready = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(
                target=self._write_loop,
                args=(number, first if number == 0 else None),
                name=f"metrics-lab-pg-writer-{number}",
                daemon=True,
            )
            for number in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def write(self, batch: PointBatch) -> Future[None]:
        """Queue the points for the next group commit of every writer; see
        :meth:`PostgresStore.write <metrics_lab.postgres_store.PostgresStore.write>`."""
        if not len(batch.keys) == len(batch.values) == len(batch.timestamps):
            return failed_write("a batch's columns differ in length")
        pending = PendingWrite(batch, parts=len(self._lanes))
        with self._queue_ready:
            if self._closed:
                return failed_write("the store is closed")
            for lane in self._lanes:
                lane.append(pending)
            self._queue_ready.notify_all()
        return pending.future

    def close(self) -> None:
        """Refuse new writes, commit what is queued, stop the threads, close the connections."""
        with self._queue_ready:
            self._closed = True
            self._queue_ready.notify_all()
        for thread in self._threads:
            thread.join()

    def _write_loop(self, lane: int, db: psycopg.Connection[Any] | None) -> None:
        """Writer ``lane``: commit its keys' share of everything queued, in one transaction."""
        while True:
            group = self._next_group(self._lanes[lane])
            if group is None:
                break
            keys, timestamps, values = _share(group, lane)
            failure: StoreFailure | None = None
            if keys:
                db, failure = self._execute(db, keys, timestamps, values)
                if failure is None and db is not None:
                    db, failure = self._commit(db)
            for pending in group:
                pending.part_done(failure)
        if db is not None:
            db.close()

    def _next_group(self, lane: deque[PendingWrite]) -> list[PendingWrite] | None:
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
                    db = self._connector.reconnect(db)
                db.execute(UPSERT_STATEMENT, (keys, timestamps, values))
                return db, None
            except StoreFailure as exc:
                return db, exc
            except psycopg.Error as exc:
                db = self._connector.after_error(db)
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
            return self._connector.after_error(db), StoreFailure(
                f"the commit failed: {one_line(exc)}"
            )
        return db, None


def _share(group: list[PendingWrite], lane: int) -> tuple[list[str], list[int], list[float]]:
    """The points of ``group`` whose key falls to writer ``lane``, as three columns."""
    keys: list[str] = []
    timestamps: list[int] = []
    values: list[float] = []
    for pending in group:
        share_keys, share_timestamps, share_values = pending.share(lane)
        keys.extend(share_keys)
        timestamps.extend(share_timestamps)
        values.extend(share_values)
    return keys, timestamps, values
