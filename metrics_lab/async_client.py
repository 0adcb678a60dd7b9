"""The asyncio client: the same API and errors as :class:`~metrics_lab.Client`, awaited.

>>> import asyncio
>>> from metrics_lab import AsyncClient, serve_in_background
>>> async def main(port):
...     async with AsyncClient("127.0.0.1", port, timeout=5) as client:
...         await client.put("cpu", 0.5, timestamp=1)
...         return await client.get("cpu")
>>> with serve_in_background() as server:
...     asyncio.run(main(server.port))
{'cpu': [(1, 0.5)]}

It shares every protocol step with the blocking client (the exchanges of
:mod:`metrics_lab.client` and :mod:`metrics_lab.protocol`); only the reads and writes differ.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from functools import partial
from types import TracebackType
from typing import Self

from metrics_lab.client import (
    RECV_SIZE,
    A,
    ClientBase,
    Exchange,
    PointToPut,
    PutManyExchange,
    T,
    client_error,
    get_request,
    progress_bar,
    put_request,
)
from metrics_lab.protocol import ProtocolError
from metrics_lab.storage import GetResult

__all__ = ["AsyncClient"]

CLOSE_GRACE = 1.0
"""The longest :meth:`AsyncClient.close` waits for the connection to close politely (or less,
if the timeout is shorter); then it drops it."""


class AsyncClient(ClientBase):
    """An asyncio client for a metrics server; connect with ``async with`` or :meth:`connect`.

    The same contract as :class:`~metrics_lab.Client`, with tasks for threads:

    - ``timeout`` bounds every wait: the connect, waiting for another task's request, and the
      wait for the next answer (for ``put`` and ``get``: the whole request, from the write to
      the answer's last byte; for ``put_many``: each answer of its window, so a batch of any
      size goes through while the server keeps answering). :meth:`close` waits at most
      :data:`CLOSE_GRACE` (or ``timeout``, if shorter), then drops the connection.
    - Tasks that share a client take turns (an :class:`asyncio.Lock`); one that waits longer
      than ``timeout`` gets :class:`~metrics_lab.errors.ClientBusyError`. A client belongs to
      one event loop.
    - A request interrupted in any way (the task cancelled, ``asyncio.wait_for`` or
      ``asyncio.timeout`` expiring around it, any exception) closes the client at once unless
      no answer was outstanding, so no later call can read an earlier call's answer: the next
      call raises ``ClientConnectionError`` and :meth:`reconnect` opens a fresh connection.
    """

    _reader: asyncio.StreamReader | None = None
    _writer: asyncio.StreamWriter | None = None
    _lock: asyncio.Lock | None = None  # made on first use, on the loop that uses it

    async def connect(self) -> None:
        """Open the connection (closing a previous one first)."""
        async with self._turn():
            await self.close()
            self._start_connection()
            try:
                async with asyncio.timeout(self.timeout):
                    self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
            except OSError as exc:
                raise self._connect_failed(exc) from exc

    reconnect = connect

    async def put(self, key: str, value: float, timestamp: int | None = None) -> None:
        """Store one point; see :meth:`metrics_lab.Client.put`."""
        await self._run(put_request, (key, value, timestamp))

    async def put_many(self, points: Iterable[PointToPut], *, progress: bool = False) -> None:
        """Store a batch of any size, pipelined; see :meth:`metrics_lab.Client.put_many`."""
        with progress_bar(points, progress) as on_answered:
            await self._run(partial(PutManyExchange, on_answered=on_answered), points)

    async def get(self, key: str) -> GetResult:
        """Read a key, or ``"*"`` for all; see :meth:`metrics_lab.Client.get`."""
        return await self._run(get_request, key)

    @contextlib.asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        """Wait (at most ``timeout``) until no other task's request is running."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        lock = self._lock
        if lock.locked():
            try:
                async with asyncio.timeout(self.timeout):
                    await lock.acquire()
            except TimeoutError:
                raise self._busy_error() from None
        else:
            await lock.acquire()
        try:
            yield
        finally:
            lock.release()

    async def _run(self, start: Callable[[A], Exchange[T]], arg: A) -> T:
        """Drive the exchange ``start(arg)`` over the streams; the same steps and
        the same one place for error mapping as :meth:`metrics_lab.Client._run`."""
        try:
            exchange = start(arg)
            async with self._turn():
                reader, writer = self._reader, self._writer
                if reader is None or writer is None:
                    raise self._closed_error()
                try:
                    exchange.begin(self._answers)
                    async with asyncio.timeout(self.timeout) as deadline:
                        answered = 0
                        while not exchange.done:
                            data = exchange.data_to_send()
                            if data is not None:
                                self._sent(data)
                                writer.write(data)
                                await writer.drain()
                                continue
                            if exchange.done:
                                break  # its answer had arrived already, after an earlier one
                            self._received(exchange, await reader.read(RECV_SIZE))
                            if exchange.answered != answered and self.timeout is not None:
                                answered = exchange.answered
                                loop_time = asyncio.get_running_loop().time()
                                deadline.reschedule(loop_time + self.timeout)
                    return exchange.result()
                except BaseException as exc:  # CancelledError too: see ClientBase._failed
                    self._failed(exc, exchange, writer)
                    raise
        except ProtocolError as exc:  # free unless raised (zero-cost try since 3.11)
            raise client_error(exc) from exc

    def _abandon(self, writer: asyncio.StreamWriter) -> None:
        """Drop the connection now, unsent bytes and all: no await, so cancellation-proof."""
        if self._writer is writer:
            self._writer = self._reader = None
        writer.transport.abort()

    async def close(self) -> None:
        """Close the connection; calls after this raise until :meth:`connect`.

        It never hangs: it waits at most :data:`CLOSE_GRACE` (or ``timeout``, if shorter)
        for a polite close, then drops the connection.
        """
        writer, self._writer, self._reader = self._writer, None, None
        if writer is None:
            return
        grace = CLOSE_GRACE if self.timeout is None else min(self.timeout, CLOSE_GRACE)
        writer.close()
        try:
            async with asyncio.timeout(grace):
                await writer.wait_closed()
        except BaseException as exc:
            writer.transport.abort()  # no polite close (in time): drop the connection
            if not isinstance(exc, OSError):  # TimeoutError is one; a cancellation is not
                raise

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
