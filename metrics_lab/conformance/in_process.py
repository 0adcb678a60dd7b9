"""Check a server class in this process: its crashes and hangs reported in the check's row.

A notebook checks a learner's ``asyncio.Protocol`` class without a terminal: the class runs on
an event loop in a thread of its own, and :func:`check_protocol` runs the server checks
against it. Unlike a server in another process, this one can be watched:

- an exception that escapes the learner's code (``data_received`` raising, say) is caught by
  the loop's exception handler, and its traceback goes to the row of the check that caused
  it, where the learner reads it next to the request that was sent;
- a ``data_received`` that never returns blocks the loop: after the check that caused it, the
  run stops with a partial report whose row shows the line the loop was stuck on, and the
  stuck thread is interrupted where the interpreter allows it (CPython), so a notebook's
  kernel does not keep spinning;
- what asyncio logs from that thread (a loop that writes to a closed transport logs a warning
  per write) is dropped, so it cannot flood the notebook's cells, this one or later ones.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Final

from metrics_lab.conformance.report import (
    TRACEBACK_LIMIT,
    CheckResult,
    Profile,
    Progress,
    Report,
    broken,
    user_frames,
    user_traceback,
)
from metrics_lab.conformance.server_checks import (
    DEFAULT_TIMEOUT,
    SEE_OUTPUT,
    SERVER_CHECKS,
    check_server,
)

__all__ = ["HUNG_HINT", "ServerHung", "check_protocol"]

HUNG_HINT: Final = "data_received never returned: an endless loop?"

_START_TIMEOUT: Final = 10.0

_INTERRUPTS: Final = 20
"""Times a stuck thread is interrupted before it is left running (each waits a moment)."""


class ServerHung(BaseException):
    """Raised inside a server's thread that was stuck, to end the endless call.

    A BaseException, not an Exception: the handlers it may land in while the learner's loop
    runs (``logging``'s, a learner's ``except Exception``) catch Exceptions and carry on
    looping; asyncio passes it to the loop's exception handler, which ends the call.
    """


class _FromThread(logging.Filter):
    """Drops the log records of one thread (the checked server's)."""

    def __init__(self, thread: threading.Thread) -> None:
        super().__init__()
        self.thread = thread

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread != self.thread.ident


class _WatchedServer:
    """A protocol factory served on a loop in a daemon thread that records crashes."""

    def __init__(self, protocol_factory: Callable[[], asyncio.BaseProtocol]) -> None:
        self.crashes: list[str] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(self._record)
        self._ready = threading.Event()
        self._server: asyncio.Server | None = None
        self._startup_error: BaseException | None = None
        self._factory = protocol_factory
        self._thread = threading.Thread(target=self._run, name="checked-server", daemon=True)
        # The loop's exception handler reports crashes; what asyncio logs besides (a warning
        # per write to a closed transport, thousands a second in a loop) is noise here.
        self._quiet = _FromThread(self._thread)
        logging.getLogger("asyncio").addFilter(self._quiet)
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT):
            raise RuntimeError(f"the server did not start within {_START_TIMEOUT} s")
        if self._startup_error is not None:
            raise self._startup_error

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` the server listens on."""
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._server = self._loop.run_until_complete(
                self._loop.create_server(self._factory, "127.0.0.1", 0)
            )
        except BaseException as exc:  # the learner's factory or bind failed: the caller raises it
            self._startup_error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._server.close()
            self._loop.close()

    def _record(self, loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        exception = context.get("exception")
        message = str(context.get("message", "an error in the server's event loop"))
        text = message
        if isinstance(exception, BaseException):
            text = user_traceback(exception) or f"{message}: {exception!r}"
        with self._lock:
            self.crashes.append(text)

    def crashes_since(self, mark: int) -> list[str]:
        """The tracebacks recorded after the first ``mark`` ones."""
        with self._lock:
            return self.crashes[mark:]

    def responsive(self, wait: float) -> bool:
        """Whether the loop runs a callback within ``wait`` seconds (is not stuck)."""
        done = threading.Event()
        self._loop.call_soon_threadsafe(done.set)
        return done.wait(wait)

    def stuck_at(self) -> str:
        """Where the server's thread is now: its innermost frames in the code under test."""
        frame = sys._current_frames().get(self._thread.ident or -1)
        if frame is None:
            return ""
        frames = user_frames(traceback.extract_stack(frame))[-TRACEBACK_LIMIT:]
        return "".join(traceback.format_list(frames)).rstrip()

    def interrupt(self) -> None:
        """Raise :class:`ServerHung` in the stuck thread until its loop runs again.

        CPython only; elsewhere the thread stays stuck. Several tries, because one may land
        where asyncio catches everything and carries on (inside ``socket.send``, say).
        """
        set_async_exc = getattr(
            getattr(ctypes, "pythonapi", None), "PyThreadState_SetAsyncExc", None
        )
        if set_async_exc is None or self._thread.ident is None:
            return
        for _ in range(_INTERRUPTS):
            set_async_exc(ctypes.c_ulong(self._thread.ident), ctypes.py_object(ServerHung))
            if self.responsive(0.1):
                return

    def close(self, wait: float = 2.0) -> None:
        """Stop the loop and wait (briefly) for the thread; keep its logs quiet if it runs on."""
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(wait)
        if not self._thread.is_alive():
            logging.getLogger("asyncio").removeFilter(self._quiet)


def check_protocol(
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    only: Sequence[str] | None = None,
    profile: Profile = "strict",
    progress: Progress | None = None,
    name: str | None = None,
) -> Report:
    """Serve ``protocol_factory`` in a thread here and run the server checks against it.

    As :func:`~metrics_lab.conformance.check_server`, and: a check during which the server
    raised shows the traceback in its row; a server whose loop is stuck after a check ends
    the run there, with the checks so far and a note that says so. ``progress`` is called
    after each check; ``name`` names the server in the report (the factory's name by default).
    """
    names = [c.name for c in SERVER_CHECKS if c.runs_in(profile)] if only is None else only
    results: list[CheckResult] = []
    note = ""
    server = _WatchedServer(protocol_factory)
    try:
        host, port = server.address
        for check_name in names:
            mark = len(server.crashes)
            [result] = check_server(
                host, port, timeout=timeout, only=[check_name], profile=profile
            ).results
            crashes = server.crashes_since(mark)
            if crashes:  # here the traceback is not in the server's output but in the row
                detail = result.detail.replace(SEE_OUTPUT, "its traceback is below")
                result = replace(result, detail=detail, traceback="\n".join(crashes))
            if not server.responsive(timeout):
                check = next(c for c in SERVER_CHECKS if c.name == check_name)
                result = replace(
                    broken(check, f"the server stopped answering: {HUNG_HINT}", profile),
                    traceback=f"stuck here:\n{server.stuck_at()}",
                )
                note = f"stopped after {check_name}: {HUNG_HINT}"
                server.interrupt()
            results.append(result)
            if progress is not None:
                progress(len(results), len(names), result)
            if note:
                break
    finally:
        server.close()
    target = f"server {name or protocol_name(protocol_factory)}"
    return Report(target, tuple(results), profile, note)


def protocol_name(protocol_factory: Callable[[], asyncio.BaseProtocol]) -> str:
    """A class's (or named factory's) qualified name; a lambda has none worth showing."""
    name = getattr(protocol_factory, "__qualname__", "")
    return "in this process" if not name or "<lambda>" in name else name
