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

The package, one part per module:

- :mod:`~metrics_lab.postgres_store.connections`: connecting, and reconnecting after a fault;
- :mod:`~metrics_lab.postgres_store.opening`: the tables, checked or created at opening;
- :mod:`~metrics_lab.postgres_store.writing`: the writer threads and their group commits;
- :mod:`~metrics_lab.postgres_store.reading`: the reader threads and their chunked scans;
- :mod:`~metrics_lab.postgres_store.store`: :class:`PostgresStore`, which holds one of each.
"""

from metrics_lab.extras import missing_extra

try:
    import psycopg  # noqa: F401 (only: is the postgres extra installed?)
except ModuleNotFoundError as exc:
    raise missing_extra(__name__, "postgres", "psycopg[binary]", exc) from None

from metrics_lab.postgres_store.opening import POINTS_TABLE, SCHEMA_TABLE, SCHEMA_VERSION
from metrics_lab.postgres_store.reading import FETCH_ROWS
from metrics_lab.postgres_store.store import PostgresStore
from metrics_lab.postgres_store.writing import GROUP_LIMIT, UPSERT_STATEMENT

__all__ = [
    "FETCH_ROWS",
    "GROUP_LIMIT",
    "POINTS_TABLE",
    "SCHEMA_TABLE",
    "SCHEMA_VERSION",
    "UPSERT_STATEMENT",
    "PostgresStore",
]
