"""The shared PostgreSQL store: ingest, several servers, ``get *``, and faults, measured.

Run with ``python -m benchmarks.postgres`` (``--help`` for the knobs; ``--quick`` for a
smaller run). It starts a temporary PostgreSQL of its own (durable settings: ``fsync`` on),
or uses the database at ``METRICS_LAB_POSTGRES`` (then the restart part is skipped, and the
benchmark's tables are emptied between parts: give it a database of its own). Each figure
is the median of ``--rounds`` rounds; ranges are printed beside it. No assertion: it prints.

1. **Statements**: how fast a direct psycopg loop upserts batches, one commit each, with the
   store's statement (``unnest`` of three arrays) and with ``COPY`` into a temporary table
   then ``INSERT ... ON CONFLICT``.
2. **Durable ingest through one server**: ``--connections`` clients pipeline ``--points``
   puts in batches of ``--batch`` into ``metrics-lab serve --db postgresql://...``; the same
   batches sent by as many threads straight to PostgreSQL with psycopg (one statement and
   one commit per batch) is the yardstick (target: the server >= 1.0x), and in-memory and
   SQLite servers take the same load for scale.
3. **Several servers**: the same load spread over 1, 2 and 4 servers on one database.
4. **get \\***: ``--get-points`` points read through a server (all the answer's bytes, read
   raw) against a direct psycopg fetch of the same rows (target: <= 1.5x the time).
5. **Faults**: a server killed (SIGKILL) mid-ingest, and the database crashed and restarted
   (``pg_ctl stop -m immediate``) mid-ingest: acknowledged points missing afterwards
   (target 0).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.durable import Server, load
from metrics_lab.postgres_cluster import Cluster, temporary_cluster
from metrics_lab.postgres_store import POINTS_TABLE, SCHEMA_TABLE, UPSERT_STATEMENT, PostgresStore
from metrics_lab.protocol import encode_puts

TIMEOUT = 60.0


# --- servers and load ---------------------------------------------------------------------


@contextlib.contextmanager
def servers(db: str | None, count: int) -> Iterator[list[Server]]:
    started: list[Server] = []
    try:
        for _ in range(count):
            started.append(Server(db))
        yield started
    finally:
        for server in started:
            server.stop()


Batch = tuple[list[str], list[int], list[float]]


def workload(connections: int, points: int, batch: int) -> list[list[Batch]]:
    """Each connection's batches as columns: 50 keys per connection, ascending timestamps."""
    share = points // connections
    work = []
    for connection in range(connections):
        keys = [f"bench.c{connection}.k{i % 50}" for i in range(share)]
        stamps = [1_700_000_000 + i for i in range(share)]
        values = [i * 0.25 for i in range(share)]
        work.append(
            [
                (keys[s : s + batch], stamps[s : s + batch], values[s : s + batch])
                for s in range(0, share, batch)
            ]
        )
    return work


def wire(batches: list[Batch]) -> list[bytes]:
    return [
        encode_puts(zip(keys, values, stamps, strict=True), now=0)
        for keys, stamps, values in batches
    ]


def timed(jobs: Sequence[Callable[[threading.Barrier], None]]) -> float:
    """Run the jobs in threads from one start signal; return the seconds until all end."""
    go = threading.Barrier(len(jobs) + 1)
    failures: list[BaseException] = []

    def run(job: Callable[[threading.Barrier], None]) -> None:
        try:
            job(go)
        except BaseException as exc:
            failures.append(exc)
            with contextlib.suppress(threading.BrokenBarrierError):
                go.abort()

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        go.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return time.perf_counter() - started


def through_servers(addresses: list[tuple[str, int]], work: list[list[Batch]]) -> float:
    """Send each connection's batches to a server (round robin); return points per second."""
    data = [wire(batches) for batches in work]
    jobs = [
        functools.partial(load, addresses[index % len(addresses)], batches)
        for index, batches in enumerate(data)
    ]
    return _points(work) / timed(jobs)


def direct(url: str, work: list[list[Batch]], statement: str = "unnest") -> float:
    """The same batches straight to PostgreSQL, one statement and commit each; points/s."""
    databases = [psycopg.connect(url) for _ in work]
    try:
        for db in databases:
            db.execute(
                "CREATE TEMPORARY TABLE incoming (key text, ts bigint, value float8) "
                "ON COMMIT DELETE ROWS"
            )
            db.commit()

        def job(db: psycopg.Connection[Any], batches: list[Batch]) -> Callable[..., None]:
            def run(go: threading.Barrier) -> None:
                go.wait()
                for keys, stamps, values in batches:
                    if statement == "unnest":
                        db.execute(UPSERT_STATEMENT, (keys, stamps, values))
                    else:
                        copy_upsert(db, keys, stamps, values)
                    db.commit()

            return run

        return _points(work) / timed(
            [job(db, batches) for db, batches in zip(databases, work, strict=True)]
        )
    finally:
        for db in databases:
            db.close()


def copy_upsert(
    db: psycopg.Connection[Any], keys: list[str], stamps: list[int], values: list[float]
) -> None:
    """The other way: COPY into a temporary table, then one INSERT ... ON CONFLICT."""
    with db.cursor() as cursor:
        with cursor.copy("COPY incoming (key, ts, value) FROM STDIN") as copy:
            for row in zip(keys, stamps, values, strict=True):
                copy.write_row(row)
        cursor.execute(
            f"INSERT INTO {POINTS_TABLE} (key, ts, value) "
            "SELECT DISTINCT ON (key, ts) key, ts, value FROM incoming ORDER BY key, ts "
            "ON CONFLICT (key, ts) DO UPDATE SET value = excluded.value"
        )


def _points(work: list[list[Batch]]) -> int:
    return sum(len(b[0]) for batches in work for b in batches)


def empty(url: str) -> None:
    with psycopg.connect(url) as db:
        db.execute(f"DROP TABLE IF EXISTS {POINTS_TABLE}, {SCHEMA_TABLE}")
    PostgresStore(url).close()  # the tables again, empty


def summary(name: str, values: list[float], unit: str = "points/s") -> float:
    middle = statistics.median(values)
    shown = ", ".join(f"{v:,.0f}" if unit == "points/s" else f"{v:.2f}" for v in values)
    figure = f"{middle:>12,.0f}" if unit == "points/s" else f"{middle:>12.2f}"
    print(f"  {name:34} {figure} {unit}  (rounds: {shown})", flush=True)
    return middle


# --- the parts ----------------------------------------------------------------------------


def statements(url: str, args: argparse.Namespace) -> None:
    print(f"\n1. Upsert statements, direct psycopg, 1 connection, {args.batch}-row batches")
    work = workload(1, args.points // 2, args.batch)
    rates: dict[str, list[float]] = {"unnest + ON CONFLICT": [], "COPY, then ON CONFLICT": []}
    for _ in range(args.rounds):
        for name in rates:
            empty(url)
            rates[name].append(direct(url, work, "unnest" if "unnest" in name else "copy"))
    for name, values in rates.items():
        summary(name, values)


def ingest(url: str, args: argparse.Namespace) -> None:
    print(
        f"\n2. Durable ingest: {args.points:,} puts, {args.connections} connections, "
        f"batches of {args.batch}"
    )
    work = workload(args.connections, args.points, args.batch)
    rates: dict[str, list[float]] = {
        "server, --db postgresql": [],
        "direct psycopg, same batches": [],
        "server, memory": [],
        "server, --db sqlite": [],
    }
    with tempfile.TemporaryDirectory() as folder:
        for number in range(args.rounds):
            for name in rates:
                if "postgres" in name or "psycopg" in name:
                    empty(url)
                if name.startswith("direct"):
                    rates[name].append(direct(url, work))
                    continue
                db = {"memory": None, "sqlite": str(Path(folder) / f"{number}.db")}.get(
                    name.rsplit(" ", 1)[-1], url
                )
                with servers(db, 1) as (server,):
                    rates[name].append(through_servers([server.address], work))
    medians = {name: summary(name, values) for name, values in rates.items()}
    ratio = medians["server, --db postgresql"] / medians["direct psycopg, same batches"]
    verdict = "meets" if ratio >= 1.0 else "MISSES"
    print(f"  server / direct psycopg: {ratio:.3f}x ({verdict} the 1.0x target)")


def several(url: str, args: argparse.Namespace) -> None:
    connections = max(4, args.connections)
    print(f"\n3. Several servers on one database: {connections} connections spread over them")
    work = workload(connections, args.points, args.batch)
    for count in (1, 2, 4):
        rates = []
        for _ in range(args.rounds):
            empty(url)
            with servers(url, count) as running:
                rates.append(through_servers([s.address for s in running], work))
        summary(f"{count} server(s)", rates)


def get_all(url: str, args: argparse.Namespace) -> None:
    count = args.get_points
    print(f"\n4. get * of {count:,} points (1,000 keys), through a server vs direct psycopg")
    empty(url)
    with psycopg.connect(url) as db, db.cursor() as cursor:
        with cursor.copy(f"COPY {POINTS_TABLE} (key, ts, value) FROM STDIN") as copy:
            rows = io.StringIO()
            for i in range(count):
                rows.write(f"m{i % 1000:04d}.cpu\t{1_700_000_000 + i // 1000}\t{i * 0.001!r}\n")
            copy.write(rows.getvalue())
        db.commit()
    server_times: list[float] = []
    direct_times: list[float] = []
    with servers(url, 1) as (server,):
        for _ in range(args.rounds):
            started = time.perf_counter()
            size = read_whole_answer(server.address)
            server_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            with psycopg.connect(url) as db:
                fetched = db.execute(
                    f"SELECT key, ts, value FROM {POINTS_TABLE} ORDER BY key, ts", binary=True
                ).fetchall()
            direct_times.append(time.perf_counter() - started)
            assert len(fetched) == count
    through = summary("through the server (s)", server_times, "s")
    straight = summary("direct psycopg fetchall (s)", direct_times, "s")
    ratio = through / straight
    verdict = "meets" if ratio <= 1.5 else "MISSES"
    print(f"  {size / 1e6:.0f} MB answer; server / direct: {ratio:.2f}x ({verdict} <= 1.5x)")


def read_whole_answer(address: tuple[str, int]) -> int:
    with socket.create_connection(address, timeout=TIMEOUT) as sock:
        sock.sendall(b"get *\n")
        size, tail = 0, b""
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise RuntimeError("the server closed mid-answer")
            size += len(chunk)
            tail = (tail + chunk)[-2:]
            if tail == b"\n\n" and size > 4:
                return size


class Ingest(threading.Thread):
    """Pipelined puts of ``key`` (value 1.0) at timestamps 0, 1, ... in batches.

    Records which timestamps were acknowledged (``ok``) and how many were refused
    (``error``); ends after ``count`` points (by default, never), when the server goes away
    (then ``cut_off`` is set), or once ``stopping`` is set (:meth:`stop`).
    """

    def __init__(
        self, address: tuple[str, int], key: str, batch: int = 200, count: int = sys.maxsize
    ) -> None:
        super().__init__(daemon=True)
        self.address, self.key, self.batch, self.count = address, key, batch, count
        self.acked: list[int] = []
        self.refused = 0
        self.cut_off = False  # the server went away mid-ingest
        self.stopping = threading.Event()

    def stop(self) -> None:
        self.stopping.set()
        self.join(TIMEOUT)

    def run(self) -> None:
        with socket.create_connection(self.address, timeout=TIMEOUT) as sock:
            for start in range(0, self.count, self.batch):
                if self.stopping.is_set():
                    return
                stamps = range(start, min(start + self.batch, self.count))
                try:
                    sock.sendall(b"".join(f"put {self.key} 1.0 {t}\n".encode() for t in stamps))
                    data = b""
                    while data.count(b"\n\n") < len(stamps):
                        chunk = sock.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                except OSError:
                    data = b""
                answers = data.split(b"\n\n")[:-1]
                for stamp, answer in zip(stamps, answers, strict=False):
                    if answer == b"ok":
                        self.acked.append(stamp)
                    else:
                        self.refused += 1
                if len(answers) < len(stamps):
                    self.cut_off = True
                    return


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        time.sleep(0.02)


def stored_timestamps(url: str, key: str) -> set[int]:
    with psycopg.connect(url) as db:
        return {t for (t,) in db.execute(f"SELECT ts FROM {POINTS_TABLE} WHERE key = %s", (key,))}


def lost(url: str, key: str, acked: list[int]) -> int:
    return len(set(acked) - stored_timestamps(url, key))


def faults(url: str, cluster: Cluster | None, args: argparse.Namespace) -> None:
    print("\n5. Faults mid-ingest: acknowledged points missing afterwards (target 0)")
    empty(url)
    kills: list[int] = []
    for round_number in range(args.rounds):
        with servers(url, 1) as (server,):
            ingest = Ingest(server.address, f"killed{round_number}")
            ingest.start()
            wait_for(lambda ingest=ingest: len(ingest.acked) >= 5_000)  # type: ignore[misc]
            server.proc.kill()
            ingest.join(TIMEOUT)
        kills.append(lost(url, f"killed{round_number}", ingest.acked))
        print(f"  SIGKILL of a server: {len(ingest.acked):,} acknowledged, {kills[-1]} lost")
    if cluster is None:
        print("  (database restart skipped: METRICS_LAB_POSTGRES is not ours to crash)")
        return
    for round_number in range(args.rounds):
        key = f"restarted{round_number}"
        with servers(url, 1) as (server,):
            ingest = Ingest(server.address, key)
            ingest.start()
            wait_for(lambda ingest=ingest: len(ingest.acked) >= 5_000)  # type: ignore[misc]
            cluster.stop("immediate")
            wait_for(lambda ingest=ingest: ingest.refused > 0)  # type: ignore[misc]
            cluster.start()
            before = len(ingest.acked)
            wait_for(lambda: len(ingest.acked) > before + 5_000)  # noqa: B023 (this round's)
            ingest.stop()
            alive = server.proc.poll() is None
        missing = lost(url, key, ingest.acked)
        print(
            f"  database crash + restart: {len(ingest.acked):,} acknowledged, "
            f"{ingest.refused:,} refused meanwhile, {missing} lost, server up: {alive}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.postgres", description=__doc__)
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2_000)
    parser.add_argument("--get-points", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, one round")
    args = parser.parse_args(argv)
    if args.quick:
        args.points, args.get_points, args.rounds = 40_000, 100_000, 1
    print(f"medians of {args.rounds} round(s); {os.cpu_count()} cores", flush=True)
    with contextlib.ExitStack() as stack:
        url = os.environ.get("METRICS_LAB_POSTGRES")
        cluster = None
        if url is None:
            cluster = stack.enter_context(temporary_cluster())
            url = cluster.url
        statements(url, args)
        ingest(url, args)
        several(url, args)
        get_all(url, args)
        faults(url, cluster, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
