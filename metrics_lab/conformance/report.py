"""What a conformance run produces: one result per check, and ways to show them.

A check either passes or fails with a :class:`CheckFailed` that says what was sent, what the
protocol expects and what came back. Every check also says where its rule comes from
(:data:`Source`): the course's own task, examples and graders (``"course"``), or the stricter
rules of PROTOCOL.md (``"strict"``). A run under a profile (:data:`Profile`) runs the course's
rules only, or all of them; :class:`Report` collects the results and prints them as a table
(for people, grouped by source) or JSON (for programs).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Final, Generic, Literal, TypeVar

__all__ = [
    "PROFILES",
    "SOURCES",
    "Check",
    "CheckFailed",
    "CheckResult",
    "Profile",
    "Report",
    "Source",
    "readable",
    "run_check",
    "select",
]

Source = Literal["course", "strict"]
"""Where a rule comes from: the course (task text, examples, graders) or PROTOCOL.md alone."""

Profile = Literal["course", "strict"]
"""Which rules a run checks: the course's only, or the course's and PROTOCOL.md's (all)."""

SOURCES: Final[dict[Source, str]] = {
    "course": "the course's rules (its task text, examples and graders)",
    "strict": "PROTOCOL.md's stricter rules (the course's graders do not test them)",
}
PROFILES: Final[tuple[Profile, ...]] = ("course", "strict")

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
    """Raised inside a check: the peer broke the rule. Fields hold the evidence."""

    def __init__(
        self,
        why: str,
        *,
        sent: bytes | str = b"",
        expected: bytes | str = b"",
        got: bytes | str = b"",
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
        for label, data in (("sent", self.sent), ("expected", self.expected), ("got", self.got)):
            if data or (label == "got" and (self.sent or self.expected)):
                # Bytes are quoted here; text (already readable, maybe several pieces) is not.
                shown = f"'{readable(data)}'" if isinstance(data, bytes) else data
                parts.append(f"{label} {shown}")
        return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class Check(Generic[ContextT]):
    """One rule: a short name, the rule in one sentence, the test, and where the rule is from.

    ``run`` raises :class:`CheckFailed` when the rule is broken and returns otherwise.
    """

    name: str
    description: str
    run: Callable[[ContextT], None]
    source: Source


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one check; ``detail`` is empty when it passed.

    ``output`` is what the client under test printed during the check (client checks only).
    """

    name: str
    description: str
    passed: bool
    detail: str = ""
    source: Source = "strict"
    output: str = ""


@dataclass(frozen=True, slots=True)
class Report:
    """The results of a run under ``profile``, in the order the checks are listed."""

    target: str
    results: tuple[CheckResult, ...]
    profile: Profile = "strict"

    @property
    def passed(self) -> bool:
        """Whether every check of the profile passed."""
        return all(result.passed for result in self.results)

    @property
    def course_passed(self) -> bool:
        """Whether every course rule passed: the course's graders would accept this."""
        return all(result.passed for result in self.results if result.source == "course")

    @property
    def failed(self) -> list[str]:
        """The names of the checks that failed."""
        return [result.name for result in self.results if not result.passed]

    def _failed_from(self, source: Source) -> list[str]:
        return [r.name for r in self.results if not r.passed and r.source == source]

    def summary(self) -> str:
        """One line: how many passed, which failed, and whether the course would accept it."""
        total = len(self.results)
        passed = total - len(self.failed)
        line = f"{self.target}: {passed}/{total} checks passed ({self.profile} profile)"
        if self.passed:
            return line
        course, strict = self._failed_from("course"), self._failed_from("strict")
        if course:
            line += f"; course rules failed: {', '.join(course)}"
        else:
            line += "; the course would accept this"
        if strict:
            line += f"; stricter rules failed: {', '.join(strict)}"
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
        return "\n\n".join([*blocks, self.summary()])

    def to_json(self) -> str:
        """The report as JSON: target, profile, passed, course_passed, every result's fields."""
        document = {
            "target": self.target,
            "profile": self.profile,
            "passed": self.passed,
            "course_passed": self.course_passed,
            "results": [asdict(result) for result in self.results],
        }
        return json.dumps(document, indent=2, ensure_ascii=False)

    def __str__(self) -> str:
        return self.table()


def _format_results(results: Sequence[CheckResult]) -> list[str]:
    rows = [
        (result.name, "pass" if result.passed else "FAIL", result.detail or result.description)
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
    return lines


def run_check(check: Check[ContextT], context: ContextT) -> CheckResult:
    """Run one check and turn its outcome into a result; never raises for a peer's fault.

    A failure's detail ends with the rule itself, so a learner reads what was sent, what
    came back, and which sentence of the rules that breaks.
    """
    try:
        check.run(context)
    except CheckFailed as failure:
        detail = f"{failure.detail}; rule: {check.description}"
        return CheckResult(check.name, check.description, False, detail, check.source)
    # BaseException: a peer's exception from any base class (a learner's ClientError may
    # derive from BaseException) is reported, never left to kill the checker's thread.
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        detail = f"checker error: {exc!r}; rule: {check.description}"
        return CheckResult(check.name, check.description, False, detail, check.source)
    return CheckResult(check.name, check.description, True, source=check.source)


def select(
    checks: Sequence[Check[ContextT]], only: Sequence[str] | None, profile: Profile = "strict"
) -> list[Check[ContextT]]:
    """The checks of ``profile`` named in ``only`` (all of them for ``None``).

    Raises ValueError for a name no check has, or one the profile does not run.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    in_profile = [check for check in checks if profile == "strict" or check.source == "course"]
    if only is None:
        return in_profile
    known = [check.name for check in in_profile]
    unknown = sorted(set(only) - set(known))
    if unknown:
        stricter = sorted(set(unknown) & {check.name for check in checks})
        hint = (
            f" ({', '.join(stricter)}: stricter rules, run by --profile strict)" if stricter else ""
        )
        raise ValueError(f"unknown check(s) {', '.join(unknown)}{hint}; known: {', '.join(known)}")
    return [check for check in in_profile if check.name in only]
