"""The sans-IO session, in memory: the wire table without sockets, and the rules of order.

The same WIRE table as tests/test_server.py (over real sockets) runs here against a bare
:class:`ServerSession`, with each parser, fed whole, byte by byte and cut at random.
"""

from __future__ import annotations

from concurrent.futures import Future

import pytest

from metrics_lab import MemoryStore
from metrics_lab.fastpath import FastParser
from metrics_lab.protocol import GetRequest, PutRequest
from metrics_lab.server import ANSWER_PIECE
from metrics_lab.session import (
    MAX_QUEUED_ANSWERS,
    MAX_UNSTORED_POINTS,
    STORE_ERROR_ANSWER,
    ServerSession,
    SimpleParser,
)
from metrics_lab.storage import SNAPSHOT_PIECE, Snapshot, StoreFailure
from tests.conftest import cut
from tests.later_store import LaterStore
from tests.test_server import ERROR, OK, WIRE

PARSERS = {"simple": SimpleParser, "fast": FastParser}


def drain(session: ServerSession) -> bytes:
    """Everything the session has to say now, running the requests it held back."""
    out = []
    while (data := session.data_to_send()) or session.run_held_requests():
        out.append(data)
    return b"".join(out)


@pytest.mark.parametrize("parser", sorted(PARSERS))
@pytest.mark.parametrize(("name", "sent", "expected"), WIRE, ids=[case[0] for case in WIRE])
@pytest.mark.parametrize("how", ["whole", "byte-by-byte", "random"])
def test_wire_in_memory(name: str, sent: bytes, expected: bytes, how: str, parser: str) -> None:
    session = ServerSession(MemoryStore(), parser=PARSERS[parser]())
    answers = b""
    for chunk in cut(sent, how, name):
        session.receive_data(chunk)
        answers += drain(session)
    assert answers == expected


def test_the_contract_example() -> None:
    session = ServerSession(MemoryStore())
    session.receive_data(b"put a 1 2\nget a\n")
    assert session.data_to_send() == b"ok\n\nok\na 1.0 2\n\n"
    assert session.data_to_send() == b""


def test_ok_waits_for_the_commit_and_a_get_waits_for_earlier_puts() -> None:
    store = LaterStore()
    session = ServerSession(store, parser=FastParser())
    session.receive_data(b"get k\nput k 1 1\nput k 2 2\nget k\nput k 3 3\n")
    assert session.data_to_send() == OK  # the first get ran at once: no put before it
    assert session.waiting_for is store.pending[0][1]
    assert not session.wants_data  # the second get cannot run yet: stop reading
    store.commit()
    assert session.data_to_send() == OK + OK  # data_to_send only hands out bytes
    assert session.run_held_requests()  # running the held get (and the put after it) is a step
    assert session.data_to_send() == b"ok\nk 1.0 1\nk 2.0 2\n\n"
    assert session.waiting_for is store.pending[0][1]  # the last put, written after the get
    store.commit()
    assert session.data_to_send() == OK
    assert session.waiting_for is None
    assert session.wants_data


def test_points_waiting_for_the_store_are_bounded() -> None:
    # A store slower than its client: the session stops running puts (and its server stops
    # reading) once MAX_UNSTORED_POINTS wait, and goes on as the store catches up.
    store = LaterStore()
    session = ServerSession(store, parser=FastParser())
    block = b"".join(b"put k%d 1 %d\n" % (i % 10, i) for i in range(1000))
    blocks = MAX_UNSTORED_POINTS // 1000 + 10
    for _ in range(blocks):
        session.receive_data(block)
    waiting = sum(len(batch) for batch, _ in store.pending)
    assert MAX_UNSTORED_POINTS <= waiting < MAX_UNSTORED_POINTS + 1000
    assert not session.wants_data
    answered = b""
    while store.pending:
        store.commit()
        answered += drain(session)
    assert answered == OK * 1000 * blocks
    assert session.wants_data


def test_answers_queued_behind_an_unread_big_answer_are_bounded() -> None:
    # A peer that asks for a big answer and then sends puts without reading it: their oks
    # queue behind the answer, and after MAX_QUEUED_ANSWERS of them the session takes no more
    # requests (its server stops reading). Finished answers were once joined into one queued
    # answer, so they were never counted and the oks grew without bound.
    store = MemoryStore()
    store.put_many([("k", 1.0, t) for t in range(3 * SNAPSHOT_PIECE)])
    session = ServerSession(store, parser=SimpleParser())
    session.receive_data(b"get k\n" + b"put j 1 1\n" * (MAX_QUEUED_ANSWERS + 10))
    assert not session.wants_data
    assert session.why_wait(PutRequest("j", 1.0, 1)) == (
        "too many answers are queued (for the store, or for the peer to read them)"
    )
    answers = drain(session)
    assert answers.endswith(b"\n\n" + OK * (MAX_QUEUED_ANSWERS + 10))
    assert answers.count(b"\n") == 3 * SNAPSHOT_PIECE + 2 + 2 * (MAX_QUEUED_ANSWERS + 10)
    assert session.wants_data


def test_small_gets_pipelined_without_reading_are_encoded_as_the_peer_reads() -> None:
    # A get of one piece is encoded at once, but only while no other answer is ready: 200 of
    # them sent at once were once encoded together, 3.4 MB for a peer that had read nothing.
    store = MemoryStore()
    store.put_many([("k", 1.0, 1_700_000_000 + t) for t in range(SNAPSHOT_PIECE)])
    session = ServerSession(store)
    session.receive_data(b"get k\n" * 200)
    assert not session.wants_data  # the rest are held back: the server stops reading
    lines = b"".join(b"k 1.0 %d\n" % (1_700_000_000 + t) for t in range(SNAPSHOT_PIECE))
    answer = b"ok\n" + lines + b"\n"
    first = session.data_to_send(ANSWER_PIECE)
    assert len(first) <= 2 * len(answer)  # the one encoded at once, and the next one's
    assert first + drain(session) == 200 * answer


def test_a_failed_commit_answers_store_error_for_each_put_and_nothing_else() -> None:
    store = LaterStore()
    session = ServerSession(store)
    session.receive_data(b"put k 1 1\nput k 2 2\nbad\nget k\n")
    store.commit(StoreFailure("disk full"))
    assert drain(session) == STORE_ERROR_ANSWER * 2 + ERROR + OK
    session.receive_data(b"put k 3 3\n")
    store.commit()  # space is back
    session.receive_data(b"get k\n")
    assert drain(session) == OK + b"ok\nk 3.0 3\n\n"


class BrokenReads(MemoryStore):
    def __init__(self, fail_after: int) -> None:
        super().__init__()
        self.fail_after = fail_after

    def snapshot(self, key: str | None = None) -> Snapshot:
        pieces = super().snapshot(key)

        def failing() -> Snapshot:
            for index, piece in enumerate(pieces):
                if index >= self.fail_after:
                    raise StoreFailure("the disk went away")
                yield piece

        return failing()


def test_a_read_that_fails_before_any_byte_is_an_error_answer() -> None:
    store = BrokenReads(fail_after=0)
    store.put_many([("k", 1.0, 1)])
    session = ServerSession(store)
    session.receive_data(b"get k\nget nothing\n")
    assert drain(session) == STORE_ERROR_ANSWER + OK


def test_a_read_that_fails_at_the_second_piece_is_still_an_error_answer() -> None:
    # The session reads a get's first two pieces when it runs the get (one piece and no
    # more is a small answer, encoded at once), so a failure there comes before any byte.
    store = BrokenReads(fail_after=1)
    store.put_many([("k", 1.0, t) for t in range(SNAPSHOT_PIECE + 1)])
    session = ServerSession(store)
    session.receive_data(b"get k\nget nothing\n")
    assert drain(session) == STORE_ERROR_ANSWER + OK


def test_a_read_that_fails_mid_answer_raises_so_the_connection_ends() -> None:
    store = BrokenReads(fail_after=3)
    store.put_many([(f"k{i}", 1.0, t) for i in range(3) for t in range(30_000)])
    session = ServerSession(store)
    session.receive_data(b"get *\n")
    assert session.data_to_send(limit=1).startswith(b"ok\nk0 1.0 0\n")
    with pytest.raises(StoreFailure):
        drain(session)


def test_a_big_answer_comes_in_bounded_pieces_from_the_snapshot_of_its_request() -> None:
    store = MemoryStore()
    store.put_many([(f"k{i % 10}", 0.5, t) for t in range(20_000) for i in range(10)])
    session = ServerSession(store)
    session.receive_data(b"get *\nget k0\n")
    first = session.data_to_send(limit=1)
    store.put_many([("k0", 9.5, 0), ("k5", 9.5, 5), ("k9", 9.5, 30_000), ("a", 1.0, 1)])
    pieces = [first]
    while (data := session.data_to_send(limit=1)) or session.run_held_requests():
        assert len(data) <= 2 * ANSWER_PIECE
        pieces.append(data)
    assert len(pieces) > 20  # streamed, not built whole
    answers = b"".join(pieces).split(b"\n\n")
    everything, k0 = answers[0], answers[1]
    assert everything.count(b"\n") == 200_000  # "ok" plus one line a point: no more, no less
    assert b"9.5" not in everything  # written after the get: not seen, not torn in
    assert k0.startswith(b"ok\nk0 9.5 0\n")  # the next get sees it


class LateSnapshots(MemoryStore):
    """Fixes a snapshot's view only when :meth:`fix` is called, as a store that reads in a
    thread of its own (PostgreSQL) fixes it when its first chunk is read."""

    def __init__(self) -> None:
        super().__init__()
        self.unfixed: list[Future[None]] = []

    def snapshot(self, key: str | None = None) -> Snapshot:
        fixed: Future[None] = Future()
        self.unfixed.append(fixed)

        def pieces() -> Snapshot:
            yield fixed
            yield from MemoryStore.snapshot(self, key)  # the view, as of now

        return pieces()

    def fix(self) -> None:
        unfixed, self.unfixed = self.unfixed, []
        for fixed in unfixed:
            fixed.set_result(None)


@pytest.mark.parametrize("parser", sorted(PARSERS))
def test_the_requests_after_a_get_wait_until_its_snapshot_is_fixed(parser: str) -> None:
    store = LateSnapshots()
    store.put_many([("k", 1.0, 1)])
    session = ServerSession(store, parser=PARSERS[parser]())
    session.receive_data(b"get k\nput k 2 2\nput k 3 3\nget k\n")
    assert session.data_to_send() == b""
    assert session.waiting_for is store.unfixed[0]
    assert not session.wants_data
    assert len(store) == 1  # the puts wait: run now, the get would see them
    store.fix()
    assert session.data_to_send() == b"ok\nk 1.0 1\n\n"
    assert session.run_held_requests()
    assert session.data_to_send() == OK + OK
    assert len(store) == 3
    store.fix()
    assert drain(session) == b"ok\nk 1.0 1\nk 2.0 2\nk 3.0 3\n\n"
    assert session.wants_data


def test_a_line_over_the_limit_is_answered_and_ends_the_session() -> None:
    session = ServerSession(MemoryStore(), max_line=10)
    session.receive_data(b"put k 1 1\n" + b"x" * 11)
    session.receive_data(b"more\n")
    assert drain(session) == OK + ERROR
    assert session.finished


def test_end_of_stream_answers_what_came_before() -> None:
    session = ServerSession(MemoryStore())
    session.receive_data(b"put k 1 1\nget k\nput k 2")  # the unfinished line is dropped
    session.receive_data(b"")
    assert not session.wants_data
    assert drain(session) == OK + b"ok\nk 1.0 1\n\n"
    assert session.finished


def test_waiting_for_names_a_future_that_finished_after_data_to_send() -> None:
    # A durable store finishes in its own thread, so it may finish between the server's
    # data_to_send (pending then) and its look at waiting_for. The server must still be told
    # what to wait on, or nobody wakes it and the connection hangs (it did, once in two runs).
    store = LaterStore()
    session = ServerSession(store)
    session.receive_data(b"put k 1 1\nget k\n")
    assert session.data_to_send() == b""
    store.commit()
    assert session.waiting_for is not None
    assert session.data_to_send() == OK
    assert session.run_held_requests()
    assert session.data_to_send() == b"ok\nk 1.0 1\n\n"
    assert session.waiting_for is None


def test_why_wait_says_which_rule_holds_the_next_request_back() -> None:
    store = LaterStore()
    session = ServerSession(store)
    session.receive_data(b"put k 1 1\nget k\n")
    assert session.why_wait(GetRequest("k")) == "an earlier put is not stored yet"
    assert session.why_wait(PutRequest("k", 2.0, 2)) is None  # a put does not wait for it
    assert not session.wants_data  # the get is held back
    store.commit()
    assert drain(session) == OK + b"ok\nk 1.0 1\n\n"
    assert session.why_wait(GetRequest("k")) is None
    assert session.wants_data
