"""The metrics-lab command: exit codes, messages, and a real `serve` process."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from metrics_lab import BackgroundServer, Client
from metrics_lab.cli import main
from tests.conftest import TIMEOUT, unused_port


def test_put_then_get_prints_a_table(
    server: BackgroundServer, capsys: pytest.CaptureFixture[str]
) -> None:
    port = str(server.port)
    assert main(["put", "palm.cpu", "10.5", "1501864247", "--port", port]) == 0
    assert main(["put", "load", "301", "3", "--port", port]) == 0
    capsys.readouterr()
    assert main(["get", "*", "--port", port]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["key", "timestamp", "time", "(UTC)", "value"]
    assert out[2].split() == ["load", "3", "1970-01-01", "00:00:03", "301.0"]
    assert out[3].split() == ["palm.cpu", "1501864247", "2017-08-04", "16:30:47", "10.5"]


def test_get_of_nothing_says_so(
    server: BackgroundServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["get", "missing", "--port", str(server.port)]) == 0
    assert capsys.readouterr().out.strip() == "(no points)"


def test_an_unreachable_server_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["get", "k", "--port", str(unused_port()), "--timeout", "2"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("metrics-lab: nothing listens on 127.0.0.1:")
    assert "metrics-lab serve" in err
    assert "reconnect()" not in err


def test_a_bad_key_is_one_line_and_exit_1(
    server: BackgroundServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["put", "*", "1", "--port", str(server.port)]) == 1
    assert "cannot be stored" in capsys.readouterr().err


def test_a_bad_value_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as caught:
        main(["put", "k", "lots"])
    assert caught.value.code == 2


def test_demo_round_trips(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--points", "5"]) == 0
    out = capsys.readouterr().out
    assert "Round trip complete: 45 of 45 points read back." in out
    assert "> put web1.cpu" in out


def test_serve_runs_until_interrupted() -> None:
    command = [sys.executable, "-m", "metrics_lab", "serve", "--port", "0"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env) as process:
        try:
            assert process.stderr is not None
            line = process.stderr.readline()
            match = re.search(r"serving metrics on 127\.0\.0\.1:(\d+)", line)
            assert match, line
            with Client("127.0.0.1", int(match.group(1)), timeout=TIMEOUT) as client:
                client.put("k", 1.0, 1)
                assert client.get("k") == {"k": [(1, 1.0)]}
            process.send_signal(signal.SIGINT if sys.platform != "win32" else signal.SIGTERM)
            assert process.wait(TIMEOUT) == (0 if sys.platform != "win32" else process.returncode)
        finally:
            process.kill()


# --- ports and messages at the shell ----------------------------------------------------------


def test_put_says_what_it_stored(
    server: BackgroundServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["put", "palm.cpu", "10.5", "1501864247", "--port", str(server.port)]) == 0
    assert capsys.readouterr().out == (
        f"stored palm.cpu = 10.5 at 1501864247 (2017-08-04 16:30:47 UTC) "
        f"on 127.0.0.1:{server.port}\n"
    )


@pytest.mark.parametrize(
    "argv", [["serve"], ["put", "k", "1"], ["get", "k"]], ids=["serve", "put", "get"]
)
@pytest.mark.parametrize("port", ["99999", "-1"])
def test_a_port_out_of_range_is_one_line(
    argv: list[str], port: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--port", port]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"metrics-lab: --port {port} is not a TCP port: use ")


class HangingWebServer:
    """Listens like JupyterLab: reads an HTTP request up to its blank line, then answers.

    A metrics request never ends in a blank line, so a client waits (as with JupyterLab).
    """

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = self.listener.accept()
                with connection:
                    data = b""
                    while b"\r\n\r\n" not in data:
                        chunk = connection.recv(1024)
                        if not chunk:
                            break
                        data += chunk
                    else:
                        connection.sendall(b"HTTP/1.0 200 OK\r\n\r\n")

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def web_server() -> Iterator[HangingWebServer]:
    running = HangingWebServer()
    yield running
    running.close()


def test_get_from_a_web_server_names_it(
    web_server: HangingWebServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["get", "k", "--port", str(web_server.port), "--timeout", "0.5"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "a web server listens on" in err
    assert "JupyterLab" in err
    assert "--port" in err
    assert "reconnect()" not in err


def test_serve_on_a_port_in_use_names_the_cause_and_the_fix(
    web_server: HangingWebServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--port", str(web_server.port)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"port {web_server.port} on 127.0.0.1 is already in use by a web server" in err
    assert "--port" in err
