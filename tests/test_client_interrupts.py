"""Never one answer late: whatever interrupts a request, the next gets its own answer or an error.

Issue 11: a ``get("*")`` cancelled (or stopped by ``wait_for``, or by Ctrl-C in a notebook)
left its answer on the wire, and the next ``get("a")`` returned it. Each kind of interruption
is tried on each client against a fake that holds the ``get *`` answer halfway until the test
lets it go, so the interruption always lands mid-answer; then the test lets the rest of the
answer out and checks that the next request cannot read it.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from metrics_lab import (
    AsyncClient,
    BackgroundServer,
    Client,
    ClientConnectionError,
    ClientTimeoutError,
    WireLog,
)
from metrics_lab.client import PUT_SLICE
from metrics_lab.protocol import OK_ANSWER
from metrics_lab.wire import Direction
from tests.fake_server import FakeServer

TIMEOUT = 5.0
STAR = b"ok\na 1.0 1\n" + b"".join(b"b 2.0 %d\n" % t for t in range(2000)) + b"\n"
A_ANSWER = b"ok\na 1.0 1\n\n"
A_POINTS = {"a": [(1, 1.0)]}


class Holding:
    """A fake server's script: ``get *`` is answered halfway, the rest once ``release`` is set.

    ``get a`` gets ``A_ANSWER`` and every other line ``ok``, at once. ``held`` is set when the
    first half of a ``get *`` answer is out.
    """

    def __init__(self) -> None:
        self.held = threading.Event()
        self.release = threading.Event()

    def __call__(self, conn: socket.socket) -> None:
        buffered = b""
        while chunk := conn.recv(65536):
            *lines, buffered = (buffered + chunk).split(b"\n")
            for line in lines:
                if line == b"get *":
                    conn.sendall(STAR[: len(STAR) // 2])
                    self.held.set()
                    self.release.wait(TIMEOUT)
                    conn.sendall(STAR[len(STAR) // 2 :])
                else:
                    conn.sendall(A_ANSWER if line == b"get a" else OK_ANSWER)


@pytest.fixture(name="holding")
def holding_fixture() -> Iterator[tuple[Holding, tuple[str, int]]]:
    """A fake server running :class:`Holding`, and its address (used by the threads tests too)."""
    script = Holding()
    with FakeServer(script) as fake:
        yield script, fake.address
        script.release.set()


class RaisingWire(WireLog):
    """A wire log that raises ``exc`` when it records a chunk going ``direction``."""

    def __init__(self, direction: Direction, exc: BaseException) -> None:
        super().__init__()
        self.direction = direction
        self.exc = exc

    def record(self, direction: Direction, data: bytes) -> None:
        if direction == self.direction:
            raise self.exc
        super().record(direction, data)


# --- the blocking client -------------------------------------------------------------------


class InterruptedSocket:
    """A real socket whose ``recv`` or ``sendall``, once armed, raises instead of running.

    That is what Ctrl-C does to a blocking call: the system call returns early and Python
    raises ``KeyboardInterrupt`` from it, wherever the client was.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.armed: dict[str, tuple[BaseException, int]] = {}

    def arm(self, method: str, exc: BaseException, *, after: int = 0) -> None:
        """Raise ``exc`` from ``method`` once it has run ``after`` more times."""
        self.armed[method] = (exc, after)

    def _check(self, method: str) -> None:
        if method in self.armed:
            exc, after = self.armed.pop(method)
            if after:
                self.armed[method] = (exc, after - 1)
            else:
                raise exc

    def sendall(self, data: bytes) -> None:
        self._check("sendall")
        self.sock.sendall(data)

    def recv(self, size: int) -> bytes:
        self._check("recv")
        return self.sock.recv(size)

    def close(self) -> None:
        self.sock.close()


class Signalling(WireLog):
    """A wire log that sets :attr:`sent` when the client sends (make it inside the loop)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = asyncio.Event()

    def record(self, direction: Direction, data: bytes) -> None:
        if direction == "sent":
            self.sent.set()


@pytest.fixture
def wrapped(monkeypatch: pytest.MonkeyPatch) -> list[InterruptedSocket]:
    """Every socket a Client connects from now on, wrapped; the list holds them in order."""
    made: list[InterruptedSocket] = []
    real = socket.create_connection

    def create_connection(*args: Any, **kwargs: Any) -> InterruptedSocket:
        made.append(InterruptedSocket(real(*args, **kwargs)))
        return made[-1]

    monkeypatch.setattr(socket, "create_connection", create_connection)
    return made


def assert_next_request_is_in_step(client: Client, holding: Holding | None = None) -> None:
    """The held answer goes out now; the next get must not return it, nor any other.

    The rule chosen: an interrupted request closes the client, which says so.
    """
    if holding is not None:
        holding.release.set()
    with pytest.raises(ClientConnectionError, match=r"reconnect\(\)"):
        client.get("a")
    client.reconnect()
    assert client.get("a") == A_POINTS


def test_sync_keyboard_interrupt_while_receiving(
    holding: tuple[Holding, tuple[str, int]], wrapped: list[InterruptedSocket]
) -> None:
    script, address = holding
    with Client(*address, timeout=TIMEOUT) as client:
        wrapped[0].arm("recv", KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            client.get("*")
        assert_next_request_is_in_step(client, script)


def test_sync_keyboard_interrupt_while_sending_a_batch(
    holding: tuple[Holding, tuple[str, int]], wrapped: list[InterruptedSocket]
) -> None:
    _, address = holding
    with Client(*address, timeout=TIMEOUT) as client:
        wrapped[0].arm("sendall", KeyboardInterrupt(), after=1)  # the second slice's write
        with pytest.raises(KeyboardInterrupt):
            client.put_many([("k", 0.5, t) for t in range(3 * PUT_SLICE)])
        assert_next_request_is_in_step(client)


@pytest.mark.parametrize(
    "wire",
    [RaisingWire("received", RuntimeError("a bug in a callback")), RaisingWire("sent", OSError())],
    ids=["error while reading", "error while sending"],
)
def test_sync_any_exception_mid_request(
    holding: tuple[Holding, tuple[str, int]], wire: RaisingWire
) -> None:
    script, address = holding
    with Client(*address, timeout=TIMEOUT, wire=wire) as client:
        with pytest.raises((RuntimeError, ClientConnectionError)):
            client.get("*")
        client.wire = None
        assert_next_request_is_in_step(client, script)


def test_sync_timeout_mid_answer(holding: tuple[Holding, tuple[str, int]]) -> None:
    script, address = holding
    with Client(*address, timeout=0.3) as client:
        with pytest.raises(ClientTimeoutError):
            client.get("*")
        client.timeout = TIMEOUT
        assert_next_request_is_in_step(client, script)


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="POSIX signals")
def test_sync_real_ctrl_c_mid_answer(holding: tuple[Holding, tuple[str, int]]) -> None:
    """The notebook case: SIGINT while the client waits for the rest of an answer."""
    script, address = holding
    main = threading.get_ident()

    def press_ctrl_c() -> None:
        if script.held.wait(TIMEOUT):
            signal.pthread_kill(main, signal.SIGINT)

    with Client(*address, timeout=TIMEOUT) as client:
        presser = threading.Thread(target=press_ctrl_c)
        presser.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                client.get("*")
        finally:
            presser.join(TIMEOUT)
        assert_next_request_is_in_step(client, script)


def test_sync_keyboard_interrupt_against_the_real_server(
    server: BackgroundServer, wrapped: list[InterruptedSocket]
) -> None:
    """Issue 11's report: Ctrl-C during get, then the next get returned the earlier answer."""
    server.store.put_many([("a", 1.0, 1)] + [("b", 2.0, t) for t in range(2000)])
    with Client(*server.address, timeout=TIMEOUT) as client:
        wrapped[0].arm("recv", KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            client.get("*")
        assert_next_request_is_in_step(client)


# --- the asyncio client --------------------------------------------------------------------

Interruption = Callable[[AsyncClient, Holding], Awaitable[None]]


async def cancel_the_task(client: AsyncClient, holding: Holding) -> None:
    task = asyncio.create_task(client.get("*"))
    assert await asyncio.to_thread(holding.held.wait, TIMEOUT)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def wait_for_expires(client: AsyncClient, holding: Holding) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(client.get("*"), 0.3)


async def timeout_block_expires(client: AsyncClient, holding: Holding) -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await client.get("*")


async def client_timeout(client: AsyncClient, holding: Holding) -> None:
    client.timeout = 0.3
    with pytest.raises(ClientTimeoutError):
        await client.get("*")
    client.timeout = TIMEOUT


async def error_while_reading(client: AsyncClient, holding: Holding) -> None:
    client.wire = RaisingWire("received", RuntimeError("a bug in a callback"))
    with pytest.raises(RuntimeError):
        await client.get("*")
    client.wire = None


async def cancel_a_batch(client: AsyncClient, holding: Holding) -> None:
    client.wire = wire = Signalling()
    task = asyncio.create_task(client.put_many([("k", 0.5, t) for t in range(3 * PUT_SLICE)]))
    await wire.sent.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    client.wire = None


INTERRUPTIONS: list[Interruption] = [
    cancel_the_task,
    wait_for_expires,
    timeout_block_expires,
    client_timeout,
    error_while_reading,
    cancel_a_batch,
]


async def assert_next_async_request_is_in_step(
    client: AsyncClient, holding: Holding | None = None
) -> None:
    if holding is not None:
        holding.release.set()
    with pytest.raises(ClientConnectionError, match=r"reconnect\(\)"):
        await client.get("a")
    await client.reconnect()
    assert await client.get("a") == A_POINTS


@pytest.mark.parametrize("interrupt", INTERRUPTIONS, ids=lambda f: f.__name__)
def test_async_interruption_never_leaves_an_answer_behind(
    holding: tuple[Holding, tuple[str, int]], interrupt: Interruption
) -> None:
    script, address = holding

    async def main() -> None:
        async with AsyncClient(*address, timeout=TIMEOUT) as client:
            await interrupt(client, script)
            await assert_next_async_request_is_in_step(client, script)

    asyncio.run(asyncio.wait_for(main(), 20))


def test_async_cancel_against_the_real_server(server: BackgroundServer) -> None:
    """Issue 11's report: get("*") cancelled after it was sent; get("a") returned its points."""
    server.store.put_many([("a", 1.0, 1)] + [("b", 2.0, t) for t in range(2000)])

    async def main() -> None:
        wire = Signalling()
        async with AsyncClient(*server.address, timeout=TIMEOUT, wire=wire) as client:
            task = asyncio.create_task(client.get("*"))
            await wire.sent.wait()
            task.cancel()  # lands before the client task runs again, so before it reads
            with pytest.raises(asyncio.CancelledError):
                await task
            client.wire = None
            await assert_next_async_request_is_in_step(client)

    asyncio.run(asyncio.wait_for(main(), 20))
