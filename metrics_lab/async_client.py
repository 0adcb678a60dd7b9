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

It shares every protocol step with the blocking client (:class:`~metrics_lab.client.ClientBase`
and :mod:`metrics_lab.protocol`); only the reads and writes differ. ``timeout`` bounds each
whole request here, from the write to the last byte of the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Self

from metrics_lab.client import (
    RECV_SIZE,
    ClientBase,
    PointToPut,
    T,
    check_put_answers,
    check_put_many_answers,
    get_answer_parser,
    put_many_request,
    put_request,
)
from metrics_lab.errors import ClientConnectionError, RemoteProtocolError
from metrics_lab.protocol import NEED_DATA, Answer, encode_get

__all__ = ["AsyncClient"]


class AsyncClient(ClientBase):
    """An asyncio client for a metrics server; connect with ``async with`` or :meth:`connect`."""

    _reader: asyncio.StreamReader | None = None
    _writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        """Open the connection (closing a previous one first)."""
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
        await self._exchange(put_request(key, value, timestamp), 1, check_put_answers)

    async def put_many(self, points: Iterable[PointToPut]) -> None:
        """Store a batch with one write; see :meth:`metrics_lab.Client.put_many`."""
        request, count = put_many_request(points)
        if count:
            await self._exchange(request, count, check_put_many_answers)

    async def get(self, key: str) -> dict[str, list[tuple[int, float]]]:
        """Read a key, or ``"*"`` for all; see :meth:`metrics_lab.Client.get`."""
        return await self._exchange(encode_get(key), 1, get_answer_parser(key))

    async def _exchange(self, request: bytes, count: int, parse: Callable[[list[Answer]], T]) -> T:
        """Write ``request``, read ``count`` answers and ``parse`` them; see ``Client``."""
        reader, writer = self._reader, self._writer
        if reader is None or writer is None:
            raise self._closed_error()
        answers: list[Answer] = []
        try:
            async with asyncio.timeout(self.timeout):
                self._sent(request)
                writer.write(request)
                await writer.drain()
                while len(answers) < count:
                    answer = self._answers.next_answer()
                    if answer is NEED_DATA:
                        self._received(await reader.read(RECV_SIZE))
                    else:
                        answers.append(answer)
                return parse(answers)
        except OSError as exc:  # TimeoutError included
            await self.close()
            raise self._exchange_failed(exc) from exc
        except (RemoteProtocolError, ClientConnectionError):
            await self.close()
            raise

    async def close(self) -> None:
        """Close the connection; calls after this raise until :meth:`connect`."""
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):  # the peer already hung up: closed is closed
                await writer.wait_closed()

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
