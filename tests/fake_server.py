"""A scripted fake server: it breaks the protocol on purpose, one way per test.

The real server never sends a reset mid-answer or a flood without ``\\n\\n``; to see how a
client copes, a test hands :class:`FakeServer` a script, a function that gets each accepted
socket and does exactly the wrong thing asked of it.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Self

Script = Callable[[socket.socket], None]

POLL = 0.05
"""Seconds between checks for stop() while waiting for a connection."""


class FakeServer:
    """Accept connections on 127.0.0.1 (a free port) and run ``scripts`` on them in turn.

    The first connection gets ``scripts[0]``, the next ``scripts[1]``; the last script serves
    every later one. Scripts run in one background thread; :meth:`close` stops it.
    """

    def __init__(self, *scripts: Script) -> None:
        if not scripts:
            raise ValueError("a fake server needs at least one script")
        self._scripts = list(scripts)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(POLL)
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        self._stopping = threading.Event()
        self.errors: list[BaseException] = []
        self._current: socket.socket | None = None
        self._thread = threading.Thread(target=self._serve, name="fake-server", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        served = 0
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            script = self._scripts[min(served, len(self._scripts) - 1)]
            served += 1
            self._current = conn
            if self._stopping.is_set():  # close() came while we were accepting
                conn.close()
                return
            with conn:
                conn.settimeout(10)
                try:
                    script(conn)
                except OSError:
                    pass  # the client hung up first: that is the client's business
                except BaseException as exc:  # a broken script must fail the test, not hide
                    self.errors.append(exc)

    def close(self) -> None:
        """Stop accepting and wait for the script that is running to end."""
        self._stopping.set()
        current = self._current
        if current is not None:
            with contextlib.suppress(OSError):  # wake a script blocked in recv
                current.shutdown(socket.SHUT_RDWR)
        self._thread.join(15)
        self._listener.close()
        if self.errors:
            raise self.errors[0]

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def read_request(conn: socket.socket) -> bytes:
    """Read until the end of one request line (or the client's hang-up); return what came."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def wait_for_hangup(conn: socket.socket) -> None:
    """Read and drop everything until the client closes (or ten seconds pass)."""
    with contextlib.suppress(TimeoutError):
        while conn.recv(65536):
            pass


def reset(conn: socket.socket) -> None:
    """Close with a TCP reset rather than a clean close (SO_LINGER on, zero seconds)."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def answer_ok(conn: socket.socket) -> None:
    """A well-behaved server for one connection: ``ok`` with no data to every request line."""
    buffered = b""
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            return
        buffered += chunk
        *lines, buffered = buffered.split(b"\n")
        conn.sendall(b"ok\n\n" * len(lines))
