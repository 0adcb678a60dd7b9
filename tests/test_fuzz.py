"""Property-based and stateful tests: a real server fed random bytes and request mixes.

The oracle is written here, independently of :mod:`metrics_lab.protocol`: a dict as the model
of the store, and the answers spelled out from ``docs/PROTOCOL.md``. The server must never
die, must answer every non-empty line exactly once, and must end up holding the model.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from metrics_lab import BackgroundServer, Client, serve_in_background

TIMEOUT = 10.0
ERROR = b"error\nwrong command\n\n"
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Model = dict[str, dict[int, float]]


def send_in_chunks(sock: socket.socket, data: bytes, cuts: list[int]) -> None:
    start = 0
    for cut in sorted({c % (len(data) + 1) for c in cuts}):
        sock.sendall(data[start:cut])
        start = cut
    sock.sendall(data[start:])


def read_all(sock: socket.socket) -> bytes:
    """Half-close, then read until the server closes: every answer due, nothing else."""
    sock.shutdown(socket.SHUT_WR)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def split_answers(data: bytes) -> list[bytes]:
    """Answers end at the first blank line; data lines are never empty."""
    answers = []
    while data:
        end = data.index(b"\n\n") + 2
        answers.append(data[:end])
        data = data[end:]
    return answers


def answered(line: bytes) -> bool:
    """Whether the protocol owes ``line`` an answer (empty or spaces-only lines get none)."""
    if line.endswith(b"\r"):
        line = line[:-1]
    return line.strip(b" ") != b""


def assert_alive(server: BackgroundServer) -> None:
    with Client(*server.address, timeout=TIMEOUT) as client:
        client.put("alive", 1, 1)
        assert client.get("alive") == {"alive": [(1, 1.0)]}


# --- random bytes ----------------------------------------------------------------------------

line_bytes = st.one_of(
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b" ")),
    st.sampled_from([b"", b" ", b"\r", b"  \r", b"get", b"put", b"get *", b"put a 1 1", b"\x00"]),
    st.lists(
        st.sampled_from([b"put", b"get", b"a", b"*", b"1", b"-2", b"1.5", b"\xff", b"\r"])
    ).map(b" ".join),
)


@FUZZ
@given(
    lines=st.lists(line_bytes, max_size=30),
    tail=st.binary(max_size=20).map(lambda b: b.replace(b"\n", b"")),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=8),
)
def test_random_bytes_get_one_answer_per_line_and_never_kill_the_server(
    lines: list[bytes], tail: bytes, cuts: list[int]
) -> None:
    with serve_in_background() as server:
        with socket.create_connection(server.address, timeout=TIMEOUT) as sock:
            send_in_chunks(sock, b"".join(line + b"\n" for line in lines) + tail, cuts)
            answers = split_answers(read_all(sock))
        assert len(answers) == sum(answered(line) for line in lines)
        for answer in answers:
            assert answer == ERROR or answer.startswith(b"ok\n")
        assert_alive(server)


# --- random request mixes against a model ---------------------------------------------------

keys = st.one_of(
    st.sampled_from(["cpu", "mem", "web1.cpu", "ключ", "CPU"]),
    st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=6).filter(
        lambda k: k != "*"
    ),
)
values = st.floats(allow_nan=False, allow_infinity=False)
timestamps = st.one_of(st.integers(0, 4), st.integers(-(2**63), 2**63 - 1))
INVALID = [
    b"PUT cpu 1 1",
    b"got cpu",
    b"get",
    b"get a b",
    b"put cpu 1",
    b"put cpu 1 1 1",
    b"put cpu nan 1",
    b"put cpu inf 1",
    b"put cpu 1 1.5",
    b"put cpu 1_0 1",
    b"put * 1 1",
    b"put cpu 1 99999999999999999999",
    b"put \xff 1 1",
    b"\tput cpu 1 1",
]


@dataclass
class Put:
    key: str
    value: float
    timestamp: int


@dataclass
class Get:
    key: str


@dataclass
class Bad:
    line: bytes


requests = st.one_of(
    st.builds(Put, keys, values, timestamps),
    st.builds(Get, st.one_of(keys, st.just("*"))),
    st.builds(Bad, st.sampled_from(INVALID)),
)


def wire(request: Put | Get | Bad) -> bytes:
    if isinstance(request, Put):
        return f"put {request.key} {request.value!r} {request.timestamp}\n".encode()
    if isinstance(request, Get):
        return f"get {request.key}\n".encode()
    return request.line + b"\n"


@dataclass
class ModelStore:
    points: Model = field(default_factory=dict)

    def answer(self, request: Put | Get | Bad) -> bytes:
        if isinstance(request, Bad):
            return ERROR
        if isinstance(request, Put):
            self.points.setdefault(request.key, {})[request.timestamp] = request.value
            return b"ok\n\n"
        wanted = sorted(self.points) if request.key == "*" else [request.key]
        lines = [
            f"{key} {value!r} {timestamp}\n"
            for key in wanted
            for timestamp, value in sorted(self.points.get(key, {}).items())
        ]
        return ("ok\n" + "".join(lines) + "\n").encode()

    def as_read(self) -> list[tuple[str, list[int], list[float]]]:
        return [
            (key, sorted(series), [series[t] for t in sorted(series)])
            for key, series in sorted(self.points.items())
        ]


def stored(server: BackgroundServer) -> list[tuple[str, list[int], list[float]]]:
    return [(s.key, list(s.timestamps), list(s.values)) for s in server.store.read()]


@FUZZ
@given(
    batch=st.lists(requests, max_size=40),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=8),
)
def test_request_mix_answers_exactly_and_store_equals_model(
    batch: list[Put | Get | Bad], cuts: list[int]
) -> None:
    model = ModelStore()
    expected = [model.answer(request) for request in batch]
    with serve_in_background() as server:
        with socket.create_connection(server.address, timeout=TIMEOUT) as sock:
            send_in_chunks(sock, b"".join(map(wire, batch)), cuts)
            assert split_answers(read_all(sock)) == expected
        assert stored(server) == model.as_read()
        assert_alive(server)


# --- stateful: one long-lived server, many connections, a client that gets errors --------------


class ServerMachine(RuleBasedStateMachine):
    """Several clients and raw peers take turns; the store must always equal the model."""

    def __init__(self) -> None:
        super().__init__()
        self.server = serve_in_background()
        self.client = Client(*self.server.address, timeout=TIMEOUT)
        self.model = ModelStore()
        self.raw: socket.socket | None = None

    @rule(key=keys, value=values, timestamp=timestamps)
    def put(self, key: str, value: float, timestamp: int) -> None:
        self.client.put(key, value, timestamp)
        self.model.answer(Put(key, value, timestamp))

    @rule(points=st.lists(st.tuples(keys, values, timestamps), max_size=20))
    def put_many(self, points: list[tuple[str, float, int]]) -> None:
        self.client.put_many(points)
        for key, value, timestamp in points:
            self.model.answer(Put(key, value, timestamp))

    @rule(key=st.one_of(keys, st.just("*")))
    def get(self, key: str) -> None:
        expected = self.model.points if key == "*" else {key: self.model.points.get(key, {})}
        want = {k: sorted(v.items()) for k, v in expected.items() if v}
        assert self.client.get(key) == want

    @rule(batch=st.lists(requests, min_size=1, max_size=10))
    def raw_pipeline(self, batch: list[Put | Get | Bad]) -> None:
        if self.raw is None:
            self.raw = socket.create_connection(self.server.address, timeout=TIMEOUT)
        expected = b"".join(self.model.answer(request) for request in batch)
        self.raw.sendall(b"".join(map(wire, batch)))
        data = b""
        while len(data) < len(expected):
            chunk = self.raw.recv(65536)
            assert chunk
            data += chunk
        assert data == expected

    @precondition(lambda self: self.raw is not None)
    @rule(junk=st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")))
    def raw_leaves_mid_line(self, junk: bytes) -> None:
        assert self.raw is not None
        self.raw.sendall(junk)
        self.raw.close()
        self.raw = None

    @invariant()
    def store_equals_model(self) -> None:
        assert [(s.key, list(s.timestamps), list(s.values)) for s in self.server.store.read()] == (
            self.model.as_read()
        )

    def teardown(self) -> None:
        if self.raw is not None:
            self.raw.close()
        self.client.close()
        self.server.stop()


ServerMachine.TestCase.settings = settings(max_examples=15, stateful_step_count=25, deadline=None)
TestServerMachine = ServerMachine.TestCase
