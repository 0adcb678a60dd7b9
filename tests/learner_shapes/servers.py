"""Learner servers: one base written as most learners write it, and one variant per shape.

:class:`ChunkServer` treats every received chunk as whole lines
(``data.decode().strip().split("\\n")``), keeps points in a dict ``{key: {timestamp: value}}``
shared by all connections, sorts its answers and refuses wrong commands; each subclass
changes one habit. Every class takes the shared store, so a test can start a fresh server.
"""

from __future__ import annotations

import asyncio
from typing import Any

Store = dict[str, dict[int, float]]

OK = "ok\n\n"
ERROR = "error\nwrong command\n\n"


class ChunkServer(asyncio.Protocol):
    """Chunk at a time: each chunk is stripped and split into lines, each line answered."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        for line in data.decode().strip().split("\n"):
            self.transport.write(self.process(line).encode())

    def process(self, line: str) -> str:
        parts = line.split()
        if len(parts) == 4 and parts[0] == "put":
            try:
                value, timestamp = self.parse(parts[2], parts[3])
            except ValueError:
                return ERROR
            self.store.setdefault(parts[1], {})[timestamp] = value
            return OK
        if len(parts) == 2 and parts[0] == "get":
            return "ok\n" + "".join(self.lines(parts[1])) + "\n"
        return ERROR

    def parse(self, value: str, timestamp: str) -> tuple[float, int]:
        return float(value), int(timestamp)

    def keys(self) -> list[str]:
        return sorted(self.store)

    def lines(self, key: str) -> list[str]:
        keys = self.keys() if key == "*" else [key]
        return [
            f"{name} {value} {timestamp}\n"
            for name in keys
            for timestamp, value in sorted(self.store.get(name, {}).items())
        ]


class StorePerConnection(ChunkServer):
    """``self.store = {}`` in ``__init__``: each connection sees only its own points."""

    def __init__(self, store: Store) -> None:
        super().__init__({})


class InsertionOrderKeys(ChunkServer):
    """``get *`` lists keys in the order they were first put (a dict's own order)."""

    def keys(self) -> list[str]:
        return list(self.store)


class ExceptionTextServer(ChunkServer):
    """Answers a failing request with the exception's text instead of ``wrong command``."""

    def process(self, line: str) -> str:
        try:
            command, *args = line.split()
            if command == "put":
                key, value, timestamp = args
                self.store.setdefault(key, {})[int(timestamp)] = float(value)
                return OK
            if command == "get":
                (key,) = args
                return "ok\n" + "".join(self.lines(key)) + "\n"
            raise ValueError(f"unknown command {command}")
        except ValueError as exc:
            return f"error\n{exc}\n\n"


class DropsOnBadValue(ChunkServer):
    """Does not catch ``float('x')``: the exception leaves data_received, asyncio hangs up."""

    def process(self, line: str) -> str:
        parts = line.split()
        if len(parts) == 4 and parts[0] == "put":
            value, timestamp = self.parse(parts[2], parts[3])
            self.store.setdefault(parts[1], {})[timestamp] = value
            return OK
        return super().process(line)


SHAPES: dict[str, type[ChunkServer]] = {
    "chunk-at-a-time": ChunkServer,
    "store-per-connection": StorePerConnection,
    "insertion-order-keys": InsertionOrderKeys,
    "exception-text": ExceptionTextServer,
    "drops-on-bad-value": DropsOnBadValue,
}
"""Every learner server shape, by name."""
