"""Two servers on one PostgreSQL behind a real TCP load balancer (HAProxy), as README shows.

Skipped where HAProxy is not installed (``apt-get install haproxy``); CI installs it.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from metrics_lab import Client, ClientError
from tests.conftest import unused_port
from tests.serve_process import ServeProcess

WAIT = 30.0
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"

pytestmark = pytest.mark.skipif(
    not Path(HAPROXY).is_file(), reason="HAProxy is not installed: apt-get install haproxy"
)


@contextlib.contextmanager
def balancer(tmp_path: Path, backends: list[tuple[str, int]]) -> Iterator[tuple[str, int]]:
    """HAProxy in TCP mode on a free loopback port, round robin over ``backends``."""
    port = unused_port()
    servers = "\n".join(
        f"    server s{n} {host}:{backend_port} check inter 100ms"
        for n, (host, backend_port) in enumerate(backends)
    )
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        f"""global
    maxconn 100
defaults
    mode tcp
    retries 3
    option redispatch
    timeout connect 2s
    timeout client 60s
    timeout server 60s
frontend metrics
    bind 127.0.0.1:{port}
    default_backend servers
backend servers
    balance roundrobin
{servers}
"""
    )
    proc = subprocess.Popen(
        [HAPROXY, "-db", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + WAIT
        while True:  # poll until it accepts connections
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
            try:
                socket.create_connection(("127.0.0.1", port), timeout=WAIT).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "HAProxy did not start listening"
                time.sleep(0.02)  # a pause between polls
        yield ("127.0.0.1", port)
    finally:
        proc.kill()
        proc.wait(WAIT)
        if proc.stderr is not None:
            proc.stderr.close()


def test_servers_behind_a_load_balancer_share_every_point_and_survive_a_loss(
    pg_url: str, tmp_path: Path
):
    with (
        ServeProcess("--db", pg_url) as first,
        ServeProcess("--db", pg_url) as second,
        balancer(tmp_path, [first.address, second.address]) as front,
    ):
        for ts in range(10):  # one connection each: round robin spreads them over both
            with Client(*front, timeout=WAIT) as client:
                client.put("lb.cpu", ts / 2, ts)
        expected = {"lb.cpu": [(ts, ts / 2) for ts in range(10)]}
        for server in (first, second):
            with Client(*server.address, timeout=WAIT) as client:
                assert client.get("lb.cpu") == expected
        first.kill()
        # New connections go to the server that is left (HAProxy retries elsewhere).
        for ts in range(10, 20):
            with Client(*front, timeout=WAIT) as client:
                try:
                    client.put("lb.cpu", ts / 2, ts)
                except ClientError:
                    client.reconnect()
                    client.put("lb.cpu", ts / 2, ts)
        with Client(*front, timeout=WAIT) as client:
            assert client.get("lb.cpu") == {"lb.cpu": [(ts, ts / 2) for ts in range(20)]}
