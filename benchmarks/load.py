"""The load generator: ``python -m benchmarks.load SCENARIO --port N [options]``.

It runs in its own process (started by :mod:`benchmarks.run`) so that its work does not share
a core with the server it measures, and prints one JSON object with the scenario's figures.
Requests are encoded before the clock starts and answers are checked only as bytes, so the
figures are the server's and the wire's, not the client library's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import sys
import time
from collections.abc import Sequence

from benchmarks.system import FD_MARGIN, raise_fd_limit, rss_bytes
from metrics_lab.server import LOOP_CHOICES, event_loop_factory

OK = b"ok\n\n"
SCENARIOS = ("ingest", "get_all", "latency", "concurrent", "slow_readers", "idle", "lockout")
START = 1_700_000_000
STALL = 0.1
"""A round trip longer than this, in seconds, is a stall (the issue's worst-case target)."""
HALF_LINE = b"put lockout.trickle 1.5 1700000000"
"""What a peer of the lockout scenario sends, a byte at a time, and never ends with ``\\n``."""
TRICKLE_INTERVAL = 0.5
"""Seconds between two bytes of :data:`HALF_LINE`: now and then, as a slow peer would."""


def put_lines(key_prefix: str, points: int, keys: int, first: int = 0) -> list[bytes]:
    """``points`` put lines spread round-robin over ``keys`` keys, timestamps ascending."""
    return [
        f"put {key_prefix}{index % keys} {index * 0.25 + 0.5!r} {START + index // keys}\n".encode()
        for index in range(first, first + points)
    ]


async def _expect(reader: asyncio.StreamReader, expected: bytes) -> None:
    answer = await reader.readexactly(len(expected))
    if answer != expected:
        raise RuntimeError(f"unexpected answer: {answer[:60]!r}")


async def ingest(
    host: str, port: int, points: int, keys: int, connections: int, batch: int
) -> dict[str, float]:
    """Put ``points`` points over ``connections`` connections, ``batch`` pipelined puts a write."""
    lines = put_lines("ingest.", points, keys)
    batches = [b"".join(lines[start : start + batch]) for start in range(0, points, batch)]
    sizes = [min(batch, points - start) for start in range(0, points, batch)]
    streams = [await asyncio.open_connection(host, port) for _ in range(connections)]

    async def drive(index: int) -> None:
        reader, writer = streams[index]
        for number in range(index, len(batches), connections):
            writer.write(batches[number])
            await _expect(reader, OK * sizes[number])

    started = time.perf_counter()
    await asyncio.gather(*(drive(index) for index in range(connections)))
    elapsed = time.perf_counter() - started
    for _, writer in streams:
        writer.close()
    return {"points": points, "seconds": elapsed, "points_per_second": points / elapsed}


async def get_all(host: str, port: int, expected_points: int, repeats: int) -> dict[str, float]:
    """Time ``get *`` from the write to the answer's last byte; check the line count."""
    reader, writer = await asyncio.open_connection(host, port)
    times = []
    for _ in range(repeats):
        chunks = []
        tail = b""
        started = time.perf_counter()
        writer.write(b"get *\n")
        while tail != b"\n\n":  # data lines are never empty: the first "\n\n" ends it
            chunk = await reader.read(1 << 20)
            if not chunk:
                raise RuntimeError("the server closed the connection mid-answer")
            chunks.append(chunk)
            tail = (tail + chunk[-2:])[-2:]
        times.append(time.perf_counter() - started)
        answer = b"".join(chunks)
        lines = answer.count(b"\n") - 2  # minus the status line and the final empty line
        if not answer.startswith(b"ok\n") or lines != expected_points:
            raise RuntimeError(f"get * gave {lines} points, expected {expected_points}")
    writer.close()
    return {"points": expected_points, "seconds": statistics.median(times), "bytes": len(answer)}


async def latency(host: str, port: int, connections: int, requests: int) -> dict[str, float]:
    """Single puts in turn on each of ``connections`` connections; median round trip."""
    samples: list[float] = []

    async def drive(index: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        for line in put_lines(f"latency.{index}.", requests, 1):
            started = time.perf_counter()
            writer.write(line)
            await _expect(reader, OK)
            samples.append(time.perf_counter() - started)
        writer.close()

    await asyncio.gather(*(drive(index) for index in range(connections)))
    return {"requests": len(samples), "median_seconds": statistics.median(samples)}


async def concurrent(host: str, port: int, connections: int, points: int) -> dict[str, float]:
    """Open ``connections`` connections at once, each putting ``points`` points; count them."""
    refused = 0

    async def drive(index: int) -> int:
        nonlocal refused
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            refused += 1
            return 0
        try:
            writer.write(b"".join(put_lines(f"conc.{index}.", points, 1)))
            await _expect(reader, OK * points)
        except (OSError, asyncio.IncompleteReadError, RuntimeError):
            return 0
        finally:
            writer.close()
        return points

    started = time.perf_counter()
    acknowledged = sum(await asyncio.gather(*(drive(index) for index in range(connections))))
    elapsed = time.perf_counter() - started
    # Count what the server really holds, on a fresh connection: one get per key, pipelined.
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"".join(f"get conc.{index}.0\n".encode() for index in range(connections)))
    stored = 0
    for _ in range(connections):
        answer = await reader.readuntil(b"\n\n")
        stored += answer.count(b"\n") - 2
    writer.close()
    return {
        "connections": connections,
        "acknowledged": acknowledged,
        "stored": stored,
        "refused": refused,
        "seconds": elapsed,
    }


async def slow_readers(
    host: str, port: int, readers: int, seconds: float, rate: int, receive_buffer: int
) -> dict[str, float]:
    """``readers`` connections send ``get *`` at the same moment and take the answer at
    ``rate`` bytes a second for ``seconds``, then close; meanwhile another connection puts and
    gets one point in turn, from the moment the gets are sent.

    ``receive_buffer``: the readers' ``SO_RCVBUF`` in bytes, or 0 for the kernel's default. The
    default lets the kernel take up to a few megabytes of each answer before the reader reads
    any, so the server encodes for every reader at once: the case of real clients. A small
    buffer keeps the kernel from taking the answers off the server's hands, so what the server
    has not sent, it holds. The figures are the other client's round trips (each put and each
    get is one sample, none left out), median, 99th percentile and worst, in seconds, and how
    many took longer than :data:`STALL` (the probe goes on at once after a stall, so a few long
    stalls hardly move the 99th percentile; the count and the worst show them).
    """
    loop = asyncio.get_running_loop()
    sockets = []
    for _ in range(readers):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)  # before connect
        sock.setblocking(False)
        await loop.sock_connect(sock, (host, port))
        sockets.append(sock)
    # Connected before the gets go out, so its own connection waits for nothing.
    reader, writer = await asyncio.open_connection(host, port)
    await asyncio.gather(*(loop.sock_sendall(sock, b"get *\n") for sock in sockets))
    deadline = time.perf_counter() + seconds
    tick = 0.25
    received = 0

    async def read_slowly(sock: socket.socket) -> None:
        nonlocal received
        try:
            while time.perf_counter() < deadline:
                chunk = await loop.sock_recv(sock, max(1, int(rate * tick)))
                if not chunk:
                    return
                received += len(chunk)
                await asyncio.sleep(tick)
        finally:
            sock.close()

    async def probe() -> list[float]:
        samples: list[float] = []
        number = 0
        while not samples or time.perf_counter() < deadline:  # at least one of each
            number += 1
            # One point, rewritten in place, so the get's answer stays one line long.
            put = f"put probe {number}.5 {START}\n".encode()
            started = time.perf_counter()
            writer.write(put)
            await _expect(reader, OK)
            samples.append(time.perf_counter() - started)
            started = time.perf_counter()
            writer.write(b"get probe\n")
            answer = await reader.readuntil(b"\n\n")
            samples.append(time.perf_counter() - started)
            if not answer.startswith(b"ok\nprobe "):
                raise RuntimeError(f"unexpected answer: {answer[:60]!r}")
            await asyncio.sleep(0.005)  # a client, not a load generator: ~100 round trips/s
        writer.close()
        return samples

    started = time.perf_counter()
    reading = asyncio.gather(*(read_slowly(sock) for sock in sockets))
    samples = await probe()
    await reading
    elapsed = time.perf_counter() - started
    return {
        "readers": readers,
        "seconds": elapsed,
        "bytes_read": received,
        "round_trips": len(samples),
        "median_seconds": statistics.median(samples),
        "p99_seconds": _percentile(samples, 99),
        "max_seconds": max(samples),
        "stalls": sum(sample > STALL for sample in samples),
    }


async def _round_trip(host: str, port: int, key: str) -> float:
    """Open a connection, put one point and wait for its ``ok``; the seconds it took."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"put {key} 1.5 {START}\n".encode())
        await _expect(reader, OK)
    finally:
        writer.close()
    return time.perf_counter() - started


async def idle(host: str, port: int, connections: int, server_pid: int) -> dict[str, float]:
    """Open ``connections`` connections that send nothing; the server's RSS growth for them.

    Process ``server_pid`` is the server: its RSS is read before the first connection and once
    the server has taken them all (a put on one more connection is answered only after the
    server accepted every connection queued before it), then everything is closed.
    """
    before = rss_bytes(server_pid)
    streams = []
    try:
        for _ in range(connections):
            streams.append(await asyncio.open_connection(host, port))
        await _round_trip(host, port, "idle.probe")
        await asyncio.sleep(0.5)  # let the server finish what accepting started
        after = rss_bytes(server_pid)
    finally:
        for _, writer in streams:
            writer.close()
    growth = float("nan") if before is None or after is None else after - before
    return {"connections": connections, "rss_growth": growth}


async def lockout(
    host: str, port: int, connections: int, hold: float, wait: float
) -> dict[str, float]:
    """One peer holds ``connections`` connections (the server's limit); half of them stay
    idle, the other half send half a request line, a byte at a time, and never end it. After
    ``hold`` seconds a newcomer connects and puts one point.

    The figures: whether the newcomer's put was answered ``ok`` (1) or not (0: its connection
    was closed or reset, or no answer came within ``wait`` seconds), and how long that took.
    """
    streams = [await asyncio.open_connection(host, port) for _ in range(connections)]

    async def trickle(writer: asyncio.StreamWriter) -> None:
        for byte in HALF_LINE:  # then silence: the line is never ended
            if writer.is_closing():
                return  # the server let this one go
            writer.write(bytes([byte]))
            await asyncio.sleep(TRICKLE_INTERVAL)

    trickling = [asyncio.create_task(trickle(writer)) for _, writer in streams[::2]]
    await asyncio.sleep(hold)
    started = time.perf_counter()
    try:
        await asyncio.wait_for(_round_trip(host, port, "lockout.newcomer"), wait)
        answered = 1.0
    except (OSError, asyncio.IncompleteReadError, TimeoutError):
        answered = 0.0
    elapsed = time.perf_counter() - started
    for task in trickling:
        task.cancel()
    await asyncio.gather(*trickling, return_exceptions=True)
    for _, writer in streams:
        writer.close()
    return {"connections": connections, "answered": answered, "seconds": elapsed}


def _percentile(samples: list[float], percent: int) -> float:
    """The ``percent``-th percentile, between the samples (never beyond the worst)."""
    if len(samples) < 2:
        return samples[0]
    return statistics.quantiles(samples, n=100, method="inclusive")[percent - 1]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one scenario against ``--host``/``--port`` and print its figures as JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load")
    parser.add_argument("scenario", choices=SCENARIOS)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--points", type=int, default=400_000)
    parser.add_argument("--keys", type=int, default=1_000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=15.0, help="slow_readers: how long")
    parser.add_argument("--rate", type=int, default=1024, help="slow_readers: bytes/s each")
    parser.add_argument(
        "--receive-buffer",
        type=int,
        default=0,
        help="slow_readers: each reader's SO_RCVBUF in bytes (default: 0, the kernel's)",
    )
    parser.add_argument("--server-pid", type=int, default=0, help="idle: the server's process")
    parser.add_argument(
        "--hold", type=float, default=2.0, help="lockout: seconds before the newcomer comes"
    )
    parser.add_argument(
        "--wait", type=float, default=5.0, help="lockout: seconds the newcomer waits at most"
    )
    parser.add_argument("--loop", choices=LOOP_CHOICES, default="auto")
    args = parser.parse_args(argv)
    raise_fd_limit(args.connections + FD_MARGIN)
    host, port = args.host, args.port
    if args.scenario == "ingest":
        work = ingest(host, port, args.points, args.keys, args.connections, args.batch)
    elif args.scenario == "get_all":
        work = get_all(host, port, args.points, args.repeats)
    elif args.scenario == "latency":
        work = latency(host, port, args.connections, args.points)
    elif args.scenario == "concurrent":
        work = concurrent(host, port, args.connections, args.points)
    elif args.scenario == "slow_readers":
        work = slow_readers(
            host, port, args.connections, args.seconds, args.rate, args.receive_buffer
        )
    elif args.scenario == "idle":
        work = idle(host, port, args.connections, args.server_pid)
    else:
        work = lockout(host, port, args.connections, args.hold, args.wait)
    with asyncio.Runner(loop_factory=event_loop_factory(args.loop)) as runner:
        result = runner.run(work)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
