"""SQLiteStore: opening errors are clear and harmless, data survives restarts, crashes and
damaged folds, and a damaged or read-only file gives one line, never a traceback."""

from __future__ import annotations

import logging
import random
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from metrics_lab import Client, ClientError, serve_in_background
from metrics_lab.sqlite_store import APPLICATION_ID, SQLiteStore
from metrics_lab.storage import PointBatch, StoreFailure, StoreOpenError
from tests.serve_process import ServeProcess, run_serve

TIMEOUT = 10.0
POSIX_ONLY = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
PAGE = 4096

Point = tuple[str, float, int]


def contents(
    store: SQLiteStore, key: str | None = None
) -> list[tuple[str, list[int], list[float]]]:
    return [(s.key, list(s.timestamps), list(s.values)) for s in store.read(key)]


def table_rows(path: Path) -> dict[str, int]:
    """Rows in each table, read by plain sqlite3 (the store must be closed or crashed)."""
    db = sqlite3.connect(path)
    try:
        return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
    finally:
        db.close()


TABLES = ("series", "journal")


def crash_after_putting(path: Path, *batches: list[Point], **options: object) -> None:
    """In a child process: open the store, put each batch (each is committed when put_many
    returns), then die at once, without close(): what a crash leaves behind."""
    code = (
        "import os, sys\n"
        "from metrics_lab.sqlite_store import SQLiteStore\n"
        f"store = SQLiteStore(sys.argv[1], **{options!r})\n"
        f"for batch in {batches!r}:\n"
        "    store.put_many(batch)\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=60)


# --- the basics ------------------------------------------------------------------------


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


@pytest.mark.parametrize(
    "bad",
    [("cpu", 0.6, 2**70), ("bad\udc80", 0.6, 1), ("two\nlines", 0.6, 1), ("a b", 0.6, 1)],
    ids=["timestamp beyond 64 bits", "not UTF-8", "newline", "space"],
)
def test_a_batch_with_a_point_the_file_cannot_hold_fails_whole(tmp_path: Path, bad: Point) -> None:
    store = SQLiteStore(tmp_path / "metrics.db")
    with pytest.raises(StoreFailure, match="cannot hold"):
        store.put_many([("cpu", 0.5, 1), bad])
    store.put_many([("cpu", 0.7, 2)])  # the store goes on
    store.close()
    store = SQLiteStore(tmp_path / "metrics.db")
    assert contents(store) == [("cpu", [2], [0.7])]
    store.close()


def test_close_twice_does_nothing_and_a_write_after_close_fails(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "metrics.db")
    store.put_many([("cpu", 0.5, 1)])
    store.close()
    store.close()
    with pytest.raises(StoreFailure, match="closed"):
        store.put_many([("cpu", 0.6, 2)])


def test_writes_from_many_threads_are_all_committed(tmp_path: Path) -> None:
    path = tmp_path / "metrics.db"
    store = SQLiteStore(path)

    def put(index: int) -> None:
        for start in range(0, 2000, 100):
            store.put_many([(f"t{index}", float(t), t) for t in range(start, start + 100)])

    threads = [threading.Thread(target=put, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT * 6)
    store.close()
    store = SQLiteStore(path)
    assert [(key, len(ts)) for key, ts, _ in contents(store)] == [(f"t{i}", 2000) for i in range(8)]
    store.close()


# --- the journal and its fold ----------------------------------------------------------


def test_batches_are_journaled_then_folded_into_one_row_per_key(tmp_path: Path) -> None:
    path = tmp_path / "metrics.db"
    crash_after_putting(path, [("cpu", 0.5, 1), ("mem", 7.0, 1)], [("cpu", 0.6, 2)])
    assert table_rows(path) == {"series": 0, "journal": 2}  # one row per batch
    store = SQLiteStore(path)
    store.put_many([("cpu", 0.9, 2), ("disk", 1.0, 3), ("cpu", 0.1, 0)])
    store.close()  # folds
    assert table_rows(path) == {"series": 3, "journal": 0}
    reopened = SQLiteStore(path)
    assert contents(reopened) == [
        ("cpu", [0, 1, 2], [0.1, 0.5, 0.9]),
        ("disk", [3], [1.0]),
        ("mem", [1], [7.0]),
    ]
    reopened.close()


class LogWatch(logging.Handler):
    """Sets an event when a record containing ``text`` is logged (no sleeps to wait)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()


@pytest.fixture
def watch_log() -> Iterator[Callable[[str], LogWatch]]:
    logger = logging.getLogger("metrics_lab.sqlite_store")
    handlers: list[LogWatch] = []
    level = logger.level
    logger.setLevel(logging.INFO)

    def watch(text: str) -> LogWatch:
        handler = LogWatch(text)
        logger.addHandler(handler)
        handlers.append(handler)
        return handler

    yield watch
    for handler in handlers:
        logger.removeHandler(handler)
    logger.setLevel(level)


def test_a_journal_left_by_a_crash_is_replayed_and_folded_in_the_background(
    tmp_path: Path, watch_log: Callable[[str], LogWatch]
) -> None:
    path = tmp_path / "metrics.db"
    store = SQLiteStore(path)
    store.put_many([("cpu", 0.5, 2), ("cpu", 0.4, 1)])
    store.close()
    crash_after_putting(path, [("cpu", 0.7, 2), ("mem", 1.5, 5)])
    assert table_rows(path) == {"series": 1, "journal": 1}
    folded = watch_log("folded")
    store = SQLiteStore(path)
    assert contents(store) == [("cpu", [1, 2], [0.4, 0.7]), ("mem", [5], [1.5])]
    assert folded.seen.wait(TIMEOUT)  # the worker folds it without being asked
    store.put_many([("mem", 2.5, 6)])
    store.close()
    assert table_rows(path) == {"series": 2, "journal": 0}


def test_a_put_is_answered_while_a_fold_is_under_way(tmp_path: Path) -> None:
    # The fold of 6,000 keys takes 600 transactions of 10 keys here. A put that arrives
    # meanwhile is committed between two of them: when its future completes (its callback
    # runs in the worker, so nothing moves meanwhile), most of the fold is still to do.
    keys = 6000
    store = SQLiteStore(tmp_path / "metrics.db", compact_every=keys, fold_chunk=10)
    unfolded_when_answered: list[int] = []
    store.put_many([(f"k{i}", 0.5, 1) for i in range(keys)])  # starts the fold
    written = store.write(PointBatch.of([("late", 1.0, 1)]))
    written.add_done_callback(lambda _: unfolded_when_answered.append(store.unfolded_keys))
    written.result(TIMEOUT)
    store.close()
    assert unfolded_when_answered[0] > keys // 2  # answered long before the fold's end
    # close folded it too, in a second fold: the first had taken its keys before it came.
    assert table_rows(tmp_path / "metrics.db") == {"series": keys + 1, "journal": 0}
    store = SQLiteStore(tmp_path / "metrics.db")
    assert len(store) == keys + 1
    store.close()


def reopen_and_read(path: Path) -> list[tuple[str, list[int], list[float]]]:
    store = SQLiteStore(path)
    try:
        return contents(store)
    finally:
        store.close()


def test_a_fold_cut_short_reopens_to_the_same_data(tmp_path: Path) -> None:
    # A fold that fails part way (here the disk fills up) leaves what a crash mid-fold
    # leaves: some keys rewritten in ``series`` with newer points, every journal row still
    # there. Replaying the whole journal over that must give exactly the acknowledged data.
    path = tmp_path / "metrics.db"
    keys = [f"host{i:04}.cpu.user" for i in range(3000)]
    store = SQLiteStore(path)
    store.put_many([(key, 1.0, 1) for key in keys])
    store.close()
    store = SQLiteStore(path, compact_every=10**9, fold_chunk=50)
    store.put_many([(key, 2.0, 2) for key in keys])
    store.put_many([(key, 3.0, 1) for key in keys[::2]])  # rewrites: last write wins
    store.max_size_bytes = PAGE  # below its size: the file may not grow any more
    with pytest.raises(StoreFailure, match="could not finish writing") as failure:
        store.close()
    assert "\n" not in str(failure.value)
    # Really cut short: some keys hold their new points in ``series`` already, and the
    # journal still has every row.
    with sqlite3.connect(path) as db:
        rewritten = db.execute("SELECT count(*) FROM series WHERE length(timestamps) = 16")
        assert 0 < rewritten.fetchone()[0] < len(keys)
        assert db.execute("SELECT count(*) FROM journal").fetchone()[0] == 2
    db.close()
    expected = [
        (key, [1, 2], [3.0 if index % 2 == 0 else 1.0, 2.0]) for index, key in enumerate(keys)
    ]
    assert reopen_and_read(path) == expected  # replayed over the half-written series
    assert reopen_and_read(path) == expected  # and again, after its own complete fold
    assert table_rows(path) == {"series": len(keys), "journal": 0}


OLD_KEYS, NEW_KEYS = 1500, 3000


def a_failed_fold(path: Path, watch_log: Callable[[str], LogWatch]) -> SQLiteStore:
    """A store whose fold of NEW_KEYS keys failed for want of room, all of their points
    committed, and a put of key "more" committed after that; the file is still capped."""
    store = SQLiteStore(path)
    store.put_many([(f"old{i % OLD_KEYS:04}.cpu.user", 1.0, i) for i in range(5000)])
    store.close()  # folded: the journal's ~40 pages are free pages of the file now
    keys = [f"host{i:04}.cpu.user" for i in range(NEW_KEYS)]
    failed = watch_log("trying again")
    # The file may not grow: its free pages hold the journal row of 3,000 points (~25
    # pages), not that plus the ~33 pages of new series rows the fold writes.
    store = SQLiteStore(path, compact_every=len(keys), max_size_bytes=PAGE)
    store.put_many([(key, 1.0, 1) for key in keys])  # committed: no error, whatever the fold
    assert failed.seen.wait(TIMEOUT)
    store.put_many([("more", 1.0, t) for t in range(20)])  # and puts go on
    return store


def test_a_fold_that_fails_after_a_good_commit_is_retried_and_costs_no_put(
    tmp_path: Path, watch_log: Callable[[str], LogWatch]
) -> None:
    path = tmp_path / "metrics.db"
    store = a_failed_fold(path, watch_log)
    folded = watch_log("folded")  # (not before: the close in a_failed_fold folds)
    store.max_size_bytes = None  # room again: the fold is tried again, by itself
    assert folded.seen.wait(TIMEOUT)
    assert store.unfolded_keys == 1  # "more", put after the fold began
    store.close()
    assert table_rows(path) == {"series": OLD_KEYS + NEW_KEYS + 1, "journal": 0}
    assert len(reopen_and_read(path)) == OLD_KEYS + NEW_KEYS + 1


def test_close_right_after_a_failed_fold_folds_every_key(
    tmp_path: Path, watch_log: Callable[[str], LogWatch]
) -> None:
    # The close comes before the retry is due: it finishes the failed fold, and then must
    # fold "more" too (it used to stop after the first, leaving "more" in the journal).
    path = tmp_path / "metrics.db"
    store = a_failed_fold(path, watch_log)
    store.max_size_bytes = None
    store.close()
    assert table_rows(path) == {"series": OLD_KEYS + NEW_KEYS + 1, "journal": 0}


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


def assert_one_line_failure(result: subprocess.CompletedProcess[str], message: str) -> str:
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("metrics-lab: ")
    assert message in lines[0]
    return lines[0]


@pytest.mark.parametrize("case", list(BAD_PATHS))
def test_bad_database_path_cli_exits_1_with_one_line(tmp_path: Path, case: str) -> None:
    make, message = BAD_PATHS[case]
    path = make(tmp_path)
    before = snapshot(tmp_path)
    assert_one_line_failure(run_serve("--db", str(path)), message)
    assert snapshot(tmp_path) == before


def test_database_locked_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "metrics.db"
    SQLiteStore(path).close()
    holder_code = (
        "import sys\n"
        "from metrics_lab.sqlite_store import SQLiteStore\n"
        "store = SQLiteStore(sys.argv[1])\n"
        "store.put_many([('cpu', 0.5, 1)])\n"
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
        assert_one_line_failure(run_serve("--db", str(path)), "another process")
    finally:
        holder.communicate("", timeout=TIMEOUT)
    assert reopen_and_read(path) == [("cpu", [1], [0.5])]  # nothing was damaged


# --- read-only files: the permissions hint ---------------------------------------------
#
# chmod alone proves nothing when the tests run as root (as in many containers): root writes
# read-only files anyway. There the server is started without the privileges that let root
# ignore file modes (Linux's setpriv drops CAP_DAC_OVERRIDE and friends from the child), so
# the modes bind as they do for everyone else. Without setpriv the test is skipped, saying so.

UNPRIVILEGED = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]


def serve_without_write_permission(path: Path) -> subprocess.CompletedProcess[str]:
    try:
        with open(path, "r+b"):
            writes_anyway = True
    except PermissionError:
        writes_anyway = False
    command = [sys.executable, "-m", "metrics_lab", "serve", "--port", "0", "--db", str(path)]
    if writes_anyway:
        if not sys.platform.startswith("linux") or shutil.which("setpriv") is None:
            pytest.skip("this process writes read-only files anyway and cannot drop that")
        command = UNPRIVILEGED + command
    return subprocess.run(command, capture_output=True, text=True, timeout=20, check=False)


@pytest.mark.parametrize("journal", [False, True], ids=["clean", "with journal rows"])
def test_a_read_only_database_file_gives_the_permissions_hint(
    tmp_path: Path, journal: bool
) -> None:
    path = tmp_path / "metrics.db"
    store = SQLiteStore(path)
    store.put_many([("cpu", 0.5, 1)])
    store.close()
    if journal:
        crash_after_putting(path, [("cpu", 0.6, 2)])
        with sqlite3.connect(path) as db:  # the log into the file, so that one file holds all
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()
    before = snapshot(tmp_path)
    path.chmod(0o444)
    try:
        line = assert_one_line_failure(
            serve_without_write_permission(path), "check that the file and its directory"
        )
        assert str(path) in line
    finally:
        path.chmod(0o644)
    assert snapshot(tmp_path) == before


def test_a_database_in_a_read_only_directory_gives_the_permissions_hint(tmp_path: Path) -> None:
    if sys.platform == "win32":
        pytest.skip("Windows has no read-only directories (the flag is ignored)")
    folder = tmp_path / "locked"
    folder.mkdir()
    path = folder / "metrics.db"
    SQLiteStore(path).close()
    folder.chmod(0o555)
    try:
        assert_one_line_failure(serve_without_write_permission(path), "writable")
    finally:
        folder.chmod(0o755)


# --- damaged files: a one-line error, never a traceback ---------------------------------


def clean_file(tmp_path: Path) -> Path:
    path = tmp_path / "clean.db"
    store = SQLiteStore(path)
    # Many short series: the file is mostly structure (cells, keys, headers), not numbers.
    store.put_many([(f"host{i % 300}.cpu", i * 0.25, i // 300) for i in range(600)])
    store.close()
    return path


def file_with_journal(tmp_path: Path) -> Path:
    path = clean_file(tmp_path)
    crash_after_putting(
        path,
        [(f"host{i % 300}.cpu", -1.5, 1000 + i) for i in range(500)],
        [(f"new{i}.mem", 2.5, i) for i in range(300)],
    )
    with sqlite3.connect(path) as db:  # the log into the file: every byte is in one file
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    assert table_rows(path)["journal"] == 2
    return path


def open_damaged(path: Path) -> None:
    """Open ``path``: either a clear StoreOpenError, or a store that reads, writes, closes
    (a damaged page that only a write finds may fail that write, with a one-line message)."""
    messages: list[str] = []
    named = True
    try:
        store = SQLiteStore(path, lock_timeout=0.05)
    except StoreOpenError as exc:
        messages.append(str(exc))
        named = str(path) in str(exc)
    else:
        try:
            store.read()
            store.put_many([("after", 1.0, 1)])
        except StoreFailure as exc:
            messages.append(str(exc))
        try:
            store.close()
        except StoreFailure as exc:
            messages.append(str(exc))
    assert named, messages
    assert all("\n" not in message for message in messages), messages


@pytest.mark.parametrize("make", [clean_file, file_with_journal], ids=["clean", "journal"])
def test_flipped_bytes_give_a_clear_error_never_a_traceback(
    tmp_path: Path, make: Callable[[Path], Path]
) -> None:
    original = make(tmp_path).read_bytes()
    rng = random.Random(10)
    # Every byte of the header, then offsets all over the pages (headers, cells, blobs).
    offsets = list(range(100)) + sorted(rng.sample(range(100, len(original)), 300))
    damaged = tmp_path / "damaged.db"
    for offset in offsets:
        data = bytearray(original)
        data[offset] ^= rng.choice([0x01, 0x80, 0xFF, rng.randrange(1, 256)])
        for leftover in tmp_path.glob("damaged.db*"):
            leftover.unlink()
        damaged.write_bytes(bytes(data))
        open_damaged(damaged)


@pytest.mark.parametrize("make", [clean_file, file_with_journal], ids=["clean", "journal"])
def test_a_truncated_file_gives_a_clear_error(tmp_path: Path, make: Callable[[Path], Path]) -> None:
    original = make(tmp_path).read_bytes()
    damaged = tmp_path / "damaged.db"
    for length in [1, 50, 99, 100, 101, 4095, 4096, 5000, len(original) // 2, len(original) - 1]:
        for leftover in tmp_path.glob("damaged.db*"):
            leftover.unlink()
        damaged.write_bytes(original[:length])
        open_damaged(damaged)


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
