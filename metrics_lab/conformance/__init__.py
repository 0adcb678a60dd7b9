"""The protocol's rules as a runnable checker, for any server or client.

Point :func:`check_server` at a live server (yours, ours, a classmate's), hand
:func:`check_protocol` a server class to run here, or :func:`check_client` a client class, and
read the :class:`Report`: one row per rule, and for each failure what was sent, what was
expected, what came back and the rule itself. Each rule's ``source`` says where it comes from:
the course's graders, the course's task text, or docs/PROTOCOL.md alone. ``profile="course"``
predicts the course's acceptance (grader rules fail, task-text rules warn);
``profile="strict"``, the default, is PROTOCOL.md: every rule, every break a failure.
``metrics-lab check [HOST:]PORT`` and ``metrics-lab check-client MODULE:CLASS`` (both with
``--profile {course,strict}``) do the same from the shell.

Layout:

- :mod:`~metrics_lab.conformance.report`: checks, results and the report (table, JSON)
- :mod:`~metrics_lab.conformance.probe`: a raw TCP connection with bounded reads
- :mod:`~metrics_lab.conformance.server_checks`: the server rules
- :mod:`~metrics_lab.conformance.client_checks`: a scripted server and the client rules
- :mod:`~metrics_lab.conformance.in_process`: a server class checked in this process, its
  crashes and hangs shown in the report

>>> from metrics_lab import serve_in_background
>>> with serve_in_background() as server:
...     report = check_server(*server.address)
>>> report.passed
True
"""

from metrics_lab.conformance.client_checks import CLIENT_CHECKS, check_client, load_client
from metrics_lab.conformance.in_process import HUNG_HINT, check_protocol
from metrics_lab.conformance.report import (
    PROFILE_MEANINGS,
    PROFILES,
    SOURCE_NAMES,
    SOURCES,
    CheckResult,
    Profile,
    Report,
    Source,
    print_progress,
)
from metrics_lab.conformance.server_checks import SERVER_CHECKS, check_server

__all__ = [
    "CLIENT_CHECKS",
    "HUNG_HINT",
    "PROFILES",
    "PROFILE_MEANINGS",
    "SERVER_CHECKS",
    "SOURCES",
    "SOURCE_NAMES",
    "CheckResult",
    "Profile",
    "Report",
    "Source",
    "check_client",
    "check_protocol",
    "check_server",
    "load_client",
    "print_progress",
]
