"""Limits that hold exactly: max_answer_size whatever the segmentation, timeouts around whole calls.

The answer limit is tried on the sans-IO reader (the same answer fed whole, byte by byte and
cut at random) and over the network, on both clients; the timeouts with servers that dribble
or stop reading, so a call can end only by its own timeout, never by the test's bound.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metrics_lab import (
    AsyncClient,
    BackgroundServer,
    Client,
    ClientConnectionError,
    ClientTimeoutError,
    RemoteProtocolError,
)
from metrics_lab.protocol import (
    NEED_DATA,
    OK_ANSWER,
    Answer,
    AnswerReader,
    MalformedAnswerError,
    encode_put,
    encode_puts,
)
from tests.conftest import cut
from tests.fake_server import FakeServer, read_request

TIMEOUT = 5.0
LIMIT = 1000


def answer_of_size(size: int) -> bytes:
    """A valid ``get`` answer of exactly ``size`` (>= 12) bytes, final ``\\n\\n`` included."""
    body = size - len(b"ok\n") - len(b"\n")
    lines = (body - 8) // 8  # lines of b"k 0.5 1\n", then one whose timestamp takes the rest
    last = b"k 0.5 " + b"1" * (body - 8 * lines - 7) + b"\n"
    answer = b"ok\n" + b"k 0.5 1\n" * lines + last + b"\n"
    assert len(answer) == size
    return answer


def cuts(data: bytes, how: str, seed: int = 0) -> list[bytes]:
    """``data`` cut as ``how`` (one of :data:`HOW`) says; random cuts: 12 of them."""
    return cut(data, how, seed, cuts=12)


def read_one(reader: AnswerReader, chunks: list[bytes]) -> Answer:
    for chunk in chunks:
        reader.receive_data(chunk)
        answer = reader.next_answer()
        if answer is not NEED_DATA:
            return answer
    raise AssertionError("the answer never completed")


# --- the reader, fed every way -----------------------------------------------------------

HOW = ("whole", "byte-by-byte", "random")
"""The ways :func:`tests.conftest.cut` cuts an answer."""


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("size", [LIMIT - 1, LIMIT])
def test_an_answer_up_to_the_limit_is_accepted(how: str, size: int) -> None:
    answer = read_one(AnswerReader(LIMIT), cuts(answer_of_size(size), how))
    assert answer.status == "ok"


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("size", [LIMIT + 1, LIMIT + 2, 10 * LIMIT])
def test_an_answer_over_the_limit_is_refused_however_it_is_cut(how: str, size: int) -> None:
    with pytest.raises(MalformedAnswerError, match=f"over {LIMIT} bytes"):
        read_one(AnswerReader(LIMIT), cuts(answer_of_size(size), how))


@given(st.integers(20, 3000), st.integers(0, 2**32))
def test_any_cut_gives_the_same_verdict(size: int, seed: int) -> None:
    data = answer_of_size(size)
    verdicts = set()
    for how in HOW:
        try:
            read_one(AnswerReader(LIMIT), cuts(data, how, seed))
            verdicts.add("accepted")
        except MalformedAnswerError:
            verdicts.add("refused")
    assert verdicts == {"accepted" if size <= LIMIT else "refused"}


def test_the_limit_counts_one_answer_not_what_follows_it() -> None:
    reader = AnswerReader(LIMIT)
    reader.receive_data(answer_of_size(LIMIT) + answer_of_size(LIMIT))  # two at once: fine
    assert reader.next_answer() != NEED_DATA
    assert reader.next_answer() != NEED_DATA


@given(st.lists(st.sampled_from([OK_ANSWER, b"error\nwrong command\n\n", b"ok\nk 1 1\n\n"])))
def test_skip_ok_answers_reads_what_next_answer_would(answers: list[bytes]) -> None:
    stream = b"".join(answers) + b"ok\n"
    fast, slow = AnswerReader(), AnswerReader()
    fast.receive_data(stream)
    slow.receive_data(stream)
    seen_fast: list[Answer] = []
    while len(seen_fast) < len(answers):
        skipped = fast.skip_ok_answers(len(answers) - len(seen_fast))
        seen_fast += [Answer("ok", ())] * skipped
        if not skipped:
            answer = fast.next_answer()
            assert isinstance(answer, Answer)
            seen_fast.append(answer)
    seen_slow = [slow.next_answer() for _ in answers]
    assert seen_fast == seen_slow
    assert fast.buffered == slow.buffered == len(b"ok\n")


def test_skip_ok_answers_never_takes_more_than_asked() -> None:
    reader = AnswerReader()
    reader.receive_data(OK_ANSWER * 10)
    assert reader.skip_ok_answers(3) == 3
    assert reader.buffered == 7 * len(OK_ANSWER)


keys = st.text(min_size=1, max_size=8).filter(lambda k: k != "*")
values = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**70), 2**70))
stamps = st.one_of(st.none(), st.integers(-(2**64), 2**64))


@given(st.lists(st.tuples(keys, values, stamps), max_size=20))
def test_encode_puts_gives_the_bytes_of_encode_put_or_the_same_error(
    points: list[tuple[str, float, int | None]],
) -> None:
    def one_by_one() -> bytes:
        return b"".join(encode_put(k, v, 7 if t is None else t) for k, v, t in points)

    try:
        expected: bytes | type[Exception] = one_by_one()
    except Exception as exc:
        expected = type(exc)
    try:
        got: bytes | type[Exception] = encode_puts(points, now=7)
    except Exception as exc:
        got = type(exc)
    assert got == expected


# --- over the network, both clients --------------------------------------------------------


def sends(answer: bytes, how: str) -> FakeServer:
    """A fake that answers every request with ``answer``, written in the given cuts."""

    def script(conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while read_request(conn):
            for chunk in cuts(answer, how):
                conn.sendall(chunk)

    return FakeServer(script)


def get_with(kind: str, address: tuple[str, int], limit: int) -> object:
    if kind == "sync":
        with Client(*address, timeout=TIMEOUT, max_answer_size=limit) as client:
            return client.get("k")

    async def main() -> object:
        async with AsyncClient(*address, timeout=TIMEOUT, max_answer_size=limit) as client:
            return await client.get("k")

    return asyncio.run(main())


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("how", ["whole", "random"])
def test_clients_hold_the_limit_exactly(kind: str, how: str) -> None:
    with sends(answer_of_size(LIMIT), how) as fake:
        assert get_with(kind, fake.address, LIMIT)
    with sends(answer_of_size(LIMIT + 1), how) as fake, pytest.raises(RemoteProtocolError):
        get_with(kind, fake.address, LIMIT)


def test_the_issues_answer_is_refused_every_time(server: BackgroundServer) -> None:
    """Issue 11: a 64,894-byte answer under a 10,000-byte limit was accepted 12 times in 20."""
    server.store.put_many([("k", 0.5, t) for t in range(1_700_000_000, 1_700_003_000)])
    for _ in range(20):
        with (
            Client(*server.address, timeout=TIMEOUT, max_answer_size=10_000) as client,
            pytest.raises(RemoteProtocolError, match="over 10000 bytes"),
        ):
            client.get("k")


# --- timeouts bound whole calls ------------------------------------------------------------


def dribbles(conn: socket.socket) -> None:
    """Answer a byte every 50 ms for 5 s, never ending the answer, then hang up."""
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    read_request(conn)
    conn.sendall(b"ok\n")
    for _ in range(100):
        time.sleep(0.05)
        conn.sendall(b"k")


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_dribbling_server_is_cut_off_by_the_timeout(kind: str) -> None:
    """Bytes that keep coming but never end an answer must not keep the call alive."""
    with FakeServer(dribbles) as fake:
        if kind == "sync":
            with Client(*fake.address, timeout=0.3) as client, pytest.raises(ClientTimeoutError):
                client.get("k")
        else:

            async def main() -> None:
                async with AsyncClient(*fake.address, timeout=0.3) as client:
                    await client.get("k")

            with pytest.raises(ClientTimeoutError):
                asyncio.run(bounded(main()))


async def bounded(coroutine: object) -> None:
    """The test's own bound, far beyond every client timeout: reaching it fails the test."""
    try:
        async with asyncio.timeout(20):
            await coroutine  # type: ignore[misc]
    except TimeoutError as exc:
        raise AssertionError("the call outlived its timeout by far") from exc


@pytest.fixture
def deaf_server() -> Iterator[tuple[str, int]]:
    """A peer that accepts and never reads: whatever the client writes stays in its buffers."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    accepted: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        conn, _ = listener.accept()
        accepted.append(conn)
        done.wait(20)
        conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[:2]
    done.set()
    thread.join(20)
    listener.close()


def test_async_put_many_to_a_deaf_server_times_out_close_included(
    deaf_server: tuple[str, int],
) -> None:
    """Issue 11: the timeout fired, then close() hung in wait_closed() on the unsent bytes."""

    async def main() -> None:
        client = AsyncClient(*deaf_server, timeout=0.5)
        await client.connect()
        with pytest.raises(ClientTimeoutError):
            await client.put_many([("k", 0.5, t) for t in range(300_000)])
        with pytest.raises(ClientConnectionError, match="reconnect"):
            await client.get("k")

    asyncio.run(bounded(main()))


def test_async_close_never_hangs_on_unsent_bytes(deaf_server: tuple[str, int]) -> None:
    async def main() -> None:
        client = AsyncClient(*deaf_server, timeout=None)
        await client.connect()
        assert client._writer is not None
        client._writer.write(b"put k 1 1\n" * 1_000_000)  # stuck: the peer reads nothing
        await client.close()

    asyncio.run(bounded(main()))


def test_sync_put_many_to_a_deaf_server_times_out(deaf_server: tuple[str, int]) -> None:
    with Client(*deaf_server, timeout=0.5) as client:
        with pytest.raises(ClientTimeoutError):
            client.put_many([("k", 0.5, t) for t in range(300_000)])
        with pytest.raises(ClientConnectionError, match="reconnect"):
            client.get("k")
