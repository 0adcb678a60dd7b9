"""Peers that misbehave harm nobody else; signals stop the server cleanly; logs stay clean."""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from metrics_lab import BackgroundServer, Client, serve_in_background
from metrics_lab.sqlite_store import SQLiteStore
from tests.serve_process import ServeProcess

TIMEOUT = 10.0
BIG = 100_000
"""Points preloaded so that ``get *`` is a multi-megabyte answer, long enough to cut."""


@pytest.fixture
def server() -> Iterator[BackgroundServer]:
    with serve_in_background() as running:
        yield running


@pytest.fixture
def loaded(server: BackgroundServer) -> BackgroundServer:
    server.store.put_many([("big", float(t), t) for t in range(BIG)])
    return server


def connect(server: BackgroundServer) -> socket.socket:
    return socket.create_connection(server.address, timeout=TIMEOUT)


def reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def read_answers(sock: socket.socket, count: int) -> bytes:
    data = b""
    while data.count(b"\n\n") < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def assert_still_serving(server: BackgroundServer, key: str = "after") -> None:
    with Client(*server.address, timeout=TIMEOUT) as client:
        client.put(key, 1.5, 1)
        assert client.get(key) == {key: [(1, 1.5)]}


def test_disconnect_mid_line_loses_only_that_line(server: BackgroundServer) -> None:
    with Client(*server.address, timeout=TIMEOUT) as bystander:
        with connect(server) as sock:
            sock.sendall(b"put whole 1 1\nput half 2")
            assert read_answers(sock, 1) == b"ok\n\n"
        bystander.put("bystander", 1, 1)
        assert bystander.get("*") == {"bystander": [(1, 1.0)], "whole": [(1, 1.0)]}


def test_reset_mid_line_loses_only_that_line(server: BackgroundServer) -> None:
    sock = connect(server)
    sock.sendall(b"put whole 1 1\nput half 2")
    assert read_answers(sock, 1) == b"ok\n\n"
    reset(sock)
    assert_still_serving(server)
    assert [s.key for s in server.store.read()] == ["after", "whole"]


@pytest.mark.parametrize("how", ["close", "reset"])
def test_disconnect_mid_answer_harms_nobody(loaded: BackgroundServer, how: str) -> None:
    for _ in range(5):
        sock = connect(loaded)
        sock.sendall(b"get *\n" * 3)
        assert sock.recv(1000).startswith(b"ok\nbig 0.0 0\n")
        if how == "reset":
            reset(sock)
        else:
            sock.close()
    assert_still_serving(loaded)
    assert len(loaded.store.read("big")[0].timestamps) == BIG


def test_a_peer_that_never_reads_harms_nobody(loaded: BackgroundServer) -> None:
    with connect(loaded) as greedy:
        greedy.setblocking(False)
        sent = 0
        try:  # pipeline big gets until the server stops reading us (flow control)
            while sent < 1000:
                greedy.send(b"get *\n")
                sent += 1
        except BlockingIOError:
            pass
        assert_still_serving(loaded)
    assert_still_serving(loaded, "after-close")


def test_half_close_still_gets_every_answer(server: BackgroundServer) -> None:
    """``printf 'put ...\\nget ...\\n' | nc -N`` style: send, shut the write side, read all."""
    with connect(server) as sock:
        sock.sendall(b"put cpu 0.5 1\nget cpu\nbad\n")
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data == b"ok\n\nok\ncpu 0.5 1\n\nerror\nwrong command\n\n"


def test_many_peers_misbehaving_at_once(loaded: BackgroundServer) -> None:
    peers = []
    for index in range(30):
        sock = connect(loaded)
        sock.sendall(
            [b"get *\n", b"put x 1", b"\xff\xfe\x00garbage\n", b"put k 1 1\n" * 100][index % 4]
        )
        peers.append(sock)
    for index, sock in enumerate(peers):
        if index % 2:
            reset(sock)
        else:
            sock.close()
    assert_still_serving(loaded)


# --- signals -------------------------------------------------------------------------------

SIGNALS = [signal.SIGTERM, signal.SIGINT] if sys.platform != "win32" else []


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_signal_stops_cleanly_answering_what_was_read(tmp_path: Path, signum: int) -> None:
    path = tmp_path / "metrics.db"
    batch = [("acked", float(t), t) for t in range(1000)]
    pipelined = b"".join(f"put late {t}.5 {t}\n".encode() for t in range(20_000))
    with ServeProcess("--db", str(path)) as server:
        with Client(*server.address, timeout=TIMEOUT) as client:
            client.put_many(batch)
        idle = socket.create_connection(server.address, timeout=TIMEOUT)
        busy = socket.create_connection(server.address, timeout=TIMEOUT)
        busy.sendall(b"put first 1 1\n")
        assert read_answers(busy, 1) == b"ok\n\n"  # so the server surely reads this connection
        busy.sendall(pipelined)
        status = server.signal(signum)
        answers = b""
        try:
            while chunk := busy.recv(65536):
                answers += chunk
        except ConnectionResetError:
            pass  # requests still unread when the server closed: the kernel resets
        assert idle.recv(64) == b""  # the idle connection was closed, not left hanging
        idle.close()
        busy.close()
    assert status == 0, server.log
    assert answers == b"ok\n\n" * answers.count(b"\n\n")  # nothing but whole ok answers
    late_acked = answers.count(b"\n\n")

    store = SQLiteStore(path)  # flushed and closed: opens at once, holds every acked put
    try:
        assert len(store.read("acked")[0].timestamps) == 1000
        assert store.read("first")
        late = store.read("late")
        stored = list(late[0].timestamps) if late else []
        assert stored[:late_acked] == list(range(late_acked))
    finally:
        store.close()


# --- logs ----------------------------------------------------------------------------------

NASTY = [
    b"\x1b[31mred\x1b[0m 1 2\n",
    b"put \x1b]0;owned\x07 1 2\n",
    b"get a b\x00c\r\n",
    b"put k\x1b[2J 1 2\n",
    b"\x1b[1A\x1b[2Kput fake-log-line 1 2\n",
    b"put key \x08\x08\x08 1\n",
    b"put \xff\xfe 1 2\n",
    b"\r\x1bc\x7f\x9b31m\n",
]


def test_logs_never_carry_raw_peer_bytes(
    server: BackgroundServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="metrics_lab")
    with connect(server) as sock:
        sock.sendall(b"".join(NASTY))
        assert read_answers(sock, len(NASTY)) == b"error\nwrong command\n\n" * len(NASTY)
        with contextlib.suppress(OSError):  # the server hangs up on the too-long line
            sock.sendall(b"\x1b[31m" * 40_000)  # a line over the limit, full of escapes
            while sock.recv(65536):
                pass
    server.stop()  # every log call done before we look
    messages = [record.getMessage() for record in caplog.records]
    assert any("wrong command" in message for message in messages)
    for message in messages:
        assert message.isprintable(), repr(message)
        assert "\x1b" not in message


def test_put_with_control_characters_in_key_is_refused(server: BackgroundServer) -> None:
    with connect(server) as sock:
        sock.sendall(b"put a\x1bb 1 2\nput a\x7fb 1 2\n")
        assert read_answers(sock, 2) == b"error\nwrong command\n\n" * 2
    assert server.store.read() == []


def test_pipelined_big_answers_arrive_whole_and_in_order(server: BackgroundServer) -> None:
    """Answers held back while the peer is slow to read still come, all, in order."""
    server.store.put_many([("big", 0.5, t) for t in range(20_000)])
    one = b"ok\n" + b"".join(f"big 0.5 {t}\n".encode() for t in range(20_000)) + b"\n"
    with connect(server) as sock:
        sock.sendall(b"get big\n" * 30 + b"put z 1 1\nget z\n")
        data = b""
        while data.count(b"\n\n") < 32:
            chunk = sock.recv(65536)
            assert chunk
            data += chunk
    assert data == one * 30 + b"ok\n\nok\nz 1.0 1\n\n"
