"""Server limits: long lines, too many connections, idle peers; memory stays bounded."""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
import threading
import time

import pytest

from metrics_lab import Client, MetricsServer, serve_in_background
from metrics_lab.protocol import DEFAULT_MAX_LINE
from metrics_lab.server import DEFAULT_LINE_TIMEOUT
from tests.serve_process import ServeProcess, rss_kib

TIMEOUT = 10.0
ERROR = b"error\nwrong command\n\n"


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a reset counts as closed)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


# --- request line limit ------------------------------------------------------------------


def test_a_line_over_the_limit_gets_the_error_answer_and_a_close() -> None:
    with serve_in_background(max_line=100) as server:
        with socket.create_connection(server.address, timeout=TIMEOUT) as sock:
            sock.sendall(b"put ok 1 1\n" + b"get " + b"x" * 200 + b"\nget ok\n")
            assert read_until_closed(sock) == b"ok\n\n" + ERROR
        with Client(*server.address, timeout=TIMEOUT) as client:  # nobody else is harmed
            assert client.get("ok") == {"ok": [(1, 1.0)]}


def test_a_line_just_under_the_limit_is_served() -> None:
    with serve_in_background(max_line=100) as server, Client(*server.address, TIMEOUT) as client:
        key = "k" * (100 - len("put  1 1"))
        client.put(key, 1, 1)
        assert client.get(key) == {key: [(1, 1.0)]}


PEERS = 100
FLOOD = 10 * 1024 * 1024
RSS_GROWTH_LIMIT_KIB = 5 * 1024


def flood(address: tuple[str, int], payload: bytes) -> None:
    # The server hangs up on us mid-send (a reset or a broken pipe): the point of the exercise.
    with socket.create_connection(address, timeout=TIMEOUT) as sock, contextlib.suppress(OSError):
        sock.sendall(payload)
        read_until_closed(sock)


def flood_in_parallel(address: tuple[str, int], peers: int, payload: bytes) -> None:
    threads = [threading.Thread(target=flood, args=(address, payload)) for _ in range(peers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT * 3)
    assert not any(thread.is_alive() for thread in threads)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/<pid>/status")
@pytest.mark.timeout(60)
def test_memory_stays_bounded_under_100_peers_sending_10_mb_without_newline() -> None:
    payload = b"p" * FLOOD
    with ServeProcess() as server:
        flood_in_parallel(server.address, 10, payload)  # warm up: buffers, allocator arenas
        before = rss_kib(server.pid)
        flood_in_parallel(server.address, PEERS, payload)
        with Client(*server.address, timeout=TIMEOUT) as client:  # still serving
            client.put("alive", 1, 1)
            assert client.get("alive") == {"alive": [(1, 1.0)]}
        after = rss_kib(server.pid)
        server.wait_for_log(f"over {DEFAULT_MAX_LINE} bytes")  # the limit was what cut them off
    growth = after - before
    print(f"RSS before {before} KiB, after {PEERS} x {FLOOD >> 20} MB peers {after} KiB")
    assert growth < RSS_GROWTH_LIMIT_KIB, f"RSS grew by {growth} KiB"


# --- connection limit --------------------------------------------------------------------


def served(address: tuple[str, int]) -> bool:
    """Whether a new connection gets an answer (False: the server closed it at once)."""
    with socket.create_connection(address, timeout=TIMEOUT) as sock:
        try:
            sock.sendall(b"get x\n")
            return sock.recv(64) == b"ok\n\n"
        except ConnectionResetError:
            return False


def test_at_the_limit_the_quietest_connection_makes_room(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # One peer holding every slot used to lock everyone else out ("connection limit
    # reached", the newcomer reset at once). Now the newcomer is served, and the connection
    # that has gone longest without a complete request line is closed to make room.
    caplog.set_level(logging.WARNING, logger="metrics_lab.server")
    with serve_in_background(max_connections=3) as server:
        held = [socket.create_connection(server.address, timeout=TIMEOUT) for _ in range(3)]
        try:
            for sock in held:  # each is surely counted once it has been answered
                sock.sendall(b"get x\n")
                assert sock.recv(64) == b"ok\n\n"
            held[0].sendall(b"get x\n")  # the first is active again: the second is quietest
            assert held[0].recv(64) == b"ok\n\n"
            assert served(server.address)
            assert read_until_closed(held[1]) == b""
            for sock in (held[0], held[2]):  # the others are still served
                sock.sendall(b"get x\n")
                assert sock.recv(64) == b"ok\n\n"
        finally:
            for sock in held:
                sock.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("connection limit (3) reached" in message for message in warnings)


def test_a_newcomer_is_served_while_one_peer_holds_every_connection_idle_or_trickling() -> None:
    limit = 50
    with serve_in_background(max_connections=limit) as server:
        held = [socket.create_connection(server.address, timeout=TIMEOUT) for _ in range(limit)]
        try:
            for index, sock in enumerate(held):
                if index % 2:
                    sock.sendall(b"put half")  # a line begun, never finished
            for _ in range(limit // 2):  # newcomer after newcomer gets in
                assert served(server.address)
            assert isinstance(server.server, MetricsServer)
            assert server.server.connection_count <= limit
        finally:
            for sock in held:
                sock.close()


def test_a_peer_reading_a_long_answer_is_not_the_one_to_make_room() -> None:
    points = 1_300_000  # 24 MB of answer: more than the system's socket buffers hold
    with serve_in_background(max_connections=2) as server:
        server.store.put_many([(f"k{i % 100}", 0.25, i) for i in range(points)])
        reader = socket.socket()
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        reader.settimeout(TIMEOUT)
        reader.connect(server.address)
        with reader, socket.create_connection(server.address, timeout=TIMEOUT) as idle:
            reader.sendall(b"get *\n")
            idle.sendall(b"get x\n")  # a line after the reader's: by lines, the reader is quieter
            assert idle.recv(64) == b"ok\n\n"
            received = bytearray()
            while len(received) < 16_000_000:  # reading, long after the idle one's line
                data = reader.recv(256 * 1024)
                assert data
                received += data
            assert served(server.address)
            assert read_until_closed(idle) == b""
            while not received.endswith(b"\n\n"):
                data = reader.recv(256 * 1024)
                assert data, f"closed after {len(received):,} bytes"
                received += data
    assert received.count(b"\n") == points + 2


@pytest.mark.parametrize("limit", [1, 0])
def test_a_limit_set_on_a_running_server_applies(limit: int) -> None:
    # The settings used to be kept twice, on the server and in its connections' shared
    # state, which had its own copy: setting one after construction did nothing. And the
    # constructor refuses 0, but the attribute can be set to it: making room among no
    # connections raised inside connection_made, and no newcomer was served. 0 counts as 1.
    with serve_in_background() as server:
        assert isinstance(server.server, MetricsServer)
        server.server.max_connections = limit
        with socket.create_connection(server.address, timeout=TIMEOUT) as first:
            first.sendall(b"get x\n")
            assert first.recv(64) == b"ok\n\n"
            assert served(server.address)  # over the new limit: the first makes room
            assert read_until_closed(first) == b""


def test_max_connections_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_connections"):
        serve_in_background(max_connections=0)


# --- idle timeout ------------------------------------------------------------------------

IDLE = 0.5


def test_idle_timeout_is_off_by_default() -> None:
    with serve_in_background() as server:
        assert isinstance(server.server, MetricsServer)
        assert server.server.idle_timeout is None


def test_a_silent_peer_is_closed_after_the_idle_timeout() -> None:
    with (
        serve_in_background(idle_timeout=IDLE) as server,
        socket.create_connection(server.address, timeout=TIMEOUT) as sock,
    ):
        assert read_until_closed(sock) == b""


def test_a_peer_trickling_bytes_without_a_line_is_closed() -> None:
    with (
        serve_in_background(idle_timeout=IDLE) as server,
        socket.create_connection(server.address, timeout=TIMEOUT) as sock,
    ):
        closed = False
        for _ in range(200):  # one byte every 50 ms, never a newline: at most 10 s
            try:
                sock.sendall(b"g")
                sock.setblocking(False)
                try:
                    closed = sock.recv(64) == b""
                except BlockingIOError:
                    pass
                finally:
                    sock.setblocking(True)
            except (ConnectionResetError, BrokenPipeError):
                closed = True
            if closed:
                break
            time.sleep(0.05)  # the trickle is the scenario under test, not a wait
        assert closed


def test_a_line_begun_and_never_finished_is_closed_without_an_idle_timeout() -> None:
    with (
        serve_in_background(line_timeout=IDLE) as server,
        socket.create_connection(server.address, timeout=TIMEOUT) as sock,
    ):
        sock.sendall(b"get x\nput hal")
        assert read_until_closed(sock) == b"ok\n\n"


def test_the_line_deadline_is_on_by_default_and_can_be_turned_off() -> None:
    assert MetricsServer().line_timeout == DEFAULT_LINE_TIMEOUT
    assert MetricsServer(line_timeout=None).line_timeout is None
    with serve_in_background() as server:  # notebooks: half a line may wait for the next cell
        assert isinstance(server.server, MetricsServer)
        assert server.server.line_timeout is None
    with pytest.raises(ValueError, match="line_timeout"):
        MetricsServer(line_timeout=0)


def test_a_busy_peer_outlives_the_idle_timeout() -> None:
    with serve_in_background(idle_timeout=IDLE) as server, Client(*server.address, 5) as client:
        started = time.monotonic()
        count = 0
        while time.monotonic() - started < 3 * IDLE:
            client.put("busy", 1, count)
            count += 1
            time.sleep(IDLE / 10)
        assert len(client.get("busy")["busy"]) == count


def test_a_peer_reading_a_long_answer_steadily_outlives_the_idle_timeout() -> None:
    # 24 MB of answer, more than the system's socket buffers hold: the server must see the
    # peer taking it, piece by piece, for several idle timeouts. (Before, a peer reading a
    # big answer was closed mid-answer: no request line counted as no sign of life.)
    points = 1_300_000
    with serve_in_background(idle_timeout=IDLE) as server:
        server.store.put_many([(f"k{i % 100}", 0.25, i) for i in range(points)])
        with socket.create_connection(server.address, timeout=TIMEOUT) as sock:
            sock.sendall(b"get *\n")
            received = bytearray()
            started = time.monotonic()
            while not received.endswith(b"\n\n"):
                data = sock.recv(256 * 1024)
                assert data, f"closed after {len(received):,} bytes"
                received += data
                if time.monotonic() - started < 4 * IDLE:
                    time.sleep(0.01)  # a slow, steady reader is the scenario under test
    assert received.count(b"\n") == points + 2


def test_serve_command_wires_its_limits() -> None:
    with (
        ServeProcess("--idle-timeout", str(IDLE), "--max-connections", "1") as server,
        socket.create_connection(server.address, timeout=TIMEOUT) as first,
    ):
        first.sendall(b"get x\n")
        assert first.recv(64) == b"ok\n\n"
        with socket.create_connection(server.address, timeout=TIMEOUT) as second:
            second.sendall(b"get x\n")  # over the limit: served, and the first makes room
            assert second.recv(64) == b"ok\n\n"
            assert read_until_closed(first) == b""
            server.wait_for_log("connection limit (1) reached")
            assert read_until_closed(second) == b""  # and the second goes once idle
            server.wait_for_log("showed no sign of life")
