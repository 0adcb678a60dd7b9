"""How much code one put and one get run on the simple path: ``python -m benchmarks.trace_path``.

A learner should be able to read the path a request takes, whole. This starts
``MetricsServer(parser="simple")`` with its in-memory store in this process, warms it up with
one exchange, then traces a second one with :func:`sys.settrace`: a new connection, one put,
one get, the close, until the server has let the connection go (accept and close included).
It counts the distinct lines, functions and modules of ``metrics_lab`` that ran; the event
loop, the standard library and the client (raw bytes on a socket, in this module) are not
counted. ``--list`` prints the functions with their line counts, for whoever shortens the path;
``--json`` prints the counts for :mod:`benchmarks.run`. Deterministic: one run is enough.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import metrics_lab
from metrics_lab import MetricsServer

TARGET_LINES = 120
"""What issue 21 asks of the simple path: about this many distinct lines."""
PACKAGE = Path(metrics_lab.__file__).resolve().parent
OK = b"ok\n\n"
START = 1_700_000_000
CLOSE_POLLS = 400
"""Turns of the event loop (5 ms each) to wait at most for the server to drop a connection."""


@dataclass
class Trace:
    """The lines of :data:`PACKAGE` that ran, by function."""

    lines: dict[tuple[str, int, str], set[int]] = field(default_factory=dict)
    """Per function, as (module file, first line, qualified name): its line numbers that ran."""

    def tracer(self, frame: FrameType, event: str, arg: Any) -> Any:
        """The :func:`sys.settrace` hook: follow frames of the package only."""
        code = frame.f_code
        if not code.co_filename.startswith(str(PACKAGE)):
            return None  # not the package: the event loop, the standard library
        caller = frame.f_back
        if caller is not None and caller.f_code.co_filename == __file__:
            return None  # this module asking the server how it is, not a request's path
        function = (code.co_filename, code.co_firstlineno, code.co_qualname)
        ran = self.lines.setdefault(function, set())

        def local(frame: FrameType, event: str, arg: Any) -> Any:
            if event == "line":
                ran.add(frame.f_lineno)
            return local

        return local

    def counts(self) -> dict[str, int]:
        """Distinct lines, functions and modules that ran."""
        return {
            "lines": sum(len(numbers) for numbers in self.lines.values()),
            "functions": len(self.lines),
            "modules": len({module for module, _, _ in self.lines}),
        }


async def _exchange(server: MetricsServer, key: str) -> None:
    """Connect, put one point, get it back, close; return once the server has dropped us."""
    reader, writer = await asyncio.open_connection(*server.address)
    writer.write(f"put {key} 0.5 {START}\n".encode())
    if await reader.readexactly(len(OK)) != OK:
        raise RuntimeError("the put was not answered ok")
    writer.write(f"get {key}\n".encode())
    answer = await reader.readuntil(b"\n\n")
    if answer != f"ok\n{key} 0.5 {START}\n\n".encode():
        raise RuntimeError(f"unexpected answer to the get: {answer!r}")
    writer.close()
    await writer.wait_closed()
    for _ in range(CLOSE_POLLS):
        if server.connection_count == 0:
            return
        await asyncio.sleep(0.005)
    raise RuntimeError("the server did not drop the connection")


async def trace_simple_path() -> Trace:
    """Warm the simple path up, then trace one exchange on it (see the module's docstring)."""
    trace = Trace()
    async with MetricsServer("127.0.0.1", 0, parser="simple") as server:
        await _exchange(server, "warmup.cpu")  # imports, caches: what runs once per process
        previous = sys.gettrace()  # a debugger's or coverage's, given back afterwards
        sys.settrace(trace.tracer)
        try:
            await _exchange(server, "trace.cpu")  # a new key, as a learner's first put
        finally:
            sys.settrace(previous)
    return trace


def format_listing(trace: Trace) -> str:
    """One line per function that ran: its lines, module and name, in module order."""
    rows = [
        f"{len(numbers):4d}  {Path(module).relative_to(PACKAGE.parent).as_posix()}:{first} {name}"
        for (module, first, name), numbers in sorted(trace.lines.items())
    ]
    return "\n".join(["lines  function", *rows])


def main(argv: Sequence[str] | None = None) -> int:
    """Trace the simple path and print what ran."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.trace_path",
        description="Count the distinct lines, functions and modules of metrics_lab that one "
        "put and one get run on a new connection to MetricsServer(parser='simple') with the "
        "in-memory store, after a warm-up (accept and close included), with sys.settrace.",
    )
    parser.add_argument("--list", action="store_true", help="also list every function that ran")
    parser.add_argument("--json", action="store_true", help="print the counts as JSON only")
    args = parser.parse_args(argv)
    trace = asyncio.run(trace_simple_path())
    counts = trace.counts()
    if args.json:
        print(json.dumps({**counts, "package": str(PACKAGE)}))
        return 0
    if args.list:
        print(format_listing(trace), end="\n\n")
    print(
        f"simple path, one put and one get on a new connection: {counts['lines']} lines in "
        f"{counts['functions']} functions across {counts['modules']} modules "
        f"(target: about {TARGET_LINES} lines); metrics_lab from {PACKAGE}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
