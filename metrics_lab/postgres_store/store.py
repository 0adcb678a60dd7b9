"""The store itself: opening, writing and reading put together behind the Storage contract."""

from __future__ import annotations

from concurrent.futures import Future

from metrics_lab.postgres_store.connections import Connector
from metrics_lab.postgres_store.opening import open_database
from metrics_lab.postgres_store.reading import Readers
from metrics_lab.postgres_store.writing import Writers
from metrics_lab.storage import PointBatch, Snapshot, Storage

__all__ = ["PostgresStore"]


class PostgresStore(Storage):
    """Points in a PostgreSQL database, shared with every other server that uses it.

    ``url`` is a ``postgresql://user:password@host:port/dbname`` URL (libpq's parameters
    may follow ``?``). Opening connects, checks or creates the schema, and raises
    :class:`~metrics_lab.storage.StoreOpenError` if any of that fails.
    ``statement_timeout`` (seconds) bounds every statement; ``connect_timeout`` every
    connection attempt. ``writers`` is how many connections write, each its share of the
    keys; ``readers`` how many gets stream at once (each holds a
    connection while it streams; more wait their turn); ``prefetch`` how many chunks of
    :data:`~metrics_lab.postgres_store.FETCH_ROWS` rows a get reads ahead of its peer.
    ``stall_timeout`` is how long a get may wait for its peer to take the next piece before
    its transaction is ended.

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
        self._connector = Connector(
            url, statement_timeout=statement_timeout, connect_timeout=connect_timeout
        )
        first = open_database(self._connector)
        self._writers = Writers(self._connector, first, writers)
        self._readers = Readers(
            self._connector, readers, prefetch=prefetch, stall_timeout=stall_timeout
        )

    @property
    def url(self) -> str:
        """The database's URL, as given."""
        return self._connector.url

    @property
    def statement_timeout(self) -> float:
        """Seconds any statement may take."""
        return self._connector.statement_timeout

    @property
    def connect_timeout(self) -> float:
        """Seconds any connection attempt may take."""
        return self._connector.connect_timeout

    @property
    def prefetch(self) -> int:
        """Chunks a get reads ahead of its peer."""
        return self._readers.prefetch

    @property
    def stall_timeout(self) -> float:
        """Seconds a get waits for its peer to take the next piece."""
        return self._readers.stall_timeout

    def write(self, batch: PointBatch) -> Future[None]:
        """Queue the points for the next group commit; see :class:`Storage`.

        The future is done once they are committed, or failed with :class:`StoreFailure`.
        """
        return self._writers.write(batch)

    def snapshot(self, key: str | None = None) -> Snapshot:
        """``key``'s points, or every key's for ``None``, read a chunk at a time.

        See :class:`Storage`. The query starts on a reader thread soon after the call; until
        a chunk of rows is there, the snapshot yields a future. Fails (raises
        :class:`StoreFailure` while iterating) if the database cannot be read.
        """
        return self._readers.snapshot(key)

    def close(self) -> None:
        """Commit what is queued, stop the threads, close the connections."""
        if not self._readers.stop():  # a second call does nothing
            return
        self._writers.close()
        self._readers.close()
        self._connector.close()
