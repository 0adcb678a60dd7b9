"""The protocol's rules as a runnable checker, for any server or client.

Point :func:`check_server` at a live server (yours, ours, a classmate's) or hand
:func:`check_client` a client class, and read the :class:`Report`: one row per rule of
``docs/PROTOCOL.md``, and for each failure what was sent, what was expected, what came back
and the rule itself. Each rule's ``source`` says where it comes from: the course (its task
text, examples and graders) or PROTOCOL.md's stricter reading. ``profile="course"`` runs the
course's rules only; the default, ``"strict"``, runs all and reports the two apart, so a
solution the course accepts is told so. ``metrics-lab check HOST:PORT`` and
``metrics-lab check-client MODULE:CLASS`` (both with ``--profile {course,strict}``) do the
same from the shell.

Layout:

- :mod:`~metrics_lab.conformance.report`: checks, results and the report (table, JSON)
- :mod:`~metrics_lab.conformance.probe`: a raw TCP connection with bounded reads
- :mod:`~metrics_lab.conformance.server_checks`: the server rules
- :mod:`~metrics_lab.conformance.client_checks`: a scripted server and the client rules

>>> from metrics_lab import serve_in_background
>>> with serve_in_background() as server:
...     report = check_server(*server.address)
>>> report.passed
True
"""

from metrics_lab.conformance.client_checks import CLIENT_CHECKS, check_client, load_client
from metrics_lab.conformance.report import PROFILES, CheckResult, Profile, Report, Source
from metrics_lab.conformance.server_checks import SERVER_CHECKS, check_server

__all__ = [
    "CLIENT_CHECKS",
    "PROFILES",
    "SERVER_CHECKS",
    "CheckResult",
    "Profile",
    "Report",
    "Source",
    "check_client",
    "check_server",
    "load_client",
]
