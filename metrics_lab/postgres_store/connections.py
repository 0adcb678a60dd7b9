"""Connecting to the database, and reconnecting after a fault with a growing pause.

Every thread of the store (writers and readers) holds its own connection, made and
replaced by the store's one :class:`Connector`, which also keeps the pause after a failed
attempt: while it lasts, requests fail at once rather than each waiting for a timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Final

import psycopg

from metrics_lab.logs import LogSummary
from metrics_lab.storage import StoreFailure, one_line

__all__ = ["Connector", "logger", "safe_url"]

# One logger for the whole store, named as the module it was: its name is in every log line.
logger = logging.getLogger("metrics_lab.postgres_store")

_MAX_PAUSE: Final = 2.0  # seconds between reconnection attempts, at most


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


class Connector:
    """Makes the store's connections to ``url``: every statement bounded by
    ``statement_timeout`` seconds, every attempt by ``connect_timeout``, TCP keepalives on.
    Its methods may be called from any thread."""

    def __init__(self, url: str, *, statement_timeout: float, connect_timeout: float) -> None:
        self.url = url
        self.statement_timeout = statement_timeout
        self.connect_timeout = connect_timeout
        self._health = _Health()
        self._unreachable = LogSummary(  # every lane retries: a line per interval, not per try
            logger, "cannot reach the database ({count} attempt(s)); the last error: {example}"
        )

    def connect(self) -> psycopg.Connection[Any]:
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

    def reconnect(self, db: psycopg.Connection[Any] | None) -> psycopg.Connection[Any]:
        """A new connection in place of ``db`` (raises StoreFailure while the database is down)."""
        if db is not None:
            db.close()
        self._health.check()
        try:
            fresh = self.connect()
        except psycopg.Error as exc:
            self._health.failed(exc)
            self._unreachable.add(1, one_line(exc))
            raise StoreFailure(f"cannot reach the database: {one_line(exc)}") from exc
        if self._health.succeeded():
            self._unreachable.flush()  # the failed attempts held back come first
            logger.warning("reconnected to the database")
        return fresh

    def close(self) -> None:
        """Log the failed attempts still held back (the store closes)."""
        self._unreachable.close()

    @staticmethod
    def after_error(db: psycopg.Connection[Any] | None) -> psycopg.Connection[Any] | None:
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


def safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        parts = conninfo_to_dict(url)
    except psycopg.Error:
        return "(an unreadable URL)"
    host, port, name = parts.get("host", ""), parts.get("port", ""), parts.get("dbname", "")
    user = parts.get("user", "")
    return f"postgresql://{user}{'@' if user else ''}{host}{':' if port else ''}{port}/{name}"
