"""Solutions to the exercises of notebook 06, build your own server.

Run it on its own (``python notebooks/solutions/06_build_your_own_server.py``) or paste a part
into the notebook. Each part prints the checker's summary line.
"""

import asyncio
import math
import socket
import time

from metrics_lab.background import serve_protocol_in_background
from metrics_lab.conformance import check_client, check_server

MAX_LINE = 64 * 1024
OK = b"ok\n\n"
ERROR = b"error\nwrong command\n\n"


def parse_point(key, value, timestamp):
    """Return (key, float, int) for a valid put, or raise ValueError."""
    number, moment = float(value), int(timestamp)
    if key == "*" or not math.isfinite(number) or not -(2**63) <= moment < 2**63:
        raise ValueError("not a point the protocol allows")
    return key, number, moment


# 2. A faster store: each key maps to {timestamp: value}, so a put replaces in O(1) and the
#    sorting happens once, when a get asks for the points. (The complete server of the
#    notebook, rewritten around that store.)
class DictServer(asyncio.Protocol):
    """Every rule of PROTOCOL.md, with a dict of dicts as the store."""

    def __init__(self, store):
        self.store = store  # key -> {timestamp: value}, shared by all connections
        self.buffer = b""

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        *lines, self.buffer = (self.buffer + data).split(b"\n")
        for line in lines:
            if len(line) > MAX_LINE:
                break
            if line.strip():
                self.transport.write(self.answer(line))
        if len(self.buffer) > MAX_LINE or any(len(line) > MAX_LINE for line in lines):
            self.transport.write(ERROR)
            self.transport.close()

    def answer(self, line):
        try:
            command, *args = line.decode().split()
            if command == "put" and len(args) == 3:
                key, value, timestamp = parse_point(*args)
                self.store.setdefault(key, {})[timestamp] = value
                return OK
            if command == "get" and len(args) == 1:
                return self.get(args[0])
        except ValueError:
            pass
        return ERROR

    def get(self, key):
        keys = sorted(self.store) if key == "*" else [key]
        lines = [f"{k} {v} {t}\n" for k in keys for t, v in sorted(self.store.get(k, {}).items())]
        return ("ok\n" + "".join(lines) + "\n").encode()


# 1. Break it on purpose: keys in descending order. Only the rule about key order fails;
#    `get <key>` answers one key, so no other check notices.
class DescendingServer(DictServer):
    def get(self, key):
        keys = sorted(self.store, reverse=True) if key == "*" else [key]
        lines = [f"{k} {v} {t}\n" for k in keys for t, v in sorted(self.store.get(k, {}).items())]
        return ("ok\n" + "".join(lines) + "\n").encode()


def check(server_class):
    store = {}
    with serve_protocol_in_background(lambda: server_class(store)) as server:
        return check_server(*server.address, timeout=0.5)


# 3. Your own client, as the course defines it.
class ClientError(Exception):
    """Anything that went wrong with a request."""


class Client:
    """A blocking client: one connection, one request at a time."""

    def __init__(self, host, port, timeout=None):
        try:
            self.sock = socket.create_connection((host, port), timeout)
        except OSError as exc:
            raise ClientError(f"cannot connect to {host}:{port}: {exc}") from exc
        self.buffer = b""

    def put(self, key, value, timestamp=None):
        if timestamp is None:  # only None means now: 0 is a timestamp
            timestamp = int(time.time())
        self._check_key(key)
        self._exchange(f"put {key} {value} {timestamp}\n")

    def get(self, key):
        self._check_key(key)
        result = {}
        for line in self._exchange(f"get {key}\n"):
            try:
                name, value, timestamp = line.split()
                result.setdefault(name, []).append((int(timestamp), float(value)))
            except ValueError:
                raise ClientError(f"cannot parse the line {line!r}") from None
        for points in result.values():
            points.sort()
        return result

    def close(self):
        self.sock.close()

    @staticmethod
    def _check_key(key):
        if not key or any(character.isspace() for character in key):
            raise ClientError(f"{key!r} is not a key")

    def _exchange(self, request):
        """Send one request with one sendall; return the data lines of its answer."""
        try:
            self.sock.sendall(request.encode())
            while b"\n\n" not in self.buffer:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ClientError("the server closed the connection")
                self.buffer += chunk
        except OSError as exc:
            raise ClientError(f"the connection failed: {exc}") from exc
        answer, _, self.buffer = self.buffer.partition(b"\n\n")
        try:
            status, *lines = answer.decode().split("\n")
        except UnicodeDecodeError:
            raise ClientError("the answer is not UTF-8") from None
        if status != "ok":
            raise ClientError(f"the server answered {status!r}: {' '.join(lines)}")
        return lines


if __name__ == "__main__":
    print(check(DescendingServer).summary())  # fails get-all-key-order only
    print(check(DictServer).summary())  # all pass
    print(check_client(Client, ClientError, timeout=0.5).summary())  # all pass
