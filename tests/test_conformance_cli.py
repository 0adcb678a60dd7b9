"""The checker from the shell: it says why it cannot check, shows progress, reads addresses."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator

import pytest

from metrics_lab import serve_in_background
from metrics_lab.cli import _parser, main
from metrics_lab.conformance import SERVER_CHECKS

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


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_nothing_listening_is_one_line_naming_the_cause(capsys: pytest.CaptureFixture[str]) -> None:
    port = closed_port()
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
