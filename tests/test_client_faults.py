"""Every way a server or the network can fail a client yields a ClientError, in bounded time.

Each fault is scripted by a :class:`FakeServer` and tried on the blocking :class:`Client` and
on :class:`AsyncClient` alike. The chosen behaviour after a failure: the client is closed,
says so on the next call, and ``reconnect()`` opens a new connection.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator

import pytest

from metrics_lab import (
    AsyncClient,
    Client,
    ClientConnectionError,
    ClientError,
    ClientTimeoutError,
    InvalidRequestError,
    RemoteProtocolError,
    RequestRejectedError,
    WireLog,
)
from metrics_lab.protocol import (
    MalformedAnswerError,
    ProtocolError,
    RefusedRequestError,
    StreamEndedError,
    UnsendableRequestError,
)
from tests.fake_server import (
    FakeServer,
    Script,
    answer_ok,
    read_request,
    reset,
    wait_for_hangup,
)

TIMEOUT = 5.0
SHORT_TIMEOUT = 0.3
"""For the test of the timeout itself: the fake never answers, so this is always reached."""

SMALL_ANSWER_LIMIT = 64 * 1024

FLOOD_LIMIT = 50 * 1024 * 1024
"""A flooding fake stops after this many bytes, so a client that failed to stop cannot hang us."""


# --- the faults ----------------------------------------------------------------------------


def silent(conn: socket.socket) -> None:
    read_request(conn)
    wait_for_hangup(conn)


def reset_mid_answer(conn: socket.socket) -> None:
    read_request(conn)
    conn.sendall(b"ok\ncpu 0.5 1\n")
    reset(conn)


def reset_before_answer(conn: socket.socket) -> None:
    read_request(conn)
    reset(conn)


def cut_short(conn: socket.socket) -> None:
    read_request(conn)
    conn.sendall(b"ok\ncpu 0.5 1\ncpu 0.")


def close_before_answer(conn: socket.socket) -> None:
    read_request(conn)


def garbage(conn: socket.socket) -> None:
    read_request(conn)
    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    wait_for_hangup(conn)


def bad_data_line(conn: socket.socket) -> None:
    read_request(conn)
    conn.sendall(b"ok\nthis is not a point\n\n")
    wait_for_hangup(conn)


def not_utf8(conn: socket.socket) -> None:
    read_request(conn)
    conn.sendall(b"ok\n\xff\xfe 0.5 1\n\n")
    wait_for_hangup(conn)


def endless_answer(conn: socket.socket) -> None:
    read_request(conn)
    conn.sendall(b"ok\n")
    line = b"cpu 0.5 1\n" * 1000
    for _ in range(FLOOD_LIMIT // len(line)):
        conn.sendall(line)


def endless_garbage(conn: socket.socket) -> None:
    read_request(conn)
    block = bytes(range(256)) * 256
    for _ in range(FLOOD_LIMIT // len(block)):
        conn.sendall(block)


FAULTS: dict[str, tuple[Script, type[ClientError]]] = {
    "silent (timeout)": (silent, ClientTimeoutError),
    "reset mid-answer": (reset_mid_answer, ClientConnectionError),
    "reset before answer": (reset_before_answer, ClientConnectionError),
    "answer cut short": (cut_short, ClientConnectionError),
    "closed before answer": (close_before_answer, ClientConnectionError),
    "garbage": (garbage, RemoteProtocolError),
    "bad data line": (bad_data_line, RemoteProtocolError),
    "not UTF-8": (not_utf8, RemoteProtocolError),
    "answer without end": (endless_answer, RemoteProtocolError),
    "endless garbage": (endless_garbage, RemoteProtocolError),
}


# --- one driver for both clients ---------------------------------------------------------


class Driver:
    """Runs the same calls on a Client or an AsyncClient (the latter on a loop of its own)."""

    def __init__(
        self,
        kind: str,
        address: tuple[str, int],
        timeout: float,
        *,
        max_answer_size: int = SMALL_ANSWER_LIMIT,
        wire: WireLog | None = None,
    ) -> None:
        self.kind = kind
        options = {"max_answer_size": max_answer_size, "wire": wire}
        if kind == "sync":
            self.sync: Client | None = Client(*address, timeout, **options)  # type: ignore[arg-type]
            self.aio: AsyncClient | None = None
        else:
            self.sync = None
            self.aio = AsyncClient(*address, timeout, **options)  # type: ignore[arg-type]
            self.runner = asyncio.Runner()  # one loop for the client's whole life
            try:
                self.runner.run(self.aio.connect())
            except BaseException:
                self.runner.close()
                raise

    def call(self, name: str, *args: object, **kwargs: object) -> object:
        if self.sync is not None:
            return getattr(self.sync, name)(*args, **kwargs)
        assert self.aio is not None
        method: Callable[..., object] = getattr(self.aio, name)

        async def run() -> object:
            return await method(*args, **kwargs)  # type: ignore[misc]

        return self.runner.run(run())

    def close(self) -> None:
        self.call("close")
        if self.aio is not None:
            self.runner.close()


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_driver(kind: str) -> Iterator[Callable[..., Driver]]:
    drivers: list[Driver] = []

    def make(address: tuple[str, int], timeout: float = TIMEOUT) -> Driver:
        driver = Driver(kind, address, timeout)
        drivers.append(driver)
        return driver

    yield make
    for driver in drivers:
        driver.close()


# --- the tests -----------------------------------------------------------------------------


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("call", [("get", "cpu"), ("put", "cpu", 0.5, 1)], ids=["get", "put"])
def test_every_fault_raises_a_client_error_and_closes_the_client(
    make_driver: Callable[..., Driver], fault: str, call: tuple[str, ...]
) -> None:
    script, expected = FAULTS[fault]
    timeout = SHORT_TIMEOUT if expected is ClientTimeoutError else TIMEOUT
    with FakeServer(script, answer_ok) as fake:
        client = make_driver(fake.address, timeout)
        name, *args = call
        with pytest.raises(expected) as raised:
            client.call(name, *args)
        assert str(raised.value)  # an actionable message, never an empty one

        # The chosen behaviour: closed after a failed request, and it says how to go on.
        with pytest.raises(ClientConnectionError, match=r"reconnect\(\)"):
            client.call("get", "cpu")
        client.call("reconnect")
        assert client.call("put", "cpu", 0.5, 1) is None


def test_network_failures_keep_the_os_error_as_cause(make_driver: Callable[..., Driver]) -> None:
    with FakeServer(reset_before_answer) as fake:
        client = make_driver(fake.address)
        with pytest.raises(ClientConnectionError) as raised:
            client.call("get", "cpu")
    # An OSError, or the end of the stream (the reset came as a plain close).
    assert isinstance(raised.value.__cause__, OSError | StreamEndedError)


def test_refused_connection(kind: str) -> None:
    with socket.socket() as probe:  # a port that nobody listens on
        probe.bind(("127.0.0.1", 0))
        address = probe.getsockname()[:2]
    with pytest.raises(ClientConnectionError, match="cannot connect"):
        Driver(kind, address, TIMEOUT)


def test_timeout_message_names_the_timeout(make_driver: Callable[..., Driver]) -> None:
    with FakeServer(silent) as fake:
        client = make_driver(fake.address, SHORT_TIMEOUT)
        with pytest.raises(ClientTimeoutError, match=str(SHORT_TIMEOUT)):
            client.call("get", "cpu")


def test_endless_answer_is_cut_at_max_answer_size(make_driver: Callable[..., Driver]) -> None:
    with FakeServer(endless_answer) as fake:
        client = make_driver(fake.address)
        with pytest.raises(RemoteProtocolError, match=f"over {SMALL_ANSWER_LIMIT} bytes"):
            client.call("get", "cpu")


def test_an_error_answer_leaves_the_client_usable(make_driver: Callable[..., Driver]) -> None:
    def refuse_then_ok(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"error\nwrong command\n\n")
        answer_ok(conn)

    with FakeServer(refuse_then_ok) as fake:
        client = make_driver(fake.address)
        with pytest.raises(RequestRejectedError):
            client.call("put", "cpu", 0.5, 1)
        assert client.call("put", "cpu", 0.5, 1) is None  # same connection, still in step


# --- one mapping from the sans-IO layer's errors -------------------------------------------


def refuse(conn: socket.socket) -> None:
    read_request(conn)
    conn.sendall(b"error\nwrong command\n\n")
    wait_for_hangup(conn)


@pytest.mark.parametrize(
    ("script", "call", "cause", "expected"),
    [
        (garbage, ("get", "cpu"), MalformedAnswerError, RemoteProtocolError),
        (bad_data_line, ("get", "cpu"), MalformedAnswerError, RemoteProtocolError),
        (cut_short, ("get", "cpu"), StreamEndedError, ClientConnectionError),
        (refuse, ("get", "cpu"), RefusedRequestError, RequestRejectedError),
        (refuse, ("put_many", [("cpu", 0.5, 1)]), RefusedRequestError, RequestRejectedError),
        (silent, ("put", "a key", 0.5, 1), UnsendableRequestError, InvalidRequestError),
        (silent, ("put_many", [("*", 0.5, 1)]), UnsendableRequestError, InvalidRequestError),
    ],
    ids=["garbage", "bad line", "cut short", "refused", "refused batch", "bad key", "bad point"],
)
def test_a_protocol_error_becomes_a_client_error_once_at_the_boundary(
    make_driver: Callable[..., Driver],
    script: Script,
    call: tuple[object, ...],
    cause: type[ProtocolError],
    expected: type[ClientError],
) -> None:
    with FakeServer(script) as fake:
        client = make_driver(fake.address)
        name, *args = call
        with pytest.raises(expected) as raised:
            client.call(str(name), *args)
    # The client's class, the protocol error's message, and the protocol error as the cause.
    assert type(raised.value.__cause__) is cause
    assert str(raised.value) == str(raised.value.__cause__)
    if isinstance(raised.value, RequestRejectedError):
        assert raised.value.detail == "wrong command"
