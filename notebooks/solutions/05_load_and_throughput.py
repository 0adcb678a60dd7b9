"""Solutions to the exercises of notebook 05 (load and throughput).

Run from the project root: ``.venv/bin/python notebooks/solutions/05_load_and_throughput.py``.
As in the notebook, every server runs in a process of its own (``metrics-lab serve``), so
the clients measured here do not share an interpreter with it. Numbers vary from machine to
machine and from run to run; the shapes are what matter.
"""

from __future__ import annotations

import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, NullLocator

from metrics_lab import Client
from metrics_lab.synthetic import fleet

POINTS = fleet(hosts=("web1", "web2", "db1", "db2"), points=1440, seed=5)


# The line a server writes into its log once it listens, with the port it got.
LISTENING = re.compile(r"serving metrics on [\d.]+:(\d+)")


@contextmanager
def running_server(*options: str) -> Iterator[int]:
    """`metrics-lab serve --port 0` in its own process, for the ``with`` block; yields its port.

    As in the notebook: the operating system picks a free port, and the server's log says which,
    once it listens. Afterwards, any warning or error in the rest of its log is printed.
    """
    command = [sys.executable, "-m", "metrics_lab", "serve", "--port", "0", *options]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    # A server that neither listens nor exits within 10 s is killed: its log ends, and so
    # does the loop below.
    give_up = threading.Timer(10, process.kill)
    give_up.start()
    try:
        log, found = [], None
        for line in process.stderr:  # the server's log, a line at a time, as it writes it
            log.append(line)
            if found := LISTENING.search(line):
                break
        give_up.cancel()
        if found is None:
            raise RuntimeError(f"the server did not start: {''.join(log)}")
        yield int(found[1])
    finally:
        process.terminate()
        rest = process.communicate(timeout=10)[1]
        # Its INFO lines only say that it stopped and how it closed its store.
        problems = [line for line in rest.splitlines() if " INFO " not in line]
        if problems:
            print("the server said:", *problems, sep="\n")


def exercise_1(port: int) -> None:
    """Batch size against throughput, five rounds each, median with min-max error bars.

    The curve bends after a few hundred puts per batch. A real agent picks a batch past the
    bend but small: a huge batch delays every point in it until the batch is full, costs
    memory, and an error answer makes the whole batch's outcome harder to act on.
    """
    sizes = [1, 10, 50, 100, 200, 500, 1_000, 2_000]
    medians, lows, highs = [], [], []
    with Client("127.0.0.1", port, timeout=10) as client:
        for batch in sizes:
            chunk = POINTS[:1_000] if batch < 10 else POINTS[:10_000]
            rates = []
            for _ in range(5):
                started = time.perf_counter()
                for start in range(0, len(chunk), batch):
                    client.put_many(chunk[start : start + batch])
                rates.append(len(chunk) / (time.perf_counter() - started))
            middle = statistics.median(rates)
            medians.append(middle)
            lows.append(middle - min(rates))
            highs.append(max(rates) - middle)
    fig, ax = plt.subplots(layout="constrained")
    ax.errorbar(sizes, medians, yerr=[lows, highs], marker="o", capsize=3)
    ax.set_xscale("log")
    # Plain numbers on both axes, as in the notebook: 1,000 rather than 10^3.
    ax.set_xticks(sizes, [f"{size:,}" for size in sizes])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    ax.set_ylim(bottom=0)
    ax.set_title("put_many throughput: median and min-max of 5 rounds")
    ax.set_xlabel("puts per batch (log scale)")
    ax.set_ylabel("throughput (points/s)")
    ax.grid(True, alpha=0.3)
    # A script has no notebook to show the figure in: it goes to the system's temporary folder.
    figure = Path(tempfile.gettempdir()) / "05_exercise_1.png"
    fig.savefig(figure)
    plt.close(fig)
    for batch, rate in zip(sizes, medians, strict=True):
        print(f"batch {batch:>5,}: {rate:>9,.0f} points/s")
    print("figure saved to", figure)


def exercise_2() -> None:
    """``get *`` time grows with the points; the transfer alone is a part of it.

    The rest is the client's work: splitting the answer into lines and turning each into a
    ``(timestamp, value)`` pair.
    """
    for count in (10_000, 50_000, 200_000):
        with running_server() as port, Client("127.0.0.1", port, timeout=30) as client:
            for start in range(0, count, 5_000):
                end = min(count, start + 5_000)
                client.put_many([(f"k{i % 100}", i * 0.5, i) for i in range(start, end)])
            started = time.perf_counter()
            stored = sum(len(series) for series in client.get("*").values())
            whole = time.perf_counter() - started
            # The same answer on a plain socket, only received: no parsing at all.
            with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
                started = time.perf_counter()
                raw.sendall(b"get *\n")
                received = bytearray()
                while not received.endswith(b"\n\n"):  # no data line is empty: this is the end
                    chunk = raw.recv(1 << 20)
                    if not chunk:
                        raise RuntimeError("the server closed the connection mid-answer")
                    received += chunk
                transfer = time.perf_counter() - started
        print(
            f"{stored:>7,} points: get * {whole:.3f} s, of which the transfer alone "
            f"{transfer:.3f} s ({len(received) / 1e6:.1f} MB)"
        )


def exercise_3(port: int) -> None:
    """Blocking clients in threads on the durable server: they overlap their waits too.

    Each thread blocks in ``recv`` while its put waits for the disk; the interpreter lock is
    free meanwhile, so threads hide the waiting much as AsyncClients do, and the server's
    group commit serves them alike. A thread costs more than a task (its own stack, the
    operating system switching between them), which shows with hundreds or thousands of
    clients, not with 32. As in the notebook, every setting sends for half a second, and the
    clock starts once all its clients are connected.
    """
    seconds = 0.5

    def send_until(client: Client, key: str, deadline: float) -> int:
        sent = 0
        while time.perf_counter() < deadline:
            client.put(key, float(sent), 1_700_000_000 + sent)
            sent += 1
        return sent

    for count in (1, 2, 8, 32):
        clients = [Client("127.0.0.1", port, timeout=10) for _ in range(count)]
        keys = [f"threads{count}.client{i}" for i in range(count)]
        try:
            with ThreadPoolExecutor(count) as pool:
                started = time.perf_counter()
                deadline = [started + seconds] * count
                sent = sum(pool.map(send_until, clients, keys, deadline))
                rate = sent / (time.perf_counter() - started)
        finally:
            for client in clients:
                client.close()
        print(f"{count:>3} threads: {rate:>8,.0f} points/s")


if __name__ == "__main__":
    with running_server() as memory_port:
        exercise_1(memory_port)
    exercise_2()
    with (
        tempfile.TemporaryDirectory() as folder,
        running_server("--db", str(Path(folder) / "metrics.sqlite")) as durable_port,
    ):
        exercise_3(durable_port)
