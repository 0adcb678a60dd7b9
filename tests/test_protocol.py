"""The wire format, sans-IO: every rule of PROTOCOL.md as a test vector.

Readers are fed each vector whole, byte by byte and with trailing data, as h11 does.
"""

from __future__ import annotations

import ast
import contextlib
import itertools
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import metrics_lab.protocol
from metrics_lab.protocol import (
    DEFAULT_MAX_LINE,
    NEED_DATA,
    Answer,
    AnswerReader,
    GetRequest,
    LineReader,
    MalformedAnswerError,
    PutRequest,
    RefusedRequestError,
    StreamEndedError,
    UnsendableRequestError,
    WrongCommandError,
    check_put_answer,
    encode_get,
    encode_points_answer,
    encode_put,
    parse_get_answer,
    parse_request,
)

WRONG = WrongCommandError

# (request line without "\n", what parse_request gives)
REQUESTS: list[tuple[bytes, object]] = [
    (b"put palm.cpu 10.5 1501864247", PutRequest("palm.cpu", 10.5, 1501864247)),
    (b"put palm.cpu 10.5 1501864247\r", PutRequest("palm.cpu", 10.5, 1501864247)),
    (b"put   palm.cpu  10.5   1501864247  ", PutRequest("palm.cpu", 10.5, 1501864247)),
    (b"  put palm.cpu 10.5 1501864247", PutRequest("palm.cpu", 10.5, 1501864247)),
    (b"put k 301 3", PutRequest("k", 301.0, 3)),
    (b"put k -1.5e-3 0", PutRequest("k", -0.0015, 0)),
    (b"put k .5 -7", PutRequest("k", 0.5, -7)),
    (b"put k 5. +7", PutRequest("k", 5.0, 7)),
    (b"put k 1 9223372036854775807", PutRequest("k", 1.0, 2**63 - 1)),
    (b"put k 1 -9223372036854775808", PutRequest("k", 1.0, -(2**63))),
    (b"put \xd1\x86\xd0\xbf\xd1\x83 1 1", PutRequest("цпу", 1.0, 1)),
    (b"put K 1 1", PutRequest("K", 1.0, 1)),
    (b"put *x 1 1", PutRequest("*x", 1.0, 1)),
    (b"get palm.cpu", GetRequest("palm.cpu")),
    (b"get *", GetRequest("*")),
    (b"get  *  \r", GetRequest("*")),
    (b"", None),
    (b"     ", None),
    (b"\r", None),
    (b"  \r", None),
    # Wrong commands: unknown or differently-cased command
    (b"got k", WRONG),
    (b"PUT k 1 1", WRONG),
    (b"Get k", WRONG),
    (b"putk 1 1", WRONG),
    (b"delete k", WRONG),
    # get without a key, or with more than one
    (b"get", WRONG),
    (b"get ", WRONG),
    (b"get a b", WRONG),
    (b"get wrong command test", WRONG),
    # put with fewer or more than three fields
    (b"put", WRONG),
    (b"put k", WRONG),
    (b"put k 1", WRONG),
    (b"put k 1 2 3", WRONG),
    # a value that is not a finite number
    (b"put k x 1", WRONG),
    (b"put k nan 1", WRONG),
    (b"put k NaN 1", WRONG),
    (b"put k inf 1", WRONG),
    (b"put k -inf 1", WRONG),
    (b"put k infinity 1", WRONG),
    (b"put k 1e999 1", WRONG),
    (b"put k 1_000 1", WRONG),
    (b"put k 0x10 1", WRONG),
    (b"put k 1.5\t 1", WRONG),
    (b"put k 1,5 1", WRONG),
    # a timestamp that is not an integer or does not fit in 64 bits
    (b"put k 1 1.5", WRONG),
    (b"put k 1 x", WRONG),
    (b"put k 1 1e3", WRONG),
    (b"put k 1 1_0", WRONG),
    (b"put k 1 9223372036854775808", WRONG),
    (b"put k 1 -9223372036854775809", WRONG),
    (b"put k 1 " + b"9" * 5000, WRONG),
    (b"put k 1 \t5", WRONG),
    # * or an undecodable byte sequence as a put key; whitespace inside a key
    (b"put * 1 1", WRONG),
    (b"put \xff\xfe 1 1", WRONG),
    (b"put a\tb 1 1", WRONG),
    (b"put a\x1b[31m 1 1", WRONG),
    (b"\t", WRONG),
]


@pytest.mark.parametrize(("line", "expected"), REQUESTS)
def test_parse_request(line: bytes, expected: object) -> None:
    if expected is WRONG:
        with pytest.raises(WrongCommandError):
            parse_request(line)
    else:
        assert parse_request(line) == expected


def test_get_with_undecodable_key_matches_nothing_rather_than_failing() -> None:
    request = parse_request(b"get \xff")
    assert isinstance(request, GetRequest)
    assert request.key != "*"


@given(st.binary(max_size=200))
def test_no_bytes_make_the_parser_raise_anything_but_wrong_command(line: bytes) -> None:
    with contextlib.suppress(WrongCommandError):
        parse_request(line.replace(b"\n", b""))


# --- LineReader: the same stream, cut every way ---------------------------------------

STREAM = b"put a 1 1\nget a\r\n\n   \nget *\nunfinished"
STREAM_LINES = [b"put a 1 1", b"get a\r", b"", b"   ", b"get *"]


def feed_lines(reader: LineReader, chunks: list[bytes]) -> list[bytes]:
    lines: list[bytes] = []
    for chunk in chunks:
        lines += reader.receive_data(chunk)
    return lines


@pytest.mark.parametrize(
    "chunks",
    [
        [STREAM],
        [bytes([byte]) for byte in STREAM],
        [STREAM[:3], STREAM[3:10], STREAM[10:11], STREAM[11:]],
    ],
    ids=["whole", "byte-by-byte", "uneven"],
)
def test_line_reader_returns_the_same_lines_however_the_stream_is_cut(chunks: list[bytes]) -> None:
    reader = LineReader()
    assert feed_lines(reader, chunks) == STREAM_LINES
    assert reader.pending == len(b"unfinished")
    assert reader.receive_data(b"\n") == [b"unfinished"]


@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=10))
def test_line_reader_splits_like_bytes_split(stream: bytes, cuts: list[int]) -> None:
    points = sorted({0, len(stream), *(cut for cut in cuts if cut <= len(stream))})
    chunks = [stream[a:b] for a, b in itertools.pairwise(points)]
    assert feed_lines(LineReader(), chunks) == stream.split(b"\n")[:-1]


def test_a_line_at_the_limit_is_accepted() -> None:
    reader = LineReader(max_line=10)
    assert reader.receive_data(b"x" * 10 + b"\n") == [b"x" * 10]
    assert not reader.too_long


def test_an_over_long_line_stops_the_reader_after_the_lines_before_it() -> None:
    reader = LineReader(max_line=10)
    assert reader.receive_data(b"get a\n" + b"x" * 11 + b"\nget b\n") == [b"get a"]
    assert reader.too_long
    assert reader.receive_data(b"get c\n") == []


@given(
    st.lists(st.integers(0, 40), min_size=1, max_size=30),
    st.integers(0, 30),
    st.integers(0, 39),
)
def test_a_block_is_cut_at_its_first_over_long_line_exactly(
    lengths: list[int], max_line: int, seed: int
) -> None:
    # Whole lines around the limit in one chunk, so that receive_block's check of a big block
    # (a find per window, not a split) meets every offset of a long line against its windows.
    lines = [bytes(b"abcdefghij"[(seed + i) % 10] for i in range(n)) for n in lengths]
    too_long = [index for index, line in enumerate(lines) if len(line) > max_line]
    kept = lines[: too_long[0]] if too_long else lines
    reader = LineReader(max_line)
    assert reader.receive_block(b"".join(line + b"\n" for line in lines)) == b"".join(
        line + b"\n" for line in kept
    )
    assert reader.too_long == bool(too_long)


def test_an_over_long_unfinished_line_is_dropped_as_it_grows() -> None:
    reader = LineReader()
    for _ in range(DEFAULT_MAX_LINE // 4096):
        assert reader.receive_data(b"x" * 4096) == []
    assert not reader.too_long
    reader.receive_data(b"x")
    assert reader.too_long
    assert reader.pending == 0


# --- encoding answers (server side) -----------------------------------------------------


def test_points_answer_matches_the_protocol_example() -> None:
    answer = encode_points_answer(
        [("eardrum.cpu", [1501864259], [15.3]), ("palm.cpu", [1501864247], [10.5])]
    )
    assert answer == b"ok\neardrum.cpu 15.3 1501864259\npalm.cpu 10.5 1501864247\n\n"


def test_empty_points_answer_is_ok_and_a_blank_line() -> None:
    assert encode_points_answer([]) == b"ok\n\n"


@pytest.mark.parametrize(
    ("value", "text"), [(10.5, b"10.5"), (2.0, b"2.0"), (1e-05, b"1e-05"), (301.0, b"301.0")]
)
def test_values_are_written_in_their_shortest_round_trip_form(value: float, text: bytes) -> None:
    assert encode_points_answer([("k", [1], [value])]) == b"ok\nk " + text + b" 1\n\n"


# --- encoding requests (client side) ----------------------------------------------------


@pytest.mark.parametrize(
    ("args", "wire"),
    [
        (("load", 301, 3), b"put load 301 3\n"),
        (("test", 0.5, 1), b"put test 0.5 1\n"),
        (("test", 2.0, 2), b"put test 2.0 2\n"),
        (("k", 1e-05, 0), b"put k 1e-05 0\n"),
        (("k", -3, -(2**63)), b"put k -3 -9223372036854775808\n"),
        (("цпу", 1.5, 1), "put цпу 1.5 1\n".encode()),
    ],
)
def test_encode_put(args: tuple[str, float, int], wire: bytes) -> None:
    assert encode_put(*args) == wire


def test_encode_put_falls_back_to_repr_for_numbers_that_print_oddly() -> None:
    from decimal import Decimal
    from fractions import Fraction

    assert encode_put("k", Fraction(1, 2), 1) == b"put k 0.5 1\n"  # type: ignore[arg-type]
    assert encode_put("k", Decimal("1.25"), 1) == b"put k 1.25 1\n"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("key", "value", "timestamp"),
    [
        ("", 1, 1),
        ("a b", 1, 1),
        ("a\nb", 1, 1),
        ("wrong command test\n", 1, 1),
        ("a\tb", 1, 1),
        ("*", 1, 1),
        ("k\ud800", 1, 1),
        (5, 1, 1),
        ("k", float("nan"), 1),
        ("k", float("inf"), 1),
        ("k", "1.5", 1),
        ("k", True, 1),
        ("k", None, 1),
        ("k", 1, 1.5),
        ("k", 1, "1"),
        ("k", 1, True),
        ("k", 1, 2**63),
    ],
)
def test_encode_put_refuses_what_would_break_the_wire(
    key: object, value: object, timestamp: object
) -> None:
    with pytest.raises(UnsendableRequestError):
        encode_put(key, value, timestamp)  # type: ignore[arg-type]


def test_encode_get() -> None:
    assert encode_get("*") == b"get *\n"
    assert encode_get("palm.cpu") == b"get palm.cpu\n"
    for bad in ["", "a b", "wrong command test\n", "x\r"]:
        with pytest.raises(UnsendableRequestError):
            encode_get(bad)


def test_invalid_request_messages_tell_the_learner_what_to_do() -> None:
    with pytest.raises(UnsendableRequestError, match="no spaces"):
        encode_put("my key", 1, 1)
    with pytest.raises(UnsendableRequestError, match=r"int\(time.time\(\)\)"):
        encode_put("k", 1, 1.5)  # type: ignore[arg-type]


# --- AnswerReader (client side) ---------------------------------------------------------

ANSWERS = b"ok\n\nok\ntest 0.5 1\ntest 0.4 2\n\nerror\nwrong command\n\nok\n"
EXPECTED_ANSWERS = [
    Answer("ok", ()),
    Answer("ok", ("test 0.5 1", "test 0.4 2")),
    Answer("error", ("wrong command",)),
]


def collect(reader: AnswerReader, chunks: list[bytes]) -> list[Answer]:
    answers = []
    for chunk in chunks:
        reader.receive_data(chunk)
        while (answer := reader.next_answer()) is not NEED_DATA:
            answers.append(answer)
    return answers


@pytest.mark.parametrize(
    "chunks",
    [[ANSWERS], [bytes([byte]) for byte in ANSWERS], [ANSWERS[:4], ANSWERS[4:5], ANSWERS[5:]]],
    ids=["whole", "byte-by-byte", "uneven"],
)
def test_answer_reader_finds_the_same_answers_however_the_stream_is_cut(
    chunks: list[bytes],
) -> None:
    reader = AnswerReader()
    assert collect(reader, chunks) == EXPECTED_ANSWERS
    assert reader.buffered == len(b"ok\n")  # the start of the next answer is kept


@given(st.lists(st.integers(1, 40), max_size=12))
def test_answer_reader_any_split(sizes: list[int]) -> None:
    chunks, rest = [], ANSWERS
    for size in sizes:
        chunks.append(rest[:size])
        rest = rest[size:]
    chunks.append(rest)
    non_empty = [chunk for chunk in chunks if chunk]  # b"" would mean the stream ended
    assert collect(AnswerReader(), non_empty) == EXPECTED_ANSWERS


def test_a_million_line_answer_is_read_whole() -> None:
    body = b"".join(b"k%d 1.5 %d\n" % (i % 1000, i) for i in range(1_000_000))
    reader = AnswerReader()
    for start in range(0, len(body), 256 * 1024):
        reader.receive_data((b"ok\n" if start == 0 else b"") + body[start : start + 256 * 1024])
        assert reader.next_answer() is NEED_DATA
    reader.receive_data(b"\n")
    answer = reader.next_answer()
    assert isinstance(answer, Answer)
    assert len(answer.lines) == 1_000_000
    points = parse_get_answer(answer)
    assert len(points) == 1000
    assert points["k7"][:2] == [(7, 1.5), (1007, 1.5)]


@pytest.mark.parametrize(
    "garbage", [b"HTTP/1.1 200 OK\r\n", b"OK\n\n", b"okay\n\n", b"\n\n", b"err\n\n", b"ok \n\n"]
)
def test_an_answer_that_is_not_ok_or_error_is_a_protocol_error(garbage: bytes) -> None:
    reader = AnswerReader()
    reader.receive_data(garbage)
    with pytest.raises(MalformedAnswerError):
        reader.next_answer()


def test_a_flood_without_blank_line_stops_at_the_size_bound() -> None:
    reader = AnswerReader(max_answer_size=1000)
    reader.receive_data(b"ok\n" + b"k 1 1\n" * 100)
    assert reader.next_answer() is NEED_DATA
    reader.receive_data(b"k 1 1\n" * 100)
    with pytest.raises(MalformedAnswerError, match="without ending"):
        reader.next_answer()


def test_non_utf8_answer_is_a_protocol_error() -> None:
    reader = AnswerReader()
    reader.receive_data(b"ok\n\xff 1 1\n\n")
    with pytest.raises(MalformedAnswerError, match="UTF-8"):
        reader.next_answer()


def test_end_of_stream_mid_answer_is_a_connection_error() -> None:
    reader = AnswerReader()
    reader.receive_data(b"ok\nk 1")
    reader.receive_data(b"")
    with pytest.raises(StreamEndedError, match="middle of an answer"):
        reader.next_answer()
    silent = AnswerReader()
    silent.receive_data(b"")
    with pytest.raises(StreamEndedError, match="before answering"):
        silent.next_answer()


# --- interpreting answers ---------------------------------------------------------------


def test_parse_get_answer_sorts_each_key_by_timestamp() -> None:
    answer = Answer("ok", ("test 0.5 1", "load 301 3", "test 0.4 0"))
    assert parse_get_answer(answer) == {"test": [(0, 0.4), (1, 0.5)], "load": [(3, 301.0)]}


def test_parse_get_answer_types() -> None:
    [(timestamp, value)] = parse_get_answer(Answer("ok", ("k 301 3",)))["k"]
    assert type(timestamp) is int
    assert type(value) is float


def test_empty_get_answer_is_an_empty_dict() -> None:
    assert parse_get_answer(Answer("ok", ())) == {}


@pytest.mark.parametrize("line", ["k 1", "k 1 2 3", "k x 1", "k 1 y", "k 1 1.5"])
def test_parse_get_answer_refuses_malformed_lines(line: str) -> None:
    with pytest.raises(MalformedAnswerError):
        parse_get_answer(Answer("ok", (line,)))


def test_error_answers_raise_request_rejected_with_the_servers_detail() -> None:
    with pytest.raises(RefusedRequestError) as caught:
        parse_get_answer(Answer("error", ("wrong command",)))
    assert caught.value.detail == "wrong command"
    with pytest.raises(RefusedRequestError):
        check_put_answer(Answer("error", ("wrong command",)))


def test_a_put_answer_with_data_lines_is_a_protocol_error() -> None:
    check_put_answer(Answer("ok", ()))
    with pytest.raises(MalformedAnswerError):
        check_put_answer(Answer("ok", ("k 1 1",)))


def test_the_wire_package_raises_its_own_errors_not_the_clients() -> None:
    """The arrow goes client -> protocol: the clients map protocol errors, never the reverse."""
    imported: set[str] = set()
    for path in Path(metrics_lab.protocol.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module is not None:
                imported.add(node.module)
                imported.update(f"{node.module}.{alias.name}" for alias in node.names)
    assert "metrics_lab.storage" in imported  # the walk sees the package's imports
    client_modules = {"metrics_lab.errors", "metrics_lab.client", "metrics_lab.async_client"}
    assert not imported & client_modules
