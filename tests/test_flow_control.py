"""Flow control and fair turns: a client that pipelines without reading cannot make the
server's buffers grow without bound, and big answers take turns with small requests."""

from __future__ import annotations

import asyncio
import select
import socket

import pytest

from metrics_lab import serve_in_background
from metrics_lab import server as server_module
from metrics_lab.server import WRITE_BUFFER_HIGH, MetricsServer, _Pump
from metrics_lab.session import ANSWER_BATCH
from tests.conftest import TIMEOUT


@pytest.mark.parametrize(
    ("key", "points", "requests"),
    [
        ("*", [(f"key{i % 50}", i * 0.5, i) for i in range(2000)], 3000),  # many pieces a get
        ("k", [("k", i * 0.5, i) for i in range(1000)], 8000),  # one piece: answered at once
    ],
    ids=["get * of 50 keys", "get of one key"],
)
def test_pipelined_gets_without_reading_keep_server_output_bounded(
    key: str, points: list[tuple[str, float, int]], requests: int
) -> None:
    with serve_in_background() as server:
        server.store.put_many(points)
        answer_size = len(b"".join(f"{k} {v!r} {t}\n".encode() for k, v, t in points))
        total = requests * (answer_size + 4)  # 90-150 MB if the server answered all at once
        with socket.create_connection(server.address, timeout=20) as sock:
            # 18-48 KB of requests: it fits in the socket buffers, so this returns at once.
            sock.sendall(f"get {key}\n".encode() * requests)
            received = 0
            largest_buffer = 0
            while received < total:
                data = sock.recv(256 * 1024)
                assert data, "the server closed the connection"
                received += len(data)
                # Not thread-safe to the byte, but a running total of ints is enough to see
                # whether the server holds megabytes or hundreds of megabytes.
                assert isinstance(server.server, MetricsServer)
                largest_buffer = max(largest_buffer, server.server.buffered_output)
            assert received == total  # every answer arrived, in full
        # Bounded by the transport's high-water mark plus the piece that crossed it (the
        # write that makes asyncio pause us lands whole), not by `total`.
        assert largest_buffer < WRITE_BUFFER_HIGH + ANSWER_BATCH
        assert total > 50 * largest_buffer


def test_slow_reader_still_gets_every_answer_in_order() -> None:
    with serve_in_background() as server:
        server.store.put_many([("k", float(i), i) for i in range(5_000)])  # ~60 KB answers
        stream = b"".join(b"get k\nput p 1 %d\nget p\n" % n for n in range(200))
        with socket.create_connection(server.address, timeout=20) as sock:
            sock.sendall(stream)
            received = bytearray()
            while not received.endswith(b"p 1.0 199\n\n"):  # the last answer's end
                data = sock.recv(4096)  # a small reader
                assert data
                received += data
    # 200 answers of each kind, in order: the n-th get of p sees the n puts before it.
    assert received.count(b"ok\nk 0.0 0\n") == 200
    answers_to_p = received.split(b"ok\np ")[1:]
    points_seen = [answer.split(b"\n\n")[0].count(b"\n") + 1 for answer in answers_to_p]
    assert points_seen == list(range(1, 201))


TURNS = 3


async def turns_and_requests() -> list[str]:
    """What happens, in order, when a request comes during a run of the pump.

    A real loop, a real socket and the real pump; the connection that takes turns is a
    stand-in, always with more to write, that sends the request during its first turn.
    """
    loop = asyncio.get_running_loop()
    events: list[str] = []
    accepted: asyncio.Future[socket.socket] = loop.create_future()

    class Receiver(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            accepted.set_result(transport.get_extra_info("socket"))

        def data_received(self, data: bytes) -> None:
            events.append("request")

    listener = await loop.create_server(Receiver, "127.0.0.1", 0)
    async with listener:
        with socket.create_connection(listener.sockets[0].getsockname(), timeout=TIMEOUT) as peer:
            received = await accepted

            class BigReader:
                pumped = False

                def take_turn(self) -> bool:
                    if not events:
                        peer.sendall(b"get x\n")
                        select.select([received], [], [], TIMEOUT)  # there before the run ends
                    events.append("turn")
                    return events.count("turn") < TURNS

            _Pump().add(BigReader())  # type: ignore[arg-type]
            for _ in range(1000):  # a few turns of the loop are enough
                if events.count("turn") == TURNS:
                    break
                await asyncio.sleep(0)
    return events


def test_a_request_during_a_run_of_the_pump_waits_for_that_run_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The pump used to schedule its next run with call_soon, which asyncio runs before the
    # callbacks of sockets that became ready meanwhile: a small request waited for the run in
    # progress and for the next one too, about two budgets where TURN_BUDGET promises one.
    monkeypatch.setattr(server_module, "TURN_BUDGET", 0.0)  # one turn per run
    assert asyncio.run(turns_and_requests()) == ["turn", "request", "turn", "turn"]
