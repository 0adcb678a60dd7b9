"""Run one server for the benchmark: ``python -m benchmarks.serve {ours,baseline} [--parser P]``.

It binds a free loopback port, prints ``port <n>`` on stdout, and serves until it is
terminated. Every server starts the same way so their memory and speed compare fairly.
``--parser`` picks how ours parses requests (see :data:`metrics_lab.server.PARSER_CHOICES`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from benchmarks import baseline
from benchmarks.system import raise_fd_limit
from metrics_lab.server import LOOP_CHOICES, PARSER_CHOICES, MetricsServer, event_loop_factory


async def _serve(kind: str, host: str, parser: str) -> None:
    if kind == "baseline":
        server = await baseline.serve(host, 0)
        port = server.sockets[0].getsockname()[1]
    else:
        ours = MetricsServer(host, 0, parser=parser)
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
        "--parser", choices=PARSER_CHOICES, default="auto", help="ours only: how it parses"
    )
    args = parser.parse_args(argv)
    raise_fd_limit()
    with asyncio.Runner(loop_factory=event_loop_factory(args.loop)) as runner:
        runner.run(_serve(args.kind, args.host, args.parser))
    return 0


if __name__ == "__main__":
    sys.exit(main())
