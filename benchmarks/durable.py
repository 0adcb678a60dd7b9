"""Durable ingest: pipelined puts into a server with SQLiteStore, as a ratio to MemoryStore.

Run with ``python -m benchmarks.durable`` (``--help`` for the knobs). Each round starts a fresh
``metrics-lab serve`` in its own process (``--db`` in a temporary directory for SQLite), then
``--connections`` threads each send their share of ``--points`` puts in batches of
``--batch`` (one write per batch, then all its answers read; the server commits the batches
that arrive in one turn of its loop together), and the wall time from the first byte to the
last answer is taken. The figure is the median of ``--rounds`` rounds, memory and SQLite
taking turns; the target for the ratio is at least 0.5.

Self-contained on purpose (standard library and the installed package only), so it can be
folded into the project's main benchmark.
"""

from __future__ import annotations

import argparse
import queue
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

OK = b"ok\n\n"
TIMEOUT = 60.0
_LISTENING = re.compile(r"serving metrics on ([0-9.]+):(\d+)")


def start_server(db: Path | None) -> tuple[subprocess.Popen[str], tuple[str, int]]:
    """Start ``metrics-lab serve --port 0`` (with ``--db`` if given); return it and its address."""
    command = [sys.executable, "-m", "metrics_lab", "serve", "--port", "0", "--idle-timeout", "0"]
    if db is not None:
        command += ["--db", str(db)]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def drain() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=drain, daemon=True).start()
    while True:
        line = lines.get(timeout=TIMEOUT)
        if line is None:
            raise RuntimeError("the server exited before it listened")
        found = _LISTENING.search(line)
        if found:
            return proc, (found[1], int(found[2]))


def batches_for(connection: int, points: int, batch: int) -> list[bytes]:
    """The wire bytes of one connection's puts, cut into batches (built before timing)."""
    lines = [
        f"put bench.c{connection}.k{i % 50} {i * 0.25!r} {1_700_000_000 + i}\n".encode()
        for i in range(points)
    ]
    return [b"".join(lines[start : start + batch]) for start in range(0, points, batch)]


def load(address: tuple[str, int], batches: list[bytes], go: threading.Barrier) -> None:
    with socket.create_connection(address, timeout=TIMEOUT) as sock:
        go.wait()
        for data in batches:
            sock.sendall(data)
            expected = data.count(b"\n") * len(OK)
            received = bytearray()
            while len(received) < expected:
                chunk = sock.recv(max(65536, expected - len(received)))
                if not chunk:
                    raise RuntimeError("the server closed the connection")
                received += chunk
            if received != OK * (expected // len(OK)):
                raise RuntimeError(f"not every put was answered ok: {bytes(received[:60])!r}")


def one_round(db: Path | None, connections: int, points: int, batch: int) -> float:
    """Ingest ``points`` over ``connections``; return points per second."""
    share = points // connections
    work = [batches_for(c, share, batch) for c in range(connections)]
    proc, address = start_server(db)
    try:
        go = threading.Barrier(connections + 1)
        threads = [threading.Thread(target=load, args=(address, batches, go)) for batches in work]
        for thread in threads:
            thread.start()
        go.wait()
        started = time.perf_counter()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait(TIMEOUT)
        if proc.stderr is not None:
            proc.stderr.close()
    return share * connections / elapsed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.durable", description=__doc__)
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    print(
        f"{args.points} puts over {args.connections} connections in batches of {args.batch}, "
        f"median of {args.rounds} rounds"
    )
    rates: dict[str, list[float]] = {"memory": [], "sqlite": []}
    with tempfile.TemporaryDirectory() as tmp:
        for number in range(args.rounds):
            # Alternate who goes first, so a slow patch of the machine hurts both alike.
            for name in sorted(rates, reverse=number % 2 == 1):
                db = Path(tmp) / f"round{number}.db" if name == "sqlite" else None
                rates[name].append(one_round(db, args.connections, args.points, args.batch))
    medians = {name: statistics.median(values) for name, values in rates.items()}
    for name, values in rates.items():
        shown = ", ".join(f"{rate:,.0f}" for rate in values)
        print(f"  {name:7} {medians[name]:>10,.0f} points/s  (rounds: {shown})")
    ratio = medians["sqlite"] / medians["memory"]
    verdict = "meets" if ratio >= 0.5 else "MISSES"
    print(f"  durable / in-memory: {ratio:.2f}x ({verdict} the 0.5x target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
