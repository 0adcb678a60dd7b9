"""Solutions to the exercises of notebook 03, inside the asyncio server.

Run it on its own (``python notebooks/solutions/03_inside_the_asyncio_server.py``): as a script
it starts its own loop with ``asyncio.run``, which a notebook would do with top-level ``await``.
"""

import asyncio

from metrics_lab import AsyncClient, serve_in_background
from metrics_lab.protocol import LineReader


# 1. Shout with a "quit" command.
class Shout(asyncio.Protocol):
    """Answer every line in capitals; answer "quit" with BYE and hang up."""

    def connection_made(self, transport):
        self.transport = transport
        self.lines = LineReader()

    def data_received(self, data: bytes):
        for line in self.lines.receive_data(data):
            if line == b"quit":
                self.transport.write(b"BYE\n")
                self.transport.close()
                return  # lines after "quit" in the same chunk are ignored
            self.transport.write(line.upper() + b"\n")


class RecordingTransport:
    def __init__(self):
        self.written = []
        self.closed = False

    def write(self, data: bytes):
        self.written.append(data)

    def close(self):
        self.closed = True


shout, recorder = Shout(), RecordingTransport()
shout.connection_made(recorder)
shout.data_received(b"hi\nquit\nignored\n")
print(recorder.written, recorder.closed)  # [b'HI\n', b'BYE\n'] True


async def shout_on_a_socket() -> None:
    server = await asyncio.get_running_loop().create_server(Shout, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"hello\nquit\n")
    print(await asyncio.wait_for(reader.read(), timeout=5))  # b'HELLO\nBYE\n', then EOF
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()


asyncio.run(shout_on_a_socket())

# 2. With THINK = 0 the clients never wait on their own; they wait only for the server. The
#    server is one thread, so their requests queue behind each other: bars still interleave,
#    but the total is close to the sum of the request times, not much below "one after
#    another". Concurrency helps while clients wait for something other than this server.


# 3. Three concurrent writers, then one check.
async def three_writers(port: int) -> None:
    async def write(name: str) -> None:
        async with AsyncClient("127.0.0.1", port, timeout=5) as client:
            await client.put_many([(name, float(i), 1_700_000_000 + i) for i in range(100)])

    await asyncio.gather(*(write(f"writer{i}.load") for i in range(3)))
    async with AsyncClient("127.0.0.1", port, timeout=5) as client:
        result = await client.get("*")
    total = sum(len(points) for points in result.values())
    print(sorted(result), total)  # ['writer0.load', 'writer1.load', 'writer2.load'] 300
    assert total == 300


with serve_in_background() as server:
    asyncio.run(three_writers(server.port))
