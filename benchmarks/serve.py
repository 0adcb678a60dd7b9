"""Run one server for the benchmark: ``python -m benchmarks.serve {ours,baseline} [--parser P]``.

It binds a free loopback port, prints ``port <n>`` on stdout, and serves until it is
terminated. Every server starts the same way so their memory and speed compare fairly.
``--parser`` picks how ours parses requests (see :data:`metrics_lab.server.PARSER_CHOICES`),
``--max-connections`` how many connections ours holds at once; ours gets only the options given,
so every other setting is the default of the ``metrics_lab`` it runs (an older checkout's too).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from benchmarks import baseline
from benchmarks.system import FD_MARGIN, FD_WANTED, raise_fd_limit
from metrics_lab.server import LOOP_CHOICES, PARSER_CHOICES, MetricsServer, event_loop_factory


async def _serve(kind: str, host: str, options: dict[str, Any]) -> None:
    if kind == "baseline":
        server = await baseline.serve(host, 0)
        port = server.sockets[0].getsockname()[1]
    else:
        ours = MetricsServer(host, 0, **options)
        await ours.start()
        port = ours.port
    print(f"port {port}", flush=True)
    await asyncio.Event().wait()  # until terminated


def main(argv: list[str] | None = None) -> int:
    """Serve until terminated."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serve")
    parser.add_argument("kind", choices=["ours", "baseline"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--loop", choices=LOOP_CHOICES, default="auto")
    parser.add_argument(
        "--parser", choices=PARSER_CHOICES, help="ours only: how it parses (default: its own)"
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        help="ours only: connections held at once (default: its own)",
    )
    args = parser.parse_args(argv)
    options = {
        name: value
        for name, value in [("parser", args.parser), ("max_connections", args.max_connections)]
        if value is not None
    }
    raise_fd_limit(max(FD_WANTED, (args.max_connections or 0) + FD_MARGIN))
    with asyncio.Runner(loop_factory=event_loop_factory(args.loop)) as runner:
        runner.run(_serve(args.kind, args.host, options))
    return 0


if __name__ == "__main__":
    sys.exit(main())
