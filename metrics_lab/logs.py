"""Logging that can neither stall the server nor flood its log.

Two tools, both standard library underneath:

- :class:`LogSummary` is for an event that may repeat thousands of times a second (a store
  that refuses every write during an outage, an agent that keeps sending bad lines). The
  first one is logged at once; the ones after it are counted, and one line per ``interval``
  gives how many there were and the latest example, so a long outage costs a line every ten
  seconds, not one per batch.
- :func:`nonblocking_logging` puts a bounded queue in front of the root logger's handlers for
  as long as it is active: the thread that logs (the event loop) only drops a record into
  the queue, and a writer thread hands it to the handlers. When the output is stuck (a paused
  terminal, a pipe that nobody reads), the records that do not fit are dropped and counted,
  and a line says how many once the output moves again. :func:`~metrics_lab.server.run_server`
  (so ``metrics-lab serve``) serves inside it, and writes what the summaries hold on its way
  out.

>>> import logging
>>> summary = LogSummary(logging.getLogger("demo"), "refused {count} point(s): {example}")
>>> summary.add(10, "disk full")  # logged at once
>>> summary.add(5, "disk full")  # counted: logged with the others at most 10 s later
>>> summary.total
15
>>> summary.close()
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from logging.handlers import QueueHandler, QueueListener
from typing import Final

__all__ = [
    "LOG_QUEUE_SIZE",
    "SUMMARY_INTERVAL",
    "DroppingQueueHandler",
    "LogSummary",
    "flush_summaries",
    "nonblocking_logging",
]

SUMMARY_INTERVAL: Final = 10.0
"""Seconds between two lines of one :class:`LogSummary`."""

LOG_QUEUE_SIZE: Final = 1024
"""Log records that wait for a stuck output before new ones are dropped (and counted)."""

WRITER_STOP_GRACE: Final = 2.0
"""Seconds :func:`nonblocking_logging` waits, on the way out, for the writer to write what is
queued: an output stuck for good must not keep the process from ending."""


class LogSummary:
    """One log line per ``interval`` for an event that may repeat without end.

    ``template`` is a :meth:`str.format` text with the fields ``{count}`` (the sum of the
    counts given to :meth:`add` since the last line), ``{events}`` (how many calls that was)
    and ``{example}`` (the latest call's), and any ``fields`` given here (put a path there, not
    into the template, so its braces stay as they are). The first :meth:`add` is logged at
    once; the calls within ``interval`` of a line are counted, and logged as one line when the
    interval ends. Thread-safe: stores call it from threads of their own.
    """

    def __init__(
        self,
        logger: logging.Logger,
        template: str,
        *,
        interval: float = SUMMARY_INTERVAL,
        level: int = logging.WARNING,
        clock: Callable[[], float] = time.monotonic,
        **fields: object,
    ) -> None:
        self.logger = logger
        self.template = template
        self.interval = interval
        self.level = level
        self.fields = fields
        self.total = 0
        """The sum of every count given to :meth:`add`, logged or not yet."""
        self._clock = clock
        self._lock = threading.Lock()
        self._count = 0  # since the last line
        self._events = 0
        self._example = ""
        self._logged_at: float | None = None
        self._timer: threading.Timer | None = None  # writes the counted ones when due
        _SUMMARIES.add(self)

    def add(self, count: int = 1, example: str = "") -> None:
        """Count ``count`` more (points, lines...) from one event that ``example`` describes."""
        with self._lock:
            self.total += count
            self._count += count
            self._events += 1
            self._example = example
            now = self._clock()
            if self._logged_at is not None and now - self._logged_at < self.interval:
                if self._timer is None:  # the first one held back: write them all when due
                    self._timer = threading.Timer(self._logged_at + self.interval - now, self.flush)
                    self._timer.daemon = True
                    self._timer.start()
                return
            line = self._take(now)
        self.logger.log(self.level, "%s", line)

    def flush(self) -> None:
        """Log what was counted since the last line now, if anything was."""
        with self._lock:
            self._timer = None
            if not self._events:
                return
            line = self._take(self._clock())
        self.logger.log(self.level, "%s", line)

    def close(self) -> None:
        """Log what is counted and stop the timer: for the end of a server, or of a test."""
        with self._lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        self.flush()

    def _take(self, now: float) -> str:
        """The line for what was counted, which is then forgotten (the lock is held)."""
        line = self.template.format(
            count=self._count, events=self._events, example=self._example, **self.fields
        )
        if self._logged_at is not None:  # a summary, not a first sight: say over how long
            line += f" (in the last {now - self._logged_at:.0f} s; one such line every "
            line += f"{self.interval:g} s at most)"
        self._count = self._events = 0
        self._example = ""
        self._logged_at = now
        return line


_SUMMARIES: weakref.WeakSet[LogSummary] = weakref.WeakSet()


def flush_summaries() -> None:
    """Log what every :class:`LogSummary` has counted and not logged yet (a server stops:
    its timers are daemon threads, which a process that ends does not wait for)."""
    for summary in list(_SUMMARIES):
        summary.flush()


class DroppingQueueHandler(QueueHandler):
    """A :class:`~logging.handlers.QueueHandler` that never waits: a record that does not fit
    in its bounded queue is dropped and counted, and the next record that fits is preceded by
    a warning that says how many were dropped."""

    def __init__(self, records: queue.Queue[logging.LogRecord]) -> None:
        super().__init__(records)
        self.dropped = 0
        """Records dropped since the last warning about it."""
        self.total_dropped = 0
        """Records dropped in all."""

    def enqueue(self, record: logging.LogRecord) -> None:
        """Queue ``record`` without waiting (the handler's lock is held: one caller at a time)."""
        if self.dropped:
            if not self._offer(self.drop_notice()):
                self._drop()
                return
            self.dropped = 0
        if not self._offer(record):
            self._drop()

    def drop_notice(self) -> logging.LogRecord:
        """The warning that says how many records were dropped since the last one."""
        return logging.LogRecord(
            __name__,
            logging.WARNING,
            __file__,
            0,
            "%d log record(s) dropped: the log output was not taking them",
            (self.dropped,),
            None,
        )

    def _offer(self, record: logging.LogRecord) -> bool:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            return False
        return True

    def _drop(self) -> None:
        self.dropped += 1
        self.total_dropped += 1


class _Writer(QueueListener):
    """The writer thread: a QueueListener that gives up on an output stuck for good."""

    def enqueue_sentinel(self) -> None:
        with contextlib.suppress(queue.Full):  # stuck and full: the thread is a daemon anyway
            self.queue.put(self._sentinel, timeout=WRITER_STOP_GRACE)  # type: ignore[attr-defined]

    def finish(self) -> bool:
        """Stop the thread once it has written what is queued; ``False`` if it is stuck
        (then it is left behind: a daemon thread does not keep the process alive)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return True
        self.enqueue_sentinel()
        thread.join(WRITER_STOP_GRACE)
        return not thread.is_alive()


@contextlib.contextmanager
def nonblocking_logging(capacity: int = LOG_QUEUE_SIZE) -> Iterator[DroppingQueueHandler]:
    """While active, the root logger's records pass through a queue to a writer thread.

    The handlers the root logger has (Python's last-resort stderr handler if none) move behind
    a :class:`DroppingQueueHandler` of ``capacity`` records; they are put back on the way
    out, once the writer has written what is queued (or after a grace period, if the output
    is stuck for good). Then, if the output moves, a last warning says how many records were
    dropped since the last such warning, and the :class:`LogSummary` lines still held back
    are written. Already active (``serve`` inside ``serve``): it does nothing more.
    """
    root = logging.getLogger()
    active = next((h for h in root.handlers if isinstance(h, DroppingQueueHandler)), None)
    if active is not None:
        yield active
        return
    handlers = list(root.handlers)
    targets = handlers or ([logging.lastResort] if logging.lastResort is not None else [])
    records: queue.Queue[logging.LogRecord] = queue.Queue(capacity)
    handler = DroppingQueueHandler(records)
    writer = _Writer(records, *targets, respect_handler_level=True)
    for old in handlers:
        root.removeHandler(old)
    root.addHandler(handler)
    writer.start()
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for old in handlers:
            root.addHandler(old)
        if writer.finish():  # the output moves: what is left goes to it directly
            if handler.dropped:
                root.handle(handler.drop_notice())
            flush_summaries()
