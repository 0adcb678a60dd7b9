"""Several ``metrics-lab serve --db postgresql://...`` processes sharing one real database."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import psycopg
import pytest

from benchmarks.postgres import Ingest, stored_timestamps
from metrics_lab import Client, ClientError
from metrics_lab.postgres_cluster import Cluster
from metrics_lab.postgres_store import POINTS_TABLE
from tests.conftest import wait_until
from tests.serve_process import ServeProcess

WAIT = 60.0  # seconds a condition may take before the test fails (never reached when it works)


@contextlib.contextmanager
def servers(url: str, count: int) -> Iterator[list[ServeProcess]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(ServeProcess("--db", url)) for _ in range(count)]


def test_puts_through_one_server_are_read_through_another(pg_url: str):
    with servers(pg_url, 2) as (first, second):
        with Client(*first.address, timeout=WAIT) as client:
            client.put("web.cpu", 0.5, 10)
            client.put("web.cpu", 0.25, 5)
        with Client(*second.address, timeout=WAIT) as client:
            assert client.get("web.cpu") == {"web.cpu": [(5, 0.25), (10, 0.5)]}
            client.put("web.cpu", 0.75, 10)  # a later write through the other server wins
        with Client(*first.address, timeout=WAIT) as client:
            assert client.get("*") == {"web.cpu": [(5, 0.25), (10, 0.75)]}


def test_three_servers_see_every_point_acknowledged_by_any(pg_url: str):
    with servers(pg_url, 3) as running:
        clients = [Client(*server.address, timeout=WAIT) for server in running]
        try:
            for ts in range(30):
                clients[ts % 3].put(f"host{ts % 4}.load", ts / 2, ts)
                # The next server reads what the last one acknowledged, at once.
                assert (ts, ts / 2) in clients[(ts + 1) % 3].get(f"host{ts % 4}.load")[
                    f"host{ts % 4}.load"
                ]
            everything = [client.get("*") for client in clients]
        finally:
            for client in clients:
                client.close()
    assert everything[0] == everything[1] == everything[2]
    assert sum(len(points) for points in everything[0].values()) == 30


def test_concurrent_writers_of_one_key_and_timestamp_leave_exactly_one_value(pg_url: str):
    stamps = range(300)
    with servers(pg_url, 3) as running:

        def write(index: int) -> None:
            with Client(*running[index].address, timeout=WAIT) as client:
                for _ in range(2):
                    client.put_many([("same", float(index), ts) for ts in stamps])

        threads = [threading.Thread(target=write, args=(index,)) for index in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
        seen = []
        for server in running:
            with Client(*server.address, timeout=WAIT) as client:
                seen.append(client.get("same"))
    assert seen[0] == seen[1] == seen[2]
    points = seen[0]["same"]
    assert [ts for ts, _ in points] == list(stamps)
    assert {value for _, value in points} <= {0.0, 1.0, 2.0}
    with psycopg.connect(pg_url) as db:
        assert db.execute(f"SELECT count(*) FROM {POINTS_TABLE}").fetchone() == (len(stamps),)


def test_killing_a_server_mid_ingest_loses_no_acknowledged_point(pg_url: str):
    with servers(pg_url, 2) as (victim, survivor):
        doomed = Ingest(victim.address, "doomed", batch=100, count=200_000)
        steady = Ingest(survivor.address, "steady", batch=100, count=6_000)
        doomed.start()
        steady.start()
        try:
            wait_until(
                lambda: len(doomed.acked) >= 2_000, "the first server acknowledged puts", WAIT
            )
            victim.proc.kill()  # SIGKILL on POSIX: no goodbye, no flush
            doomed.join(WAIT)
            steady.join(WAIT)
        finally:
            doomed.stop()
            steady.stop()
        assert doomed.cut_off
        assert steady.acked == list(range(6_000)), "the other server went on"
        # Every acknowledged point is in the database, read through the surviving server.
        with Client(*survivor.address, timeout=WAIT) as client:
            stored = {ts for ts, _ in client.get("doomed")["doomed"]}
            client.put("after", 1.0, 1)
            assert client.get("after") == {"after": [(1, 1.0)]}
        assert set(doomed.acked) <= stored
        assert stored == stored_timestamps(pg_url, "doomed")


def test_a_database_restart_gives_errors_meanwhile_and_the_server_recovers_by_itself(
    pg_cluster: Cluster, pg_url: str
):
    with servers(pg_url, 1) as (server,):
        ingest = Ingest(server.address, "through", batch=50)
        ingest.start()
        try:
            wait_until(lambda: len(ingest.acked) >= 500, "puts were acknowledged", WAIT)
            pg_cluster.stop("immediate")  # a crash of the database
            try:
                wait_until(lambda: ingest.refused > 0, "puts were refused", WAIT)
                with (
                    Client(*server.address, timeout=WAIT) as client,
                    pytest.raises(ClientError, match="store unavailable"),
                ):
                    client.get("through")
            finally:
                pg_cluster.start()
            acked_before = len(ingest.acked)
            wait_until(lambda: len(ingest.acked) > acked_before + 500, "puts succeeded again", WAIT)
        finally:
            ingest.stop()
        assert server.proc.poll() is None, "the server stayed up"
        assert not ingest.cut_off
        with Client(*server.address, timeout=WAIT) as client:
            stored = {ts for ts, _ in client.get("through")["through"]}
    assert set(ingest.acked) <= stored
