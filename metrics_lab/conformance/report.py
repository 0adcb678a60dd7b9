"""What a conformance run produces: one result per check, and ways to show them.

A check either passes or fails with a :class:`CheckFailed` that says what was sent, what the
protocol expects and what came back. Every check also says where its rule comes from
(:data:`Source`): the course's graders test it (``"grader"``), the course's task text asks
for it though no grader tests it (``"task"``), or only docs/PROTOCOL.md states it
(``"protocol"``). A run under a :data:`Profile` gives each source one meaning:

- ``course`` predicts the course's acceptance: a ``grader`` rule that fails is a failure, a
  ``task`` rule that fails is a warning that quotes the task text, ``protocol`` rules are not
  run. A solution the course's graders accept passes it.
- ``strict`` is docs/PROTOCOL.md: every rule runs, and every broken rule is a failure.

:class:`Report` collects the results and prints them as a table (for people, grouped by
source) or JSON (for programs).
"""

from __future__ import annotations

import json
import site
import sys
import sysconfig
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Final, Generic, Literal, TextIO, TypeVar

__all__ = [
    "PROFILES",
    "PROFILE_MEANINGS",
    "SOURCES",
    "SOURCE_NAMES",
    "Check",
    "CheckFailed",
    "CheckResult",
    "Profile",
    "Progress",
    "Report",
    "Source",
    "Status",
    "broken",
    "print_progress",
    "readable",
    "run_check",
    "select",
    "user_frames",
    "user_traceback",
]

Source = Literal["grader", "task", "protocol"]
"""Where a rule comes from: the course's graders, the course's task text, or PROTOCOL.md."""

Profile = Literal["course", "strict"]
"""How a run reads the rules: as the course does (graders fail, task text warns), or strictly."""

Status = Literal["pass", "warn", "fail"]
"""A check's outcome under a profile: passed, broke a rule the profile only warns about, failed."""

SOURCES: Final[dict[Source, str]] = {
    "grader": "tested by the course's graders (a failure here: the course rejects the solution)",
    "task": "asked by the course's task text; no course grader tests it",
    "protocol": "docs/PROTOCOL.md's stricter rules (the course states none of them)",
}
SOURCE_NAMES: Final[dict[Source, str]] = {
    "grader": "grader",
    "task": "task text",
    "protocol": "PROTOCOL.md",
}
"""What docs/PROTOCOL.md and the notebooks call each source (``"protocol"`` is PROTOCOL.md)."""
PROFILES: Final[tuple[Profile, ...]] = ("course", "strict")
PROFILE_MEANINGS: Final[dict[Profile, str]] = {
    "course": "predicts the course's graders: their rules fail, the task text's other rules "
    "only warn, PROTOCOL.md's stricter rules are not run",
    "strict": "docs/PROTOCOL.md: every rule is run and every broken rule fails",
}

PREVIEW_LIMIT: Final = 160
"""Bytes of sent/expected/received data shown in a failure before it is cut short."""

OUTPUT_LIMIT: Final = 400
"""Characters of a client's captured output shown under its row of the table."""

ContextT = TypeVar("ContextT")


def readable(data: bytes | str, limit: int = PREVIEW_LIMIT) -> str:
    """Show bytes on one line, ``\\n`` and other control characters escaped, cut after ``limit``.

    UTF-8 shows as text, so a key of Cyrillic letters reads as itself; bytes that are not
    UTF-8 show as escapes.

    >>> readable(b"ok\\n\\n")
    'ok\\\\n\\\\n'
    >>> readable("°C\\n".encode())
    '°C\\\\n'
    >>> readable(b"x" * 10, limit=4)
    'xxxx... (10 bytes)'
    """
    if isinstance(data, str):
        return data
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        shown = repr(data[:limit])[2:-1]
    else:
        shown = repr(text[:limit])[1:-1]
        if len(text) <= limit:
            return shown
        return f"{shown}... ({len(data)} bytes)"
    return f"{shown}... ({len(data)} bytes)" if len(data) > limit else shown


class CheckFailed(Exception):
    """Raised inside a check: the peer broke the rule. Fields hold the evidence.

    ``got`` is what came back; ``None`` when nothing applies (the check compared no answer),
    ``b""`` when an answer was awaited and nothing came (shown as "got nothing").
    """

    def __init__(
        self,
        why: str,
        *,
        sent: bytes | str = b"",
        expected: bytes | str = b"",
        got: bytes | str | None = None,
    ) -> None:
        super().__init__(why)
        self.why = why
        self.sent = sent
        self.expected = expected
        self.got = got

    @property
    def detail(self) -> str:
        """One line: the reason, then sent / expected / got, each shown readably."""
        parts = [self.why]
        expected = self.expected
        if isinstance(expected, bytes) and expected.endswith(b"\n\n") and self.got == expected[:-1]:
            parts.append("the answer lacks the empty line that ends every answer (\\n\\n)")
        for label, data in (("sent", self.sent), ("expected", self.expected), ("got", self.got)):
            if data is None or (not data and label != "got"):
                continue
            if not data:
                parts.append("got nothing")
                continue
            # Bytes are quoted here; text (already readable, maybe several pieces) is not.
            shown = f"'{readable(data)}'" if isinstance(data, bytes) else data
            parts.append(f"{label} {shown}")
        return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class Check(Generic[ContextT]):
    """One rule: a short name, the rule in one sentence, the test, and where the rule is from.

    ``run`` raises :class:`CheckFailed` when the rule is broken and returns otherwise.
    ``task_words`` (``task`` rules only) are the task text's words the rule rests on, quoted in
    the warning the course profile gives.
    """

    name: str
    description: str
    run: Callable[[ContextT], None]
    source: Source
    task_words: str = ""

    def __post_init__(self) -> None:
        if (self.source == "task") != bool(self.task_words):
            raise ValueError(f"{self.name}: task rules, and only they, quote the task text")

    def runs_in(self, profile: Profile) -> bool:
        """Whether a run under ``profile`` runs this check."""
        return profile == "strict" or self.source != "protocol"

    def status_if_broken(self, profile: Profile) -> Status:
        """What a broken rule counts as under ``profile``: a failure, or a warning."""
        return "warn" if profile == "course" and self.source == "task" else "fail"


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one check under a profile; ``detail`` is empty when it passed.

    ``output`` is what the client under test printed during the check (client checks only);
    ``traceback`` the peer's own traceback, where the checker could catch it (a client's
    exception, or a crash of a server checked in this process).
    """

    name: str
    description: str
    status: Status
    detail: str = ""
    source: Source = "protocol"
    output: str = ""
    traceback: str = ""

    @property
    def passed(self) -> bool:
        """Whether the rule held."""
        return self.status == "pass"


Progress = Callable[[int, int, CheckResult], None]
"""Called after each check with its number (from 1), the number of checks, and its result."""


def print_progress(
    number: int, total: int, result: CheckResult, stream: TextIO | None = None
) -> None:
    """A :data:`Progress` that prints one line per check (to stderr unless ``stream`` is given)."""
    width = len(str(total))
    print(
        f"[{number:>{width}}/{total}] {result.name:<30} {result.status}",
        file=sys.stderr if stream is None else stream,
        flush=True,
    )


@dataclass(frozen=True, slots=True)
class Report:
    """The results of a run under ``profile``, in the order the checks are listed.

    ``note`` says why a run stopped before its last check (a server that hangs), if it did.
    """

    target: str
    results: tuple[CheckResult, ...]
    profile: Profile = "strict"
    note: str = ""

    @property
    def passed(self) -> bool:
        """Whether every check ran and none failed under the profile (warnings do not count)."""
        return not self.failed and not self.note

    @property
    def course_passed(self) -> bool:
        """Whether the run ended and every grader rule passed: the graders would accept this.

        A run that stopped early (``note``) never counts: the rules after the stop were not run.
        """
        return not self.note and all(
            result.passed for result in self.results if result.source == "grader"
        )

    @property
    def failed(self) -> list[str]:
        """The names of the checks that failed under the profile."""
        return [result.name for result in self.results if result.status == "fail"]

    @property
    def warnings(self) -> list[str]:
        """The names of the checks whose rule broke but that only warn under the profile."""
        return [result.name for result in self.results if result.status == "warn"]

    def _broken_from(self, source: Source) -> list[str]:
        return [r.name for r in self.results if not r.passed and r.source == source]

    def summary(self) -> str:
        """One line: how many passed, what broke by source, and what the course's graders do."""
        total = len(self.results)
        passed = sum(result.passed for result in self.results)
        line = f"{self.target}: {passed}/{total} checks passed ({self.profile} profile)"
        if self.note:
            line += f"; {self.note}"
        grader, task, protocol = (self._broken_from(s) for s in ("grader", "task", "protocol"))
        if grader:
            line += f"; the course's graders would reject it: {', '.join(grader)}"
        elif (
            not self.note and any(r.source == "grader" for r in self.results) and (task or protocol)
        ):
            line += "; the course's graders would accept it"
        if task:
            kind = "warnings" if self.profile == "course" else "failed"
            line += f"; task-text rules {kind}: {', '.join(task)}"
        if protocol:
            line += f"; PROTOCOL.md rules failed: {', '.join(protocol)}"
        return line

    def table(self, *, failures_only: bool = False) -> str:
        """The results as plain-text tables, one per source, and the summary line.

        ``failures_only`` leaves out the rows of the checks that passed.
        """
        blocks = []
        for source, title in SOURCES.items():
            shown = [
                result
                for result in self.results
                if result.source == source and not (failures_only and result.passed)
            ]
            if shown:
                blocks.append("\n".join([title + ":", *_format_results(shown)]))
        heading = f"{self.profile} profile: {PROFILE_MEANINGS[self.profile]}"
        return "\n\n".join([heading, *blocks, self.summary()])

    def to_json(self) -> str:
        """The report as JSON: target, profile, passed, course_passed, every result's fields."""
        document = {
            "target": self.target,
            "profile": self.profile,
            "profile_meaning": PROFILE_MEANINGS[self.profile],
            "passed": self.passed,
            "course_passed": self.course_passed,
            "note": self.note,
            "results": [{**asdict(result), "passed": result.passed} for result in self.results],
        }
        return json.dumps(document, indent=2, ensure_ascii=False)

    def __str__(self) -> str:
        return self.table()


_SHOWN_STATUS: Final[dict[Status, str]] = {"pass": "pass", "warn": "warn", "fail": "FAIL"}


def _format_results(results: Sequence[CheckResult]) -> list[str]:
    rows = [
        (result.name, _SHOWN_STATUS[result.status], result.detail or result.description)
        for result in results
    ]
    header = ("rule", "result", "detail")
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(2)]
    lines = []
    underline = ("-" * widths[0], "-" * widths[1], "-" * 6)
    for row in [header, underline, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row[:2], widths, strict=True)]
        lines.append("  ".join([*cells, row[2]]).rstrip())
    for result in results:
        if result.output:
            shown = readable(result.output.encode(), OUTPUT_LIMIT)
            lines.append(f"  ({result.name}: the client printed '{shown}')")
        if result.traceback:
            lines.append(f"  ({result.name}, in the code under test:)")
            lines.extend("    " + line for line in result.traceback.splitlines())
    return lines


def run_check(
    check: Check[ContextT], context: ContextT, profile: Profile = "strict"
) -> CheckResult:
    """Run one check and turn its outcome into a result; never raises for a peer's fault.

    A failure's detail ends with the rule itself (and, for a task rule, the task text's
    words), so a learner reads what was sent, what came back, and which rule that breaks.
    """
    try:
        check.run(context)
    except CheckFailed as failure:
        # A check raises CheckFailed while handling the peer's own exception, if there was one.
        cause = failure.__context__
        shown = user_traceback(cause) if cause is not None else ""
        return replace(broken(check, failure.detail, profile), traceback=shown)
    # BaseException: a peer's exception from any base class (a learner's ClientError may
    # derive from BaseException) is reported, never left to kill the checker's thread.
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        result = broken(check, f"checker error: {exc!r}", profile)
        return replace(result, traceback=user_traceback(exc))
    return CheckResult(check.name, check.description, "pass", source=check.source)


def broken(check: Check[ContextT], why: str, profile: Profile) -> CheckResult:
    """The result of ``check`` when its rule broke for the reason ``why``."""
    detail = f"{why}; rule: {check.description}"
    if check.task_words:
        detail += f"; the task text: {check.task_words}"
    status = check.status_if_broken(profile)
    return CheckResult(check.name, check.description, status, detail, check.source)


def select(
    checks: Sequence[Check[ContextT]],
    only: Sequence[str] | None,
    profile: Profile = "strict",
    timeout: float = 1.0,
) -> list[Check[ContextT]]:
    """The checks of ``profile`` named in ``only`` (all of them for ``None``).

    Raises ValueError for a name no check has, one the profile does not run, or a
    ``timeout`` (of the run about to start) of 0 or less.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    if not timeout > 0:  # "not >" refuses nan too
        raise ValueError(f"a timeout of {timeout} s leaves no time for an answer: give more than 0")
    in_profile = [check for check in checks if check.runs_in(profile)]
    if only is None:
        return in_profile
    known = [check.name for check in in_profile]
    unknown = sorted(set(only) - set(known))
    if unknown:
        stricter = sorted(set(unknown) & {check.name for check in checks})
        hint = (
            f" ({', '.join(stricter)}: PROTOCOL.md rules, run by --profile strict)"
            if stricter
            else ""
        )
        raise ValueError(f"unknown check(s) {', '.join(unknown)}{hint}; known: {', '.join(known)}")
    return [check for check in in_profile if check.name in only]


TRACEBACK_LIMIT: Final = 6
"""Frames of a peer's traceback shown under its row: the innermost, where it went wrong."""

# Frames from here are the checker's, Python's (frozen modules too) or an installed
# package's (ipykernel's, in a notebook), never where a learner's bug is.
_NOT_USER_CODE: Final = (
    str(Path(__file__).parent),
    "<frozen ",
    *{sysconfig.get_paths()[name] for name in ("stdlib", "purelib", "platlib")},
    site.getusersitepackages(),  # pip install --user puts ipykernel there
)


def user_frames(frames: traceback.StackSummary) -> list[traceback.FrameSummary]:
    """The frames of ``frames`` in the code under test (not the checker's, not the stdlib's)."""
    return [frame for frame in frames if not frame.filename.startswith(_NOT_USER_CODE)]


def user_traceback(exc: BaseException) -> str:
    """``exc``'s traceback through the code under test, or "" if it never passed through it."""
    frames = user_frames(traceback.extract_tb(exc.__traceback__))
    if not frames:
        return ""
    shown = traceback.format_list(frames[-TRACEBACK_LIMIT:])
    return "".join([*shown, *traceback.format_exception_only(exc)]).rstrip()
