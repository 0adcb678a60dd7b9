"""SQLiteStore: opening errors are clear and harmless, data survives restarts and SIGKILL."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from metrics_lab import Client, ClientError, serve_in_background
from metrics_lab.sqlite_store import APPLICATION_ID, SQLiteStore, StoreOpenError
from tests.serve_process import ServeProcess, run_serve

TIMEOUT = 10.0
POSIX_ONLY = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and chmod are POSIX")


def test_serve_in_background_with_db_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "metrics.db"
    with serve_in_background(db=path) as server, Client(*server.address, TIMEOUT) as client:
        client.put_many([("cpu", 0.5, 1), ("cpu", 0.6, 2), ("mem", 7, 1)])
    with serve_in_background(db=path) as server, Client(*server.address, TIMEOUT) as client:
        assert client.get("*") == {"cpu": [(1, 0.5), (2, 0.6)], "mem": [(1, 7.0)]}
        client.put("cpu", 0.9, 2)  # last write wins, also across restarts
        assert client.get("cpu") == {"cpu": [(1, 0.5), (2, 0.9)]}


def test_the_background_server_closes_the_store_it_opened(tmp_path: Path) -> None:
    path = tmp_path / "metrics.db"
    with serve_in_background(db=path), pytest.raises(StoreOpenError, match="another process"):
        SQLiteStore(path)  # held while the server runs
    SQLiteStore(path).close()  # and free once it stopped


def test_a_failed_put_is_rolled_back(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "metrics.db")
    with pytest.raises(OverflowError):
        store.put_many([("cpu", 1, 0.5), ("cpu", 2**70, 0.6)])  # too big for SQLite
    assert store.read() == []
    store.close()


TABLES = ("series", "journal")


def table_rows(path: Path) -> dict[str, int]:
    """Rows in each table, read by plain sqlite3 (the store must be closed)."""
    with sqlite3.connect(path) as db:
        rows = {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
    db.close()
    return rows


def test_each_put_many_is_one_journal_row_until_compaction(tmp_path: Path) -> None:
    path = tmp_path / "metrics.db"
    store = SQLiteStore(path, compact_every=5)
    store.put_many([("cpu", 1, 0.5), ("mem", 1, 7.0)])
    store.put_many([("cpu", 2, 0.6)])
    assert store._db.execute("SELECT count(*) FROM journal").fetchone() == (2,)
    store.put_many([("cpu", 2, 0.9), ("disk", 3, 1.0)])  # the 5th point: folded into series
    assert store._db.execute("SELECT count(*) FROM journal").fetchone() == (0,)
    store.put_many([("cpu", 0, 0.1)])
    store.close()  # compacts too
    assert table_rows(path) == {"series": 3, "journal": 0}
    reopened = SQLiteStore(path)
    assert [(s.key, list(s.timestamps), list(s.values)) for s in reopened.read()] == [
        ("cpu", [0, 1, 2], [0.1, 0.5, 0.9]),
        ("disk", [3], [1.0]),
        ("mem", [1], [7.0]),
    ]
    reopened.close()


def test_a_journal_left_by_a_crash_is_replayed_and_folded(tmp_path: Path) -> None:
    path = tmp_path / "metrics.db"
    store = SQLiteStore(path)
    store.put_many([("cpu", 2, 0.5), ("cpu", 1, 0.4)])
    store.close()
    store = SQLiteStore(path)
    store.put_many([("cpu", 2, 0.7), ("mem", 5, 1.5)])
    store._db.close()  # gone without close(): the last put is only in the journal
    assert table_rows(path) == {"series": 1, "journal": 1}
    store = SQLiteStore(path)
    assert store._db.execute("SELECT count(*) FROM journal").fetchone() == (0,)  # folded
    assert [(s.key, list(s.timestamps), list(s.values)) for s in store.read()] == [
        ("cpu", [1, 2], [0.4, 0.7]),
        ("mem", [5], [1.5]),
    ]
    store.close()


@pytest.mark.parametrize(
    ("key", "error"), [("bad\udc80", UnicodeEncodeError), ("two\nlines", ValueError)]
)
def test_a_key_the_file_cannot_hold_is_refused_whole(
    tmp_path: Path, key: str, error: type[Exception]
) -> None:
    store = SQLiteStore(tmp_path / "metrics.db")
    with pytest.raises(error):
        store.put_many([("cpu", 1, 0.5), (key, 1, 0.6)])
    store.put_many([("cpu", 2, 0.7)])  # the store goes on
    store.close()
    store = SQLiteStore(tmp_path / "metrics.db")
    assert [(s.key, list(s.timestamps)) for s in store.read()] == [("cpu", [2])]
    store.close()


# --- opening errors: one clear line, exit 1, nothing changed -----------------------------


def not_sqlite(tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"these are my notes, not a database\n" * 100)
    return path


def other_programs_db(tmp_path: Path) -> Path:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE accounts (name TEXT)")
    db.close()
    return path


def other_format_db(tmp_path: Path) -> Path:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE points (key TEXT, timestamp INTEGER, value REAL)")
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")  # ours, but format 0
    db.close()
    return path


def missing_directory(tmp_path: Path) -> Path:
    return tmp_path / "no" / "such" / "dir" / "metrics.db"


def directory_not_file(tmp_path: Path) -> Path:
    return tmp_path


def file_as_directory(tmp_path: Path) -> Path:
    (tmp_path / "plain").write_text("x")
    return tmp_path / "plain" / "metrics.db"


BAD_PATHS = {
    "not SQLite": (not_sqlite, "not an SQLite database"),
    "another program's database": (other_programs_db, "another program"),
    "another format": (other_format_db, "another version of metrics_lab"),
    "missing directory": (missing_directory, "does not exist"),
    "a directory": (directory_not_file, "not a regular file"),
    "a file as directory": (file_as_directory, "is not a directory"),
}


def snapshot(tmp_path: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", list(BAD_PATHS))
def test_bad_database_path_library_raises(tmp_path: Path, case: str) -> None:
    make, message = BAD_PATHS[case]
    path = make(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(StoreOpenError, match=message):
        SQLiteStore(path)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("case", list(BAD_PATHS))
def test_bad_database_path_cli_exits_1_with_one_line(tmp_path: Path, case: str) -> None:
    make, message = BAD_PATHS[case]
    path = make(tmp_path)
    before = snapshot(tmp_path)
    result = run_serve("--db", str(path))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("metrics-lab: ")
    assert message in lines[0]
    assert snapshot(tmp_path) == before


@POSIX_ONLY
@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write anyway")
def test_unwritable_directory(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(StoreOpenError, match="writable"):
            SQLiteStore(locked / "metrics.db")
    finally:
        locked.chmod(0o700)
    assert list(locked.iterdir()) == []


def test_database_locked_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "metrics.db"
    SQLiteStore(path).close()
    holder_code = (
        "import sys\n"
        "from metrics_lab.sqlite_store import SQLiteStore\n"
        "store = SQLiteStore(sys.argv[1])\n"
        "store.put_many([('cpu', 1, 0.5)])\n"
        "print('holding', flush=True)\n"
        "sys.stdin.read()\n"
        "store.close()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", holder_code, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "holding\n"
        with pytest.raises(StoreOpenError, match="another process"):
            SQLiteStore(path, lock_timeout=0.1)
        result = run_serve("--db", str(path))
        assert result.returncode == 1
        assert "another process" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    finally:
        holder.communicate("", timeout=TIMEOUT)
    store = SQLiteStore(path)  # nothing was damaged: the holder's point is there
    assert [(s.key, list(s.timestamps)) for s in store.read()] == [("cpu", [1])]
    store.close()


# --- crash: SIGKILL during heavy ingest --------------------------------------------------

CLIENTS = 4
BATCH = 500
ACKED_BEFORE_KILL = 40_000


@POSIX_ONLY
def test_sigkill_during_ingest_loses_nothing_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "metrics.db"
    acked: list[list[int]] = [[] for _ in range(CLIENTS)]  # per client: batches answered ok
    enough = threading.Event()
    total = [0]
    lock = threading.Lock()

    def ingest(index: int, address: tuple[str, int]) -> None:
        try:
            with Client(*address, timeout=TIMEOUT) as client:
                for batch in range(10_000):
                    client.put_many(
                        [
                            (f"client{index}", float(t), t)
                            for t in range(batch * BATCH, (batch + 1) * BATCH)
                        ]
                    )
                    acked[index].append(batch)
                    with lock:
                        total[0] += BATCH
                        if total[0] >= ACKED_BEFORE_KILL:
                            enough.set()
        except ClientError:
            return  # the server was killed under us: expected

    with ServeProcess("--db", str(path)) as server:
        threads = [
            threading.Thread(target=ingest, args=(i, server.address)) for i in range(CLIENTS)
        ]
        for thread in threads:
            thread.start()
        assert enough.wait(60), "the clients never got going"
        server.kill()  # SIGKILL, in the middle of the flow
        for thread in threads:
            thread.join(TIMEOUT * 2)
        assert not any(thread.is_alive() for thread in threads)

    acknowledged = sum(len(batches) for batches in acked) * BATCH
    assert acknowledged >= ACKED_BEFORE_KILL

    with sqlite3.connect(path) as db:  # opens cleanly (recovering the log) and is intact
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()

    with ServeProcess("--db", str(path)) as server, Client(*server.address, TIMEOUT) as client:
        stored = client.get("*")
    for index, batches in enumerate(acked):
        have = {timestamp for timestamp, _ in stored.get(f"client{index}", [])}
        for batch in batches:
            missing = set(range(batch * BATCH, (batch + 1) * BATCH)) - have
            assert not missing, f"client{index} batch {batch}: {len(missing)} acked points lost"
    print(f"acknowledged {acknowledged} points before SIGKILL; all found after restart")
