"""The ``metrics-lab`` command: serve, put, get, demo, check, check-client.

``main(argv)`` returns the exit status; this is the only module that chooses one. Errors a
user can act on print one line to stderr and exit 1; argparse's usage errors exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import socket
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from metrics_lab.background import serve_in_background
from metrics_lab.client import Client
from metrics_lab.conformance import Report, check_client, check_server, load_client
from metrics_lab.conformance.report import PROFILE_MEANINGS, PROFILES, print_progress
from metrics_lab.errors import (
    ClientConnectionError,
    ClientError,
    ClientTimeoutError,
    RemoteProtocolError,
)
from metrics_lab.server import (
    DEFAULT_LINE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    LOOP_CHOICES,
    PARSER_CHOICES,
    LoopUnavailableError,
    run_server,
)
from metrics_lab.storage import StoreFailure, StoreOpenError
from metrics_lab.stores import open_store
from metrics_lab.synthetic import fleet
from metrics_lab.wire import WireLog

__all__ = ["main"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8888
"""The course's port. JupyterLab's default is 8888 too: the messages below say so when they meet."""
PORT_HINT = "JupyterLab's default port is 8888 too"
DEFAULT_TIMEOUT = 10.0
DEFAULT_IDLE_TIMEOUT = 300.0
"""``serve`` closes connections quiet for this many seconds (the library default is never)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (``sys.argv[1:]`` by default); return the exit status."""
    args = _parser().parse_args(argv)
    try:
        # serve, put and get take --port; serve may take 0 (any port), put and get may not.
        if "port" in args and (problem := _port_problem(args.port, allow_any=args.any_port)):
            print(f"metrics-lab: {problem}", file=sys.stderr)
            return 2
        status: int = args.run(args)
    except ClientError as exc:
        print(f"metrics-lab: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the server could not bind, for instance
        print(f"metrics-lab: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except (StoreOpenError, StoreFailure) as exc:  # serve --db: the database cannot be used
        print(f"metrics-lab: {exc}", file=sys.stderr)
        return 1
    return status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metrics-lab",
        description="A metrics server and client that speak the course's text protocol.",
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run a metrics server until Ctrl-C")
    _add_address(serve)
    serve.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="DEBUG shows every connection (default: INFO)",
    )
    _add_serve_limits(serve)
    serve.add_argument(
        "--graphite-port",
        type=_tcp_port,
        metavar="PORT",
        help="also take Graphite plaintext lines (collectd, Telegraf) on this port of --host, "
        "into the same store (default: off)",
    )
    serve.add_argument(
        "--loop",
        default="auto",
        choices=LOOP_CHOICES,
        help="event loop: uvloop where installed (auto, the default), or force one",
    )
    serve.add_argument(
        "--parser",
        default="fast",
        choices=PARSER_CHOICES,
        help="fast: blocks of puts at once (the default); simple: line by line, as a "
        "learner reads it; auto: the same as fast; the answers are the same",
    )
    serve.set_defaults(run=_serve)

    put = commands.add_parser("put", help="store one point")
    put.add_argument("key", help="metric name, e.g. web1.cpu")
    put.add_argument("value", type=_number, help="a finite number")
    put.add_argument("timestamp", type=int, nargs="?", help="Unix seconds (default: now)")
    _add_address(put, client=True)
    put.set_defaults(run=_put)

    get = commands.add_parser("get", help="print a key's points, or every key's with '*'")
    get.add_argument("key", help="metric name, or '*' (quoted in the shell) for all")
    _add_address(get, client=True)
    get.set_defaults(run=_get)

    demo = commands.add_parser("demo", help="a server, synthetic metrics in, results out")
    demo.add_argument("--points", type=int, default=60, help="points per series (default: 60)")
    demo.set_defaults(run=_demo)

    _add_check_commands(commands)
    return parser


def _add_address(parser: argparse.ArgumentParser, *, client: bool = False) -> None:
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"default: {DEFAULT_HOST}")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default: {DEFAULT_PORT}")
    parser.set_defaults(any_port=not client)  # a server may listen on port 0 (any free one)
    if client:
        parser.add_argument(
            "--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds (default: %(default)s)"
        )


def _add_serve_limits(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "--db",
        metavar="PATH_OR_URL",
        help="keep the points in this SQLite file (made if missing), or in the PostgreSQL "
        "database of a postgresql://user@host:port/dbname URL; default: memory only",
    )
    serve.add_argument(
        "--max-connections",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS,
        help="keep at most this many connections open; a newcomer beyond them is served "
        "and the connection quiet the longest is closed (default: %(default)s)",
    )
    serve.add_argument(
        "--line-timeout",
        type=float,
        default=DEFAULT_LINE_TIMEOUT,
        metavar="SECONDS",
        help="close a connection that leaves a request line unfinished for this long; "
        "0 never (default: %(default)s)",
    )
    serve.add_argument(
        "--idle-timeout",
        type=float,
        default=DEFAULT_IDLE_TIMEOUT,
        metavar="SECONDS",
        help="close a connection that sends no request for this long; 0 never "
        "(default: %(default)s)",
    )


def _number(text: str) -> float:
    """Keep integers as ints so ``put load 301`` sends ``301``, as the course's client does."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _tcp_port(text: str) -> int:
    """``--graphite-port``: a port to listen on, 0 for any free one."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port: use 0-65535")
    return port


def _serve(args: argparse.Namespace) -> int:
    log_format = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=args.log_level, format=log_format)
    store = None if args.db is None else open_store(args.db)  # fails before we listen
    options = {
        "parser": args.parser,
        "max_connections": args.max_connections,
        "idle_timeout": args.idle_timeout or None,
        "line_timeout": args.line_timeout or None,
        "graphite_port": args.graphite_port,
    }
    try:
        run_server(args.host, args.port, store=store, loop=args.loop, **options)
    except LoopUnavailableError as exc:
        print(f"metrics-lab: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        print(f"metrics-lab: {_port_taken(args.host, args.port)}", file=sys.stderr)
        return 1
    finally:
        if store is not None:
            store.close()
    return 0


def _put(args: argparse.Namespace) -> int:
    timestamp = int(time.time()) if args.timestamp is None else args.timestamp
    with _client(args) as client:
        client.put(args.key, args.value, timestamp)
    print(
        f"stored {args.key} = {args.value!r} at {timestamp} ({_utc(timestamp)} UTC) "
        f"on {args.host}:{args.port}"
    )
    return 0


def _get(args: argparse.Namespace) -> int:
    with _client(args) as client:
        points = client.get(args.key)
    rows = [
        (key, str(timestamp), _utc(timestamp), repr(value))
        for key, series in points.items()
        for timestamp, value in series
    ]
    _print_table(("key", "timestamp", "time (UTC)", "value"), rows)
    return 0


def _port_problem(port: int, *, allow_any: bool) -> str | None:
    """What is wrong with ``--port``, in one line, or None (``serve`` may take 0: any port)."""
    lowest = 0 if allow_any else 1
    if lowest <= port <= 65535:
        return None
    return f"--port {port} is not a TCP port: use {lowest}-65535 (default: {DEFAULT_PORT})"


@contextlib.contextmanager
def _client(args: argparse.Namespace) -> Iterator[Client]:
    """A Client for put and get; a failed connection becomes advice for the shell, not the API."""
    where = f"{args.host}:{args.port}"
    try:
        with Client(args.host, args.port, args.timeout) as client:
            yield client
    except (ClientTimeoutError, RemoteProtocolError) as exc:
        if _speaks_http(args.host, args.port):
            raise type(exc)(
                f"a web server listens on {where}, not a metrics server ({PORT_HINT}); "
                + _USE_ANOTHER_PORT
            ) from exc
        if isinstance(exc, RemoteProtocolError):
            raise
        raise ClientTimeoutError(
            f"no answer from {where} within {args.timeout} s; is it a metrics server?"
        ) from exc
    except ClientConnectionError as exc:
        refused = isinstance(exc.__cause__, ConnectionRefusedError)
        if not refused:
            raise ClientConnectionError(f"the connection to {where} failed") from exc
        raise ClientConnectionError(
            f"nothing listens on {where}: start a server there with `metrics-lab serve` "
            "in another terminal, or give --host and --port of a running one"
        ) from exc


_USE_ANOTHER_PORT = (
    "start one on a free port, e.g. `metrics-lab serve --port 9000`, and pass --port 9000 here"
)


def _port_taken(host: str, port: int) -> str:
    taken = f"port {port} on {host} is already in use"
    if _speaks_http(host, port):
        taken += f" by a web server, perhaps JupyterLab ({PORT_HINT})"
    return (
        f"{taken}; pick another, e.g. `metrics-lab serve --port 9000`, "
        "and give put, get and check the same port"
    )


def _speaks_http(host: str, port: int) -> bool:
    """Does whatever listens at ``host:port`` answer an HTTP request (JupyterLab does)?"""
    try:
        with socket.create_connection((host, port), timeout=1.0) as probe:
            probe.sendall(b"HEAD / HTTP/1.0\r\n\r\n")
            return probe.recv(5) == b"HTTP/"
    except OSError:
        return False


def _utc(timestamp: int) -> str:
    try:
        return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return "-"  # outside what datetime can show


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    if not rows:
        print("(no points)")
        return
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    for row in [header, ["-" * width for width in widths], *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        print("  ".join(cells).rstrip())


def _demo(args: argparse.Namespace) -> int:
    points = fleet(points=args.points)
    print(f"Starting a server in the background and sending {len(points)} synthetic points ...")
    with serve_in_background() as server:
        wire = WireLog()
        with Client(*server.address, timeout=DEFAULT_TIMEOUT, wire=wire) as client:
            started = time.perf_counter()
            for key, value, timestamp in points:
                client.put(key, value, timestamp)
            elapsed = time.perf_counter() - started
            first_put = wire.events[:2]
            wire.clear()
            result = client.get("*")
    print(f"Server on {server.host}:{server.port}: {len(points)} puts in {elapsed:.2f} s.")
    print("\nWhat the first put looked like on the wire (> sent, < received):")
    print(WireLog(list(first_put)).transcript())
    answer_size = sum(len(event.data) for event in wire if event.direction == "received")
    print(f"\nThe 'get *' answer: {answer_size} bytes.")
    print("\nSummary of what came back:")
    rows = [
        (
            key,
            str(len(series)),
            f"{min(v for _, v in series):.2f}",
            f"{statistics.fmean(v for _, v in series):.2f}",
            f"{max(v for _, v in series):.2f}",
        )
        for key, series in result.items()
    ]
    _print_table(("key", "points", "min", "mean", "max"), rows)
    stored = sum(len(series) for series in result.values())
    verdict = "complete" if stored == len(points) else "INCOMPLETE"
    print(f"\nRound trip {verdict}: {stored} of {len(points)} points read back.")
    return 0 if stored == len(points) else 1


# --- check, check-client: the conformance checker --------------------------------------------


def _add_check_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    server_parser = commands.add_parser("check", help="check a running server against PROTOCOL.md")
    server_parser.add_argument(
        "address",
        type=_address,
        nargs="?",
        default=(DEFAULT_HOST, DEFAULT_PORT),
        metavar="[HOST:]PORT",
        help=f"e.g. 127.0.0.1:9000 or 9000 (default: {DEFAULT_HOST}:{DEFAULT_PORT})",
    )
    _add_check_options(server_parser, default_timeout=2.0)
    server_parser.set_defaults(run=_check)

    client_parser = commands.add_parser(
        "check-client", help="check a client class (MODULE:CLASS) against a scripted server"
    )
    client_parser.add_argument(
        "client", metavar="MODULE:CLASS", help="e.g. my_client:Client or path/to/client.py:Client"
    )
    _add_check_options(client_parser, default_timeout=1.0)
    client_parser.set_defaults(run=_check_client)


def _add_check_options(parser: argparse.ArgumentParser, *, default_timeout: float) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print the report as JSON (and no progress)"
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=default_timeout,
        help="seconds to wait for any one answer, more than 0 (default: %(default)s)",
    )
    parser.add_argument("--only", nargs="+", metavar="RULE", help="run only these checks")
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        default="strict",
        help="; ".join(f"{name}: {meaning}" for name, meaning in PROFILE_MEANINGS.items())
        + " (default: %(default)s)",
    )


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not seconds > 0:  # "not >" also refuses nan
        raise argparse.ArgumentTypeError(
            f"{text} is no time to wait for an answer: give more than 0 seconds"
        )
    return seconds


def _address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or a bare ``PORT`` (on 127.0.0.1, as put and get)."""
    host, colon, port = text.rpartition(":")
    if not port.isdigit() or (colon and not host) or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(
            f"expected [HOST:]PORT with a port 1-65535, like 127.0.0.1:9000 or 9000, not {text!r}"
        )
    return (host.strip("[]") or DEFAULT_HOST), int(port)


def _check(args: argparse.Namespace) -> int:
    host, port = args.address
    problem = _not_a_metrics_server(host, port, args.timeout)
    if problem:
        print(f"metrics-lab: {problem}", file=sys.stderr)
        return 1
    options = _check_options(args)
    return _report(args, lambda: check_server(host, port, **options))


def _check_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options ``check`` and ``check-client`` both pass to their checker."""
    progress = None if args.json else print_progress  # JSON stays the only output
    return {
        "timeout": args.timeout,
        "only": args.only,
        "profile": args.profile,
        "progress": progress,
    }


def _report(args: argparse.Namespace, run: Callable[[], Report]) -> int:
    """Run the checker, print its report (a table, or JSON), and return the exit status."""
    try:
        report = run()
    except ValueError as exc:  # an unknown --only name, a client that cannot be loaded
        print(f"metrics-lab: {exc}", file=sys.stderr)
        return 1
    print(report.to_json() if args.json else report.table())
    return 0 if report.passed else 1


def _not_a_metrics_server(host: str, port: int, timeout: float) -> str | None:
    """Why ``host:port`` cannot be checked at all (nothing listens, a web server), or None.

    Said once here, rather than as the same failure in every check's row. The question asked
    is a ``get`` of a key no one uses, then an empty line (as the course's grader sends its
    wrong command): a fragile server under test survives it, where an HTTP request could
    crash it before the first check, and an HTTP server (JupyterLab's tornado) answers once
    the empty line ends what it takes for headers.
    """
    where = f"{host}:{port}"
    try:
        with socket.create_connection((host, port), timeout) as sock:
            sock.sendall(b"get conformance.hello\n\n")
            first = sock.recv(16)
    except ConnectionRefusedError:
        return (
            f"nothing listens on {where}: start your server there (e.g. "
            f"`python my_server.py --port {port}`), or give the address of a running one"
            + (f" ({PORT_HINT}: pick another port for yours)" if port == DEFAULT_PORT else "")
        )
    except TimeoutError:
        return None  # a silent server: the checks say what they miss
    except OSError as exc:
        if exc.errno in (errno.ECONNRESET, errno.EPIPE):
            return None  # it hung up on a get: the checks show that too
        return f"cannot connect to {where}: {exc.strerror or exc}"
    if first.startswith(b"HTTP/") or first.lstrip().lower().startswith((b"<!doctype", b"<html")):
        return (
            f"a web server listens on {where}, not a metrics server ({PORT_HINT}); start "
            "yours on a free port, e.g. 9000, and check that: `metrics-lab check 9000`"
        )
    return None


def _check_client(args: argparse.Namespace) -> int:
    # The learner's module usually sits in the current directory, which a console script
    # does not put on sys.path by itself.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())

    def run() -> Report:
        client_class, error_class = load_client(args.client)
        return check_client(client_class, error_class, **_check_options(args))

    return _report(args, run)
