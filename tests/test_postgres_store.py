"""PostgresStore against a real PostgreSQL (tests/pg_cluster.py starts one): no mocks."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import Future

import psycopg
import pytest

from metrics_lab import Client, serve_in_background
from metrics_lab.postgres_cluster import Cluster
from metrics_lab.postgres_store import (
    FETCH_ROWS,
    POINTS_TABLE,
    SCHEMA_TABLE,
    SCHEMA_VERSION,
    PostgresStore,
)
from metrics_lab.session import STORE_ERROR_ANSWER, ServerSession
from metrics_lab.storage import (
    SNAPSHOT_PIECE,
    PointBatch,
    Series,
    Snapshot,
    StoreFailure,
    StoreOpenError,
)
from metrics_lab.stores import open_store
from tests.conftest import read_answers, unused_port
from tests.serve_process import run_serve

WAIT = 30.0  # seconds any future may take before the test fails (never reached when it works)


def as_tuples(series: list[Series]) -> list[tuple[str, list[int], list[float]]]:
    return [(s.key, list(s.timestamps), list(s.values)) for s in series]


def rows(url: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as db:
        return db.execute(query).fetchall()


@pytest.fixture
def store(pg_url: str):
    opened = PostgresStore(pg_url)
    yield opened
    opened.close()


def test_open_store_picks_postgres_for_a_url(pg_url: str):
    opened = open_store(pg_url)
    try:
        assert isinstance(opened, PostgresStore)
    finally:
        opened.close()


def test_batches_committed_together_keep_the_last_write(store: PostgresStore):
    # Queued at once, these share one transaction: the statement must pick the last value.
    futures = [store.write(PointBatch.of([("k", float(n), 1), ("k", -1.0, 2)])) for n in range(50)]
    futures.append(store.write(PointBatch.of([("k", 7.0, 2)])))
    for future in futures:
        future.result(WAIT)
    assert as_tuples(store.read("k")) == [("k", [1, 2], [49.0, 7.0])]


def test_a_large_get_streams_in_pieces_of_bounded_size(store: PostgresStore):
    count = 3 * FETCH_ROWS + 5
    keys = ["ключ", "k", "é", "\U0001d518", "K"]  # chunks end inside keys that sort by code point
    store.put_many((keys[n % 5], float(n), n) for n in range(count))
    pieces = [piece for piece in store.snapshot() if not isinstance(piece, Future)]
    assert all(len(piece.timestamps) <= SNAPSHOT_PIECE for piece in pieces)
    assert sum(len(piece.timestamps) for piece in pieces) == count
    whole = store.read()
    assert [s.key for s in whole] == sorted(keys)
    for series in whole:
        assert list(series.timestamps) == sorted(
            n for n in range(count) if keys[n % 5] == series.key
        )
        assert list(series.values) == [float(n) for n in series.timestamps]


def wait_for_piece(snapshot: Snapshot) -> Series:
    for piece in snapshot:
        if isinstance(piece, Future):
            piece.result(WAIT)
            continue
        return piece
    raise AssertionError("the snapshot ended early")


def test_a_snapshot_does_not_see_later_writes(store: PostgresStore):
    count = 4 * FETCH_ROWS
    store.put_many(("a", 1.0, n) for n in range(count))
    snapshot = store.snapshot()
    first = wait_for_piece(snapshot)  # the query runs: its snapshot is fixed from now on
    store.put_many([("a", 2.0, count + 1), ("b", 2.0, 1)])
    rest = [piece for piece in snapshot if not isinstance(piece, Future)]
    assert {first.key, *(piece.key for piece in rest)} == {"a"}
    assert len(first.timestamps) + sum(len(piece.timestamps) for piece in rest) == count
    assert len(store.read()) == 2


def test_an_abandoned_get_frees_its_reader(pg_url: str):
    store = PostgresStore(pg_url, readers=1, prefetch=1)
    try:
        store.put_many(("a", 1.0, n) for n in range(3 * FETCH_ROWS))
        snapshot = store.snapshot()
        wait_for_piece(snapshot)
        del snapshot  # a peer that went away mid-answer: its session drops the snapshot
        # The only reader serves the next get: it stopped feeding the abandoned one.
        assert len(store.read("a")[0].timestamps) == 3 * FETCH_ROWS
    finally:
        store.close()


def test_a_get_waiting_for_a_reader_is_failed_when_the_store_closes(pg_url: str):
    # The only reader is busy, so a second get waits for it; close() used to cancel that get
    # without a word, and whoever waited on its future waited forever.
    store = PostgresStore(pg_url, readers=1, prefetch=1)
    store.put_many(("big", 1.0, n) for n in range(3 * FETCH_ROWS))
    held = store.snapshot("big")
    wait_for_piece(held)  # the reader now waits for room to hand over more
    waiting = store.snapshot("big")
    wakeup = next(waiting)
    assert isinstance(wakeup, Future)
    store.close()
    wakeup.result(WAIT)  # done: the session that waited is woken
    with pytest.raises(StoreFailure, match="closed"):
        next(waiting)


def test_a_put_after_a_get_waits_until_the_gets_snapshot_is_fixed(pg_url: str):
    # The only reader is busy, so the get's snapshot is not fixed for a while; a put after it
    # on the same connection used to be committed meanwhile, and the get then showed it.
    store = PostgresStore(pg_url, readers=1, prefetch=1)
    try:
        store.put_many(("big", 1.0, n) for n in range(3 * FETCH_ROWS))
        held = store.snapshot("big")
        wait_for_piece(held)  # the reader now waits for room to hand over more
        with (
            serve_in_background(store=store) as server,
            socket.create_connection(server.address, timeout=WAIT) as sock,
        ):
            sock.sendall(b"put a 1 1\nget a\nput a 2 2\n")
            assert read_answers(sock, 1) == b"ok\n\n"
            time.sleep(1.0)  # the time a wrongly early put would take to be committed
            assert rows(pg_url, f"SELECT ts FROM {POINTS_TABLE} WHERE key = 'a'") == [(1,)]
            del held  # dropped, as by a session: the reader is free, the get reads, the put runs
            assert read_answers(sock, 2) == b"ok\na 1.0 1\n\nok\n\n"
            sock.sendall(b"get a\n")
            assert read_answers(sock, 1) == b"ok\na 1.0 1\na 2.0 2\n\n"
    finally:
        store.close()


def test_the_schema_is_created_with_its_version(store: PostgresStore, pg_url: str):
    assert rows(pg_url, f"SELECT version FROM {SCHEMA_TABLE}") == [(SCHEMA_VERSION,)]
    store.put_many([("cpu", 0.5, 1)])
    assert rows(pg_url, f"SELECT key, ts, value FROM {POINTS_TABLE}") == [("cpu", 1, 0.5)]
    PostgresStore(pg_url).close()  # a second open finds it as it should be


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (
            [f"CREATE TABLE {POINTS_TABLE} (key text, ts integer, value real)"],
            "table metric_points",
        ),
        (
            [
                f'CREATE TABLE {POINTS_TABLE} (key text COLLATE "C" NOT NULL, ts bigint NOT NULL, '
                "value double precision NOT NULL, PRIMARY KEY (key, ts))",
                f"CREATE TABLE {SCHEMA_TABLE} (version integer PRIMARY KEY)",
                f"INSERT INTO {SCHEMA_TABLE} VALUES (99)",
            ],
            "version [99]",
        ),
        (
            [f'CREATE TABLE {POINTS_TABLE} (key text COLLATE "C", ts bigint, value float8)'],
            "did not make",
        ),
    ],
    ids=["other-shape", "other-version", "no-version-table"],
)
def test_a_database_of_another_shape_or_version_is_refused_untouched(
    pg_url: str, setup: list[str], message: str
):
    with psycopg.connect(pg_url) as db:
        for statement in setup:
            db.execute(statement)
    before = rows(pg_url, "SELECT table_name FROM information_schema.tables ORDER BY 1")
    with pytest.raises(StoreOpenError, match="refusing") as refused:
        PostgresStore(pg_url)
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)
    assert rows(pg_url, "SELECT table_name FROM information_schema.tables ORDER BY 1") == before


def test_servers_opening_a_new_database_at_once_agree_on_one_schema(pg_url: str):
    opened: list[PostgresStore] = []
    failures: list[BaseException] = []

    def open_one() -> None:
        try:
            opened.append(PostgresStore(pg_url))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    for store in opened:
        store.close()
    assert failures == []
    assert rows(pg_url, f"SELECT version FROM {SCHEMA_TABLE}") == [(SCHEMA_VERSION,)]


def open_error(url: str) -> str:
    with pytest.raises(StoreOpenError) as failed:
        PostgresStore(url, connect_timeout=5)
    text = str(failed.value)
    assert "\n" not in text
    return text


def test_opening_fails_with_one_line_for_each_kind_of_bad_database(pg_cluster: Cluster):
    assert "127.0.0.1" in open_error(f"postgresql://postgres@127.0.0.1:{unused_port()}/metrics")
    wrong = pg_cluster.url.replace(":metrics-lab@", ":wrong@")
    assert "password" in open_error(wrong)
    assert "does not exist" in open_error(pg_cluster.url_of("no_such_database"))
    open_error("postgresql://127.0.0.1:notaport/x")
    assert "metrics-lab" not in open_error(wrong)  # no password in the message


def test_serve_with_a_bad_database_prints_one_line_and_exits_1(pg_cluster: Cluster):
    done = run_serve("--db", pg_cluster.url_of("no_such_database"))
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "does not exist" in done.stderr


def test_a_statement_timeout_fails_a_write_instead_of_hanging(pg_url: str):
    store = PostgresStore(pg_url, statement_timeout=0.5)
    try:
        with psycopg.connect(pg_url) as blocker:
            blocker.execute(f"LOCK TABLE {POINTS_TABLE} IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(StoreFailure, match="timeout"):
                store.put_many([("cpu", 1.0, 1)])
            blocker.rollback()
        store.put_many([("cpu", 2.0, 1)])
        assert as_tuples(store.read()) == [("cpu", [1], [2.0])]
    finally:
        store.close()


def test_the_session_answers_error_while_the_database_is_gone_then_recovers(
    pg_cluster: Cluster, pg_url: str
):
    store = PostgresStore(pg_url)
    try:
        session = ServerSession(store)
        store.put_many([("cpu", 1.0, 1)])
        pg_cluster.stop("immediate")
        try:
            session.receive_data(b"put cpu 2 2\nget cpu\n")
            answers = drain(session)
            assert answers == STORE_ERROR_ANSWER * 2
        finally:
            pg_cluster.start()
        session.receive_data(b"put cpu 3 3\n")
        # The first attempts may still meet the pause after the failed ones: poll.
        deadline = time.monotonic() + WAIT
        while (answer := drain(session)) != b"ok\n\n":
            assert answer == STORE_ERROR_ANSWER
            assert time.monotonic() < deadline, "the store did not recover"
            time.sleep(0.05)  # a pause between polls, not a wait for readiness
            session.receive_data(b"put cpu 3 3\n")
        assert as_tuples(store.read("cpu")) == [("cpu", [1, 3], [1.0, 3.0])]
    finally:
        store.close()


def drain(session: ServerSession) -> bytes:
    """Everything the session has to say, waiting for the store in between."""
    out = b""
    while True:
        out += session.data_to_send()
        if session.run_held_requests():
            continue
        waiting = session.waiting_for
        if waiting is None:
            return out
        waiting.exception(WAIT)  # done, one way or the other


def test_a_closed_store_refuses_writes(pg_url: str):
    store = PostgresStore(pg_url)
    future = store.write(PointBatch.of([("cpu", 1.0, 1)]))
    store.close()
    future.result(WAIT)  # queued before close: committed
    with pytest.raises(StoreFailure):
        store.write(PointBatch.of([("cpu", 1.0, 2)])).result(WAIT)
    assert rows(pg_url, f"SELECT count(*) FROM {POINTS_TABLE}") == [(1,)]


def test_large_gets_through_a_server_arrive_whole_every_time(pg_url: str):
    # A get that waits for the reader thread again and again: a missed wake-up would hang it.
    count = 3 * FETCH_ROWS
    with serve_in_background(db=pg_url) as server:
        with Client(*server.address, timeout=WAIT) as client:
            client.put_many((f"k{n % 7}", n / 4, n) for n in range(count))
        for _ in range(5):
            with socket.create_connection(server.address, timeout=WAIT) as sock:
                sock.sendall(b"get *\n")
                answer = read_answers(sock, 1)
            assert answer.startswith(b"ok\n")
            assert answer.count(b"\n") == count + 2
