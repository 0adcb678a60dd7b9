"""The ``metrics-lab`` command: serve, put, get, demo, protocol, check, check-client.

``main(argv)`` returns the exit status; this is the only module that chooses one. Errors a
user can act on print one line to stderr and exit 1; usage errors (a bad option value, an
unquoted ``*``) print one line and exit 2; Ctrl-C ends any command quietly with 130. No
command shows a traceback for any of these.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import math
import os
import re
import socket
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, NoReturn
from urllib.parse import urlsplit

from metrics_lab import __version__
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
from metrics_lab.stores import POSTGRES_SCHEMES, open_store
from metrics_lab.synthetic import fleet
from metrics_lab.wire import WireLog

__all__ = ["main"]

logger = logging.getLogger("metrics_lab.cli")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8888
"""The course's port. JupyterLab's default is 8888 too: the messages below say so when they meet."""
PORT_HINT = "JupyterLab's default port is 8888 too"
DEFAULT_TIMEOUT = 10.0
DEFAULT_IDLE_TIMEOUT = 300.0
"""``serve`` closes connections quiet for this many seconds (the library default is never)."""
INTERRUPTED = 130
"""The exit status after Ctrl-C, as a shell reports a command that SIGINT stopped (128 + 2)."""
QUOTE_THE_STAR = "to get every key, quote the star: metrics-lab get '*'"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (``sys.argv[1:]`` by default); return the exit status.

    ``--help``, ``--version`` and usage errors end in argparse's ``SystemExit`` (0 or 2).
    """
    args = _parser().parse_args(argv)
    try:
        status: int = args.run(args)
    except KeyboardInterrupt:  # Ctrl-C: the user knows why we stop, and the shell shows ^C
        return INTERRUPTED
    except BrokenPipeError:  # whoever read our output left (`metrics-lab get '*' | head`)
        _drop_stdout()
        return 1
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


def _drop_stdout() -> None:
    """Point stdout at the null device, so the interpreter's last flush cannot fail again."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors in one line: the problem, then where the help is."""

    def error(self, message: str) -> NoReturn:
        """Print ``message`` as one line to stderr and exit 2, as argparse does, minus usage."""
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = _Parser(  # its subcommands are _Parsers too
        prog="metrics-lab",
        description="A metrics server and client that speak the course's text protocol.",
        epilog="Each command has its own help, with examples: metrics-lab serve --help",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    _add_serve_command(commands)

    put = _add_command(
        commands,
        "put",
        "store one point",
        "Send one point to a running server and wait for its ok.",
        """\
examples:
  metrics-lab put palm.cpu 10.5                 now, on 127.0.0.1:8888
  metrics-lab put palm.cpu 10.5 1501864247      at a given Unix time
  metrics-lab put load 301 --port 9000""",
    )
    put.add_argument("key", type=_put_key, help="metric name, e.g. web1.cpu")
    put.add_argument("value", type=_number, help="a finite number")
    put.add_argument("timestamp", type=_timestamp, nargs="?", help="Unix seconds (default: now)")
    _add_address(put, port=_port)
    put.set_defaults(run=_put)

    get = _add_command(
        commands,
        "get",
        "print a key's points, or every key's with '*'",
        "Ask a running server for one key's points, or for every key's with '*', and print\n"
        "them as a table. Quote the '*': unquoted, the shell puts the names of the files in\n"
        "the current folder there.",
        """\
examples:
  metrics-lab get palm.cpu
  metrics-lab get '*'
  metrics-lab get '*' --host 10.0.0.5 --port 9000""",
    )
    get.add_argument("key", type=_get_key, help="metric name, or '*' (quoted in the shell) for all")
    get.add_argument("more_keys", nargs="*", action=_UnquotedStar, help=argparse.SUPPRESS)
    _add_address(get, port=_port)
    get.set_defaults(run=_get)

    demo = _add_command(
        commands,
        "demo",
        "a server, synthetic metrics in, results out",
        "Start a server in the background, put synthetic metrics of three hosts into it, read\n"
        "them back, and show what the first put looked like on the wire.",
        "example:\n  metrics-lab demo --points 10",
    )
    demo.add_argument(
        "--points", type=_count, default=60, help="points per series (default: %(default)s)"
    )
    demo.set_defaults(run=_demo)

    protocol = _add_command(
        commands,
        "protocol",
        "print the wire protocol (PROTOCOL.md)",
        "Print PROTOCOL.md, the text protocol that the server, the clients and the checker\n"
        "follow, byte for byte. It is installed with the package.",
        "examples:\n  metrics-lab protocol | less\n  metrics-lab protocol --path",
    )
    protocol.add_argument("--path", action="store_true", help="print where the file is instead")
    protocol.set_defaults(run=_protocol)

    _add_check_commands(commands)
    return parser


def _add_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    summary: str,
    description: str,
    examples: str,
) -> argparse.ArgumentParser:
    """A subcommand whose help shows ``description`` and ``examples`` as written."""
    return commands.add_parser(
        name,
        help=summary,
        description=description,
        epilog=examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _add_serve_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = _add_command(
        commands,
        "serve",
        "run a metrics server until Ctrl-C",
        "Run a metrics server until Ctrl-C (or SIGTERM), keeping the points in memory or in\n"
        "a database (--db). The protocol has no authentication and no encryption: anyone who\n"
        "can reach the port can read and write every metric, so listen on 127.0.0.1 (the\n"
        "default) or on a trusted network only.",
        """\
examples:
  metrics-lab serve                              memory only, on 127.0.0.1:8888
  metrics-lab serve --db metrics.db              an SQLite file, made if missing
  metrics-lab serve --host 0.0.0.0 --port 9000   every interface: trusted networks only
  metrics-lab serve --db postgresql://metrics@db.internal/metrics
                                                 the password from PGPASSWORD or ~/.pgpass
  metrics-lab serve --db 'postgresql://?service=metrics'
                                                 all of it from a libpq service file""",
    )
    _add_address(serve, port=_listen_port, client=False)
    serve.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="DEBUG shows every connection (default: INFO)",
    )
    serve.add_argument(
        "--db",
        type=_database,
        default=_database("memory"),
        metavar="PATH_OR_URL",
        help="where the points are kept: an SQLite file (a path, or sqlite:///PATH; made if "
        "missing), a PostgreSQL database (postgresql://user@host:port/dbname), or memory "
        "(the default; lost when the server stops). Leave the database password out of the "
        "URL, where ps shows it: libpq reads PGPASSWORD, ~/.pgpass and service files",
    )
    serve.add_argument(
        "--max-connections",
        type=_count,
        default=DEFAULT_MAX_CONNECTIONS,
        help="keep at most this many connections open; a newcomer beyond them is served "
        "and the connection quiet the longest is closed (default: %(default)s)",
    )
    serve.add_argument(
        "--line-timeout",
        type=_seconds_or_never,
        default=DEFAULT_LINE_TIMEOUT,
        metavar="SECONDS",
        help="close a connection that leaves a request line unfinished for this long; "
        "0 never (default: %(default)s)",
    )
    serve.add_argument(
        "--idle-timeout",
        type=_seconds_or_never,
        default=DEFAULT_IDLE_TIMEOUT,
        metavar="SECONDS",
        help="close a connection that sends no request for this long; 0 never "
        "(default: %(default)s)",
    )
    serve.add_argument(
        "--graphite-port",
        type=_listen_port,
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


def _add_address(
    parser: argparse.ArgumentParser, *, port: Callable[[str], int], client: bool = True
) -> None:
    where = (
        f"the server's address (default: {DEFAULT_HOST})"
        if client
        else f"the address to listen on (default: {DEFAULT_HOST}, this machine only; "
        "0.0.0.0: every interface)"
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help=where)
    parser.add_argument("--port", type=port, default=DEFAULT_PORT, help=f"default: {DEFAULT_PORT}")
    if client:
        parser.add_argument(
            "--timeout",
            type=_seconds,
            default=DEFAULT_TIMEOUT,
            help="seconds to wait for the server (default: %(default)s)",
        )


# --- option values: each a usage error in one line when wrong -------------------------------


def _port_in(text: str, lowest: int) -> int:
    if not re.fullmatch(r"[0-9]+", text.strip()) or not lowest <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a TCP port: use {lowest}-65535 (default: {DEFAULT_PORT})"
        )
    return int(text)


def _port(text: str) -> int:
    """A port to connect to: 1-65535."""
    return _port_in(text, 1)


def _listen_port(text: str) -> int:
    """A port to listen on: 0 (any free one, printed at start) to 65535."""
    return _port_in(text, 0)


MAX_SECONDS = 7 * 24 * 3600
"""The longest timeout taken: a week (the system's timers refuse some longer ones)."""


def _seconds(text: str) -> float:
    """A number of seconds above 0, up to :data:`MAX_SECONDS`."""
    seconds = _finite(text, "a number of seconds")
    if not 0 < seconds <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds above 0 and up to {MAX_SECONDS} (a week)"
        )
    return seconds


def _seconds_or_never(text: str) -> float:
    """A number of seconds up to :data:`MAX_SECONDS`, or 0 for never."""
    seconds = _finite(text, "a number of seconds")
    if not 0 <= seconds <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds from 0 (never) to {MAX_SECONDS} (a week)"
        )
    return seconds


def _count(text: str) -> int:
    """A whole number, 1 or more."""
    if not re.fullmatch(r"\s*\+?[0-9]+\s*", text) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return int(text)


def _finite(text: str, what: str) -> float:
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
    return number


def _number(text: str) -> float:
    """Keep integers as ints so ``put load 301`` sends ``301``, as the course's client does."""
    try:
        return int(text)
    except ValueError:
        return _finite(text, "a finite number")


def _timestamp(text: str) -> int:
    """Unix seconds, as the protocol carries them: an integer in 64 signed bits."""
    try:
        timestamp = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds") from None
    if not -(2**63) <= timestamp < 2**63:
        raise argparse.ArgumentTypeError(f"{text} does not fit in a signed 64-bit integer")
    return timestamp


def _put_key(text: str) -> str:
    """A key to store: a '*' anywhere in it is refused, since ``get`` could not name it."""
    if "*" in text:
        raise argparse.ArgumentTypeError(
            f"{text!r} has a '*': '*' stands for every key in get, so no key may contain one"
        )
    return text


def _get_key(text: str) -> str:
    """A key to get: ``*`` (every key), or a key without a ``*`` (there are no patterns)."""
    if "*" in text and text != "*":
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a key: '*' alone means every key, and keys are matched whole, "
            "with no patterns"
        )
    return text


class _UnquotedStar(argparse.Action):
    """Refuses words after ``get``'s key, hidden from the help: ``get`` takes one key.

    More than one is almost always an unquoted ``*`` that the shell replaced by the names of
    the files in the current folder, so the error says to quote it.
    """

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[object] | None,
        option_string: str | None = None,
    ) -> None:
        keys = [namespace.key, *(str(value) for value in values or ())]
        if len(keys) > 1:
            shown = " ".join(keys[:3]) + (" ..." if len(keys) > 3 else "")
            raise argparse.ArgumentError(
                None,
                f"get takes one key, not {len(keys)} ({shown}); an unquoted * becomes the "
                f"names of the files here: {QUOTE_THE_STAR}",
            )


class _Database(NamedTuple):
    """What ``serve --db`` names: ``kind`` is memory, sqlite or postgresql."""

    kind: str
    target: str
    """The SQLite file's path, or the PostgreSQL URL (given to libpq as it is)."""

    def describe(self) -> str:
        """Where the points go, for the log (a password in a URL is not shown)."""
        if self.kind == "memory":
            return "memory only (lost when the server stops)"
        if self.kind == "sqlite":
            return f"SQLite file {Path(self.target).resolve()}"
        return f"PostgreSQL database {_without_password(self.target)}"


_DATABASE_FORMS = (
    "a file path (metrics.db), sqlite:///metrics.db, postgresql://user@host:5432/dbname, or memory"
)


def _database(text: str) -> _Database:
    """Read a ``--db`` value: memory, a path, ``sqlite:///PATH`` or a PostgreSQL URL.

    ``sqlite:///`` is followed by the path as SQLAlchemy reads it: ``sqlite:///metrics.db``
    is relative, ``sqlite:////var/lib/metrics.db`` absolute. Any other ``scheme://`` is a
    usage error that names these forms.
    """
    if text == "memory":
        return _Database("memory", "")
    if text.startswith(POSTGRES_SCHEMES):
        return _Database("postgresql", text)
    if text.lower().startswith("sqlite:"):
        path = text[len("sqlite:///") :] if text.lower().startswith("sqlite:///") else ""
        if not path:
            raise argparse.ArgumentTypeError(
                f"{text!r}: an SQLite URL is sqlite:/// and then the file's path"
            )
        return _Database("sqlite", path)
    # Two letters at least, so that a Windows drive (C:/...) is still a path.
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]+://", text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a database this server can use: give {_DATABASE_FORMS}"
        )
    return _Database("sqlite", text)


def _without_password(url: str) -> str:
    """``url`` with any password replaced by ``***``, for messages and logs."""
    shown = re.sub(r"([?&]password=)[^&]*", r"\1***", url)
    with contextlib.suppress(ValueError):  # not a URL urllib can read: libpq will say why
        if password := urlsplit(url).password:
            shown = shown.replace(f":{password}@", ":***@", 1)
    return shown


# --- the commands -----------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    log_format = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=args.log_level, format=log_format)
    database: _Database = args.db
    store = None if database.kind == "memory" else open_store(database.target)  # before listening
    options = {
        "parser": args.parser,
        "max_connections": args.max_connections,
        "idle_timeout": args.idle_timeout or None,
        "line_timeout": args.line_timeout or None,
        "graphite_port": args.graphite_port,
    }
    logger.info("store: %s; stop the server with Ctrl-C (or SIGTERM)", database.describe())
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
    if not rows and args.key != "*" and Path(args.key).exists():
        # Perhaps the shell put the only file here in place of an unquoted *: say so.
        print(
            f"metrics-lab: {args.key!r} is also a file in this folder; {QUOTE_THE_STAR}",
            file=sys.stderr,
        )
    return 0


def _protocol(args: argparse.Namespace) -> int:
    path = _protocol_file()
    if path is None:
        print(
            "metrics-lab: PROTOCOL.md is not installed with this package; "
            "read docs/PROTOCOL.md in the metrics_lab repository",
            file=sys.stderr,
        )
        return 1
    if args.path:
        print(path)
        return 0
    sys.stdout.flush()
    sys.stdout.buffer.write(path.read_bytes())  # as bytes: any console encoding can take them
    sys.stdout.buffer.flush()
    return 0


def _protocol_file() -> Path | None:
    """PROTOCOL.md: the copy a built package holds, else a checkout's docs/ (editable installs)."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "PROTOCOL.md", package.parent / "docs" / "PROTOCOL.md"):
        if candidate.is_file():
            return candidate
    return None


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


def _address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or a bare ``PORT`` (on 127.0.0.1, as put and get)."""
    host, colon, port = text.rpartition(":")
    try:
        if colon and not host:
            raise argparse.ArgumentTypeError(text)
        number = _port(port)  # the one port rule: ASCII digits, 1-65535
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected [HOST:]PORT with a port 1-65535, like 127.0.0.1:9000 or 9000, not {text!r}"
        ) from None
    return (host.strip("[]") or DEFAULT_HOST), number


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
