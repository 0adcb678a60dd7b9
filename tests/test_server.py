"""The server over real sockets on 127.0.0.1: every rule of PROTOCOL.md, end to end."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import socket
import threading
from collections.abc import Iterable
from concurrent.futures import Future

import pytest

from metrics_lab import Client, MemoryStore, MetricsServer, serve_in_background
from metrics_lab.background import BackgroundServer
from metrics_lab.cli import main
from metrics_lab.storage import PointBatch, Snapshot, StoreFailure
from tests.conftest import TIMEOUT, cut, read_answers, read_exactly
from tests.serve_process import ServeProcess

OK = b"ok\n\n"
ERROR = b"error\nwrong command\n\n"
STORE_ERROR = b"error\nstore unavailable\n\n"

# (what a client sends on one fresh connection, what the server must answer, byte for byte)
WIRE: list[tuple[str, bytes, bytes]] = [
    (
        "protocol example",
        b"put palm.cpu 10.5 1501864247\nput eardrum.cpu 15.3 1501864259\nget *\n",
        OK + OK + b"ok\neardrum.cpu 15.3 1501864259\npalm.cpu 10.5 1501864247\n\n",
    ),
    ("get of a missing key", b"get nothing.here\n", OK),
    ("get * of an empty server", b"get *\n", OK),
    ("overwrite", b"put k 1 5\nput k 2 5\nget k\n", OK + OK + b"ok\nk 2.0 5\n\n"),
    (
        "timestamp order",
        b"put k 3 30\nput k 1 10\nput k 2 20\nget k\n",
        OK * 3 + b"ok\nk 1.0 10\nk 2.0 20\nk 3.0 30\n\n",
    ),
    (
        "key order, then timestamp order",
        b"put b 1 2\nput a 2 2\nput b 0 1\nput a 1 1\nget *\n",
        OK * 4 + b"ok\na 1.0 1\na 2.0 2\nb 0.0 1\nb 1.0 2\n\n",
    ),
    (
        "value formatting",
        b"put k 2 1\nput k 0.00001 2\nput k 301 3\nput k -0.5 4\nget k\n",
        OK * 4 + b"ok\nk 2.0 1\nk 1e-05 2\nk 301.0 3\nk -0.5 4\n\n",
    ),
    ("only that key", b"put a 1 1\nput ab 2 1\nget a\n", OK * 2 + b"ok\na 1.0 1\n\n"),
    ("crlf", b"put k 1 1\r\nget k\r\n", OK + b"ok\nk 1.0 1\n\n"),
    ("runs of spaces", b"put   k  1   1  \n  get   k \n", OK + b"ok\nk 1.0 1\n\n"),
    ("empty lines get no answer", b"\n\n   \n\r\nget k\n\n", OK),
    ("the course's check", b"get wrong command test\n\nput k 1 1\n", ERROR + OK),
    ("unknown command", b"got k\nget k\n", ERROR + OK),
    ("differently cased", b"PUT k 1 1\nGET k\nget k\n", ERROR + ERROR + OK),
    ("get without a key", b"get\nget \n", ERROR + ERROR),
    ("get with two keys", b"get a b\n", ERROR),
    ("put with two fields", b"put k 1\n", ERROR),
    ("put with four fields", b"put k 1 1 1\n", ERROR),
    ("non-numeric value", b"put k one 1\n", ERROR),
    ("nan and inf", b"put k nan 1\nput k inf 1\nput k -inf 1\n", ERROR * 3),
    ("fractional timestamp", b"put k 1 1.5\n", ERROR),
    ("textual timestamp", b"put k 1 x\n", ERROR),
    ("timestamp over 64 bits", b"put k 1 9223372036854775808\n", ERROR),
    ("* as a put key", b"put * 1 1\n", ERROR),
    ("undecodable put key", b"put \xff 1 1\n", ERROR),
    ("errors store nothing", b"put k nan 1\nput k 1 1.5\nput * 1 1\nget *\n", ERROR * 3 + OK),
    (
        "the connection lives after errors",
        b"bogus\nput k 1 1\n\x00\x01\nget k\n",
        ERROR + OK + ERROR + b"ok\nk 1.0 1\n\n",
    ),
    ("a put is seen by a get in the same write", b"put k 7 1\nget k\n", OK + b"ok\nk 7.0 1\n\n"),
]


def exchange(server: BackgroundServer, chunks: Iterable[bytes], expected: bytes) -> bytes:
    with socket.create_connection(server.address, timeout=TIMEOUT) as sock:
        for chunk in chunks:
            sock.sendall(chunk)
        return read_exactly(sock, len(expected))


@pytest.mark.parametrize(("name", "sent", "expected"), WIRE, ids=[case[0] for case in WIRE])
@pytest.mark.parametrize("how", ["whole", "byte-by-byte", "random"])
def test_wire(name: str, sent: bytes, expected: bytes, how: str) -> None:
    chunks = cut(sent, how, seed=name)
    with serve_in_background() as server:
        assert exchange(server, chunks, expected) == expected


def test_nothing_more_is_sent_than_the_answers(raw: socket.socket) -> None:
    raw.sendall(b"\n\nget k\n\n\n")
    raw.sendall(b"put k 1 1\n")
    assert read_exactly(raw, len(OK * 2)) == OK * 2
    raw.settimeout(0.2)
    with pytest.raises(TimeoutError):
        raw.recv(1)


def test_pipelined_requests_are_answered_in_order(raw: socket.socket) -> None:
    requests = b"".join(b"put k%d %d %d\nget k%d\n" % (i % 7, i, i, i % 7) for i in range(500))
    raw.sendall(requests)
    answers = read_answers(raw, 1000).split(b"\n\n")[:-1]
    assert len(answers) == 1000
    assert all(answer == b"ok" for answer in answers[0::2])
    for i, answer in zip(range(500), answers[1::2], strict=True):
        assert answer.endswith(b"k%d %s %d" % (i % 7, repr(float(i)).encode(), i))


def test_data_is_shared_by_every_connection(server: BackgroundServer) -> None:
    with socket.create_connection(server.address, timeout=TIMEOUT) as writer:
        writer.sendall(b"put shared 1 1\n")
        assert read_exactly(writer, 4) == OK
    with socket.create_connection(server.address, timeout=TIMEOUT) as reader:
        reader.sendall(b"get shared\n")
        assert read_answers(reader, 1) == b"ok\nshared 1.0 1\n\n"


def test_fifty_clients_at_once(server: BackgroundServer) -> None:
    barrier = threading.Barrier(50)
    failures: list[BaseException] = []

    def client(number: int) -> None:
        try:
            with socket.create_connection(server.address, timeout=TIMEOUT) as sock:
                barrier.wait(TIMEOUT)
                sock.sendall(b"".join(b"put c%d %d %d\n" % (number, i, i) for i in range(20)))
                assert read_exactly(sock, 4 * 20) == OK * 20
                sock.sendall(b"get c%d\n" % number)
                assert read_answers(sock, 1).count(b"\n") == 20 + 2
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT * 2)
    assert failures == []
    assert len(server.store.read()) == 50


def test_a_peer_vanishing_mid_line_loses_only_that_line(server: BackgroundServer) -> None:
    with socket.create_connection(server.address, timeout=TIMEOUT) as sock:
        sock.sendall(b"put k 1 1\nput k 2 2\nput lost 3")
        assert read_exactly(sock, 8) == OK * 2
    with socket.create_connection(server.address, timeout=TIMEOUT) as sock:
        sock.sendall(b"get *\n")
        assert read_answers(sock, 1) == b"ok\nk 1.0 1\nk 2.0 2\n\n"


def test_an_over_long_line_gets_the_error_and_the_connection_closes() -> None:
    with serve_in_background(max_line=100) as server:
        with socket.create_connection(server.address, timeout=TIMEOUT) as sock:
            sock.sendall(b"put k 1 1\n" + b"x" * 101 + b"\nput k 2 2\n")
            assert read_exactly(sock, 100) == OK + ERROR  # then end of stream
        with socket.create_connection(server.address, timeout=TIMEOUT) as sock:
            sock.sendall(b"get k\n")
            assert read_answers(sock, 1) == b"ok\nk 1.0 1\n\n"


def test_the_default_line_limit_is_64_kib(raw: socket.socket) -> None:
    key = b"k" * (64 * 1024 - len(b"put  1 1"))
    raw.sendall(b"put " + key + b" 1 1\n")
    assert read_exactly(raw, 4) == OK
    raw.sendall(b"put " + key + b"k 1 1\n")
    assert read_exactly(raw, 100) == ERROR


class FailingStore(MemoryStore):
    """A store that fails on demand, to check the server answers error and survives."""

    fail = False

    def write(self, batch: PointBatch) -> Future[None]:
        if self.fail:
            failed: Future[None] = Future()
            failed.set_exception(StoreFailure("disk on fire"))
            return failed
        return super().write(batch)

    def snapshot(self, key: str | None = None) -> Snapshot:
        if self.fail:
            raise StoreFailure("disk on fire")
        return super().snapshot(key)


def test_a_failing_store_gets_error_answers_and_the_server_lives_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FailingStore()
    with (
        serve_in_background(store=store) as server,
        socket.create_connection(server.address, timeout=TIMEOUT) as sock,
    ):
        sock.sendall(b"put k 1 1\n")
        assert read_exactly(sock, 4) == OK
        store.fail = True
        with caplog.at_level(logging.WARNING, logger="metrics_lab.session"):
            sock.sendall(b"put k 2 2\nbad\nput k 3 3\nget k\n")
            expected = STORE_ERROR + ERROR + STORE_ERROR + STORE_ERROR
            assert read_exactly(sock, len(expected)) == expected
        store.fail = False
        sock.sendall(b"get k\n")
        assert read_answers(sock, 1) == b"ok\nk 1.0 1\n\n"
    assert "disk on fire" in caplog.text


def test_connections_are_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.DEBUG, logger="metrics_lab.server"),
        serve_in_background() as server,
        socket.create_connection(server.address, timeout=TIMEOUT) as sock,
    ):
        sock.sendall(b"get k\n")
        read_exactly(sock, 4)
    messages = [record.getMessage() for record in caplog.records if record.levelno == logging.DEBUG]
    assert any("opened" in message for message in messages)
    assert any("closed" in message for message in messages)


def test_metrics_server_answers_what_it_read_before_a_graceful_stop() -> None:
    async def scenario() -> tuple[bytes, int]:
        async with MetricsServer(port=0) as server:
            reader, writer = await asyncio.open_connection(server.host, server.port)
            writer.write(b"put k 1 1\nget k\n")
            await writer.drain()
            first = await reader.readexactly(4)
            await server.stop()
            rest = await reader.read()  # everything up to the end of the stream
            writer.close()
        return first + rest, server.connection_count

    assert asyncio.run(scenario()) == (OK + b"ok\nk 1.0 1\n\n", 0)


def test_a_stopped_server_refuses_new_connections_and_frees_its_port() -> None:
    async def scenario() -> None:
        server = MetricsServer(port=0)
        await server.start()
        address = server.address
        await server.stop()
        with pytest.raises(OSError):  # noqa: PT011 (refused: the errno differs by system)
            await asyncio.open_connection(*address)
        async with MetricsServer(port=address[1]) as again:  # the port is free at once
            assert again.port == address[1]

    asyncio.run(asyncio.wait_for(scenario(), TIMEOUT))


def test_server_binds_loopback_by_default(server: BackgroundServer) -> None:
    assert server.host == "127.0.0.1"
    assert server.port > 0


def test_serve_forever_serves_again_after_a_stop_and_a_new_start() -> None:
    async def scenario() -> bytes:
        server = MetricsServer(port=0)
        await server.start()
        await server.stop()
        await server.start()  # a second life: serve_forever must wait for its stop, not return
        serving = asyncio.create_task(server.serve_forever())
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(b"put k 1 1\n")
        answer = await reader.readexactly(4)
        assert not serving.done()
        writer.close()
        await server.stop()
        await serving
        return answer

    assert asyncio.run(asyncio.wait_for(scenario(), TIMEOUT)) == OK


def test_parser_choice_is_checked() -> None:
    with pytest.raises(ValueError, match="parser must be one of"):
        MetricsServer(parser="turbo")


@pytest.mark.parametrize("parser", ["simple", "fast"])
def test_serve_command_takes_either_parser(parser: str) -> None:
    with ServeProcess("--parser", parser) as server, Client(*server.address, timeout=TIMEOUT) as c:
        c.put_many([("k", float(i), i) for i in range(100)])
        assert c.get("k")["k"][-1] == (99, 99.0)


def test_serve_with_a_missing_event_loop_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    if importlib.util.find_spec("uvloop") is not None:
        pytest.skip("uvloop is installed here: --loop uvloop would serve")
    assert main(["serve", "--loop", "uvloop", "--port", "0"]) == 1
    assert capsys.readouterr().err.strip().startswith("metrics-lab: uvloop is not installed")
