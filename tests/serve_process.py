"""``metrics-lab serve`` in a child process: for signals, kills and memory measurements.

The child binds port 0 and logs the address it got; :class:`ServeProcess` reads that line
back (no sleeps, no guessed ports) and keeps draining the child's log so it never blocks.
"""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

START_TIMEOUT = 20.0
_LISTENING = re.compile(r"serving metrics on ([0-9.]+):(\d+)")


class ServeProcess:
    """Start ``python -m metrics_lab serve --port 0 <args>``; ``.address`` once it listens.

    ``argv`` replaces that whole command line (no ``args`` then), for a child that runs the
    server its own way but logs the same listening line; ``start_timeout`` bounds the wait
    for that line. ``hold_log=True`` stops reading the child's log after that line, until
    :meth:`read_log`: a child whose stderr nobody reads (it fills the pipe and then waits).
    """

    def __init__(
        self,
        *args: str,
        argv: Sequence[str] | None = None,
        start_timeout: float = START_TIMEOUT,
        hold_log: bool = False,
    ) -> None:
        if argv is not None and args:
            raise TypeError("give either args or argv, not both")
        command = [sys.executable, "-m", "metrics_lab", "serve", "--port", "0", *args]
        if argv is not None:
            command = list(argv)
        self._start_timeout = start_timeout
        self.proc = subprocess.Popen(
            command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
        )
        self.log: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reading = threading.Event()
        if not hold_log:
            self._reading.set()
        threading.Thread(target=self._drain, daemon=True).start()
        self.address = self._wait_for_address()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)
            self._lines.put(line)
            if _LISTENING.search(line):
                self._reading.wait()
        self._lines.put(None)

    def read_log(self) -> None:
        """Read the child's log again (held since the start by ``hold_log=True``)."""
        self._reading.set()

    def _wait_for_address(self) -> tuple[str, int]:
        while True:
            try:
                line = self._lines.get(timeout=self._start_timeout)
            except queue.Empty:
                self.kill()
                raise RuntimeError(f"the server did not start: {''.join(self.log)}") from None
            if line is None:
                self.proc.wait()
                raise RuntimeError(f"the server exited at start: {''.join(self.log)}")
            found = _LISTENING.search(line)
            if found:
                return found[1], int(found[2])

    def wait_for_log(self, text: str, timeout: float = START_TIMEOUT) -> str:
        """Return the first log line (after the start) that contains ``text``; fail if none."""
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no log line with {text!r}: {''.join(self.log)}") from None
            if line is None:
                raise AssertionError(f"no log line with {text!r}: {''.join(self.log)}")
            if text in line:
                return line

    def wait_for_end_of_log(self, timeout: float = START_TIMEOUT) -> str:
        """Wait until the child has closed its log (it has exited); return the whole log."""
        while self._lines.get(timeout=timeout) is not None:
            pass
        return "".join(self.log)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, signum: int, timeout: float = 20.0) -> int:
        """Send ``signum`` and return the exit status."""
        self.proc.send_signal(signum)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.read_log()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(20)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.kill()
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def run_serve(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    """Run ``metrics-lab serve`` expecting it to fail at start; return its status and output."""
    command = [sys.executable, "-m", "metrics_lab", "serve", "--port", "0", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` in KiB, from /proc (Linux only)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS line")


SIGTERM = signal.SIGTERM
