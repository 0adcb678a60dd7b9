"""put_many of any size: it streams through a window, so no batch can deadlock or hoard memory.

Issue 11: the client wrote a whole batch before reading any answer; past about a million
points the server's and the client's buffers filled and both waited for good. A fake server
with small socket buffers reproduces that wait with far fewer points; the window is checked
on the sans-IO :class:`PutManyExchange` itself, and a real server takes a batch past the old limit.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable, Iterator

import pytest

from metrics_lab import (
    BackgroundServer,
    Client,
    ClientBusyError,
    InvalidRequestError,
    RequestRejectedError,
    WireLog,
)
from metrics_lab.client import PUT_SLICE, PUT_WINDOW, PutManyExchange
from metrics_lab.protocol import OK_ANSWER, AnswerReader
from tests.fake_server import FakeServer, answer_ok
from tests.test_client_faults import Driver

TIMEOUT = 10.0


@pytest.fixture(params=["sync", "async"])
def connect(request: pytest.FixtureRequest) -> Iterator[Callable[..., Driver]]:
    """Make a Client or an AsyncClient (behind one Driver interface); all closed afterwards."""
    drivers: list[Driver] = []

    def make(address: tuple[str, int], **options: object) -> Driver:
        driver = Driver(request.param, address, TIMEOUT, max_answer_size=1 << 30, **options)  # type: ignore[arg-type]
        drivers.append(driver)
        return driver

    yield make
    for driver in drivers:
        driver.close()


def points(count: int, key: str = "k") -> Iterator[tuple[str, float, int]]:
    """A lazy batch: the client must not need it as a list."""
    return ((key, i * 0.5, i) for i in range(count))


# --- no size deadlocks ---------------------------------------------------------------------


def stingy_server(received: list[int]) -> Callable[[socket.socket], None]:
    """A correct server with tiny socket buffers that answers each chunk before reading on.

    Like the real server's flow control, it stops reading while its answers cannot be sent;
    with small buffers a client that writes without reading blocks it within a few hundred
    thousand puts, rather than a million.
    """

    def script(conn: socket.socket) -> None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        count = 0

        def counted(line: bytes) -> bytes:
            nonlocal count
            count += 1
            return OK_ANSWER

        answer_ok(conn, counted, recv_size=4096)
        received.append(count)

    return script


def test_put_many_never_deadlocks_with_a_flow_controlled_server(
    connect: Callable[..., Driver],
) -> None:
    """Issue 11: the old client timed out here with the batch half sent (hung with no timeout)."""
    received: list[int] = []
    with FakeServer(stingy_server(received)) as fake:
        client = connect(fake.address)
        client.call("put_many", points(500_000))
        client.call("close")
    assert received == [500_000]


def test_a_batch_past_the_old_limit_is_stored(
    connect: Callable[..., Driver], server: BackgroundServer
) -> None:
    """Issue 11 measured the deadlock at 1,083,723 points; here 1.2 million, from a generator."""
    client = connect(server.address)
    client.call("put_many", points(1_200_000))
    [series] = server.store.read("k")
    assert len(series.timestamps) == 1_200_000
    assert client.call("get", "absent") == {}  # still in step


# --- the window, without I/O ---------------------------------------------------------------


def test_the_window_bounds_unanswered_puts_and_the_input_read_ahead() -> None:
    pulled = 0

    def counted(count: int) -> Iterator[tuple[str, float, int]]:
        nonlocal pulled
        for point in points(count):
            pulled += 1
            yield point

    total = 10 * PUT_SLICE + 123
    batch = PutManyExchange(counted(total))
    answers = AnswerReader()
    batch.begin(answers)
    sent = 0
    while not batch.done:
        data = batch.data_to_send()
        assert batch.unanswered <= PUT_WINDOW
        assert pulled <= sent + 2 * PUT_SLICE  # what was sent, this slice and the next one
        if data is None:  # the "server" answers the oldest slice
            batch.receive_data(OK_ANSWER * min(PUT_SLICE, batch.unanswered))
            continue
        assert data.endswith(b"\n")
        assert 0 < data.count(b"\n") <= PUT_SLICE
        sent += data.count(b"\n")
    batch.result()
    assert sent == pulled == total
    assert batch.answered == total


def test_a_small_batch_is_one_write(
    connect: Callable[..., Driver], server: BackgroundServer
) -> None:
    wire = WireLog()
    client = connect(server.address, wire=wire)
    client.call("put_many", list(points(PUT_SLICE)))
    sent = [event.data for event in wire if event.direction == "sent"]
    assert len(sent) == 1
    wire.clear()
    client.call("put_many", list(points(3 * PUT_SLICE + 1)))
    sent = [event.data for event in wire if event.direction == "sent"]
    assert [data.count(b"\n") for data in sent] == [PUT_SLICE] * 3 + [1]


# --- what a batch that cannot go through leaves behind -----------------------------------


def test_an_invalid_point_mid_batch_names_it_and_leaves_the_client_in_step(
    connect: Callable[..., Driver], server: BackgroundServer
) -> None:
    batch = list(points(3 * PUT_SLICE))
    bad = 2 * PUT_SLICE + 5
    batch[bad] = ("a key with spaces", 1.0, 1)
    client = connect(server.address)
    with pytest.raises(InvalidRequestError, match=f"point {bad} .*none from {2 * PUT_SLICE} on"):
        client.call("put_many", batch)
    [series] = server.store.read("k")
    assert len(series.timestamps) == 2 * PUT_SLICE  # the slices before the bad one, whole
    assert client.call("get", "absent") == {}  # the same connection, in step


def test_a_failing_points_iterator_leaves_the_client_in_step(
    connect: Callable[..., Driver], server: BackgroundServer
) -> None:
    def broken() -> Iterator[tuple[str, float, int]]:
        yield from points(PUT_SLICE + 10)
        raise ValueError("the data source failed")

    client = connect(server.address)
    with pytest.raises(ValueError, match="the data source failed"):
        client.call("put_many", broken())
    [series] = server.store.read("k")
    assert len(series.timestamps) == PUT_SLICE
    assert client.call("get", "absent") == {}


def refuses(key: bytes) -> Callable[[socket.socket], None]:
    """A fake that answers ``ok`` to every put except those of ``key``, refused."""

    def answer(line: bytes) -> bytes:
        return b"error\nwrong command\n\n" if line.split()[1] == key else OK_ANSWER

    def script(conn: socket.socket) -> None:
        answer_ok(conn, answer)

    return script


def test_refused_puts_mid_batch_are_reported_after_every_answer(
    connect: Callable[..., Driver],
) -> None:
    batch = list(points(3 * PUT_SLICE))
    batch[5000] = batch[9000] = ("refused", 1.0, 1)
    with FakeServer(refuses(b"refused")) as fake:
        client = connect(fake.address)
        with pytest.raises(RequestRejectedError, match=f"2 of {3 * PUT_SLICE} puts .* 5000"):
            client.call("put_many", batch)
        assert client.call("put", "k", 1.0, 1) is None  # in step: the next answer is its own
        client.call("close")


def test_a_points_iterator_that_calls_the_client_is_refused_not_deadlocked(
    server: BackgroundServer,
) -> None:
    """Only a blocking client can be re-entered so (an iterator cannot await)."""
    with Client(*server.address, timeout=TIMEOUT) as client:
        client.put("source", 1.0, 1)

        def copied() -> Iterator[tuple[str, float, int]]:
            for key, series in client.get("source").items():
                for timestamp, value in series:
                    yield f"copy.{key}", value, timestamp

        with pytest.raises(ClientBusyError, match="already in the middle of a request"):
            client.put_many(copied())
        assert client.get("source") == {"source": [(1, 1.0)]}  # in step


# --- progress ------------------------------------------------------------------------------


def test_progress_draws_a_bar(
    connect: Callable[..., Driver], server: BackgroundServer, capsys: pytest.CaptureFixture[str]
) -> None:
    client = connect(server.address)
    client.call("put_many", list(points(3 * PUT_SLICE)), progress=True)
    err = capsys.readouterr().err
    assert "put_many" in err
    assert "100%" in err


def test_progress_without_tqdm_says_what_to_install(
    connect: Callable[..., Driver], server: BackgroundServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # what a missing package looks like
    wire = WireLog()
    client = connect(server.address, wire=wire)
    with pytest.raises(ImportError, match="pip install tqdm"):
        client.call("put_many", list(points(10)), progress=True)
    assert len(wire) == 0
    client.call("put_many", list(points(10)))  # without a bar, no tqdm needed
