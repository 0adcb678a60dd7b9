"""A server on its own event loop in a daemon thread: for notebooks, tests and scripts.

A Jupyter kernel already runs an event loop in its main thread, so ``asyncio.run`` cannot
start another one there. A thread with a loop of its own sidesteps that without patching
anything, and works the same in a plain script.

>>> from metrics_lab import Client, serve_in_background
>>> with serve_in_background() as server:
...     with Client(*server.address, timeout=5) as client:
...         client.put("cpu", 0.5, timestamp=1)
...     server.store.read("cpu")
[Series(key='cpu', timestamps=[1], values=[0.5])]
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol, Self

from metrics_lab.server import MetricsServer
from metrics_lab.storage import Storage
from metrics_lab.stores import open_store

__all__ = [
    "BackgroundServer",
    "ProtocolServer",
    "serve_in_background",
    "serve_protocol_in_background",
]

START_TIMEOUT = 10.0
"""Seconds to wait for the thread to bind its port before giving up."""


class _Servable(Protocol):
    """What :class:`BackgroundServer` runs: something that starts, has an address, and stops."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    @property
    def address(self) -> tuple[str, int]: ...


class ProtocolServer:
    """Any asyncio protocol on a TCP port, started and stopped like a MetricsServer.

    For servers written elsewhere (a learner's, a deliberately broken one in the tests), so
    they run in the background exactly as ours does. ``protocol_factory`` is what
    ``loop.create_server`` takes: a callable returning a new ``asyncio.Protocol``.
    """

    def __init__(
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        grace: float = 2.0,
    ) -> None:
        self.protocol_factory = protocol_factory
        self.requested_host = host
        self.requested_port = port
        self.grace = grace
        self._server: asyncio.Server | None = None
        self._address: tuple[str, int] | None = None

    async def start(self) -> None:
        """Bind and start accepting connections."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self.protocol_factory, self.requested_host, self.requested_port
        )
        host, port = self._server.sockets[0].getsockname()[:2]
        self._address = (str(host), int(port))

    async def stop(self) -> None:
        """Stop accepting; wait up to ``grace`` seconds for open connections to end."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        # Newer Pythons wait here for every connection, and a protocol we did not write may
        # keep one open: the grace period bounds the wait.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.grace):
                await server.wait_closed()

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` the server is bound to."""
        if self._address is None:
            raise RuntimeError("the server has not been started")
        return self._address


class BackgroundServer:
    """A running :class:`~metrics_lab.server.MetricsServer` (or :class:`ProtocolServer`) in a
    daemon thread.

    Made by :func:`serve_in_background` or :func:`serve_protocol_in_background`. :meth:`stop`
    (or leaving the ``with`` block) stops the server gracefully and joins the thread; the port
    is free again when it returns.
    """

    def __init__(self, server: _Servable, *, owned_store: Storage | None = None) -> None:
        self.server = server
        self._owned_store = owned_store  # made by serve_in_background(db=...): ours to close
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="metrics-lab-server", daemon=True)

    def _start(self) -> None:
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            raise RuntimeError(f"the background server did not start within {START_TIMEOUT} s")
        if self._startup_error is not None:
            self._thread.join()
            self._close_owned_store()
            raise self._startup_error

    def _run(self) -> None:
        # A loop of our own, not asyncio.run(): it must not care whether the caller's thread
        # runs a loop, or whether something patched asyncio for nested loops.
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve())
        finally:
            # As asyncio.run() does: cancel what is left (a connection accepted during the
            # stop, say), and give closed transports one more turn to release their sockets.
            loop.run_until_complete(_finish_leftovers())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        try:
            await self.server.start()
        except BaseException as exc:
            self._startup_error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._stop_requested.wait()
        await self.server.stop()

    @property
    def host(self) -> str:
        """The address the server is bound to."""
        return self.server.address[0]

    @property
    def port(self) -> int:
        """The port the server is bound to."""
        return self.server.address[1]

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)``: ``Client(*server.address)`` connects to it."""
        return self.server.address

    @property
    def graphite_address(self) -> tuple[str, int]:
        """``(host, port)`` of the Graphite plaintext port (``graphite_port=0`` picks one)."""
        if not isinstance(self.server, MetricsServer):
            raise AttributeError("only a MetricsServer has a Graphite port")
        return self.server.graphite_address

    @property
    def store(self) -> Storage:
        """The server's store (read it only while no client is writing)."""
        if not isinstance(self.server, MetricsServer):
            raise AttributeError("only a MetricsServer has a store")
        return self.server.store

    @property
    def running(self) -> bool:
        """Whether the server thread is still serving."""
        return self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server gracefully and wait for its thread; calling it again does nothing."""
        loop, stop_requested = self._loop, self._stop_requested
        if loop is None or stop_requested is None or not self._thread.is_alive():
            self._close_owned_store()
            return
        try:
            loop.call_soon_threadsafe(stop_requested.set)
        except RuntimeError:  # the loop closed between the check and the call
            self._close_owned_store()
            return
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError(f"the background server did not stop within {timeout} s")
        self._close_owned_store()

    def _close_owned_store(self) -> None:
        store, self._owned_store = self._owned_store, None
        if store is not None:
            store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        if self.running:
            return f"<BackgroundServer {self.host}:{self.port} running>"
        return "<BackgroundServer stopped>"


async def _finish_leftovers() -> None:
    current = asyncio.current_task()
    leftovers = [task for task in asyncio.all_tasks() if task is not current]
    for task in leftovers:
        task.cancel()
    await asyncio.gather(*leftovers, return_exceptions=True)
    await asyncio.sleep(0)


def serve_in_background(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    store: Storage | None = None,
    db: str | os.PathLike[str] | None = None,
    **server_options: Any,
) -> BackgroundServer:
    """Start a metrics server in a daemon thread and return once it accepts connections.

    ``port=0`` picks a free port (read it back from ``.port``). ``store`` and
    ``server_options`` go to :class:`~metrics_lab.server.MetricsServer`. ``db=PATH`` keeps
    the points in an SQLite file instead (:class:`~metrics_lab.sqlite_store.SQLiteStore`),
    which the background server opens now and closes when it stops; it raises
    :class:`~metrics_lab.storage.StoreOpenError` if the file cannot be used. Several may
    run side by side; each stops with ``.stop()`` or at the end of a ``with`` block.

    Unlike :class:`~metrics_lab.server.MetricsServer`, it keeps a request line that was begun
    open as long as it takes (``line_timeout=None`` unless given): a learner may send half a
    line in one notebook cell and the rest minutes later.
    """
    if db is not None and store is not None:
        raise ValueError("give serve_in_background a store or a db path, not both")
    owned = open_store(db) if db is not None else None
    try:
        chosen = owned if owned is not None else store
        options = {"line_timeout": None, **server_options}
        server = MetricsServer(host, port, store=chosen, **options)
    except BaseException:
        if owned is not None:
            owned.close()
        raise
    background = BackgroundServer(server, owned_store=owned)
    background._start()
    return background


def serve_protocol_in_background(
    protocol_factory: Callable[[], asyncio.BaseProtocol], host: str = "127.0.0.1", port: int = 0
) -> BackgroundServer:
    """Serve any asyncio protocol from a daemon thread, like :func:`serve_in_background`.

    ``protocol_factory`` is called once per connection, on the server's own loop. Use it
    for a server written in a notebook: the notebook's loop stays free.

    >>> import asyncio
    >>> class Hello(asyncio.Protocol):
    ...     def connection_made(self, transport):
    ...         transport.write(b"hello\\n")
    ...         transport.close()
    >>> import socket
    >>> with serve_protocol_in_background(Hello) as server:
    ...     with socket.create_connection(server.address, timeout=5) as sock:
    ...         print(sock.recv(100))
    b'hello\\n'
    """
    background = BackgroundServer(ProtocolServer(protocol_factory, host, port))
    background._start()
    return background
