"""serve_in_background: a server in a daemon thread, for notebooks, tests and scripts."""

from __future__ import annotations

import asyncio
import socket

import pytest

from metrics_lab import Client, MemoryStore, serve_in_background
from tests.conftest import TIMEOUT


def test_several_servers_run_side_by_side_with_their_own_data() -> None:
    with serve_in_background() as first, serve_in_background() as second:
        assert first.port != second.port
        with Client(*first.address, timeout=TIMEOUT) as client:
            client.put("only.first", 1.0, 1)
        with Client(*second.address, timeout=TIMEOUT) as client:
            assert client.get("*") == {}


def test_stop_frees_the_port_at_once_and_is_idempotent() -> None:
    server = serve_in_background()
    port = server.port
    with Client(*server.address, timeout=TIMEOUT) as client:
        client.put("k", 1.0, 1)
        server.stop()
        assert not server.running
        server.stop()
    with serve_in_background(port=port) as again:
        assert again.port == port


def test_a_port_in_use_raises_in_the_caller() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(OSError):  # noqa: PT011 (EADDRINUSE; its errno differs by system)
            serve_in_background(port=port)


def test_it_works_when_the_calling_thread_already_runs_an_event_loop() -> None:
    # This is the Jupyter situation: the kernel's main thread is inside a running loop.
    async def notebook_cell() -> dict[str, list[tuple[int, float]]]:
        with serve_in_background() as server, Client(*server.address, timeout=TIMEOUT) as client:
            client.put("k", 1.0, 1)
            return client.get("k")

    assert asyncio.run(notebook_cell()) == {"k": [(1, 1.0)]}


def test_the_store_can_be_given_and_is_shared() -> None:
    store = MemoryStore()
    with serve_in_background(store=store) as server, Client(*server.address, timeout=TIMEOUT) as c:
        c.put("k", 1.0, 1)
    assert len(store) == 1
    assert "stopped" in repr(server)
