"""A throwaway PostgreSQL server for notebooks, tests and benchmarks (a teaching helper).

:func:`temporary_cluster` runs ``initdb`` in a temporary directory, starts the server with
``pg_ctl`` on a free loopback port, creates a UTF-8 database, and removes everything when the
``with`` block ends. It needs PostgreSQL's server programs, found on ``PATH`` or under
``/usr/lib/postgresql/*/bin`` (Debian's place); without them it raises
:class:`PostgresNotFound`, whose message says how to install them. Run as root, it runs them
as the ``postgres`` user, since PostgreSQL refuses to run as root.

This is not how to run PostgreSQL for real data (that is a packaged, supervised service);
it is how a lesson or a test gets a real database of its own in a second::

    with temporary_cluster() as cluster:
        store = PostgresStore(cluster.url)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

__all__ = [
    "INSTALL_HINT",
    "Cluster",
    "PostgresNotFound",
    "find_postgres_bin",
    "temporary_cluster",
]

INSTALL_HINT: Final = (
    "PostgreSQL's server programs (initdb, pg_ctl) were not found on PATH or under "
    "/usr/lib/postgresql/*/bin; install them with `apt-get install postgresql` (Debian, "
    "Ubuntu) or `conda install -c conda-forge postgresql`"
)
"""What to do when there is no PostgreSQL: the message of :class:`PostgresNotFound`."""

DATABASE: Final = "metrics"
"""The name of the database :func:`temporary_cluster` creates."""

PASSWORD: Final = "metrics-lab"
"""The ``postgres`` user's password in a temporary cluster (connections over TCP ask for it)."""

_START_TIMEOUT: Final = 60  # seconds pg_ctl waits for the server to accept connections


class PostgresNotFound(RuntimeError):
    """PostgreSQL's server programs are not installed here; the message says how to get them."""


def find_postgres_bin() -> Path | None:
    """The directory that holds ``initdb`` and ``pg_ctl``, or ``None`` if there is none."""
    on_path = shutil.which("pg_ctl")
    if on_path is not None and shutil.which("initdb") is not None:
        return Path(on_path).resolve().parent
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
    )
    for folder in reversed(candidates):  # the newest version first
        if (folder / "pg_ctl").is_file() and (folder / "initdb").is_file():
            return folder
    return None


@dataclass
class Cluster:
    """A running temporary PostgreSQL server: where it is, and how to crash and restart it."""

    bin: Path
    """The directory of ``initdb``, ``pg_ctl`` and ``postgres``."""
    directory: Path
    """The temporary directory: ``data/``, the log file and the Unix socket."""
    port: int
    """The loopback port the server listens on."""
    settings: Mapping[str, str] = field(default_factory=dict)
    """Extra server settings (``-c name=value``)."""

    @property
    def url(self) -> str:
        """The database URL, for ``--db`` or :class:`~metrics_lab.postgres_store.PostgresStore`."""
        return self.url_of(DATABASE)

    def url_of(self, database: str) -> str:
        """The URL of another database of this server (see :meth:`create_database`)."""
        return f"postgresql://postgres:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create a UTF-8 database ``name`` (a plain identifier) and return its URL."""
        import psycopg  # the postgres extra: imported only when a database is made

        with psycopg.connect(self.url_of("postgres"), autocommit=True, connect_timeout=10) as db:
            db.execute(f"CREATE DATABASE \"{name}\" ENCODING 'UTF8' TEMPLATE template0")
        return self.url_of(name)

    def start(self) -> None:
        """Start the server (again) and return once it accepts connections."""
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1"
        for name, value in self.settings.items():
            options += f" -c {name}={value}"
        self._pg_ctl("start", "-w", "-t", str(_START_TIMEOUT), "-l", str(self.log), "-o", options)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; ``mode="immediate"`` is a crash (no checkpoint, recovery at start)."""
        self._pg_ctl("stop", "-w", "-t", str(_START_TIMEOUT), "-m", mode)

    @property
    def log(self) -> Path:
        """The server's log file."""
        return self.directory / "postgres.log"

    def _pg_ctl(self, *args: str) -> None:
        _run([str(self.bin / "pg_ctl"), "-D", str(self.directory / "data"), *args])


def _run(command: list[str]) -> None:
    if os.name == "posix" and os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stdout}{done.stderr}".strip())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@contextlib.contextmanager
def temporary_cluster(settings: Mapping[str, str] | None = None) -> Iterator[Cluster]:
    """Start a PostgreSQL server of our own, with a database :data:`DATABASE`; remove it after.

    ``settings`` are extra server settings, such as ``{"fsync": "off"}`` for faster tests.
    Raises :class:`PostgresNotFound` if PostgreSQL is not installed.
    """
    folder = find_postgres_bin()
    if folder is None:
        raise PostgresNotFound(INSTALL_HINT)
    directory = Path(tempfile.mkdtemp(prefix="metrics-lab-pg-"))
    try:
        if os.name == "posix" and os.geteuid() == 0:
            import pwd  # POSIX only

            user = pwd.getpwnam("postgres")
            os.chown(directory, user.pw_uid, user.pw_gid)
        password_file = directory / "password"
        password_file.write_text(PASSWORD)
        password_file.chmod(0o644)
        _run(
            [
                str(folder / "initdb"),
                *("-D", str(directory / "data"), "-U", "postgres", "-E", "UTF8", "--no-locale"),
                *("--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={password_file}"),
            ]
        )
        password_file.unlink()
        for attempt in range(3):  # the free port may be taken between probe and start
            cluster = Cluster(folder, directory, _free_port(), dict(settings or {}))
            try:
                cluster.start()
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        try:
            cluster.create_database(DATABASE)
            yield cluster
        finally:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                cluster.stop("immediate")
    finally:
        shutil.rmtree(directory, ignore_errors=True)
