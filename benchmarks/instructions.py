"""Instructions per request, counted by callgrind: ``python -m benchmarks.instructions``.

Wall-clock figures swing on a busy machine; the number of instructions a server executes
for a request does not. Each server runs under ``valgrind --tool=callgrind`` twice, once
with few requests and once with more; the difference of the two totals, divided by the
difference of the request counts, is the cost of one request, start-up and shutdown cancel
out. Two paths are counted: a lone put (one put, wait for its ``ok``, again) and a block of
3,000 pipelined puts in one write. Needs valgrind (Linux); takes a few minutes. ``--before
DIR`` adds the server of another checkout, as in :mod:`benchmarks.run`.
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from benchmarks.durable import send_and_check
from benchmarks.load import put_lines
from benchmarks.run import ServerKind, server_kinds

LONE_PUTS = (500, 1_500)
"""Lone puts in the short and in the long run."""
BLOCK = 3_000
"""Puts in one block."""
BLOCKS = (1, 3)
"""Blocks in the short and in the long run."""


def _drive(port: int, lines: list[bytes], per_write: int) -> None:
    """Send ``lines``, ``per_write`` of them a write, each write's answers awaited."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for start in range(0, len(lines), per_write):
            send_and_check(sock, b"".join(lines[start : start + per_write]))


def _instructions(kind: ServerKind, lines: list[bytes], per_write: int) -> int:
    """The instructions the server ran, start-up and shutdown included, to answer ``lines``."""
    with tempfile.TemporaryDirectory() as directory:
        out = Path(directory) / "callgrind.out"
        wrapper = ["valgrind", "--tool=callgrind", "--quiet", f"--callgrind-out-file={out}"]
        server = kind.start("asyncio", wrapper)
        try:
            _drive(server.port, lines, per_write)
        finally:
            server.stop()
        # callgrind writes "totals: <Ir>" (older versions "summary: <Ir>") at exit.
        match = re.search(r"^(?:totals|summary): (\d+)", out.read_text(), re.MULTILINE)
        if match is None:
            raise RuntimeError(f"no totals in {out}")
        return int(match.group(1))


def _per_request(kind: ServerKind, counts: tuple[int, int], per_write: int) -> float:
    few, many = (
        _instructions(kind, put_lines(f"{kind.name}.", count * per_write, 10), per_write)
        for count in counts
    )
    return (many - few) / ((counts[1] - counts[0]) * per_write)


def main(argv: Sequence[str] | None = None) -> int:
    """Count and print instructions per put, on each path, for each server."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.instructions",
        description="Instructions each server runs per put, counted by valgrind's callgrind: "
        "for a lone put (one round trip each) and a put within a block of "
        f"{BLOCK:,} pipelined puts. Deterministic, unlike times; takes a few minutes.",
    )
    parser.add_argument(
        "--before", type=Path, metavar="DIR", help="also count the server of another checkout"
    )
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("python -m benchmarks.instructions needs valgrind", file=sys.stderr)
        return 1
    before = None if args.before is None else args.before.resolve()
    header = ("server", "lone put", f"put in a block of {BLOCK:,}")
    rows = [header]
    for kind in server_kinds(before):
        print(f"counting {kind.name} ...", file=sys.stderr, flush=True)
        lone = _per_request(kind, LONE_PUTS, 1)
        block = _per_request(kind, BLOCKS, BLOCK)
        rows.append((kind.name, f"{lone:,.0f}", f"{block:,.0f}"))
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    for row in rows:
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
    print("\ninstructions per put (callgrind Ir), from the difference of two runs of each size")
    return 0


if __name__ == "__main__":
    sys.exit(main())
