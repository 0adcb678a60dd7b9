"""Solutions to notebook 06, build your own server: the TODOs first, then the exercises.

Run it on its own (``python notebooks/solutions/06_build_your_own_server.py``): it prints the
checker's summary, in both profiles, for each solution. The TODO solutions are the notebook's
step methods with their TODO done, gathered in one class; paste a method into its cell.
"""

import asyncio
import math
import re
import sys
from pathlib import Path

from metrics_lab.conformance import check_client, check_protocol

sys.path.insert(0, str(Path(__file__).parent))  # server.py and client.py sit beside this file
from client import Client, ClientError
from server import MetricsProtocol

MAX_LINE = 64 * 1024
ASCII_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", re.ASCII)
ASCII_INTEGER = re.compile(r"[+-]?\d+", re.ASCII)


class SolvedSteps(asyncio.Protocol):
    """The notebook's server with every TODO done (a list of points per key, as there)."""

    def __init__(self, store):
        self.store = store
        self.buffer = b""

    def connection_made(self, transport):
        self.transport = transport

    # Step 1: past MAX_LINE, in a whole line or in the unfinished rest, answer the error and
    # hang up.
    def data_received(self, data):
        *lines, self.buffer = (self.buffer + data).split(b"\n")
        for line in lines:
            if len(line) > MAX_LINE:
                break
            if line.strip():
                self.transport.write(self.answer(line))
        if len(self.buffer) > MAX_LINE or any(len(line) > MAX_LINE for line in lines):
            self.transport.write(b"error\nwrong command\n\n")
            self.transport.close()

    # Step 4: refuse what PROTOCOL.md's "What is a wrong command" refuses, keep serving.
    def answer(self, line):
        try:
            command, *args = line.decode().split()
            if command == "put" and len(args) == 3:
                key, value, timestamp = args
                if key == "*" or not key.isprintable():
                    return b"error\nwrong command\n\n"
                # float() and int() also take "1_0" and "٣": only ASCII digits are numbers here.
                if not (ASCII_NUMBER.fullmatch(value) and ASCII_INTEGER.fullmatch(timestamp)):
                    return b"error\nwrong command\n\n"
                value, timestamp = float(value), int(timestamp)
                if not math.isfinite(value) or not -(2**63) <= timestamp < 2**63:
                    return b"error\nwrong command\n\n"
                self.put(key, value, timestamp)
                return b"ok\n\n"
            if command == "get" and len(args) == 1:
                return self.get(args[0])
        except ValueError:
            pass
        return b"error\nwrong command\n\n"

    # Step 3: a put at a timestamp the key already has replaces that point.
    def put(self, key, value, timestamp):
        points = [point for point in self.store.get(key, []) if point[0] != timestamp]
        self.store[key] = [*points, (timestamp, value)]

    # Step 2: keys ascending, and each key's points by ascending timestamp.
    def get(self, key):
        keys = sorted(self.store) if key == "*" else [key]
        lines = [f"{k} {v} {t}\n" for k in keys for t, v in sorted(self.store.get(k, []))]
        return ("ok\n" + "".join(lines) + "\n").encode()


class DictServer(MetricsProtocol):
    """Exercise 2, a faster store: {key: {timestamp: value}}, so a put replaces in O(1) and
    sorting happens when a get asks. notebooks/solutions/server.py is exactly that server."""


# Exercise 1, break it on purpose: keys in descending order. Only the key-order rule fails:
# `get <key>` answers one key, so no other check notices.
class DescendingServer(DictServer):
    def get(self, key):
        if key != "*":
            return super().get(key)
        lines = [
            f"{k} {v!r} {t}\n"
            for k in sorted(self.store, reverse=True)
            for t, v in sorted(self.store[k].items())
        ]
        return ("ok\n" + "".join(lines) + "\n").encode()


# Exercise 3, your own client: Client and ClientError of notebooks/solutions/client.py.


def check(server_class, profile):
    store = {}
    factory = lambda: server_class(store)  # noqa: E731 (a name for the line below)
    return check_protocol(factory, timeout=0.5, profile=profile, name=server_class.__name__)


if __name__ == "__main__":
    for profile in ("course", "strict"):
        for server_class in (SolvedSteps, DictServer, DescendingServer):
            print(check(server_class, profile).summary())
        print(check_client(Client, ClientError, timeout=0.5, profile=profile).summary())
