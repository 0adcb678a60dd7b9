"""The blocking socket client, as the course defines it.

>>> from metrics_lab import Client, serve_in_background
>>> with serve_in_background() as server, Client(server.host, server.port, timeout=5) as client:
...     client.put("palm.cpu", 10.5, timestamp=1501864247)
...     client.get("*")
{'palm.cpu': [(1501864247, 10.5)]}

Everything protocol-shaped (encoding requests, finding where an answer ends, parsing it) is
done by :mod:`metrics_lab.protocol`; this module only moves bytes through a socket and turns
socket failures into :class:`~metrics_lab.errors.ClientError`. :mod:`metrics_lab.async_client`
does the same over asyncio streams, sharing :class:`ClientBase`.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Self, TypeVar

from metrics_lab.errors import (
    ClientConnectionError,
    ClientError,
    ClientTimeoutError,
    RemoteProtocolError,
    RequestRejectedError,
)
from metrics_lab.protocol import (
    DEFAULT_MAX_ANSWER_SIZE,
    NEED_DATA,
    Answer,
    AnswerReader,
    check_put_answer,
    encode_get,
    encode_put,
    parse_get_answer,
)
from metrics_lab.wire import WireLog

# ClientError is re-exported: the course imports it from the client module.
__all__ = ["Client", "ClientBase", "ClientError", "PointToPut"]

T = TypeVar("T")

RECV_SIZE = 256 * 1024
"""Bytes asked of each ``recv``: large enough that a big ``get *`` takes few calls."""

PointToPut = tuple[str, float, int | None]
"""A point for ``put_many``, in ``put``'s argument order: ``(key, value, timestamp)``."""


class ClientBase:
    """What the blocking and the asyncio client share: settings, answer reader, wire log."""

    def __init__(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        *,
        max_answer_size: int = DEFAULT_MAX_ANSWER_SIZE,
        wire: WireLog | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.wire = wire
        self._max_answer_size = max_answer_size
        self._answers = AnswerReader(max_answer_size)

    @property
    def _where(self) -> str:
        return f"{self.host}:{self.port}"

    def _start_connection(self) -> None:
        self._answers = AnswerReader(self._max_answer_size)

    def _sent(self, data: bytes) -> None:
        if self.wire is not None:
            self.wire.record("sent", data)

    def _received(self, data: bytes) -> None:
        if self.wire is not None and data:
            self.wire.record("received", data)
        self._answers.receive_data(data)

    def _connect_failed(self, exc: OSError) -> ClientConnectionError:
        if isinstance(exc, TimeoutError):
            return ClientTimeoutError(f"connecting to {self._where} timed out ({self.timeout} s)")
        return ClientConnectionError(
            f"cannot connect to {self._where}: {exc.strerror or exc}. "
            "Is the server running there? Start one with `metrics-lab serve`."
        )

    def _exchange_failed(self, exc: OSError) -> ClientConnectionError:
        if isinstance(exc, TimeoutError):
            return ClientTimeoutError(
                f"no answer from {self._where} within {self.timeout} s; the client is closed, "
                "call reconnect() to go on"
            )
        return ClientConnectionError(
            f"the connection to {self._where} failed: {exc.strerror or exc}; "
            "the client is closed, call reconnect() to go on"
        )

    def _closed_error(self) -> ClientConnectionError:
        return ClientConnectionError(
            f"the client for {self._where} is closed (by close() or an earlier failure); "
            "call reconnect() or make a new client"
        )


def put_many_request(points: Iterable[PointToPut]) -> tuple[bytes, int]:
    """Encode a batch of puts as one write; return it and how many answers to expect.

    A ``None`` timestamp means now, as in ``put``. Nothing is sent if any point is invalid.
    """
    now = int(time.time())
    lines = [
        encode_put(key, value, now if timestamp is None else timestamp)
        for key, value, timestamp in points
    ]
    return b"".join(lines), len(lines)


def put_request(key: str, value: float, timestamp: int | None) -> bytes:
    """Encode one put; a ``None`` timestamp means now (``0`` is a timestamp)."""
    return encode_put(key, value, int(time.time()) if timestamp is None else timestamp)


def check_put_answers(answers: list[Answer]) -> None:
    """Accept the answer to one put, or raise a :class:`ClientError`."""
    [answer] = answers
    check_put_answer(answer)


def get_answer_parser(key: str) -> Callable[[list[Answer]], dict[str, list[tuple[int, float]]]]:
    """What turns the answer to ``get key`` into the result (or raises)."""

    def parse(answers: list[Answer]) -> dict[str, list[tuple[int, float]]]:
        [answer] = answers
        return parse_get_answer(answer, f"get {key}")

    return parse


def check_put_many_answers(answers: list[Answer]) -> None:
    """Accept the answers to a batch of puts, or raise for the refused ones (after reading all)."""
    refused = [index for index, answer in enumerate(answers) if answer.status == "error"]
    if refused:
        detail = " ".join(answers[refused[0]].lines)
        raise RequestRejectedError(
            f"the server refused {len(refused)} of {len(answers)} puts (the first at index "
            f"{refused[0]}): {detail}; the others were stored",
            detail,
        )
    for answer in answers:
        check_put_answer(answer)


class Client(ClientBase):
    """A blocking client for a metrics server; one TCP connection, requests in turn.

    ``Client(host, port, timeout=None)`` connects at once with
    ``socket.create_connection((host, port), timeout)``; ``timeout`` bounds the connect and
    every wait for data (``None`` waits forever). Every failure raises a
    :class:`~metrics_lab.errors.ClientError`. After a connection failure, a timeout or an
    answer that breaks the protocol the client is closed: the next call raises
    :class:`~metrics_lab.errors.ClientConnectionError` saying so, and :meth:`reconnect` opens
    a fresh connection (there is no automatic reconnect: a put that failed may or may not have
    been stored, and only the caller knows whether to send it again). An ``error`` answer
    (:class:`~metrics_lab.errors.RequestRejectedError`) leaves the connection usable. An
    answer that never ends is cut off at ``max_answer_size`` bytes.

    ``wire=WireLog()`` records every chunk sent and received (see :mod:`metrics_lab.wire`).
    """

    def __init__(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        *,
        max_answer_size: int = DEFAULT_MAX_ANSWER_SIZE,
        wire: WireLog | None = None,
    ) -> None:
        super().__init__(host, port, timeout, max_answer_size=max_answer_size, wire=wire)
        self._sock: Any = None  # a socket, or the course test's stand-in with sendall/recv only
        self.reconnect()

    def reconnect(self) -> None:
        """Close the current connection, if any, and open a new one (after a failure, too)."""
        self.close()
        self._start_connection()
        try:
            self._sock = socket.create_connection((self.host, self.port), self.timeout)
        except OSError as exc:
            raise self._connect_failed(exc) from exc

    def put(self, key: str, value: float, timestamp: int | None = None) -> None:
        """Store ``value`` for ``key`` at ``timestamp`` (Unix seconds; ``None`` means now).

        Raises :class:`~metrics_lab.errors.InvalidRequestError` before sending if the key or
        value cannot go on the wire, and another ``ClientError`` if the server does not
        answer ``ok``.
        """
        self._exchange(put_request(key, value, timestamp), 1, check_put_answers)

    def put_many(self, points: Iterable[PointToPut]) -> None:
        """Store many ``(key, value, timestamp)`` points with one write, then check every answer.

        Pipelining: all requests go out together and the answers are read afterwards, so a
        batch costs one round trip instead of one per point.
        """
        request, count = put_many_request(points)
        if count:
            self._exchange(request, count, check_put_many_answers)

    def get(self, key: str) -> dict[str, list[tuple[int, float]]]:
        """Return ``{key: [(timestamp, value), ...]}`` for ``key``, or every key for ``"*"``.

        Each list is sorted by timestamp; a key with no points gives ``{}``.
        """
        return self._exchange(encode_get(key), 1, get_answer_parser(key))

    def _exchange(self, request: bytes, count: int, parse: Callable[[list[Answer]], T]) -> T:
        """Send ``request`` in one ``sendall``, read ``count`` answers and ``parse`` them.

        A network failure or an answer that breaks the protocol (while reading or parsing)
        closes the client before the error is raised; an ``error`` answer does not.
        """
        sock = self._sock
        if sock is None:
            raise self._closed_error()
        answers: list[Answer] = []
        try:
            self._sent(request)
            sock.sendall(request)
            while len(answers) < count:
                answer = self._answers.next_answer()
                if answer is NEED_DATA:
                    self._received(sock.recv(RECV_SIZE))
                else:
                    answers.append(answer)
            return parse(answers)
        except OSError as exc:
            self.close()
            raise self._exchange_failed(exc) from exc
        except (RemoteProtocolError, ClientConnectionError):
            self.close()
            raise

    def close(self) -> None:
        """Close the connection; calls after this raise until :meth:`reconnect`."""
        sock, self._sock = self._sock, None
        if sock is not None and hasattr(sock, "close"):
            sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
