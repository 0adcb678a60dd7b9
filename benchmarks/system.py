"""What the benchmark asks of the operating system: more file descriptors, a process's RSS."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

FD_MARGIN = 64
"""Descriptors a benchmark process needs besides its connections: the listening socket, the
event loop's own, pipes, imported files."""
FD_WANTED = 8192
"""Open files a server asks for by default: far more than its default connection limit needs."""


def raise_fd_limit(wanted: int = FD_WANTED) -> int:
    """Raise this process's open-file limit towards ``wanted``; return the limit now in force.

    1,000 connections need more than the usual soft limit of 1,024 descriptors on Linux and
    256 on macOS. Windows has no such limit (and no :mod:`resource`), so -1 means "not limited".
    The soft limit is raised, never lowered; child processes inherit it.
    """
    try:
        import resource
    except ImportError:
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # keep the old limit; the scenario reports what it could do
    return int(soft)


def rss_bytes(pid: int) -> int | None:
    """The resident set size of process ``pid`` in bytes, or ``None`` where we cannot tell.

    Linux: ``VmRSS`` in ``/proc/<pid>/status``. macOS and other Unixes: ``ps -o rss=``.
    Windows: ``None`` (the table shows "n/a"); no third-party package is needed.
    """
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return None
    if sys.platform == "win32":
        return None
    try:
        output = subprocess.run(
            ["ps", "-o", "rss=", "-p", str(pid)], capture_output=True, text=True, check=True
        ).stdout
        return int(output.strip()) * 1024
    except (OSError, ValueError, subprocess.CalledProcessError):
        return None


def connections_possible(wanted: int) -> int:
    """How many of ``wanted`` connections one process can hold open: ``wanted`` if the
    open-file limit can be raised far enough (see :func:`raise_fd_limit`), else fewer."""
    limit = raise_fd_limit(wanted + FD_MARGIN)
    return wanted if limit < 0 else max(1, min(wanted, limit - FD_MARGIN))
