"""The blocking Client: against the real server, scripted broken servers and the course's fake."""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar
from unittest.mock import patch

import pytest

from metrics_lab import (
    BackgroundServer,
    Client,
    ClientConnectionError,
    ClientError,
    ClientTimeoutError,
    InvalidRequestError,
    RemoteProtocolError,
    RequestRejectedError,
    WireLog,
    serve_in_background,
)
from tests.conftest import TIMEOUT, unused_port

# --- against the real server ------------------------------------------------------------


@pytest.fixture
def client(server: BackgroundServer) -> Iterator[Client]:
    with Client(server.host, server.port, timeout=TIMEOUT) as connected:
        yield connected


def test_put_then_get(client: Client) -> None:
    client.put("palm.cpu", 10.5, 1501864247)
    client.put("palm.cpu", 2, 1501864248)
    client.put("eardrum.cpu", 15.3, 1501864259)
    assert client.get("palm.cpu") == {"palm.cpu": [(1501864247, 10.5), (1501864248, 2.0)]}
    assert client.get("*") == {
        "eardrum.cpu": [(1501864259, 15.3)],
        "palm.cpu": [(1501864247, 10.5), (1501864248, 2.0)],
    }


def test_get_of_a_missing_key_is_an_empty_dict(client: Client) -> None:
    assert client.get("missing") == {}
    assert client.get("*") == {}


def test_put_returns_none_and_overwrites(client: Client) -> None:
    assert client.put("k", 1.0, 5) is None  # type: ignore[func-returns-value]
    client.put("k", 2.0, 5)
    assert client.get("k") == {"k": [(5, 2.0)]}


def test_timestamp_defaults_to_now_but_zero_is_a_timestamp(client: Client) -> None:
    before = int(time.time())
    client.put("now", 1.0)
    client.put("zero", 1.0, 0)
    after = int(time.time())
    [(stamp, _)] = client.get("now")["now"]
    assert before <= stamp <= after
    assert client.get("zero") == {"zero": [(0, 1.0)]}


def test_put_many_pipelines_a_batch_in_one_write(server: BackgroundServer) -> None:
    wire = WireLog()
    with Client(*server.address, timeout=TIMEOUT, wire=wire) as client:
        client.put_many([("k", float(i), i) for i in range(1000)])
        assert next(event.direction for event in wire) == "sent"
        assert sum(event.direction == "sent" for event in wire) == 1
        assert len(client.get("k")["k"]) == 1000


def test_put_many_with_nothing_sends_nothing(server: BackgroundServer) -> None:
    wire = WireLog()
    with Client(*server.address, timeout=TIMEOUT, wire=wire) as client:
        client.put_many([])
    assert len(wire) == 0


def test_bad_arguments_are_refused_before_anything_is_sent(server: BackgroundServer) -> None:
    wire = WireLog()
    with Client(*server.address, timeout=TIMEOUT, wire=wire) as client:
        with pytest.raises(InvalidRequestError):
            client.get("wrong command test\n")
        with pytest.raises(ClientError):
            client.put("a key", 1.0, 1)
        with pytest.raises(ClientError):
            client.put("k", float("nan"), 1)
        with pytest.raises(ClientError):
            client.put_many([("ok", 1.0, 1), ("*", 1.0, 1)])
        assert len(wire) == 0
        client.put("k", 1.0, 1)  # the connection is still good
        assert client.get("*") == {"k": [(1, 1.0)]}


def test_the_wire_log_shows_each_byte(server: BackgroundServer) -> None:
    wire = WireLog()
    with Client(*server.address, timeout=TIMEOUT, wire=wire) as client:
        client.put("load", 301, 3)
        client.get("load")
    assert [(event.direction, event.data) for event in wire] == [
        ("sent", b"put load 301 3\n"),
        ("received", b"ok\n\n"),
        ("sent", b"get load\n"),
        ("received", b"ok\nload 301.0 3\n\n"),
    ]


def test_a_refused_connection_is_a_client_error_that_says_what_to_do() -> None:
    with pytest.raises(ClientConnectionError, match="metrics-lab serve") as caught:
        Client("127.0.0.1", unused_port(), timeout=TIMEOUT)
    assert isinstance(caught.value.__cause__, OSError)


def test_a_stopped_server_is_a_connection_error_then_reconnect_works(
    server: BackgroundServer,
) -> None:
    with serve_in_background() as doomed, Client(*doomed.address, timeout=TIMEOUT) as client:
        client.put("k", 1.0, 1)
        doomed.stop()
        with pytest.raises(ClientConnectionError):
            client.put("k", 2.0, 2)
        with pytest.raises(ClientConnectionError, match="reconnect"):
            client.get("k")
        client.port = server.port  # the same client, pointed at a live server
        client.reconnect()
        assert client.get("k") == {}


# --- against scripted servers that break the protocol -----------------------------------


@contextmanager
def scripted_server(reply: bytes, *, then_close: bool = True) -> Iterator[tuple[str, int]]:
    """A one-connection server: reads one request, sends ``reply``, then closes or stays silent."""
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            if reply:
                connection.sendall(reply)
            if not then_close:
                done.wait(TIMEOUT)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[:2]
    finally:
        done.set()
        thread.join(TIMEOUT)
        listener.close()


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (b"error\nwrong command\n\n", RequestRejectedError),
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", RemoteProtocolError),
        (b"ok\nthis is not a point\n\n", RemoteProtocolError),
        (b"ok\nk 1.0 1\n", ClientConnectionError),  # cut short, then closed
        (b"", ClientConnectionError),  # closed without a word
    ],
    ids=["error answer", "garbage", "malformed line", "truncated", "closed"],
)
def test_broken_answers_to_get_are_client_errors(reply: bytes, error: type[ClientError]) -> None:
    with (
        scripted_server(reply) as address,
        Client(*address, timeout=TIMEOUT) as client,
        pytest.raises(error),
    ):
        client.get("k")


def test_put_with_an_answer_other_than_ok_is_a_client_error() -> None:
    with (
        scripted_server(b"ok\nk 1 1\n\n") as address,
        Client(*address, timeout=TIMEOUT) as client,
        pytest.raises(RemoteProtocolError),
    ):
        client.put("k", 1.0, 1)


def test_silence_until_the_timeout_is_a_timeout_error() -> None:
    with (
        scripted_server(b"ok\n", then_close=False) as address,
        Client(*address, timeout=0.3) as client,
        pytest.raises(ClientTimeoutError, match="reconnect") as caught,
    ):
        client.get("k")
    assert isinstance(caught.value.__cause__, TimeoutError)


def test_put_many_reads_every_answer_and_reports_the_refused_ones() -> None:
    reply = b"ok\n\nerror\nwrong command\n\nok\n\n"
    with (
        scripted_server(reply, then_close=False) as address,
        Client(*address, timeout=TIMEOUT) as client,
        pytest.raises(RequestRejectedError, match="1 of 3 puts") as caught,
    ):
        client.put_many([("a", 1.0, 1), ("b", 1.0, 1), ("c", 1.0, 1)])
    assert caught.value.detail == "wrong command"


# --- the course's own client test: socket.create_connection replaced by a fake ----------


class CourseFakeSocket:
    """The shape of the course's fake: only sendall, send and recv; replies from a table."""

    class Error(Exception):
        pass

    rpc: ClassVar[dict[str, dict[str, str]]] = {
        "put": {
            "test 0.5 1\n": "ok\n\n",
            "test 2.0 2\n": "ok\n\n",
            "test 0.4 2\n": "ok\n\n",
            "load 301 3\n": "ok\n\n",
        },
        "get": {
            "key_not_exists\n": "ok\n\n",
            "test\n": "ok\ntest 0.5 1\ntest 0.4 2\n\n",
            "get_client_error\n": "error\nwrong command\n\n",
            "*\n": "ok\ntest 0.5 1\ntest 0.4 2\nload 301 3\n\n",
        },
    }

    def __init__(self) -> None:
        self.replies: deque[str] = deque()

    @classmethod
    def create_connection(cls, *args: Any, **kwargs: Any) -> CourseFakeSocket:
        return cls()

    def sendall(self, data: bytes) -> None:
        self.send(data)

    def send(self, data: bytes) -> None:
        method, payload = data.decode().split(" ", 1)
        if method not in self.rpc or payload not in self.rpc[method]:
            raise self.Error(f"unexpected request {data!r}")
        self.replies.append(self.rpc[method][payload])

    def recv(self, size: int) -> bytes:
        if not self.replies:
            raise self.Error("recv called with no answer pending: the client read too far")
        return self.replies.popleft().encode()


@pytest.fixture
def course_client() -> Client:
    with patch("socket.create_connection", CourseFakeSocket.create_connection):
        return Client("127.0.0.1", 10000, timeout=2)


def test_course_put(course_client: Client) -> None:
    for key, value, timestamp in [("test", 0.5, 1), ("test", 2.0, 2), ("test", 0.4, 2)]:
        course_client.put(key, value, timestamp)
    course_client.put("load", 301, 3)


def test_course_get(course_client: Client) -> None:
    assert course_client.get("test") == {"test": [(1, 0.5), (2, 0.4)]}
    assert course_client.get("key_not_exists") == {}
    assert course_client.get("*") == {"test": [(1, 0.5), (2, 0.4)], "load": [(3, 301.0)]}


def test_course_get_client_error(course_client: Client) -> None:
    with pytest.raises(ClientError):
        course_client.get("get_client_error")


def test_course_answers_split_byte_by_byte() -> None:
    class Dribbling(CourseFakeSocket):
        def recv(self, size: int) -> bytes:
            head = super().recv(size)
            if len(head) > 1:
                self.replies.appendleft(head[1:].decode())
            return head[:1]

    with patch("socket.create_connection", Dribbling.create_connection):
        client = Client("127.0.0.1", 10000, timeout=2)
    assert client.get("test") == {"test": [(1, 0.5), (2, 0.4)]}
    assert client.get("*")["load"] == [(3, 301.0)]
