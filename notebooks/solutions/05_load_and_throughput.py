"""Solutions to the exercises of notebook 05 (load and throughput).

Run from the project root: ``.venv/bin/python notebooks/solutions/05_load_and_throughput.py``.
Numbers vary from machine to machine; the shapes are what matter.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import matplotlib.pyplot as plt

from metrics_lab import Client, serve_in_background
from metrics_lab.protocol import AnswerReader, parse_get_answer
from metrics_lab.synthetic import fleet

POINTS = fleet(hosts=("web1", "web2", "db1", "db2"), points=1440, seed=5)


def exercise_1(address: tuple[str, int]) -> None:
    """Batch size against throughput, five rounds each, median with min-max error bars.

    The curve flattens after a few hundred puts per batch. A real agent picks a batch that
    is past the bend but small: a huge batch delays every point in it and costs memory,
    and an error answer makes the whole batch's outcome harder to act on.
    """
    sizes = [1, 10, 50, 100, 200, 500, 1_000, 2_000, 5_000]
    medians, lows, highs = [], [], []
    with Client(*address, timeout=10) as client:
        for batch in sizes:
            chunk = POINTS[:2_000] if batch < 10 else POINTS[:10_000]
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
    fig, ax = plt.subplots()
    ax.errorbar(sizes, medians, yerr=[lows, highs], marker="o", capsize=3)
    ax.set_xscale("log")
    ax.set_title("put_many throughput: median and min-max of 5 rounds")
    ax.set_xlabel("puts per batch, log scale")
    ax.set_ylabel("throughput (points/s)")
    fig.savefig("05_exercise_1.png")
    plt.close(fig)
    for batch, rate in zip(sizes, medians, strict=True):
        print(f"batch {batch:>5}: {rate:>9,.0f} points/s")


def exercise_2() -> None:
    """``get *`` time grows linearly with the points; split it into transfer and parsing."""
    for count in (10_000, 50_000, 200_000):
        with serve_in_background() as server, Client(*server.address, timeout=30) as client:
            for start in range(0, count, 5_000):
                client.put_many(
                    [(f"k{i % 100}", i * 0.5, i) for i in range(start, min(count, start + 5_000))]
                )
            started = time.perf_counter()
            result = client.get("*")
            total = time.perf_counter() - started
            # The same answer again, but only read: the remainder is the client's parse.
            with Client(*server.address, timeout=30) as raw:
                raw._sock.sendall(b"get *\n")
                reader = AnswerReader()
                started = time.perf_counter()
                answer = reader.next_answer()
                while not hasattr(answer, "lines"):
                    reader.receive_data(raw._sock.recv(1 << 20))
                    answer = reader.next_answer()
                read = time.perf_counter() - started
                started = time.perf_counter()
                parse_get_answer(answer)  # type: ignore[arg-type]
                parse = time.perf_counter() - started
            stored = sum(len(series) for series in result.values())
            print(
                f"{stored:>7,} points: get * {total:.3f} s "
                f"(server + transfer {read:.3f} s, client parse {parse:.3f} s)"
            )


def exercise_3(address: tuple[str, int]) -> None:
    """Threads with blocking clients: similar at low concurrency, worse as threads pile up.

    Each thread blocks in recv and the GIL hands over between them; an AsyncClient task
    costs far less than a thread, so asyncio scales further with many mostly-waiting clients.
    """

    def one_client(index: int) -> None:
        with Client(*address, timeout=10) as client:
            for n in range(150):
                client.put(f"threads.client{index}", float(n), 1_700_000_000 + n)

    for clients in (1, 2, 4, 8, 16, 32):
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(one_client, range(clients)))
        rate = clients * 150 / (time.perf_counter() - started)
        print(f"{clients:>3} threads: {rate:>8,.0f} points/s")


if __name__ == "__main__":
    with serve_in_background() as main_server:
        exercise_1(main_server.address)
        exercise_3(main_server.address)
    exercise_2()
