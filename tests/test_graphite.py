"""Graphite plaintext ingest: the line table fed every way, a real port, and a real agent.

The reader and the session are tested in memory, as the main protocol's are; the port over
real sockets on 127.0.0.1; and the last test runs Debian's collectd (write_graphite) against
a server started here. An agent never gets a reply, so a test knows that the server has
read everything when the server closes the connection after the test's own end of stream:
a Graphite connection ends once the store has answered for every point it received.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from metrics_lab import BackgroundServer, Client, MetricsServer, serve_in_background
from metrics_lab.cli import main
from metrics_lab.graphite import (
    GraphiteIngest,
    GraphiteLineError,
    GraphiteReader,
    parse_graphite_line,
)
from metrics_lab.session import MAX_UNSTORED_POINTS
from metrics_lab.sqlite_store import SQLiteStore
from metrics_lab.storage import MemoryStore
from tests.conftest import TIMEOUT, wait_until
from tests.later_store import LaterStore
from tests.serve_process import ServeProcess
from tests.test_durable_commit import fill_to_the_last_page

NOW = 1_796_514_933

GOOD_LINES = [
    (
        b"collectd.web1.load.load.shortterm 0.49755859375 1796514933",
        ("collectd.web1.load.load.shortterm", 0.49755859375, NOW),
    ),
    (
        b"collectd.web1.memory.memory-used 94470144 1796514933",
        ("collectd.web1.memory.memory-used", 94470144.0, NOW),
    ),
    (b"a.b 1.5 1796514933.9", ("a.b", 1.5, NOW)),  # carbon reads floats: truncated
    (b"a.b 1.5 1.7965149339e9", ("a.b", 1.5, NOW)),
    (b"a.b -2e3 -5.9", ("a.b", -2000.0, -5)),  # toward zero
    (b"  a.b\t1   1796514933 \r", ("a.b", 1.0, NOW)),  # any whitespace, a trailing \r
    (b"web;host=1;dc=x 3 1796514933", ("web;host=1;dc=x", 3.0, NOW)),  # a tagged path
    (b"caf\xc3\xa9.temp 21 1796514933", ("caf\u00e9.temp", 21.0, NOW)),
    (b"a.b 1 9223372036854775807", ("a.b", 1.0, 2**63 - 1)),  # exact, not rounded by float
]

SKIPPED_LINES = [b"", b"   \r", b"a.b nan 1796514933", b"a.b NaN 1796514933"]

BAD_LINES = [
    (b"a.b 1796514933", "2 field(s)"),
    (b"a.b 1 2 3", "4 field(s)"),
    (b"put a.b 1 2", "4 field(s)"),
    (b"a.b x 1796514933", "not a number"),
    (b"a.b inf 1796514933", "not finite"),
    (b"a.b 1 x", "not a number"),
    (b"a.b 1 inf", "not finite"),
    (b"a.b 1 nan", "not finite"),
    (b"a.b 1 9223372036854775808", "64 bits"),
    (b"a.b 1 1e30", "64 bits"),
    (b"* 1 1796514933", "cannot be a key"),
    (b"a\x01b 1 1796514933", "cannot be a key"),
    (b"\xff.b 1 1796514933", "not UTF-8"),
]


def clock() -> float:
    return 7.9


@pytest.mark.parametrize(("line", "point"), GOOD_LINES)
def test_a_good_line_is_a_point(line: bytes, point: tuple[str, float, int]) -> None:
    assert parse_graphite_line(line, clock) == point


def test_a_timestamp_of_minus_one_is_now_as_carbon_reads_it() -> None:
    assert parse_graphite_line(b"a.b 1 -1", clock) == ("a.b", 1.0, 7)
    assert parse_graphite_line(b"a.b 1 -1.5", clock) == ("a.b", 1.0, 7)  # truncated first


@pytest.mark.parametrize("line", SKIPPED_LINES)
def test_blank_lines_and_nan_values_are_skipped_as_carbon_skips_them(line: bytes) -> None:
    assert parse_graphite_line(line, clock) is None


@pytest.mark.parametrize(("line", "reason"), BAD_LINES)
def test_a_bad_line_is_refused_with_the_reason(line: bytes, reason: str) -> None:
    with pytest.raises(GraphiteLineError, match=re.escape(reason)):
        parse_graphite_line(line, clock)


def stream() -> tuple[bytes, list[tuple[str, int, float]], int]:
    """Every line of the tables, good and bad interleaved: the bytes, the points, the refusals."""
    lines: list[bytes] = []
    for (good, _), (bad, _) in zip(GOOD_LINES, BAD_LINES, strict=False):
        lines += [good, bad]
    lines += SKIPPED_LINES
    data = b"".join(line + b"\n" for line in lines)
    # As a PointBatch gives them: (key, timestamp, value), the storage side's column order.
    rows = [(key, timestamp, value) for _, (key, value, timestamp) in GOOD_LINES]
    return data, rows, len(GOOD_LINES)


def feed(reader: GraphiteReader, chunks: Iterator[bytes]) -> tuple[list[object], int]:
    points: list[object] = []
    refused = 0
    for chunk in chunks:
        received = reader.receive_data(chunk)
        points += list(received.points)
        refused += len(received.refused)
    return points, refused


def test_the_reader_gives_the_same_points_however_the_stream_is_cut() -> None:
    data, points, refused = stream()
    whole = feed(GraphiteReader(clock=clock), iter([data]))
    assert whole == (points, refused)
    by_byte = feed(GraphiteReader(clock=clock), (data[i : i + 1] for i in range(len(data))))
    assert by_byte == whole
    for cut in range(len(data)):
        assert feed(GraphiteReader(clock=clock), iter([data[:cut], data[cut:]])) == whole


def test_the_reader_stops_at_a_line_over_the_limit_and_keeps_what_came_before() -> None:
    reader = GraphiteReader(max_line=40)
    received = reader.receive_data(b"a.b 1 1\n" + b"x" * 41)
    assert list(received.points) == [("a.b", 1, 1.0)]
    assert reader.too_long
    assert list(reader.receive_data(b"\na.b 2 2\n").points) == []


# --- the session, in memory --------------------------------------------------------------


def test_a_session_never_answers_and_stores_what_it_reads() -> None:
    store = MemoryStore()
    ingest = GraphiteIngest(store)
    session = ingest.session()
    session.receive_data(b"a.b 1 1\nnot a line at all\na.b 2")
    session.receive_data(b" 2\n")
    assert session.data_to_send() == b""
    assert store.read("a.b")[0].values == [1.0, 2.0]
    assert ingest.refused_lines.total == 1
    assert session.wants_data
    assert session.waiting_for is None
    session.receive_data(b"")
    assert session.finished
    ingest.close()


def test_a_session_waits_for_a_slow_store_and_counts_what_it_refuses() -> None:
    store = LaterStore()
    ingest = GraphiteIngest(store)
    session = ingest.session()
    many = b"".join(b"k%d 1 1\n" % n for n in range(MAX_UNSTORED_POINTS))
    session.receive_data(many)
    assert not session.wants_data  # the server stops reading until the store catches up
    waited = session.waiting_for
    assert waited is store.pending[0][1]
    store.commit(OSError("disk full"))
    assert session.data_to_send() == b""
    assert session.wants_data
    assert session.waiting_for is None
    assert ingest.unstored.total == MAX_UNSTORED_POINTS
    session.receive_data(b"k 1 1\n")
    session.receive_data(b"")
    assert not session.finished  # the peer is done, the store is not
    assert session.waiting_for is store.pending[0][1]
    store.commit()
    session.data_to_send()
    assert session.finished
    assert ingest.unstored.total == MAX_UNSTORED_POINTS
    ingest.close()


# --- a real port ---------------------------------------------------------------------------


@pytest.fixture
def graphite_server() -> Iterator[BackgroundServer]:
    with serve_in_background(graphite_port=0, max_line=200) as running:
        yield running


def ingest_of(background: BackgroundServer) -> GraphiteIngest:
    """The server's Graphite counts."""
    server = background.server
    assert isinstance(server, MetricsServer)
    assert server.graphite is not None
    return server.graphite


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closed ``sock`` (with a FIN, or a reset for a connection it refused)
    without sending anything."""
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


def send_and_finish(address: tuple[str, int], *chunks: bytes) -> None:
    """Send ``chunks`` one ``sendall`` each, end the stream, and wait until the server has
    read it all (it closes its side once every point is stored)."""
    with socket.create_connection(address, timeout=TIMEOUT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for chunk in chunks:
            sock.sendall(chunk)
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(100) == b""  # no reply ever, only the close


def test_lines_cut_at_every_byte_read_back_with_get(graphite_server: BackgroundServer) -> None:
    data = b"web1.cpu 0.5 1796514933.75\r\nweb1.cpu 0.25 1796514934\nweb1.mem 1e9 1796514933\n"
    send_and_finish(graphite_server.graphite_address, *(bytes([byte]) for byte in data))
    with Client(*graphite_server.address, timeout=TIMEOUT) as client:
        assert client.get("*") == {
            "web1.cpu": [(NOW, 0.5), (NOW + 1, 0.25)],
            "web1.mem": [(NOW, 1e9)],
        }


def test_bad_lines_are_counted_logged_and_the_connection_goes_on(
    graphite_server: BackgroundServer, caplog: pytest.LogCaptureFixture
) -> None:
    data, points, refused = stream()
    caplog.set_level(logging.WARNING, logger="metrics_lab.graphite")
    with socket.create_connection(graphite_server.graphite_address, timeout=TIMEOUT) as sock:
        sock.sendall(data)
        sock.sendall(b"after.bad 1 1\n")  # a later segment: the connection is still read
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(100) == b""
    with Client(*graphite_server.address, timeout=TIMEOUT) as client:
        stored = client.get("*")
    expected: dict[str, dict[int, float]] = {"after.bad": {1: 1.0}}
    for key, timestamp, value in points:
        expected.setdefault(key, {})[timestamp] = value  # last write wins, as for put
    assert stored == {key: sorted(series.items()) for key, series in expected.items()}
    assert ingest_of(graphite_server).refused_lines.total == refused
    graphite_server.stop()  # logs what was counted and not logged yet
    lines = [r.getMessage() for r in caplog.records if r.name == "metrics_lab.graphite"]
    assert len(lines) == 2, lines  # the first at once, the rest in one summary
    assert lines[0].startswith("Graphite: refused 1 line(s); the last: b'a.b 1796514933'")
    assert lines[1].startswith(f"Graphite: refused {refused - 1} line(s)")


def test_a_line_over_the_limit_closes_the_connection_after_storing_what_came_before(
    graphite_server: BackgroundServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="metrics_lab.graphite")
    with socket.create_connection(graphite_server.graphite_address, timeout=TIMEOUT) as sock:
        sock.sendall(b"before 1 1\n" + b"x" * 300 + b" 1 1\nafter 1 1\n")
        assert sock.recv(100) == b""  # closed by the server: we never ended the stream
    with Client(*graphite_server.address, timeout=TIMEOUT) as client:
        assert client.get("*") == {"before": [(1, 1.0)]}
    assert "a line over 200 bytes; closing the connection" in caplog.text


def test_the_port_shares_the_connection_limit_and_the_deadlines() -> None:
    with (
        serve_in_background(graphite_port=0, max_connections=1) as server,
        socket.create_connection(server.address, timeout=TIMEOUT) as client,
    ):
        client.sendall(b"get *\n")
        assert client.recv(100) == b"ok\n\n"  # answered: this connection holds the one place
        with socket.create_connection(server.graphite_address, timeout=TIMEOUT) as agent:
            # Both ports count together: the newcomer is served, the quieter one makes room.
            assert closed_by_server(client)
            send_and_finish(server.graphite_address, b"after 1 1\n")
            assert closed_by_server(agent)  # the quietest again, for that last connection
        with Client(*server.address, timeout=TIMEOUT) as reader:
            assert reader.get("after") == {"after": [(1, 1.0)]}
    with (
        serve_in_background(graphite_port=0, idle_timeout=0.2) as server,
        socket.create_connection(server.graphite_address, timeout=TIMEOUT) as quiet,
    ):
        assert closed_by_server(quiet)  # by the idle timer
    with (
        serve_in_background(graphite_port=0, line_timeout=0.2) as server,
        socket.create_connection(server.graphite_address, timeout=TIMEOUT) as half,
    ):
        half.sendall(b"whole 1 1\nhal")
        assert closed_by_server(half)  # a line left unfinished, as on the main port
        with Client(*server.address, timeout=TIMEOUT) as reader:
            assert reader.get("*") == {"whole": [(1, 1.0)]}


def test_the_port_reads_again_once_a_slow_store_catches_up() -> None:
    # With MAX_UNSTORED_POINTS of its points pending, the server stops reading from the agent;
    # when the store's future wakes it and the session wants data again, it reads on.
    store = LaterStore()
    total = 2 * MAX_UNSTORED_POINTS  # more than the server reads before it stops reading
    lines = b"".join(b"k %d %d\n" % (n, n) for n in range(total))
    with (
        serve_in_background(store=store, graphite_port=0) as server,
        socket.create_connection(server.graphite_address, timeout=TIMEOUT) as agent,
    ):
        sender = threading.Thread(target=agent.sendall, args=(lines,))
        sender.start()
        wait_until(
            lambda: store.points_written >= MAX_UNSTORED_POINTS,
            "the server has read what it may before the store answers",
        )
        assert MAX_UNSTORED_POINTS <= store.points_written < total
        store.open = True
        store.commit()  # as a durable store does, from a thread of its own
        sender.join(TIMEOUT)
        agent.shutdown(socket.SHUT_WR)
        assert agent.recv(100) == b""  # closed: the store has answered for every point
    assert store.points_written == total


def test_points_the_store_refuses_are_counted(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "metrics.db", max_size_bytes=256 * 1024)
    try:
        with serve_in_background(store=store, graphite_port=0) as server:
            fill_to_the_last_page(server.address)  # a full disk: not even one more point fits
            send_and_finish(server.graphite_address, b"a.b 1 1\na.b 2 2\n", b"a.b 3 3\n")
            assert ingest_of(server).unstored.total == 3
            with Client(*server.address, timeout=TIMEOUT) as client:
                assert client.get("a.b") == {}
    finally:
        store.max_size_bytes = None  # room again, for the fold at close
        store.close()


def test_serve_takes_graphite_lines_on_the_port_it_is_given() -> None:
    with ServeProcess("--graphite-port", "0") as server:
        line = server.wait_for_log("serving Graphite plaintext on")
        port = int(line.rsplit(":", 1)[1])
        send_and_finish((server.address[0], port), b"from.cli 2.5 1796514933\n")
        with Client(*server.address, timeout=TIMEOUT) as client:
            assert client.get("from.cli") == {"from.cli": [(NOW, 2.5)]}


@pytest.mark.parametrize("port", ["70000", "-1", "x"])
def test_a_graphite_port_that_is_no_port_is_a_usage_error(
    port: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--graphite-port", port])
    assert exit_.value.code == 2
    assert "--graphite-port" in capsys.readouterr().err


def test_a_graphite_port_in_use_says_which_port() -> None:
    with serve_in_background() as taken, pytest.raises(OSError, match="Graphite") as failure:
        serve_in_background(graphite_port=taken.port)
    assert str(taken.port) in str(failure.value)


# --- a real agent: collectd ---------------------------------------------------------------

COLLECTD = Path("/usr/sbin/collectd")
PLUGIN_DIR = Path("/usr/lib/collectd")  # Debian's collectd-core layout
TYPES_DB = Path("/usr/share/collectd/types.db")
COLLECTD_REQUIRED = os.environ.get("METRICS_LAB_REQUIRE_COLLECTD") == "1"
COLLECTD_HOST = "metricslabtest"
AGENT_WAIT = 15.0
"""Seconds to wait for collectd's first points (it sends every second)."""

COLLECTD_CONFIG = """\
Hostname "{host}"
FQDNLookup false
BaseDir "{folder}"
PIDFile "{folder}/collectd.pid"
PluginDir "{plugins}"
TypesDB "{types}"
Interval 1
LoadPlugin load
LoadPlugin memory
LoadPlugin write_graphite
<Plugin write_graphite>
  <Node "metrics_lab">
    Host "{address}"
    Port "{port}"
    Protocol "tcp"
    Prefix "collectd."
  </Node>
</Plugin>
"""


def collectd_or_skip() -> Path:
    if sys.platform == "win32":
        pytest.skip("collectd is POSIX-only software")
    found = shutil.which("collectd") or (str(COLLECTD) if COLLECTD.exists() else None)
    missing = [
        str(path) for path in (PLUGIN_DIR / "write_graphite.so", TYPES_DB) if not path.exists()
    ]
    if found is None or missing:
        reason = "collectd is not installed (Debian/Ubuntu: apt-get install collectd-core)"
        if found is not None:
            reason = f"collectd is not laid out as Debian's collectd-core: no {', '.join(missing)}"
        if COLLECTD_REQUIRED:
            pytest.fail(f"METRICS_LAB_REQUIRE_COLLECTD=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    return Path(found)


def test_collectd_feeds_the_server_through_write_graphite(tmp_path: Path) -> None:
    collectd = collectd_or_skip()
    prefix = f"collectd.{COLLECTD_HOST}."
    wanted = [f"{prefix}load.load.shortterm", f"{prefix}memory.memory-used"]
    with serve_in_background(graphite_port=0) as server:
        host, port = server.graphite_address
        config = tmp_path / "collectd.conf"
        config.write_text(
            COLLECTD_CONFIG.format(
                host=COLLECTD_HOST,
                folder=tmp_path,
                plugins=PLUGIN_DIR,
                types=TYPES_DB,
                address=host,
                port=port,
            )
        )
        started = time.time()
        agent = subprocess.Popen(
            [str(collectd), "-f", "-C", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            with Client(*server.address, timeout=TIMEOUT) as client:
                stored = client.get("*")
                deadline = time.monotonic() + AGENT_WAIT
                while not all(key in stored for key in wanted) and time.monotonic() < deadline:
                    if agent.poll() is not None:
                        break
                    time.sleep(0.2)
                    stored = client.get("*")
        finally:
            agent.terminate()
            output, _ = agent.communicate(timeout=TIMEOUT)
        ended = time.time()
    assert all(key in stored for key in wanted), (sorted(stored), output)
    assert agent.returncode == 0, output
    for key, series in stored.items():
        assert key.startswith(prefix)
        for timestamp, _ in series:
            assert int(started) - 1 <= timestamp <= ended + 1  # the agent's clock is ours
    loads = [value for _, value in stored[f"{prefix}load.load.shortterm"]]
    assert all(0 <= load < 10_000 for load in loads)
    used = [value for _, value in stored[f"{prefix}memory.memory-used"]]
    assert all(0 < value < 2**50 for value in used)  # bytes: positive, under a petabyte
    points = sum(len(series) for series in stored.values())
    print(
        f"collectd: {points} point(s) of {len(stored)} key(s) in {ended - started:.1f} s; "
        f"keys: {sorted(stored)}"
    )
