"""The checker from the shell: it says why it cannot check, shows progress, reads addresses."""

from __future__ import annotations

import asyncio
import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from metrics_lab import Client, serve_in_background
from metrics_lab.cli import _parser, main
from metrics_lab.conformance import SERVER_CHECKS, check_client, check_server
from tests.conftest import unused_port

FAST = "0.5"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves as usual, without logging each request to stderr (where the checker writes)."""

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def web_server() -> Iterator[tuple[str, int]]:
    """A real HTTP server (what JupyterLab is, on port 8888) on a free port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield "127.0.0.1", server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_nothing_listening_is_one_line_naming_the_cause(capsys: pytest.CaptureFixture[str]) -> None:
    port = unused_port()
    assert main(["check", f"127.0.0.1:{port}", "--timeout", FAST]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.splitlines()
    assert line.startswith(f"metrics-lab: nothing listens on 127.0.0.1:{port}: start your server")


def test_a_web_server_is_named_with_the_jupyterlab_hint(
    web_server: tuple[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    host, port = web_server
    assert main(["check", f"{host}:{port}", "--timeout", FAST]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert f"a web server listens on {host}:{port}, not a metrics server" in line
    assert "JupyterLab's default port is 8888 too" in line


def test_jupyterlabs_own_web_server_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    tornado_web = pytest.importorskip("tornado.web", reason="JupyterLab's web server")
    httpserver = pytest.importorskip("tornado.httpserver")
    started, ports = threading.Event(), list[int]()

    async def serve() -> None:
        server = httpserver.HTTPServer(tornado_web.Application([]))
        [listener] = tornado_netutil.bind_sockets(0, "127.0.0.1")
        server.add_sockets([listener])
        ports.append(listener.getsockname()[1])
        started.set()
        await stop.wait()
        server.stop()

    tornado_netutil = pytest.importorskip("tornado.netutil")
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    try:
        assert started.wait(10)
        assert main(["check", str(ports[0]), "--timeout", FAST]) == 1
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
    [line] = capsys.readouterr().err.splitlines()
    assert f"a web server listens on 127.0.0.1:{ports[0]}, not a metrics server" in line


@pytest.mark.parametrize("timeout", ["0", "-1", "nan", "soon"])
@pytest.mark.parametrize("command", [["check", "9000"], ["check-client", "client:Client"]])
def test_a_timeout_of_no_time_is_a_usage_error(
    command: list[str], timeout: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--timeout", timeout])
    assert exit_info.value.code == 2
    assert "--timeout" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "address"),
    [
        ([], ("127.0.0.1", 8888)),
        (["9000"], ("127.0.0.1", 9000)),
        (["localhost:9000"], ("localhost", 9000)),
        (["[::1]:9000"], ("::1", 9000)),
    ],
)
def test_check_takes_no_address_a_bare_port_or_host_and_port(
    argv: list[str], address: tuple[str, int]
) -> None:
    assert _parser().parse_args(["check", *argv]).address == address


@pytest.mark.parametrize("address", ["0", "70000", ":9000", "host:", "host:port"])
def test_a_bad_address_is_a_usage_error(address: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["check", address])
    assert exit_info.value.code == 2
    assert "[HOST:]PORT" in capsys.readouterr().err


def test_check_shows_progress_per_check_on_stderr_and_none_under_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with serve_in_background() as server:
        assert main(["check", str(server.port), "--timeout", FAST]) == 0
        captured = capsys.readouterr()
        total = len(SERVER_CHECKS)
        progress = captured.err.splitlines()
        assert len(progress) == total
        assert progress[0].startswith(f"[ 1/{total}] put-ok")
        assert progress[-1].endswith("pass")
        assert main(["check", str(server.port), "--timeout", FAST, "--json"]) == 0
        captured = capsys.readouterr()
    assert captured.err == ""
    assert json.loads(captured.out)["passed"] is True


# A server as a learner's first blocking attempt may be: one connection at a time, and a
# value that is not a number kills the whole process.
CRASHING_SERVER = """
import socket
listener = socket.create_server(("127.0.0.1", 0))
print(listener.getsockname()[1], flush=True)
while True:
    connection, _ = listener.accept()
    with connection:
        for line in connection.makefile("rb"):
            fields = line.split()
            if not fields:  # an empty line: the course's grader sends one, so it survives that
                continue
            if fields[0] == b"put":
                float(fields[2])
            connection.sendall(b"ok\\n\\n")
"""


def test_a_server_that_dies_ends_the_run_with_the_request_that_killed_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    command = [sys.executable, "-c", CRASHING_SERVER]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as server:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        only = [
            "put-ok",
            "error-value-not-number",
            "error-timestamp-not-integer",
            "error-put-bad-utf8-key",
            "survives-errors",
            "long-line",
        ]
        status = main(["check", str(port), "--timeout", FAST, "--json", "--only", *only])
        server.wait(timeout=10)
        assert server.stderr is not None
        assert b"could not convert string to float: b'x'" in server.stderr.read()
    document = json.loads(capsys.readouterr().out)
    assert status == 1
    killed = document["results"][1]
    assert killed["name"] == "error-value-not-number"
    assert (
        "it probably crashed on this request: see your server's output for its traceback); "
        "sent 'put conformance." in killed["detail"]
    )
    assert " x 1\\n'" in killed["detail"]
    # The process takes a moment to close its port, so the stop comes a check or two later.
    stopped = document["results"][-1]["name"]
    assert stopped in only[2:4], document["note"]
    assert document["note"] == (
        f"stopped at {stopped}: the server stopped accepting connections (it crashed or "
        "exited; the failures before show the last requests it got)"
    )


@pytest.mark.parametrize("timeout", [0.0, -1.0, float("nan")])
def test_the_library_refuses_a_timeout_of_no_time_too(timeout: float) -> None:
    with pytest.raises(ValueError, match="no time for an answer"):
        check_server("127.0.0.1", 1, timeout=timeout)
    with pytest.raises(ValueError, match="no time for an answer"):
        check_client(Client, timeout=timeout)


# A learner's asyncio server whose data_received never returns on a get without a key: the
# process lives and accepts connections, but its loop answers no one any more.
HANGING_SERVER = """
import asyncio
import time

class Server(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        for line in data.split(b"\\n"):
            if line.split() == [b"get"]:
                deadline = time.monotonic() + 120  # "forever", bounded for the test machine
                while time.monotonic() < deadline:
                    time.sleep(0.1)
            elif line.strip():
                self.transport.write(b"ok\\n\\n")

async def main():
    server = await asyncio.get_running_loop().create_server(Server, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(main())
"""


def test_a_hung_server_ends_the_run_with_one_hint(capsys: pytest.CaptureFixture[str]) -> None:
    command = [sys.executable, "-c", HANGING_SERVER]
    with subprocess.Popen(command, stdout=subprocess.PIPE) as server:
        try:
            assert server.stdout is not None
            port = int(server.stdout.readline())
            only = ["put-ok", "get-missing", "error-get-without-key", "error-get-two-keys"]
            only += ["error-put-too-few", "survives-errors", "long-line"]
            status = main(["check", str(port), "--timeout", FAST, "--only", *only])
        finally:
            server.kill()
    out = capsys.readouterr().out
    summary = out.splitlines()[-1]
    assert status == 1
    # put-ok, get-missing; the hang; the check that found the server silent, the second in
    # a row, before a fresh connection's get confirmed it. Then nothing more.
    assert "2/4 checks passed" in summary
    assert (
        "stopped after error-get-two-keys: the server stopped answering: is it hung (an "
        "endless loop in data_received?)" in summary
    )
    assert "would accept" not in out
