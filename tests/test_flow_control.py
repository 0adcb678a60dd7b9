"""A client that pipelines without reading cannot make the server's buffers grow without bound."""

from __future__ import annotations

import socket

from metrics_lab import serve_in_background
from metrics_lab.server import WRITE_BUFFER_HIGH, MetricsServer
from metrics_lab.session import ANSWER_BATCH


def test_pipelined_gets_without_reading_keep_server_output_bounded() -> None:
    requests = 3000
    with serve_in_background() as server:
        server.store.put_many([(f"key{i % 50}", i * 0.5, i) for i in range(2000)])
        answer_size = len(b"".join(f"key{i % 50} {i * 0.5!r} {i}\n".encode() for i in range(2000)))
        total = requests * (answer_size + 4)  # ~150 MB if the server answered everything at once
        with socket.create_connection(server.address, timeout=20) as sock:
            # 18 KB of requests: it fits in the socket buffers, so this returns at once.
            sock.sendall(b"get *\n" * requests)
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
