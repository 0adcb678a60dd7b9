"""The course's client, whole: ``Client(host, port, timeout)`` with ``put`` and ``get``.

Every failure raises :class:`ClientError`. After a failure (a timeout, a garbled answer) the
connection is dropped, and the next request opens a new one: bytes left on the old one, a
late answer say, can never be read as the next request's answer.
"""

import math
import socket
import time


class ClientError(Exception):
    """Anything that went wrong with a request."""


class Client:
    """A blocking client: one connection, one request at a time."""

    def __init__(self, host, port, timeout=None):
        self.address, self.timeout = (host, port), timeout
        self.sock = self._connect()
        self.buffer = b""  # bytes after the last answer: the start of the next one

    def put(self, key, value, timestamp=None):
        if timestamp is None:  # only None means now: 0 is a timestamp
            timestamp = int(time.time())
        if key == "*" or not math.isfinite(value):
            raise ClientError(f"cannot put {key!r} = {value!r}")
        self._ask(key, f"put {key} {value} {timestamp}\n")

    def get(self, key):
        result = {}
        for line in self._ask(key, f"get {key}\n"):
            try:
                name, value, timestamp = line.split(" ")
                result.setdefault(name, []).append((int(timestamp), float(value)))
            except ValueError:
                raise ClientError(f"cannot read the line {line!r}") from None
        return {name: sorted(points) for name, points in result.items()}

    def close(self):
        if self.sock is not None:
            self.sock.close()

    def _connect(self):
        try:
            return socket.create_connection(self.address, self.timeout)
        except OSError as exc:
            raise ClientError(f"cannot connect to {self.address}: {exc}") from exc

    def _ask(self, key, request):
        """Send one request; return its answer's data lines, or drop the connection and raise."""
        if not key or any(character.isspace() for character in key):
            raise ClientError(f"{key!r} is not a key")
        if self.sock is None:  # dropped after a failure: start afresh
            self.sock, self.buffer = self._connect(), b""
        try:
            self.sock.sendall(request.encode())
            status, *lines = self._read_answer().decode().split("\n")
        except (OSError, UnicodeDecodeError, ClientError) as exc:
            self.sock.close()
            self.sock = None
            raise ClientError(f"{request.strip()!r} failed: {exc}") from exc
        if status != "ok":
            raise ClientError(f"the server answered {status}: {' '.join(lines)}")
        return lines

    def _read_answer(self):
        """Receive until an answer ends with an empty line; keep any bytes after it."""
        while (end := self.buffer.find(b"\n\n")) < 0:
            status, newline, _ = self.buffer.partition(b"\n")
            if newline and status not in (b"ok", b"error"):  # not a metrics server: stop now
                raise ClientError(f"not an answer: {status!r}")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ClientError("the server closed the connection")
            self.buffer += chunk
        answer, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
        return answer
