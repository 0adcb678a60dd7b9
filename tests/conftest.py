"""Shared fixtures: a real server on 127.0.0.1 (port 0) and raw sockets to talk to it."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import nbformat
import pytest

from metrics_lab import BackgroundServer, serve_in_background

pytest_plugins = ["tests.pg_cluster"]  # PostgreSQL fixtures: pg_cluster, pg_url

TIMEOUT = 5.0
"""Seconds any test waits for a socket before failing (never reached when things work)."""


def wait_until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Poll ``condition`` until it holds; fail, saying ``what`` was awaited, after ``timeout``
    seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)  # a pause between polls


@pytest.fixture
def server() -> Iterator[BackgroundServer]:
    """A fresh in-memory server in a background thread, stopped after the test."""
    with serve_in_background() as running:
        yield running


@pytest.fixture
def raw(server: BackgroundServer) -> Iterator[socket.socket]:
    """A plain TCP connection to ``server``, for sending exact bytes."""
    with socket.create_connection(server.address, timeout=TIMEOUT) as sock:
        yield sock


def read_exactly(sock: socket.socket, size: int) -> bytes:
    """Read ``size`` bytes (fewer only if the peer closes first)."""
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def read_answers(sock: socket.socket, count: int) -> bytes:
    """Read until ``count`` answers (each ending in a blank line) have arrived; return the bytes.

    Works byte-wise on purpose: it must not depend on the protocol module it helps to test.
    """
    data = b""
    while data.count(b"\n\n") < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


# Appended to each notebook a test runs: the chapter must have stopped every background server
# it started (their threads carry this name).
NO_SERVER_LEFT = """
import threading
left = [t.name for t in threading.enumerate() if t.name == "metrics-lab-server"]
assert not left, f"the notebook left {len(left)} background servers running"
"""


@pytest.fixture(scope="session")
def executed_notebook() -> Callable[[Path], nbformat.NotebookNode]:
    """A function that runs a notebook once per test session and returns the executed copy.

    A chapter takes up to half a minute to run, so the test that it runs cleanly and the tests
    that read what its cells printed share one run in a fresh kernel. The copy ends with a cell
    that fails if the chapter left a background server running. A notebook that fails fails
    every test that asks for it, with the same error, and is not run again.
    """
    # Imported here, not at the top: nbconvert takes a while to import, and most tests never
    # run a notebook.
    from tools.export_notebooks import run_notebook

    runs: dict[Path, nbformat.NotebookNode | Exception] = {}

    def executed(path: Path) -> nbformat.NotebookNode:
        path = path.resolve()
        if path not in runs:
            notebook = nbformat.read(path, as_version=4)
            notebook.cells.append(nbformat.v4.new_code_cell(NO_SERVER_LEFT))
            try:
                run_notebook(notebook, path.parent)
            except Exception as exc:  # remembered, so the next test fails the same way at once
                runs[path] = exc
            else:
                runs[path] = notebook
        run = runs[path]
        if isinstance(run, Exception):
            raise run
        return run

    return executed


def unused_port() -> int:
    """A loopback port that nobody listens on (bound for a moment, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def cut_at_random(data: bytes, rng: random.Random, cuts: int) -> list[bytes]:
    """``data`` cut at ``min(cuts, len(data) - 1)`` distinct positions drawn with ``rng``."""
    points = sorted(rng.sample(range(1, len(data)), k=min(len(data) - 1, cuts)))
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def cut(data: bytes, how: str, seed: int | str = 0, cuts: int = 4) -> list[bytes]:
    """``data`` as chunks: ``"whole"``, ``"byte-by-byte"`` or ``"random"`` (``cuts`` cuts,
    drawn from ``random.Random(seed)``, so the same seed always cuts at the same places)."""
    if how == "whole":
        return [data]
    if how == "byte-by-byte":
        return [data[i : i + 1] for i in range(len(data))]
    if how == "random":
        return cut_at_random(data, random.Random(seed), cuts)
    raise ValueError(f"unknown way to cut: {how!r}")
