"""A durable store: every acknowledged put is committed to one SQLite file (stdlib, WAL mode).

:class:`SQLiteStore` keeps the :class:`~metrics_lab.storage.Storage` contract: the future that
:meth:`~SQLiteStore.write` returns is done once the points are committed, and failed, with a
:class:`~metrics_lab.storage.StoreFailure`, if they are not. An ``ok`` means "on disk".

One thread of the store's own, the *worker*, owns the database connection; nothing else
touches it, so no caller can commit or roll back what another one wrote. ``write`` checks
and packs the points on the caller's thread and queues them. The worker takes everything
queued meanwhile, by every connection of the server, writes it in one transaction and
commits (*group commit*: one disk sync for all of them), then copies the points into
memory and completes the futures. If anything fails (a full disk, a database that rolled
the transaction back by itself, a failed ``COMMIT``), every future of that group fails,
memory is untouched, a warning says how many points were refused, and the next group is
tried afresh: puts succeed again as soon as there is room.

How the file is laid out, and why:

- ``journal``: one row per written batch, its keys joined by newlines, its timestamps and
  values as packed arrays. A commit appends rows at the end of the table: a few sequential
  pages, however many keys the batches touch.
- ``series``: one row per key, its timestamps and values as packed arrays, sorted: the
  compacted form. The worker folds the journal into it (*compaction*) when ``compact_every``
  points have been journaled, when the store was opened with a journal left by a crash,
  and when it closes. The fold is done in chunks of ``fold_chunk`` keys, one transaction
  each, taking turns with the waiting commits, so a put waits for one chunk at most, not
  for the whole fold. Journal rows are deleted only once every key they changed has been
  written to ``series``; replaying the journal over ``series`` is idempotent, so a crash
  at any point of a fold reopens to the same data.

Reads never touch the file: the store holds a :class:`~metrics_lab.storage.MemoryStore`
with every committed point, so it answers ``get`` at in-memory speed and needs the memory
an in-memory store needs (about 18 bytes a point). Opening loads ``series`` and replays
``journal`` on top of it.

One server owns one database file: the store takes an exclusive lock on the file when it
opens it and keeps it until :meth:`~SQLiteStore.close`, so a second server (or any other
program) cannot write behind its back. Opening fails with :class:`StoreOpenError`, a one-line
message, if the path cannot hold a database, the file is damaged or not a metrics_lab
database, it is read-only, or another process holds the lock.

The package, one part per module:

- :mod:`~metrics_lab.sqlite_store.database`: the file's tables, packed columns, connection;
- :mod:`~metrics_lab.sqlite_store.opening`: opening, hardened: lock, checks, loading;
- :mod:`~metrics_lab.sqlite_store.writing`: the worker: group commit, closing;
- :mod:`~metrics_lab.sqlite_store.compaction`: the fold, a step at a time between commits;
- :mod:`~metrics_lab.sqlite_store.reading`: the committed points in memory, for ``get``;
- :mod:`~metrics_lab.sqlite_store.store`: :class:`SQLiteStore`, which holds one of each.

>>> import tempfile, pathlib
>>> with tempfile.TemporaryDirectory() as tmp:
...     store = SQLiteStore(pathlib.Path(tmp) / "metrics.db")
...     store.put_many([("cpu", 0.4, 2), ("cpu", 0.5, 1), ("cpu", 0.7, 2)])
...     store.close()
...     store = SQLiteStore(pathlib.Path(tmp) / "metrics.db")
...     print(store.read("cpu"))
...     store.close()
[Series(key='cpu', timestamps=[1, 2], values=[0.5, 0.7])]
"""

from metrics_lab.sqlite_store.compaction import DEFAULT_COMPACT_EVERY, DEFAULT_FOLD_CHUNK
from metrics_lab.sqlite_store.database import APPLICATION_ID, FORMAT_VERSION
from metrics_lab.sqlite_store.store import SQLiteStore
from metrics_lab.storage import StoreOpenError

__all__ = [
    "APPLICATION_ID",
    "DEFAULT_COMPACT_EVERY",
    "DEFAULT_FOLD_CHUNK",
    "FORMAT_VERSION",
    "SQLiteStore",
    "StoreOpenError",
]
