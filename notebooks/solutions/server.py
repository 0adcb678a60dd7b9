"""A whole metrics server in one file: ``python server.py --port 9000`` (0: any free port).

One ``asyncio.Protocol`` object per connection, one dict shared by all of them. It follows
every rule of docs/PROTOCOL.md; ``metrics-lab check 9000`` says so.
"""

import argparse
import asyncio
import contextlib
import math
import re

MAX_LINE = 64 * 1024
OK = b"ok\n\n"
ERROR = b"error\nwrong command\n\n"
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", re.ASCII)  # no 1_0, no ٣, no nan
INTEGER = re.compile(r"[+-]?\d+", re.ASCII)


class MetricsProtocol(asyncio.Protocol):
    """One connection; ``store`` ({key: {timestamp: value}}) is shared by all of them."""

    def __init__(self, store):
        self.store = store
        self.buffer = b""  # the start of a line whose end has not arrived yet

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        *lines, self.buffer = (self.buffer + data).split(b"\n")
        for line in lines:
            if len(line) > MAX_LINE:
                return self.hang_up()
            if line.strip(b" \r"):  # an empty line is not a request: no answer
                self.transport.write(self.answer(line.removesuffix(b"\r")))
        if len(self.buffer) > MAX_LINE:
            self.hang_up()

    def hang_up(self):
        self.transport.write(ERROR)
        self.transport.close()

    def answer(self, line):
        try:
            fields = [field for field in line.decode().split(" ") if field]
        except UnicodeDecodeError:
            return ERROR
        if len(fields) == 2 and fields[0] == "get":
            return self.get(fields[1])
        if len(fields) == 4 and fields[0] == "put" and (point := parse_point(*fields[1:])):
            key, timestamp, value = point
            self.store.setdefault(key, {})[timestamp] = value
            return OK
        return ERROR

    def get(self, key):
        keys = sorted(self.store) if key == "*" else [key]
        points = [(k, t, v) for k in keys for t, v in sorted(self.store.get(k, {}).items())]
        return ("ok\n" + "".join(f"{k} {v!r} {t}\n" for k, t, v in points) + "\n").encode()


def parse_point(key, value, timestamp):
    """``(key, timestamp, value)`` if PROTOCOL.md allows this put, else None."""
    if key == "*" or not key.isprintable() or not NUMBER.fullmatch(value):
        return None
    if not INTEGER.fullmatch(timestamp) or not -(2**63) <= int(timestamp) < 2**63:
        return None
    return (key, int(timestamp), float(value)) if math.isfinite(float(value)) else None


async def main(port):
    store = {}
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: MetricsProtocol(store), "127.0.0.1", port)
    print(f"listening on 127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9000, help="0 picks any free port")
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C stops the server
        asyncio.run(main(parser.parse_args().port))
