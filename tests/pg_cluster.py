"""PostgreSQL for the tests: one temporary cluster per session, a fresh database per test.

Loaded by ``tests/conftest.py`` (``pytest_plugins``), so any test can ask for ``pg_cluster``
or ``pg_url``. Without PostgreSQL installed the tests that need it skip, saying how to
install it, unless ``METRICS_LAB_REQUIRE_POSTGRES=1`` (CI sets it): then they fail.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from typing import NoReturn

import pytest

from metrics_lab.postgres_cluster import (
    INSTALL_HINT,
    Cluster,
    find_postgres_bin,
    temporary_cluster,
)

REQUIRED = os.environ.get("METRICS_LAB_REQUIRE_POSTGRES") == "1"
"""Whether a missing PostgreSQL fails the tests that need it instead of skipping them."""

_names = itertools.count()


def _missing(reason: str) -> NoReturn:
    if REQUIRED:
        pytest.fail(f"METRICS_LAB_REQUIRE_POSTGRES=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """A PostgreSQL server of the test session's own, removed at the end of the session."""
    try:
        import psycopg  # noqa: F401 (only: is the driver there?)
    except ImportError:
        _missing("psycopg is not installed: pip install -e '.[postgres]' in the checkout")
    if find_postgres_bin() is None:
        _missing(INSTALL_HINT)
    # fsync off: faster, and still safe for what the tests crash (processes, not the machine).
    with temporary_cluster({"fsync": "off"}) as cluster:
        yield cluster


def new_database(cluster: Cluster) -> str:
    """The URL of a new, empty UTF-8 database on ``cluster``, named for this process."""
    return cluster.create_database(f"test_{os.getpid()}_{next(_names)}")


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> str:
    """The URL of a new, empty UTF-8 database on the session's cluster."""
    return new_database(pg_cluster)
