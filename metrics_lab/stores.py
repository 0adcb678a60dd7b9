"""Which store a ``--db`` value names: an SQLite file path, or a PostgreSQL URL.

>>> import tempfile, pathlib
>>> with tempfile.TemporaryDirectory() as folder:
...     store = open_store(pathlib.Path(folder) / "metrics.db")
...     print(type(store).__name__)
...     store.close()
SQLiteStore
"""

from __future__ import annotations

import os
from typing import Final

from metrics_lab.extras import install_hint
from metrics_lab.sqlite_store import SQLiteStore
from metrics_lab.storage import Storage, StoreOpenError

__all__ = ["POSTGRES_SCHEMES", "open_store"]

POSTGRES_SCHEMES: Final = ("postgresql://", "postgres://")
"""How a ``--db`` value that names a PostgreSQL database begins."""


def open_store(db: str | os.PathLike[str]) -> Storage:
    """Open the store that ``db`` names: ``postgresql://...`` is a PostgreSQL database (the
    ``postgres`` extra), anything else the path of an SQLite file.

    Raises :class:`~metrics_lab.storage.StoreOpenError`, a one-line message, if it
    cannot be opened.
    """
    text = os.fspath(db)
    if text.startswith(POSTGRES_SCHEMES):
        try:  # psycopg is the postgres extra: imported on demand
            from metrics_lab.postgres_store import PostgresStore
        except ModuleNotFoundError as exc:
            hint = install_hint("postgres", "psycopg[binary]")
            raise StoreOpenError(f"a postgresql:// database needs {exc.name}: {hint}") from None

        return PostgresStore(text)
    return SQLiteStore(text)
