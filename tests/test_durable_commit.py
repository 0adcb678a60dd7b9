"""The durable commit path cannot lie: a put is answered ``ok`` only once it is committed.

Real servers on 127.0.0.1, real SQLite files, a real ``SQLITE_FULL``: the store's own size
cap (``max_size_bytes``, SQLite's ``max_page_count``) makes the database full exactly as a
full disk does (the same error, the same transaction rolled back by SQLite itself), on
every system and without privileges. A small real filesystem would need mount rights.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
import threading
from pathlib import Path

import pytest

from metrics_lab import serve_in_background
from metrics_lab.protocol import encode_puts
from metrics_lab.sqlite_store import SQLiteStore
from metrics_lab.storage import StoreFailure
from tests.conftest import read_answers
from tests.serve_process import ServeProcess

TIMEOUT = 30.0
OK = b"ok\n\n"
ERROR = b"error\nstore unavailable\n\n"

Point = tuple[str, float, int]


def client_points(client: int, count: int) -> list[Point]:
    """Distinct (key, timestamp) per point, and a value that says whose it is."""
    return [(f"c{client}.k{n % 50}", client * 1_000_000 + n + 0.5, n) for n in range(count)]


def pipeline(address: tuple[str, int], points: list[Point]) -> list[bool]:
    """Send every put at once (from a second thread), read every answer: True for ``ok``."""
    with socket.create_connection(address, timeout=TIMEOUT) as sock:
        sender = threading.Thread(target=sock.sendall, args=(encode_puts(points, now=0),))
        sender.start()
        data = read_answers(sock, len(points))
        sender.join(TIMEOUT)
    answers = [answer + b"\n\n" for answer in data.split(b"\n\n")[:-1]]
    assert len(answers) == len(points)
    assert set(answers) <= {OK, ERROR}, set(answers) - {OK, ERROR}
    return [answer == OK for answer in answers]


def stored_points(path: Path) -> dict[tuple[str, int], float]:
    store = SQLiteStore(path)
    try:
        return {
            (series.key, timestamp): value
            for series in store.read()
            for timestamp, value in zip(series.timestamps, series.values, strict=True)
        }
    finally:
        store.close()


def lost(acknowledged: list[Point], stored: dict[tuple[str, int], float]) -> list[Point]:
    return [p for p in acknowledged if stored.get((p[0], p[2])) != p[1]]


def test_disk_full_under_16_pipelining_clients_loses_no_acknowledged_point(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clients, each = 16, 20_000
    path = tmp_path / "metrics.db"
    # About 8 MB of journal would be needed; 2 MB fit. Folds are due every 50,000 points,
    # and fail too while the file is full: they must not turn committed points into errors.
    store = SQLiteStore(path, max_size_bytes=2 * 1024 * 1024, compact_every=50_000)
    work = {client: client_points(client, each) for client in range(clients)}
    answered: dict[int, list[bool]] = {}
    by_thread: list[Point] = []  # put_many from a thread of its own, meanwhile
    gets: list[bytes] = []
    ingesting = threading.Event()
    ingesting.set()
    caplog.set_level(logging.WARNING)

    with serve_in_background(store=store) as server:

        def ingest(client: int) -> None:
            answered[client] = pipeline(server.address, work[client])

        def put_from_a_thread() -> None:
            for start in range(0, 20_000, 500):
                batch = [("thread.k", float(t), t) for t in range(start, start + 500)]
                try:
                    store.put_many(batch)
                except StoreFailure:
                    continue
                by_thread.extend(batch)

        def read_meanwhile() -> None:
            with socket.create_connection(server.address, timeout=TIMEOUT) as sock:
                while ingesting.is_set() or not gets:
                    sock.sendall(b"get c0.k0\n")
                    gets.append(read_answers(sock, 1))

        threads = [threading.Thread(target=ingest, args=(client,)) for client in work]
        threads.append(threading.Thread(target=put_from_a_thread))
        reader = threading.Thread(target=read_meanwhile)
        reader.start()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT * 4)
        ingesting.clear()
        reader.join(TIMEOUT)
        assert not any(thread.is_alive() for thread in [*threads, reader])

        # Every get was served while the disk was full.
        assert gets
        assert all(answer.startswith(b"ok\n") for answer in gets)
        acknowledged = [
            point
            for client, oks in answered.items()
            for point, ok in zip(work[client], oks, strict=True)
            if ok
        ] + by_thread
        refused = sum(not ok for oks in answered.values() for ok in oks)
        assert acknowledged
        assert refused  # the disk really filled up
        assert any("refused" in record.getMessage() for record in caplog.records)

        # Room again: puts succeed, without a restart.
        store.max_size_bytes = None
        later = client_points(99, 2000)
        assert all(pipeline(server.address, later))
        acknowledged += later
    store.close()

    assert lost(acknowledged, stored_points(path)) == []
    print(f"{len(acknowledged)} acknowledged, {refused} refused, 0 acknowledged points lost")


def test_a_get_after_pipelined_puts_sees_them(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "metrics.db")
    try:
        with (
            serve_in_background(store=store) as server,
            socket.create_connection(server.address, timeout=TIMEOUT) as sock,
        ):
            for round_ in range(20):
                points = [(f"r{round_}", float(t), t) for t in range(10)]
                sock.sendall(encode_puts(points, now=0) + f"get r{round_}\n".encode())
                answers = read_answers(sock, 11)
                assert answers.startswith(OK * 10)
                assert answers[len(OK) * 10 :].count(b"\n") == 10 + 2  # ok, 10 points, blank
    finally:
        store.close()


# --- SIGTERM with a full disk ----------------------------------------------------------

# The real command line, with the one change a full disk needs: the store it opens is capped.
CAPPED_SERVE = """
import sys
from metrics_lab import cli
from metrics_lab.sqlite_store import SQLiteStore
cli.open_store = lambda db: SQLiteStore(db, max_size_bytes=int(sys.argv[2]))
sys.exit(cli.main(["serve", "--port", "0", "--db", sys.argv[1], *sys.argv[3:]]))
"""


def fill_to_the_last_page(address: tuple[str, int]) -> tuple[list[Point], list[bool]]:
    """Put ever fewer points at once until even a lone point is refused; return them all.

    A batch the store refused may have been large, leaving room enough for the fold at
    close to succeed (it did, in one CI run of twenty). Once a single point does not fit,
    the fold, which writes every key's row before it deletes a journal row, cannot fit.
    """
    points: list[Point] = []
    oks: list[bool] = []
    client = 2
    for count in (1000, 100, 10, 1):
        while True:
            round_points = client_points(client, count)
            client += 1
            round_oks = pipeline(address, round_points)
            points += round_points
            oks += round_oks
            if not all(round_oks):
                break
    return points, oks


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM is POSIX")
def test_sigterm_with_a_full_disk_says_one_line_and_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "metrics.db"
    argv = [sys.executable, "-c", CAPPED_SERVE, str(path), str(256 * 1024)]
    with ServeProcess(argv=argv, start_timeout=TIMEOUT) as server:
        points = client_points(1, 20_000)
        oks = pipeline(server.address, points)
        assert any(oks)
        assert not all(oks)  # full
        more_points, more_oks = fill_to_the_last_page(server.address)
        points += more_points
        oks += more_oks
        status = server.signal(signal.SIGTERM, TIMEOUT)
        output = server.wait_for_end_of_log(TIMEOUT)  # the whole log is in
    assert status == 1, output
    assert "Traceback" not in output
    final = [line for line in server.log if line.startswith("metrics-lab: ")]
    assert len(final) == 1, output
    assert str(path) in final[0]
    acknowledged = [point for point, ok in zip(points, oks, strict=True) if ok]
    assert lost(acknowledged, stored_points(path)) == []
