"""The fast path answers exactly as the simple one, and both as the plain reading of PROTOCOL.md.

The reference is the straightforward reading of PROTOCOL.md: split the stream into lines,
``parse_request`` each, run it against a dict model. Sessions with either parser (in memory),
the server (real sockets, either parser) and the fast parser's pieces
(:class:`~metrics_lab.fastpath.FastParser`, :meth:`LineReader.receive_block`) must agree with
it for random mixes of valid and invalid lines, fed whole and split at random points.
"""

from __future__ import annotations

import random
import socket

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from metrics_lab import MemoryStore, MetricsServer, serve_in_background
from metrics_lab.fastpath import FastParser, KeyCache
from metrics_lab.protocol import (
    ALL_KEYS,
    ERROR_ANSWER,
    OK_ANSWER,
    GetRequest,
    LineReader,
    PutRequest,
    WrongCommandError,
    encode_points_answer,
    parse_request,
)
from metrics_lab.session import ServerSession, SimpleParser
from metrics_lab.storage import PointBatch
from tests.conftest import cut_at_random


def parse_put_block(block: bytes) -> PointBatch | None:
    return FastParser().parse_put_block(block)


def parse_put_line(line: bytes) -> tuple[str, int, float] | None:
    batch = FastParser().parse_put_line(line)
    return None if batch is None else (batch.keys[0], batch.timestamps[0], batch.values[0])


def as_rows(batch: PointBatch) -> list[tuple[str, int, float]]:
    return list(zip(batch.keys, batch.timestamps, batch.values, strict=True))


VALID_PUTS = [
    b"put cpu 0.5 1",
    b"put cpu -2 2\r",
    b"put mem 1e3 -5",
    b"put a.b +.5 0",
    b"put cpu 1E+05 7",
    b"put cpu 1. 8",
    b"put cpu -0 +0",
    b"put \xd0\xba 2.5e-3 9",
    b"put put 1 2",
    b"put cpu 1 007",
    b"put cpu 1 999999999999999999\r",
    b"put cpu 1 -9223372036854775808",
]
OTHER_LINES = [
    b"get cpu",
    b"get *",
    b"get nothing",
    b"",
    b"   ",
    b"put  cpu 1 3",
    b"put cpu 1 3 ",
    b"put cpu nan 1",
    b"put cpu inf 1",
    b"put cpu 1e999 1",
    b"put cpu 1_0 1",
    b"put cpu 1 1.5",
    b"put * 1 1",
    b"put \xff 1 1",
    b"put c\tpu 1 1",
    b"put cpu 1 99999999999999999999",
    b"put cpu 1 -9223372036854775809",
    b"put cpu 1 9223372036854775807",
    b"put cpu 1 9223372036854775808",
    b"put cpu 1 \r",
    b"put cpu 1 +",
    b"PUT cpu 1 1",
    b"put cpu 1",
    b"got cpu",
    b"get",
    b"get a b",
    b"put cpu 1 2\r\r",
    b"put cpu 0x10 1",
    b"put cpu 1 " + b"9" * 5000,
    b"put k\r 1 1",
    b"put cpu 1.7976931348623157e308 7",
    # Lines whose fields would still line up four by four if the line breaks moved.
    b"put k 1 2 put",
    b"put 3 4",
    b"put",
    b"put put",
    b"put k 1 2 3",
    b"put k 1",
]
lines = st.sampled_from(VALID_PUTS + OTHER_LINES)


def reference_answers(stream_lines: list[bytes]) -> bytes:
    """The answers the protocol asks for, computed one line at a time."""
    model: dict[str, dict[int, float]] = {}
    answers = []
    for line in stream_lines:
        try:
            request = parse_request(line)
        except WrongCommandError:
            answers.append(ERROR_ANSWER)
            continue
        if request is None:
            continue
        if isinstance(request, PutRequest):
            model.setdefault(request.key, {})[request.timestamp] = request.value
            answers.append(OK_ANSWER)
            continue
        names = sorted(model) if request.key == ALL_KEYS else [request.key]
        series = [
            (name, sorted(model[name]), [model[name][t] for t in sorted(model[name])])
            for name in names
            if name in model
        ]
        answers.append(encode_points_answer(series))
    return b"".join(answers)


@settings(max_examples=300, deadline=None)
@given(st.lists(lines, max_size=20))
def test_put_block_parses_exactly_like_parse_request(block_lines: list[bytes]) -> None:
    block = b"".join(line + b"\n" for line in block_lines)
    batch = parse_put_block(block)
    if block_lines and all(line in VALID_PUTS for line in block_lines):
        assert batch is not None  # the common shape must take the fast path
    if batch is None:
        return  # the slow path decides, line by line
    # Whatever the fast path accepts, parse_request accepts line by line, with the same result.
    expected = [parse_request(line) for line in block_lines]
    assert all(isinstance(request, PutRequest) for request in expected)
    assert as_rows(batch) == [
        (r.key, r.timestamp, r.value) for r in expected if isinstance(r, PutRequest)
    ]


RAW_KEYS = [b"cpu", b"mem", b"\xd0\xba", b"*", b"\xff", b"a\x01"]
RAW_VALUES = [b"0.5", b"-1e3", b"1e999", b"nan", b"1.2.3"]
RAW_TIMESTAMPS = [b"1", b"-9223372036854775808", b"9223372036854775807", b"9223372036854775808"]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(RAW_KEYS), min_size=1, max_size=3, unique=True),
    st.integers(4, 30),
    st.data(),
)
def test_put_block_of_keys_coming_round_parses_exactly_like_parse_request(
    names: list[bytes], count: int, data: st.DataObject
) -> None:
    # The fast path checks such a block's keys once a round: a bad key, value or timestamp
    # anywhere still sends the whole block to the line parse.
    fields = st.tuples(st.sampled_from(RAW_VALUES), st.sampled_from(RAW_TIMESTAMPS))
    rows = data.draw(st.lists(fields, min_size=count, max_size=count))
    block_lines = [
        b"put %s %s %s" % (names[index % len(names)], value, timestamp)
        for index, (value, timestamp) in enumerate(rows)
    ]
    batch = parse_put_block(b"".join(line + b"\n" for line in block_lines))
    expected = [_parse_or_none(line) for line in block_lines]
    if not all(isinstance(request, PutRequest) for request in expected):
        assert batch is None
        return
    assert batch is not None
    assert as_rows(batch) == [
        (r.key, r.timestamp, r.value) for r in expected if isinstance(r, PutRequest)
    ]


FIELDS = [b"put", b"get", b"k", b"1", b"2.5", b"-3"]
ODD_SEPARATORS = (b"  ", b"\t", b"\r", b"\x0b")  # all but the one space a line has
SEPARATORS = [b" "] * 4 + list(ODD_SEPARATORS)
near_lines = st.lists(
    st.tuples(st.sampled_from(SEPARATORS), st.sampled_from(FIELDS)), min_size=1, max_size=6
).map(lambda parts: parts[0][1] + b"".join(sep + field for sep, field in parts[1:]))


@settings(max_examples=1000, deadline=None)
@given(st.lists(near_lines, min_size=1, max_size=6))
@example([b"put k 1 2 put", b"put 1 2"])
@example([b"put k 1", b"2 put k 3 4"])
@example([b"put k 1 2", b"put", b"put k 1 2 put 1 2"])
def test_put_block_never_accepts_what_the_line_parse_refuses(block_lines: list[bytes]) -> None:
    # Lines of one to six fields: blocks whose fields still line up four by four although
    # the line breaks are in the wrong places ("put k 1 2 put" then "put 3 4").
    block = b"".join(line + b"\n" for line in block_lines)
    batch = parse_put_block(block)
    expected = [_parse_or_none(line) for line in block_lines]
    canonical = not any(odd in block for odd in ODD_SEPARATORS)
    if canonical and all(isinstance(request, PutRequest) for request in expected):
        assert batch is not None  # single spaces, valid puts: the fast path takes it
    if batch is None:
        return
    assert all(isinstance(request, PutRequest) for request in expected), block
    assert as_rows(batch) == [
        (r.key, r.timestamp, r.value) for r in expected if isinstance(r, PutRequest)
    ]


@settings(max_examples=1000, deadline=None)
@given(near_lines, st.sampled_from([b"\n", b"\r\n", b"\r\r\n", b""]))
def test_put_line_never_accepts_what_the_line_parse_refuses(line: bytes, end: bytes) -> None:
    point = parse_put_line(line + end)
    request = _parse_or_none(line + end.removesuffix(b"\n"))
    if end in (b"\n", b"\r\n") and isinstance(request, PutRequest) and b"  " not in line:
        assert point is not None  # single spaces, a valid put: the fast path takes it
    if point is not None:
        assert isinstance(request, PutRequest)
        assert point == (request.key, request.timestamp, request.value)


def _parse_or_none(line: bytes) -> PutRequest | GetRequest | None:
    try:
        return parse_request(line)
    except WrongCommandError:
        return None


@pytest.mark.parametrize("line", VALID_PUTS + OTHER_LINES)
def test_put_line_parses_exactly_like_parse_request(line: bytes) -> None:
    point = parse_put_line(line + b"\n")
    if line in VALID_PUTS:
        assert point is not None
    if point is not None:
        request = parse_request(line)
        assert isinstance(request, PutRequest)
        assert point == (request.key, request.timestamp, request.value)


@settings(max_examples=200, deadline=None)
@given(st.lists(lines, max_size=20), st.randoms(use_true_random=False))
def test_receive_block_gives_the_same_lines_however_split(
    block_lines: list[bytes], rnd: random.Random
) -> None:
    stream = b"".join(line + b"\n" for line in block_lines) + b"put unfinished"
    reader = LineReader(max_line=64)
    whole_reader = LineReader(max_line=64)
    whole = whole_reader.receive_data(stream)
    got: list[bytes] = []
    position = 0
    while position < len(stream):
        step = rnd.randint(1, 40)
        block = reader.receive_block(stream[position : position + step])
        assert block == b"" or block.endswith(b"\n")
        got.extend(block.split(b"\n")[:-1])
        position += step
    assert got == whole
    assert reader.too_long == whole_reader.too_long


def _exchange(port: int, chunks: list[bytes], expected_size: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for chunk in chunks:
            sock.sendall(chunk)
        received = b""
        while len(received) < expected_size:
            data = sock.recv(65536)
            if not data:
                break
            received += data
        return received


def random_stream(seed: int) -> tuple[bytes, list[bytes], bytes]:
    """A random stream of requests, the same cut into chunks at random, and its answers."""
    rnd = random.Random(seed)
    stream_lines = [rnd.choice(VALID_PUTS + OTHER_LINES) for _ in range(rnd.randint(1, 400))]
    # Long runs of valid puts, as a pipelining client sends them, exercise the fast path.
    stream_lines += [f"put k{i % 7} {i / 4} {i}".encode() for i in range(rnd.randint(0, 900))]
    rnd.shuffle(stream_lines)
    stream_lines.append(b"get *")
    stream = b"".join(line + b"\n" for line in stream_lines)
    expected = reference_answers(stream_lines)
    return stream, cut_at_random(stream, rnd, rnd.randint(0, 30)), expected


@pytest.mark.parametrize("parser", ["simple", "fast"])
@pytest.mark.parametrize("seed", range(6))
def test_server_answers_as_the_reference_for_random_streams(seed: int, parser: str) -> None:
    stream, chunks, expected = random_stream(seed)
    with serve_in_background(parser=parser) as server:
        assert _exchange(server.port, [stream], len(expected)) == expected
    with serve_in_background(parser=parser) as server:
        assert _exchange(server.port, chunks, len(expected)) == expected


def run_session(parser: SimpleParser, chunks: list[bytes]) -> tuple[bytes, list[object]]:
    """Feed ``chunks`` to a fresh in-memory session; return its answers and its store's data."""
    store = MemoryStore()
    session = ServerSession(store, parser=parser)
    answers = []
    for chunk in chunks:
        session.receive_data(chunk)
        answers.append(session.data_to_send(limit=1 + len(chunk) % 5000))
        session.run_held_requests()
    session.receive_data(b"")
    while not session.finished:
        session.run_held_requests()
        answers.append(session.data_to_send())
    return b"".join(answers), list(store.read())


@pytest.mark.parametrize("seed", range(40))
def test_simple_and_fast_sessions_agree_with_the_reference(seed: int) -> None:
    stream, chunks, expected = random_stream(seed)
    simple = run_session(SimpleParser(), chunks)
    fast = run_session(FastParser(KeyCache(limit=300)), chunks)  # a small cache starts over
    assert simple[0] == expected
    assert fast == simple  # byte-identical answers, equal stores
    assert run_session(FastParser(), [stream]) == simple


@settings(max_examples=300, deadline=None)
@given(st.lists(lines | near_lines, max_size=40), st.randoms(use_true_random=False))
def test_simple_and_fast_sessions_agree_on_any_stream(
    stream_lines: list[bytes], rnd: random.Random
) -> None:
    stream = b"".join(line + b"\n" for line in stream_lines) + b"get *\n"
    chunks = cut_at_random(stream, rnd, rnd.randint(0, 8))
    simple = run_session(SimpleParser(), chunks)
    assert simple[0] == reference_answers([*stream_lines, b"get *"])
    assert run_session(FastParser(), chunks) == simple
    assert run_session(FastParser(), [stream]) == simple


def test_the_key_cache_is_bounded_in_bytes_not_in_keys() -> None:
    parser = FastParser(KeyCache(limit=1 << 20))
    for i in range(100):  # 100 keys of 60 KiB: 12 MB if kept
        key = b"%d" % i + b"k" * 60_000
        assert parser.parse_put_line(b"put " + key + b" 1 1\n") is not None
        assert parser.key_cache.size <= 1 << 20


def test_each_server_owns_its_key_cache() -> None:
    first, second = MetricsServer(), MetricsServer()
    assert isinstance(first.parser, FastParser)
    assert isinstance(second.parser, FastParser)
    assert first.parser.key_cache is not second.parser.key_cache
