"""Group commit: puts are answered after the commit that stores them, in order, all or none.

A recording store stands in for the disk (it is a real GroupCommitStorage, in memory, so a
commit failure can be scripted); the server and the clients are real, on loopback.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterable
from pathlib import Path

import pytest

from metrics_lab import Client, ClientError, serve_in_background
from metrics_lab.server import MetricsServer, _Connection
from metrics_lab.sqlite_store import SQLiteStore
from metrics_lab.storage import GroupCommitStorage, MemoryStore, Point
from tests.conftest import TIMEOUT, read_answers

OK = b"ok\n\n"


class RecordingStore(MemoryStore):
    """Stages in a list, stores on commit; records how many batches each commit took."""

    def __init__(self) -> None:
        super().__init__()
        self.staged: list[list[Point]] = []
        self.stages = 0
        self.commits: list[int] = []  # batches per commit
        self.fail_commits = 0  # how many of the next commits fail

    def stage(self, points: Iterable[Point]) -> None:
        self.staged.append(list(points))
        self.stages += 1

    def commit(self) -> None:
        staged, self.staged = self.staged, []
        if not staged:
            return
        if self.fail_commits:
            self.fail_commits -= 1
            raise OSError("disk full (scripted)")
        for batch in staged:
            self.put_many(batch)
        self.commits.append(len(staged))


def put_lines(key: str, timestamps: range) -> bytes:
    return b"".join(f"put {key} {t}.5 {t}\n".encode() for t in timestamps)


def test_the_server_stages_and_commits_a_group_commit_store() -> None:
    store = RecordingStore()
    assert isinstance(store, GroupCommitStorage)
    assert not isinstance(MemoryStore(), GroupCommitStorage)
    clients, batches, size = 4, 30, 100

    def ingest(index: int, address: tuple[str, int]) -> None:
        with socket.create_connection(address, timeout=TIMEOUT) as sock:
            for batch in range(batches):
                sock.sendall(put_lines(f"k{index}", range(batch * size, (batch + 1) * size)))
                assert read_answers(sock, size) == OK * size

    with serve_in_background(store=store) as server:
        threads = [threading.Thread(target=ingest, args=(i, server.address)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT * 4)
        assert not any(thread.is_alive() for thread in threads)
        with Client(*server.address, TIMEOUT) as client:
            stored = client.get("*")
    assert {key: len(points) for key, points in stored.items()} == {
        f"k{i}": batches * size for i in range(clients)
    }
    # Every batch was staged (a chunk may come in pieces) and committed exactly once.
    assert store.stages >= clients * batches
    assert sum(store.commits) == store.stages


def test_a_failed_commit_answers_error_for_its_puts_and_the_server_goes_on() -> None:
    store = RecordingStore()
    with serve_in_background(store=store) as server:
        with socket.create_connection(server.address, timeout=TIMEOUT) as sock:
            store.fail_commits = 1
            sock.sendall(put_lines("lost", range(20)))
            assert read_answers(sock, 20) == b"error\nwrong command\n\n" * 20
            sock.sendall(put_lines("kept", range(20)))
            assert read_answers(sock, 20) == OK * 20
        with Client(*server.address, TIMEOUT) as client:
            assert set(client.get("*")) == {"kept"}


def test_a_get_after_staged_puts_sees_them() -> None:
    with (
        serve_in_background(store=RecordingStore()) as server,
        socket.create_connection(server.address, timeout=TIMEOUT) as sock,
    ):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for round_ in range(20):  # the get arrives with the puts or right after them
            timestamps = range(round_ * 10, round_ * 10 + 10)
            sock.sendall(put_lines(f"r{round_}", timestamps))
            sock.sendall(f"get r{round_}\n".encode())
            answers = read_answers(sock, 11)
            assert answers.startswith(OK * 10)
            assert answers[len(OK) * 10 :].count(b"\n") == 10 + 2  # ok, 10 points, blank


class RecordingTransport(asyncio.Transport):
    """Just enough transport for one connection driven by hand: it keeps what is written."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 1) if name == "peername" else default

    def is_closing(self) -> bool:
        return False


def test_answers_stay_in_order_when_more_arrives_before_the_commit() -> None:
    # Two chunks handled in one turn of the loop, before the scheduled commit has run: the
    # loop's own ordering usually prevents this, so it is driven by hand (no sockets).
    async def drive() -> bytes:
        async with MetricsServer(store=RecordingStore()) as server:
            connection = _Connection(server)
            transport = RecordingTransport()
            connection.connection_made(transport)
            connection.data_received(put_lines("cpu", range(10)))  # staged, answered later
            connection.data_received(b"get cpu\n")  # sees the staged puts, answered after them
            connection.data_received(put_lines("cpu", range(10, 20)))  # staged again
            assert transport.written.count(b"\n\n") == 11
            await asyncio.sleep(0)  # the scheduled commit runs
            connection.connection_lost(None)
            return transport.written

    written = asyncio.run(drive())
    points = b"".join(f"cpu {t}.5 {t}\n".encode() for t in range(10))
    assert written == OK * 10 + b"ok\n" + points + b"\n" + OK * 10


def test_a_client_gets_error_when_the_commit_fails() -> None:
    store = RecordingStore()
    with serve_in_background(store=store) as server, Client(*server.address, TIMEOUT) as client:
        store.fail_commits = 1
        with pytest.raises(ClientError):
            client.put_many([("cpu", 0.5, t) for t in range(10)])
        client.put("cpu", 0.7, 99)
        assert client.get("cpu") == {"cpu": [(99, 0.7)]}


def test_sqlite_stage_is_invisible_until_commit(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "metrics.db")
    store.stage([("cpu", 1, 0.5)])
    store.stage([("cpu", 2, 0.6), ("mem", 1, 3.0)])
    assert store.read() == []
    store.commit()
    assert [(s.key, list(s.timestamps)) for s in store.read()] == [("cpu", [1, 2]), ("mem", [1])]
    store.stage([("cpu", 3, 0.7)])
    store.close()  # commits what is staged
    store = SQLiteStore(tmp_path / "metrics.db")
    assert [list(s.timestamps) for s in store.read("cpu")] == [[1, 2, 3]]
    store.close()
