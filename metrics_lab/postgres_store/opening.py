"""Opening: the first connection, and the tables checked, or created if neither exists.

A database where either table has another shape (columns, types, collation, primary key)
or another version is refused with a one-line
:class:`~metrics_lab.storage.StoreOpenError`, and nothing is changed.
"""

from __future__ import annotations

from typing import Any, Final

import psycopg
from psycopg import errors

from metrics_lab.postgres_store.connections import Connector, safe_url
from metrics_lab.storage import StoreOpenError, one_line

__all__ = ["POINTS_TABLE", "SCHEMA_TABLE", "SCHEMA_VERSION", "open_database"]

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

_ATTEMPTS: Final = 3  # at creating the tables while other servers may be creating them too


def open_database(connector: Connector) -> psycopg.Connection[Any]:
    """A first connection to a database with our tables (raise StoreOpenError)."""
    try:
        first = connector.connect()
    except psycopg.Error as exc:
        raise StoreOpenError(
            f"cannot open database {safe_url(connector.url)}: {one_line(exc)}"
        ) from exc
    try:
        _prepare(first, connector.url)
    except BaseException:
        first.close()
        raise
    return first


def _prepare(db: psycopg.Connection[Any], url: str) -> None:
    """Check the schema, or create it if neither table exists (raise StoreOpenError)."""
    for _ in range(_ATTEMPTS):
        try:
            with db.transaction():
                if _check_schema(db, url):
                    return
                for statement in _CREATE:
                    db.execute(statement)
            return
        except (errors.UniqueViolation, errors.DuplicateTable):
            continue  # another server created the tables at the same moment: check again
        except psycopg.Error as exc:
            raise StoreOpenError(f"cannot use database {safe_url(url)}: {one_line(exc)}") from exc
    raise StoreOpenError(f"cannot create the tables in {safe_url(url)}")


def _check_schema(db: psycopg.Connection[Any], url: str) -> bool:
    """Whether our tables exist as they should; False if neither exists; raise if wrong."""
    where = f"database {safe_url(url)}"
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
