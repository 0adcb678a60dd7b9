"""The blocking socket client, as the course defines it.

>>> from metrics_lab import Client, serve_in_background
>>> with serve_in_background() as server, Client(server.host, server.port, timeout=5) as client:
...     client.put("palm.cpu", 10.5, timestamp=1501864247)
...     client.get("*")
{'palm.cpu': [(1501864247, 10.5)]}

Everything protocol-shaped (encoding requests, finding where an answer ends, parsing it) is
done by :mod:`metrics_lab.protocol`. What one call says to the server, and when, is an
:class:`Exchange`: it hands out the bytes to send and takes the bytes received, without I/O.
:class:`Client` drives an exchange through a socket, :class:`~metrics_lab.AsyncClient` through
asyncio streams; both share :class:`ClientBase` and every exchange, so the two clients differ
only in the lines that touch the network.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from functools import partial
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

from metrics_lab.errors import (
    ClientBusyError,
    ClientConnectionError,
    ClientError,
    ClientTimeoutError,
    InvalidRequestError,
    RemoteProtocolError,
    RequestRejectedError,
)
from metrics_lab.protocol import (
    DEFAULT_MAX_ANSWER_SIZE,
    NEED_DATA,
    Answer,
    AnswerReader,
    MalformedAnswerError,
    ProtocolError,
    RefusedRequestError,
    StreamEndedError,
    UnsendableRequestError,
    check_put_answer,
    encode_get,
    encode_put,
    encode_puts,
    parse_get_answer,
)
from metrics_lab.storage import GetResult
from metrics_lab.wire import WireLog

# ClientError is re-exported: the course imports it from the client module.
__all__ = ["Client", "ClientBase", "ClientError", "Exchange", "PointToPut", "PutManyExchange"]

T = TypeVar("T")
A = TypeVar("A")

RECV_SIZE = 256 * 1024
"""Bytes asked of each ``recv``: large enough that a big ``get *`` takes few calls."""

PUT_SLICE = 4096
"""Points that ``put_many`` encodes and sends in one write (about 100 KiB of requests)."""

PUT_WINDOW = 2 * PUT_SLICE
"""The most puts ``put_many`` leaves unanswered at any moment.

Why this bounds both sides: the server stops reading a connection only while more than its
output buffer's high-water mark (1 MiB, ``metrics_lab.server.WRITE_BUFFER_HIGH``) of
answers waits to be sent; 8192 answers of ``ok\\n\\n`` are 32 KiB. So the server always
takes a whole slice while the client is in ``sendall``, and then the client reads answers
before it writes again: no size of batch can make the two wait for each other, and neither
buffers more than a window.
"""

PointToPut = tuple[str, float, int | None]
"""A point for ``put_many``, in ``put``'s argument order: ``(key, value, timestamp)``."""


# --- what one call says to the server, without I/O ---------------------------------------


class Exchange(Generic[T]):
    """One call's conversation with the server: requests out, answers in, no I/O.

    A client drives it, here with a blocking socket::

        exchange.begin(answer_reader)
        while not exchange.done:
            data = exchange.data_to_send()
            if data is None:
                exchange.receive_data(sock.recv(RECV_SIZE))
            else:
                sock.sendall(data)
        return exchange.result()

    ``data_to_send`` gives the next requests as long as at most :attr:`window` are then
    unanswered, and ``None`` when answers must come first. A request counts as unanswered
    from the moment it is handed out, so :attr:`in_step` (nothing unanswered) tells whether
    the connection is still in step after the driver was interrupted, wherever that was.
    """

    window = 1
    """The most requests unanswered at once."""

    def __init__(self) -> None:
        self.unanswered = 0
        self.answered = 0
        self._answers: AnswerReader  # set by begin(), which every driver calls first
        self._pending: tuple[bytes, int] | None = None  # the next requests and their count

    def begin(self, answers: AnswerReader) -> None:
        """Start on a connection whose answers ``answers`` reads."""
        self._answers = answers
        self._pending = self._next_requests()

    @property
    def done(self) -> bool:
        """Every request has been sent and answered: time for :meth:`result`."""
        return self._pending is None and not self.unanswered

    @property
    def in_step(self) -> bool:
        """No request is waiting for its answer: the next bytes belong to the next call."""
        return not self.unanswered

    def data_to_send(self) -> bytes | None:
        """The next requests to send whole, or ``None`` if answers must be received first."""
        self._read_answers()
        pending = self._pending
        if pending is None or self.unanswered + pending[1] > self.window:
            return None
        self.unanswered += pending[1]
        self._pending = None  # if preparing the next ones is interrupted, nothing is pending
        self._pending = self._next_requests()
        return pending[0]

    def receive_data(self, data: bytes) -> None:
        """Take bytes from the server (``b""``: it closed the connection)."""
        self._answers.receive_data(data)
        self._read_answers()

    def result(self) -> T:
        """What the call returns, or raises, once :attr:`done`."""
        raise NotImplementedError

    def _next_requests(self) -> tuple[bytes, int] | None:
        return None

    def _take(self, answer: Answer) -> None:
        """Handle one answer; raise only if the server broke the protocol."""

    def _skip_ok_answers(self, limit: int) -> int:
        return 0

    def _read_answers(self) -> None:
        while self.unanswered:
            count = self._skip_ok_answers(self.unanswered)
            if not count:
                answer = self._answers.next_answer()
                if answer is NEED_DATA:
                    return
                self._take(answer)
                count = 1
            self.unanswered -= count
            self.answered += count
            self._answered(count)

    def _answered(self, count: int) -> None:
        pass


class SingleRequest(Exchange[T]):
    """One request, one answer, turned into the result by ``parse`` (which may raise)."""

    def __init__(self, request: bytes, parse: Callable[[Answer], T]) -> None:
        super().__init__()
        self._request = request
        self._parse = parse
        self._answer: Answer | None = None

    def _next_requests(self) -> tuple[bytes, int] | None:
        request, self._request = self._request, b""
        return (request, 1) if request else None

    def _take(self, answer: Answer) -> None:
        self._answer = answer

    def result(self) -> T:
        if self._answer is None:
            raise RuntimeError("result() before the answer came")
        return self._parse(self._answer)


def put_request(point: PointToPut) -> SingleRequest[None]:
    """One put; a ``None`` timestamp means now (``0`` is a timestamp). Checked at once."""
    key, value, timestamp = point
    now = int(time.time()) if timestamp is None else timestamp
    return SingleRequest(encode_put(key, value, now), check_put_answer)


def get_request(key: str) -> SingleRequest[GetResult]:
    """One get of ``key`` (``"*"``: every key). Checked at once."""
    return SingleRequest(encode_get(key), partial(parse_get_answer, request=f"get {key}"))


class PutManyExchange(Exchange[None]):
    """Many puts, pipelined through a window: slices of ``slice_size`` go out while at most
    ``window`` puts are unanswered, so a batch of any size streams in bounded memory.

    ``points`` is read lazily, a slice at a time. A point that cannot go on the wire (or an
    ``points`` iterator that raises) ends the sending before its slice: the answers to what
    was sent are still read, so the connection stays in step, and then :meth:`result` raises
    (:class:`~metrics_lab.protocol.UnsendableRequestError` naming the point's index). Refused
    puts do not stop the batch: :meth:`result` raises
    :class:`~metrics_lab.protocol.RefusedRequestError` for them at the end. (Like every
    exchange, it raises protocol errors; the client raises the matching ``ClientError``.)
    ``on_answered(count)`` is told as answers arrive (a progress bar).
    """

    def __init__(
        self,
        points: Iterable[PointToPut],
        on_answered: Callable[[int], object] | None = None,
        *,
        slice_size: int = PUT_SLICE,
        window: int = PUT_WINDOW,
    ) -> None:
        super().__init__()
        if not 0 < slice_size <= window:
            raise ValueError(f"need 0 < slice_size <= window, got {slice_size} and {window}")
        self.window = window
        self._points = iter(points)
        self._slice_size = slice_size
        self._on_answered = on_answered
        self._now = int(time.time())
        self._taken = 0  # points read from the input so far
        self._failure: Exception | None = None
        self._refused = 0
        self._first_refused: tuple[int, Answer] | None = None

    def _next_requests(self) -> tuple[bytes, int] | None:
        if self._failure is not None:
            return None
        start = self._taken
        try:
            chunk = list(itertools.islice(self._points, self._slice_size))
        except Exception as exc:  # the caller's iterator failed: stop sending, stay in step
            exc.add_note(f"put_many read {start} points before this; those were sent")
            self._failure = exc
            return None
        if not chunk:
            return None
        try:
            data = encode_puts(chunk, self._now)
        except Exception:
            self._failure = _invalid_point(chunk, start, self._now)
            return None
        self._taken += len(chunk)
        return data, len(chunk)

    def _skip_ok_answers(self, limit: int) -> int:
        return self._answers.skip_ok_answers(limit)

    def _take(self, answer: Answer) -> None:
        if answer.status == "error":
            if self._first_refused is None:
                self._first_refused = (self.answered, answer)
            self._refused += 1
        else:
            check_put_answer(answer)  # an ok with data lines: the server is confused

    def _answered(self, count: int) -> None:
        if self._on_answered is not None:
            self._on_answered(count)

    def result(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._first_refused is not None:
            index, answer = self._first_refused
            detail = " ".join(answer.lines)
            raise RefusedRequestError(
                f"the server refused {self._refused} of {self.answered} puts (the first at "
                f"index {index}): {detail}; the others were stored",
                detail,
            )


def _invalid_point(chunk: list[PointToPut], start: int, now: int) -> UnsendableRequestError:
    """The error for the first point of ``chunk`` (at ``start`` in the batch) that fails."""
    for index, point in enumerate(chunk, start):
        try:
            encode_puts([point], now)
        except Exception as exc:
            sent = f"points 0 to {start - 1} were sent, none from {start} on" if start else ""
            error = UnsendableRequestError(
                f"put_many: point {index} {point!r} cannot be sent: {exc} "
                f"({sent or 'nothing was sent'})"
            )
            error.__cause__ = exc
            return error
    raise AssertionError("the slice failed to encode, but no point of it does")


@contextlib.contextmanager
def progress_bar(
    points: Iterable[PointToPut], wanted: bool
) -> Iterator[Callable[[int], object] | None]:
    """A tqdm bar counting answered puts (a widget in notebooks), or ``None`` if not wanted.

    tqdm is imported only here, so it is needed only by those who ask for a bar.
    """
    if not wanted:
        yield None
        return
    try:
        from tqdm.auto import tqdm
    except ImportError as exc:
        raise ImportError(
            "put_many(progress=True) draws its bar with tqdm, which is not installed: "
            "pip install tqdm (the lab extra has it), or leave progress off"
        ) from exc
    total = len(points) if isinstance(points, Sized) else None
    bar = tqdm(total=total, unit="point", unit_scale=True, desc="put_many")
    try:
        yield bar.update
    finally:
        bar.close()


# --- what both clients share ---------------------------------------------------------------


def client_error(exc: ProtocolError) -> ClientError:
    """The :class:`ClientError` a user sees for ``exc``: its class in the client's tree, and
    ``exc``'s message. Each client raises it ``from exc``, once, in its ``_run``."""
    if isinstance(exc, UnsendableRequestError):
        return InvalidRequestError(str(exc))
    if isinstance(exc, RefusedRequestError):
        return RequestRejectedError(str(exc), exc.detail)
    if isinstance(exc, StreamEndedError):
        return ClientConnectionError(str(exc))
    return RemoteProtocolError(str(exc))  # a MalformedAnswerError: the server broke the protocol


class ClientBase:
    """What the blocking and the asyncio client share: settings, answer reader, wire log,
    and the rule for what a failure leaves behind."""

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
        self._start_connection()

    @property
    def _where(self) -> str:
        return f"{self.host}:{self.port}"

    def _start_connection(self) -> None:
        self._answers = AnswerReader(self._max_answer_size)

    def _sent(self, data: bytes) -> None:
        if self.wire is not None:
            self.wire.record("sent", data)

    def _received(self, exchange: Exchange[Any], data: bytes) -> None:
        if self.wire is not None and data:
            self.wire.record("received", data)
        exchange.receive_data(data)

    @staticmethod
    def _must_close(exc: BaseException, exchange: Exchange[Any]) -> bool:
        """Whether a call that ended with ``exc`` leaves the connection unusable.

        Any interruption (an exception of any kind, ``KeyboardInterrupt`` and task
        cancellation included) while a request waits for its answer does: the answer will
        still come, and the next call would read it as its own. So does a server that broke
        the protocol. An ``error`` answer, or a point refused before it was sent, does not.
        """
        return not exchange.in_step or isinstance(exc, MalformedAnswerError | OSError)

    def _abandon(self, connection: Any) -> None:
        """Drop ``connection`` at once (if it is still the client's), without waiting."""
        raise NotImplementedError

    def _failed(self, exc: BaseException, exchange: Exchange[Any], connection: Any) -> None:
        """Handle ``exc``, which interrupted ``exchange`` on ``connection``.

        Drops the connection if :meth:`_must_close` says so and raises an ``OSError`` as a
        :class:`~metrics_lab.errors.ClientConnectionError`; the caller re-raises anything else.
        """
        if self._must_close(exc, exchange):
            self._abandon(connection)
        if isinstance(exc, OSError):
            raise self._exchange_failed(exc) from exc

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
            f"the client for {self._where} is closed (by close(), an earlier failure or an "
            "interrupted request); call reconnect() or make a new client"
        )

    def _busy_error(self) -> ClientBusyError:
        return ClientBusyError(
            f"another request held the client for {self._where} longer than the timeout "
            f"({self.timeout} s); nothing was sent. A client serves one request at a time: "
            "give each thread or task a client of its own to run them in parallel"
        )


class Client(ClientBase):
    """A blocking client for a metrics server; one TCP connection, requests in turn.

    ``Client(host, port, timeout=None)`` connects at once with
    ``socket.create_connection((host, port), timeout)``. ``timeout`` (seconds; ``None`` waits
    forever) bounds every wait: the connect, each send and receive, the wait for the next
    answer (checked between socket calls, so a server dribbling bytes is cut off after
    at most about twice ``timeout``) and the wait for another thread's request to finish.
    :meth:`close` never waits.

    Every failure raises a :class:`~metrics_lab.errors.ClientError`. What it leaves behind:

    - :class:`~metrics_lab.errors.InvalidRequestError` (checked before sending),
      :class:`~metrics_lab.errors.RequestRejectedError` (an ``error`` answer) and
      :class:`~metrics_lab.errors.ClientBusyError`: the connection is in step and usable.
    - :class:`~metrics_lab.errors.ClientConnectionError` (including timeouts) and
      :class:`~metrics_lab.errors.RemoteProtocolError`, and **any other exception that
      interrupts a request** (``KeyboardInterrupt`` from Ctrl-C, an error raised by the
      wire log): the client is closed, since an answer may still be on its way. The next call
      raises ``ClientConnectionError`` saying so; :meth:`reconnect` opens a fresh connection.
      There is no automatic reconnect: a put that failed may or may not have been stored,
      and only the caller knows whether to send it again.

    Threads: a client serves one request at a time. Threads that share one take turns (a
    lock); a thread that waits longer than ``timeout`` for its turn gets ``ClientBusyError``.
    A client is never used by two requests at once, so no request gets another's answer.

    An answer over ``max_answer_size`` bytes is refused (``RemoteProtocolError``).
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
        self._lock = threading.Lock()
        self._owner: int | None = None  # the thread whose request is running
        self.reconnect()

    def reconnect(self) -> None:
        """Close the current connection, if any, and open a new one (after a failure, too)."""
        self._take_turn()
        try:
            self.close()
            self._start_connection()
            try:
                self._sock = socket.create_connection((self.host, self.port), self.timeout)
            except OSError as exc:
                raise self._connect_failed(exc) from exc
        finally:
            self._end_turn()

    def put(self, key: str, value: float, timestamp: int | None = None) -> None:
        """Store ``value`` for ``key`` at ``timestamp`` (Unix seconds; ``None`` means now).

        Raises :class:`~metrics_lab.errors.InvalidRequestError` before sending if the key or
        value cannot go on the wire, and another ``ClientError`` if the server does not
        answer ``ok``.
        """
        self._run(put_request, (key, value, timestamp))

    def put_many(self, points: Iterable[PointToPut], *, progress: bool = False) -> None:
        """Store many ``(key, value, timestamp)`` points, pipelined; any number of them.

        The points are read lazily and go out in slices of :data:`PUT_SLICE` (one
        ``sendall`` each, so a small batch is one write), with at most :data:`PUT_WINDOW`
        unanswered at once: the client reads answers between writes, so memory stays bounded
        and no batch size can deadlock. Every answer is read before it returns; refused puts
        raise :class:`~metrics_lab.errors.RequestRejectedError` at the end (the others were
        stored). A point that cannot be sent raises ``InvalidRequestError`` naming it, once
        the slices before it are answered; nothing of its slice is sent.

        ``progress=True`` shows a tqdm bar (in a notebook, a widget); it needs ``tqdm``.
        """
        with progress_bar(points, progress) as on_answered:
            self._run(partial(PutManyExchange, on_answered=on_answered), points)

    def get(self, key: str) -> GetResult:
        """Return ``{key: [(timestamp, value), ...]}`` for ``key``, or every key for ``"*"``.

        Each list is sorted by timestamp; a key with no points gives ``{}``.
        """
        return self._run(get_request, key)

    def _take_turn(self) -> None:
        """Wait (at most ``timeout``) until no other thread's request is running.

        Every call is followed by :meth:`_end_turn` in a ``finally``. (Two plain methods, not
        a context manager: this runs on every request, and a generator costs about 1 µs.)
        """
        me = threading.get_ident()
        if self._owner == me:
            raise self._reentered_error()
        if not self._lock.acquire(timeout=-1 if self.timeout is None else self.timeout):
            raise self._busy_error()
        self._owner = me

    def _end_turn(self) -> None:
        """Let the next thread's request run."""
        self._owner = None
        self._lock.release()

    def _run(self, start: Callable[[A], Exchange[T]], arg: A) -> T:
        """Drive the exchange ``start(arg)`` over the socket: ``sendall`` what it
        hands out, ``recv`` for it.

        ``start`` makes the exchange (``put`` and ``get`` encode their request there), so a
        call that cannot go on the wire fails before it waits for its turn. Whatever
        interrupts the exchange, the client is closed unless it is still in step (see
        :meth:`ClientBase._must_close`). This is where the exchange's failures are translated
        into a ``ClientError``, once: an ``OSError`` by :meth:`~ClientBase._failed`, a
        protocol error by :func:`client_error`.
        """
        try:
            exchange = start(arg)  # one argument: a plain call, cheaper than start(*args)
            self._take_turn()
            try:
                sock = self._sock
                if sock is None:
                    raise self._closed_error()
                try:
                    exchange.begin(self._answers)
                    answered, deadline = 0, self._deadline()
                    while not exchange.done:
                        data = exchange.data_to_send()
                        if data is not None:
                            self._sent(data)
                            sock.sendall(data)
                            continue
                        if exchange.done:
                            break  # its answer had arrived already, after an earlier one
                        self._received(exchange, sock.recv(RECV_SIZE))
                        if exchange.answered != answered:
                            answered, deadline = exchange.answered, self._deadline()
                        elif time.monotonic() > deadline:
                            raise TimeoutError("the server sends, but no answer ends in time")
                    return exchange.result()
                except BaseException as exc:
                    self._failed(exc, exchange, sock)
                    raise
            finally:
                self._end_turn()
        except ProtocolError as exc:  # free unless raised (zero-cost try since 3.11)
            raise client_error(exc) from exc

    def _reentered_error(self) -> ClientBusyError:
        return ClientBusyError(
            "this client is already in the middle of a request from this same thread or task "
            "(does put_many's points iterator call the client?); nothing was sent"
        )

    def _deadline(self) -> float:
        """When waiting for the next answer should end (``inf`` without a timeout)."""
        return time.monotonic() + (math.inf if self.timeout is None else self.timeout)

    def _abandon(self, sock: Any) -> None:
        if self._sock is sock:
            self.close()

    def close(self) -> None:
        """Close the connection at once; calls after this raise until :meth:`reconnect`.

        Safe from any thread: a request running in another thread then fails with
        ``ClientConnectionError``.
        """
        sock, self._sock = self._sock, None
        if sock is not None and hasattr(sock, "shutdown"):
            with contextlib.suppress(OSError):  # wakes a recv blocked in another thread
                sock.shutdown(socket.SHUT_RDWR)
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
