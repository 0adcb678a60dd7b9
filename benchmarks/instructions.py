"""Instructions per request, counted by callgrind: ``python -m benchmarks.instructions``.

Wall-clock figures swing on a busy machine; the number of instructions a server executes
for a request does not. Each server runs under ``valgrind --tool=callgrind`` twice, once
with few requests and once with more; the difference of the two totals, divided by the
difference of the request counts, is the cost of one request, start-up and shutdown cancel
out. Two paths are counted: a lone put (one put, wait for its ``ok``, again) and a block of
3,000 pipelined puts in one write (the cost of an ingested point). Each figure is shown with
its ratio to the baseline's; the target is at most :data:`TARGET_RATIO` times the baseline per
ingested point. Needs valgrind (Linux); takes a few minutes. ``--before DIR`` adds the server
of another checkout and ``--ours DIR`` measures another checkout as ``fast`` and ``simple``,
as in :mod:`benchmarks.run`.
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
from benchmarks.run import ROOT, ServerKind, server_kinds

LONE_PUTS = (500, 1_500)
"""Lone puts in the short and in the long run."""
BLOCK = 3_000
"""Puts in one block."""
BLOCKS = (1, 3)
"""Blocks in the short and in the long run."""
TARGET_RATIO = 1.10
"""Instructions per ingested point (a put in a block), ``fast`` over the baseline: at most."""


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
    parser.add_argument(
        "--ours",
        type=Path,
        metavar="DIR",
        default=ROOT,
        help="count the server of another checkout as fast and simple (default: this one)",
    )
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("python -m benchmarks.instructions needs valgrind", file=sys.stderr)
        return 1
    before = None if args.before is None else args.before.resolve()
    counts: dict[str, tuple[float, float]] = {}
    for kind in server_kinds(before, args.ours.resolve()):
        print(f"counting {kind.name} ...", file=sys.stderr, flush=True)
        counts[kind.name] = (_per_request(kind, LONE_PUTS, 1), _per_request(kind, BLOCKS, BLOCK))
    print(format_counts(counts))
    return 0


def format_counts(counts: dict[str, tuple[float, float]]) -> str:
    """The table: per server, instructions per lone put and per put in a block, each with its
    ratio to the baseline's; then the target and whether ``fast`` meets it."""
    header = ("server", "lone put", "/baseline", f"put in a block of {BLOCK:,}", "/baseline")
    lone_base, block_base = counts["baseline"]
    rows = [header]
    for name, (lone, block) in counts.items():
        row = (name, f"{lone:,.0f}", f"{lone / lone_base:.2f}x")
        rows.append((*row, f"{block:,.0f}", f"{block / block_base:.2f}x"))
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = [
        "  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    ratio = counts["fast"][1] / block_base
    verdict = "met" if ratio <= TARGET_RATIO else "NOT met"
    lines.append(
        "\ninstructions per put (callgrind Ir), from the difference of two runs of each size;"
        f"\nper ingested point (a put in a block) fast/baseline = {ratio:.2f}x, target <= "
        f"{TARGET_RATIO:.2f}x: {verdict}"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
