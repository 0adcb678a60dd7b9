"""The baseline: the least an asyncio server for the metrics protocol can do.

It splits lines, converts with ``float()`` and ``int()``, stores into a dict of dicts and
answers; it validates nothing, never limits a line, and has no flow control. It is a yardstick
for :mod:`benchmarks.run`, not a server to use: a wrong line may crash its connection.
"""

from __future__ import annotations

import asyncio
from typing import cast

Store = dict[str, dict[int, float]]


class BaselineProtocol(asyncio.Protocol):
    """One connection of the baseline server."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        *lines, self.buffer = (self.buffer + data).split(b"\n")
        answers = []
        for line in lines:
            fields = line.split()
            if not fields:
                continue
            if fields[0] == b"put" and len(fields) == 4:
                key = fields[1].decode()
                self.store.setdefault(key, {})[int(fields[3])] = float(fields[2])
                answers.append("ok\n\n")
            elif fields[0] == b"get" and len(fields) == 2:
                answers.append(self.encode(fields[1].decode()))
            else:
                answers.append("error\nwrong command\n\n")
        if answers and self.transport is not None:
            self.transport.write("".join(answers).encode())

    def encode(self, key: str) -> str:
        """Answer a get: every point of ``key`` (or of all keys for ``*``), unsorted."""
        items = self.store.items() if key == "*" else [(key, self.store.get(key, {}))]
        lines = [
            f"{name} {value} {timestamp}\n"
            for name, points in items
            for timestamp, value in points.items()
        ]
        return "ok\n" + "".join(lines) + "\n"


async def serve(host: str, port: int) -> asyncio.Server:
    """Start the baseline server; the caller keeps it running."""
    store: Store = {}
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: BaselineProtocol(store), host, port)
