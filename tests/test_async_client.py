"""AsyncClient against a real server: the same results and errors as Client."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import pytest

from metrics_lab import (
    AsyncClient,
    BackgroundServer,
    ClientConnectionError,
    ClientError,
    ClientTimeoutError,
    InvalidRequestError,
    RemoteProtocolError,
    RequestRejectedError,
    serve_in_background,
)
from tests.fake_server import FakeServer, read_request, wait_for_hangup

T = TypeVar("T")


def run(coroutine: Awaitable[T]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(20):  # every test stops by itself
            return await coroutine

    return asyncio.run(bounded())


@pytest.fixture
def server() -> Iterator[BackgroundServer]:
    with serve_in_background() as background:
        yield background


@pytest.fixture
def scripted_server() -> Iterator[Callable[[bytes | None], int]]:
    """A fake server that answers every request with one scripted reply (or never, for None)."""
    listeners: list[socket.socket] = []

    def start(reply: bytes | None) -> int:
        listener = socket.create_server(("127.0.0.1", 0))
        listeners.append(listener)

        def serve() -> None:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                while conn.recv(65536):
                    if reply is not None:
                        conn.sendall(reply)

        threading.Thread(target=serve, daemon=True).start()
        return int(listener.getsockname()[1])

    yield start
    for listener in listeners:
        listener.close()


def test_put_get_round_trip(server: BackgroundServer) -> None:
    async def main() -> dict[str, list[tuple[int, float]]]:
        async with AsyncClient(server.host, server.port, timeout=5) as client:
            await client.put("cpu", 0.5, timestamp=2)
            await client.put("cpu", 301, timestamp=1)
            await client.put("mem", 1.5, timestamp=0)  # 0 is a timestamp, not "now"
            return await client.get("*")

    assert run(main()) == {"cpu": [(1, 301.0), (2, 0.5)], "mem": [(0, 1.5)]}


def test_put_many_and_get_one_key(server: BackgroundServer) -> None:
    async def main() -> tuple[
        dict[str, list[tuple[int, float]]], dict[str, list[tuple[int, float]]]
    ]:
        async with AsyncClient(server.host, server.port, timeout=5) as client:
            await client.put_many([("k", float(i), 100 - i) for i in range(1000)])
            await client.put_many([])  # nothing to send, nothing to wait for
            return await client.get("k"), await client.get("absent")

    points, absent = run(main())
    assert points == {"k": [(100 - i, float(i)) for i in reversed(range(1000))]}
    assert absent == {}


def test_default_timestamp_is_now(server: BackgroundServer) -> None:
    async def main() -> dict[str, list[tuple[int, float]]]:
        async with AsyncClient(server.host, server.port, timeout=5) as client:
            await client.put("now", 1.0)
            return await client.get("now")

    [(timestamp, value)] = run(main())["now"]
    assert value == 1.0
    assert timestamp > 1_600_000_000


def test_many_async_clients_share_the_store(server: BackgroundServer) -> None:
    async def one(index: int) -> None:
        async with AsyncClient(server.host, server.port, timeout=5) as client:
            await client.put_many([(f"c{index}", float(t), t) for t in range(50)])

    async def main() -> dict[str, list[tuple[int, float]]]:
        await asyncio.gather(*(one(index) for index in range(20)))
        async with AsyncClient(server.host, server.port, timeout=5) as client:
            return await client.get("*")

    result = run(main())
    assert len(result) == 20
    assert all(len(points) == 50 for points in result.values())


@pytest.mark.parametrize(
    ("key", "value"), [("bad key", 1.0), ("", 1.0), ("*", 1.0), ("k", float("nan"))]
)
def test_invalid_put_raises_before_sending(
    server: BackgroundServer, key: str, value: float
) -> None:
    async def main() -> dict[str, list[tuple[int, float]]]:
        async with AsyncClient(server.host, server.port, timeout=5) as client:
            with pytest.raises(InvalidRequestError):
                await client.put(key, value, timestamp=1)
            return await client.get("*")  # the connection is still usable

    assert run(main()) == {}


def test_wrong_get_key_is_a_client_error(server: BackgroundServer) -> None:
    async def main() -> None:
        async with AsyncClient(server.host, server.port, timeout=5) as client:
            await client.get("wrong command test\n")

    with pytest.raises(ClientError):
        run(main())


def test_connection_refused_is_a_client_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # closed below: nothing listens there any more

    async def main() -> None:
        async with AsyncClient("127.0.0.1", port, timeout=5):
            pass

    with pytest.raises(ClientConnectionError, match="cannot connect"):
        run(main())


def test_error_answer_raises_request_rejected(
    scripted_server: Callable[[bytes | None], int],
) -> None:
    port = scripted_server(b"error\nwrong command\n\n")

    async def main() -> None:
        async with AsyncClient("127.0.0.1", port, timeout=5) as client:
            await client.put("k", 1.0, timestamp=1)

    with pytest.raises(RequestRejectedError, match="wrong command"):
        run(main())


def test_garbled_answer_raises_remote_protocol_error(
    scripted_server: Callable[[bytes | None], int],
) -> None:
    port = scripted_server(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    async def main() -> None:
        async with AsyncClient("127.0.0.1", port, timeout=5) as client:
            await client.get("k")

    with pytest.raises(RemoteProtocolError):
        run(main())


def test_silent_server_times_out(scripted_server: Callable[[bytes | None], int]) -> None:
    port = scripted_server(None)

    async def main() -> None:
        client = AsyncClient("127.0.0.1", port, timeout=0.2)
        await client.connect()
        with pytest.raises(ClientTimeoutError):
            await client.get("k")
        with pytest.raises(ClientConnectionError, match="closed"):  # closed after a failure
            await client.get("k")

    run(main())


def test_server_stopped_under_the_client() -> None:
    background = serve_in_background()

    async def main() -> None:
        async with AsyncClient(background.host, background.port, timeout=5) as client:
            await client.put("k", 1.0, timestamp=1)
            background.stop()
            with pytest.raises(ClientConnectionError):
                await client.put("k", 2.0, timestamp=2)

    try:
        run(main())
    finally:
        background.stop()


def test_closed_client_says_so(server: BackgroundServer) -> None:
    async def main() -> None:
        client = AsyncClient(server.host, server.port, timeout=5)
        with pytest.raises(ClientConnectionError, match="closed"):
            await client.get("k")  # never connected
        await client.connect()
        await client.close()
        with pytest.raises(ClientConnectionError, match="reconnect"):
            await client.get("k")
        await client.reconnect()
        assert await client.get("k") == {}
        await client.close()

    run(main())


def test_an_answer_that_came_early_is_taken_from_the_buffer() -> None:
    # The server answers the first request with two answers in one segment; the second
    # request's answer is then already buffered, and no more bytes will come. (Before, the
    # client waited for more bytes and timed out.)
    def answer_twice_at_once(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"ok\none 1.0 1\n\nok\ntwo 2.0 2\n\n")
        wait_for_hangup(conn)  # answers nothing more

    async def main(address: tuple[str, int]) -> list[dict[str, list[tuple[int, float]]]]:
        async with AsyncClient(*address, timeout=2) as client:
            return [await client.get("one"), await client.get("two")]

    with FakeServer(answer_twice_at_once) as fake:
        assert run(main(fake.address)) == [{"one": [(1, 1.0)]}, {"two": [(2, 2.0)]}]
