"""Learner clients: one base written as most learners write it, and one variant per shape.

:class:`LearnerClient` connects once with ``socket.create_connection``, reads ``recv(1024)``
until the answer ends with ``\\n\\n``, and raises :class:`ClientError` on an error answer;
each subclass changes one habit.
"""

from __future__ import annotations

import socket
import time


class ClientError(Exception):
    """The client's one error, as the course names it."""


class LearnerClient:
    """A client as the course's learners write it."""

    def __init__(self, host: str, port: int, timeout: float | None = None) -> None:
        try:
            self.sock = socket.create_connection((host, port), timeout)
        except OSError as exc:
            raise ClientError(exc) from exc

    def put(self, key: str, value: float, timestamp: int | None = None) -> None:
        timestamp = int(time.time()) if timestamp is None else timestamp
        self.ask(f"put {key} {self.format_value(value)} {timestamp}\n")

    def format_value(self, value: float) -> str:
        return str(value)

    def get(self, key: str) -> dict[str, list[tuple[int, float]]]:
        result: dict[str, list[tuple[int, float]]] = {}
        for line in self.ask(f"get {key}\n").split("\n")[1:-2]:
            try:
                name, value, timestamp = line.split()
                result.setdefault(name, []).append((int(timestamp), float(value)))
            except ValueError as exc:
                raise ClientError(line) from exc
        return self.arrange(result)

    def arrange(
        self, result: dict[str, list[tuple[int, float]]]
    ) -> dict[str, list[tuple[int, float]]]:
        return {key: sorted(points) for key, points in result.items()}

    def ask(self, request: str) -> str:
        try:
            self.sock.sendall(request.encode())
            answer = self.receive()
        except OSError as exc:
            raise ClientError(exc) from exc
        if not answer.startswith("ok\n"):
            raise ClientError(answer)
        return answer

    def receive(self) -> str:
        data = b""
        while not data.endswith(b"\n\n"):
            chunk = self.sock.recv(1024)
            if not chunk:
                raise ClientError("the server closed the connection")
            data += chunk
        return data.decode()

    def close(self) -> None:
        self.sock.close()


class OneRecvClient(LearnerClient):
    """One ``recv(1024)`` per answer: an answer longer than that is cut short."""

    def receive(self) -> str:
        return self.sock.recv(1024).decode()


class NoSortClient(LearnerClient):
    """Returns each key's points in the order the server sent them."""

    def arrange(
        self, result: dict[str, list[tuple[int, float]]]
    ) -> dict[str, list[tuple[int, float]]]:
        return result


class TimestampZeroClient(LearnerClient):
    """``put(key, value)`` without a timestamp sends 0 instead of the current time."""

    def put(self, key: str, value: float, timestamp: int | None = None) -> None:
        super().put(key, value, timestamp or 0)


class RoundingClient(LearnerClient):
    """Writes values with ``f"{value:g}"``: six significant digits, ``0.1 + 0.2`` -> ``0.3``."""

    def format_value(self, value: float) -> str:
        return f"{value:g}"


SHAPES: dict[str, type[LearnerClient]] = {
    "reads-until-blank-line": LearnerClient,
    "one-fixed-size-recv": OneRecvClient,
    "no-sort": NoSortClient,
    "timestamp-zero": TimestampZeroClient,
    "rounding": RoundingClient,
}
"""Every learner client shape, by name."""
