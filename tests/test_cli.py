"""The metrics-lab command: exit codes, messages, and a real `serve` process."""

from __future__ import annotations

import contextlib
import importlib.metadata
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import metrics_lab
from metrics_lab import BackgroundServer, Client
from metrics_lab.cli import main
from metrics_lab.postgres_cluster import PASSWORD, Cluster
from tests.conftest import TIMEOUT, unused_port
from tests.pg_cluster import new_database
from tests.serve_process import ServeProcess


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


def test_a_key_the_client_refuses_is_one_line_and_exit_1(
    server: BackgroundServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["put", "a\tb", "1", "--port", str(server.port)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "contains whitespace or a control character" in err


def test_demo_round_trips(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--points", "5"]) == 0
    out = capsys.readouterr().out
    assert "Round trip complete: 45 of 45 points read back." in out
    assert "> put web1.cpu" in out


def test_serve_says_where_the_points_go_and_runs_until_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # sqlite:///metrics.db is relative to the folder serve runs in
    with ServeProcess("--db", "sqlite:///metrics.db") as serve:
        assert f"store: SQLite file {tmp_path.resolve() / 'metrics.db'}; " in serve.log[0]
        assert "Ctrl-C" in serve.log[0]
        with Client(*serve.address, timeout=TIMEOUT) as client:
            client.put("k", 1.0, 1)
            assert client.get("k") == {"k": [(1, 1.0)]}
        stop = signal.SIGINT if sys.platform != "win32" else signal.SIGTERM
        assert serve.signal(stop) == (0 if sys.platform != "win32" else serve.proc.returncode)
    assert (tmp_path / "metrics.db").is_file()


def test_serve_in_memory_says_the_points_are_lost_at_the_end() -> None:
    with ServeProcess() as serve:
        assert "store: memory only (lost when the server stops)" in serve.log[0]


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
@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_a_port_out_of_range_is_one_line(
    argv: list[str], port: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main([*argv, "--port", port])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"metrics-lab {argv[0]}: argument --port: '{port}' is not a TCP port")


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


# --- usage errors: one line, exit 2, never a traceback -----------------------------------------


def one_line_usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``argv``, check that it is a usage error in one line, and return that line."""
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1, captured.err
    assert "Traceback" not in captured.err
    assert captured.err.endswith(f" (see metrics-lab {argv[0]} --help)\n")
    return captured.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["get", "k", "--timeout", "-1"], "--timeout: '-1' is not a number of seconds above 0"),
        (["put", "k", "1", "--timeout", "nan"], "--timeout: 'nan' is not a number of seconds"),
        (["serve", "--max-connections", "0"], "--max-connections: '0' is not a whole number"),
        (["serve", "--max-connections", "many"], "--max-connections: 'many' is not a whole"),
        (["get", "k", "--timeout", "1e300"], "--timeout: '1e300' is not a number of seconds"),
        (["serve", "--idle-timeout", "-5"], "--idle-timeout: '-5' is not a number of seconds"),
        (["serve", "--idle-timeout", "1e10"], "--idle-timeout: '1e10' is not a number of"),
        (["serve", "--idle-timeout", "inf"], "--idle-timeout: 'inf' is not a number of seconds"),
        (["demo", "--points", "0"], "--points: '0' is not a whole number of 1 or more"),
        (["put", "k", "lots"], "value: 'lots' is not a finite number"),
        (["put", "k", "nan"], "value: 'nan' is not a finite number"),
        (["put", "k", "1", "1.5"], "timestamp: '1.5' is not a whole number of seconds"),
        (["put", "k", "1", str(2**63)], f"timestamp: {2**63} does not fit in a signed 64-bit"),
        (["serve", "--db", "mysql://db/metrics"], "--db: 'mysql://db/metrics' is not a database"),
        (["serve", "--db", "sqlite://"], "--db: 'sqlite://': an SQLite URL is sqlite:///"),
    ],
)
def test_a_bad_option_value_is_a_one_line_usage_error(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = one_line_usage_error(argv, capsys)
    assert err.startswith(f"metrics-lab {argv[0]}: argument {message}")


def test_an_unknown_database_scheme_names_the_forms_that_work(
    capsys: pytest.CaptureFixture[str],
) -> None:
    err = one_line_usage_error(["serve", "--db", "redis://cache:6379"], capsys)
    for form in ("a file path", "sqlite:///", "postgresql://", "memory"):
        assert form in err


def test_get_of_several_keys_says_to_quote_the_star(capsys: pytest.CaptureFixture[str]) -> None:
    err = one_line_usage_error(["get", "notes.txt", "setup.py", "--port", "1"], capsys)
    assert "get takes one key, not 2 (notes.txt setup.py)" in err
    assert "metrics-lab get '*'" in err


@pytest.mark.parametrize("key", ["web1.*", "*.cpu", "**"])
def test_get_of_a_pattern_is_refused_with_the_rule(
    key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = one_line_usage_error(["get", key], capsys)
    assert f"{key!r} is not a key: '*' alone means every key" in err
    assert "no patterns" in err


@pytest.mark.parametrize("key", ["*", "a*b"])
def test_put_of_a_key_with_a_star_is_refused_with_the_rule(
    key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = one_line_usage_error(["put", key, "1"], capsys)
    assert "'*' stands for every key in get, so no key may contain one" in err


@pytest.mark.parametrize("stored", [False, True], ids=["no points", "points"])
def test_get_of_a_key_that_is_also_a_file_name_here(
    stored: bool,
    server: BackgroundServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # What the shell makes of `metrics-lab get *` in a folder that holds one file.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("a learner's notes")
    if stored:
        with Client(*server.address, timeout=TIMEOUT) as client:
            client.put("notes.txt", 3.0, 1)
    assert main(["get", "notes.txt", "--port", str(server.port)]) == 0
    captured = capsys.readouterr()
    if stored:  # a real key that has points: nothing to hint at
        assert captured.out.splitlines()[2].split()[0] == "notes.txt"
        assert captured.err == ""
    else:
        assert captured.out == "(no points)\n"
        assert captured.err == (
            "metrics-lab: 'notes.txt' is also a file in this folder; "
            "to get every key, quote the star: metrics-lab get '*'\n"
        )


def test_version_is_the_installed_distribution_s(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out == f"metrics-lab {metrics_lab.__version__}\n"
    assert importlib.metadata.version("metrics-lab") == metrics_lab.__version__


@pytest.mark.parametrize("command", ["serve", "put", "get", "demo", "protocol"])
def test_each_command_s_help_describes_it_with_an_example(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main([command, "--help"])
    assert caught.value.code == 0
    usage, description, *_, examples = capsys.readouterr().out.split("\n\n")
    assert usage.startswith(f"usage: metrics-lab {command}")
    assert len(description.split()) >= 8  # a sentence, not the one-line summary
    assert examples.startswith("example")
    assert f"\n  metrics-lab {command}" in examples


def test_serve_help_says_the_protocol_is_not_secured(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "no authentication and no encryption" in help_text
    assert "PGPASSWORD" in help_text


def test_protocol_prints_the_wire_contract(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    docs = Path(__file__).resolve().parent.parent / "docs" / "PROTOCOL.md"
    assert main(["protocol"]) == 0
    assert capsysbinary.readouterr().out == docs.read_bytes()
    assert main(["protocol", "--path"]) == 0
    assert Path(capsysbinary.readouterr().out.decode().strip()).read_bytes() == docs.read_bytes()


# --- Ctrl-C, closed pipes, missing extras ----------------------------------------------------


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT is POSIX; Windows has CTRL_C_EVENT")
def test_ctrl_c_while_get_waits_for_an_answer_ends_quietly() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:
        silent.settimeout(TIMEOUT)
        port = silent.getsockname()[1]
        # The console script's main, with Python's own Ctrl-C handler even where the test
        # runner was started with SIGINT ignored (a background job of a script).
        code = (
            "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from metrics_lab.cli import main; sys.exit(main(sys.argv[1:]))"
        )
        command = [sys.executable, "-c", code, "get", "k", "--port", str(port), "--timeout", "60"]
        with subprocess.Popen(command, stderr=subprocess.PIPE, text=True) as process:
            try:
                connection, _ = silent.accept()
                with connection:
                    connection.settimeout(TIMEOUT)
                    assert connection.recv(100) == b"get k\n"  # it waits for the answer now
                    process.send_signal(signal.SIGINT)
                    assert process.wait(TIMEOUT) == 130
            finally:
                process.kill()
            assert process.stderr is not None
            err = process.stderr.read()
    assert "Traceback" not in err
    assert err.count("\n") <= 1


def test_a_reader_that_leaves_early_ends_get_quietly(server: BackgroundServer) -> None:
    with Client(*server.address, timeout=TIMEOUT) as client:
        client.put_many([(f"host{n}.cpu", 0.5, 1_700_000_000) for n in range(20_000)])
    command = [sys.executable, "-m", "metrics_lab", "get", "*", "--port", str(server.port)]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None
        assert process.stdout.readline().split()[0] == "key"  # `| head -1`, then gone
        process.stdout.close()
        assert process.wait(TIMEOUT * 4) == 1
        assert process.stderr is not None
        err = process.stderr.read()
    assert "Traceback" not in err
    # POSIX reports the closed pipe as such (EPIPE), and nothing is printed; Windows reports
    # EINVAL, an OSError like any other, which gets its one line.
    assert err == "" if sys.platform != "win32" else err.count("\n") <= 1


def test_postgresql_without_psycopg_names_the_install_step(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if psycopg were not installed
    monkeypatch.delitem(sys.modules, "metrics_lab.postgres_store", raising=False)
    assert main(["serve", "--port", "0", "--db", "postgresql://metrics@127.0.0.1/metrics"]) == 1
    err = capsys.readouterr().err
    assert err == (
        "metrics-lab: a postgresql:// database needs psycopg: pip install -e '.[postgres]' "
        "in the metrics_lab checkout, or pip install 'psycopg[binary]'\n"
    )


# --- the database password from the environment, not the command line ------------------------


def _url_without_password(cluster: Cluster) -> str:
    database = new_database(cluster).rsplit("/", 1)[1]
    return f"postgresql://postgres@127.0.0.1:{cluster.port}/{database}"


@pytest.fixture
def no_libpq_password(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No password from this machine's environment or ~/.pgpass: each test gives its own."""
    for name in ("PGPASSWORD", "PGSERVICE", "PGSERVICEFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))


@pytest.mark.usefixtures("no_libpq_password")
def test_serve_reads_the_database_password_from_pgpassword(
    pg_cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = _url_without_password(pg_cluster)
    monkeypatch.setenv("PGPASSWORD", PASSWORD)  # the child inherits it
    with ServeProcess("--db", url) as serve:
        assert f"store: PostgreSQL database {url};" in serve.log[0]
        with Client(*serve.address, timeout=TIMEOUT) as client:
            client.put("db.cpu", 0.5, 1)
            assert client.get("db.cpu") == {"db.cpu": [(1, 0.5)]}


@pytest.mark.usefixtures("no_libpq_password")
def test_serve_reads_the_database_from_a_service_file(
    pg_cluster: Cluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    database = _url_without_password(pg_cluster).rsplit("/", 1)[1]
    services = tmp_path / "pg_service.conf"
    services.write_text(
        f"[metrics]\nhost=127.0.0.1\nport={pg_cluster.port}\ndbname={database}\n"
        f"user=postgres\npassword={PASSWORD}\n"
    )
    monkeypatch.setenv("PGSERVICEFILE", str(services))
    with (
        ServeProcess("--db", "postgresql://?service=metrics") as serve,
        Client(*serve.address, timeout=TIMEOUT) as client,
    ):
        assert "store: PostgreSQL database postgresql://?service=metrics;" in serve.log[0]
        client.put("db.cpu", 0.5, 1)
        assert client.get("db.cpu") == {"db.cpu": [(1, 0.5)]}


@pytest.mark.usefixtures("no_libpq_password")
def test_a_missing_password_is_one_line_without_it(
    pg_cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--port", "0", "--db", _url_without_password(pg_cluster)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("metrics-lab: cannot open database postgresql://postgres@127.0.0.1:")
    assert "password" in err


def test_a_password_in_the_url_is_not_logged(pg_cluster: Cluster) -> None:
    url = new_database(pg_cluster)
    with ServeProcess("--db", f"{url}?application_name=cli-test") as serve:
        log = serve.log[0]
    assert PASSWORD not in log
    assert ":***@127.0.0.1:" in log
