"""What a conformance run produces: one result per check, and ways to show them.

A check either passes or fails with a :class:`CheckFailed` that says what was sent, what the
protocol expects and what came back. :class:`Report` collects the results and prints them as
a table (for people) or JSON (for programs).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Final, Generic, TypeVar

__all__ = ["Check", "CheckFailed", "CheckResult", "Report", "readable", "run_check", "select"]

PREVIEW_LIMIT: Final = 160
"""Bytes of sent/expected/received data shown in a failure before it is cut short."""

ContextT = TypeVar("ContextT")


def readable(data: bytes | str, limit: int = PREVIEW_LIMIT) -> str:
    """Show bytes on one line, ``\\n`` and other control bytes escaped, cut after ``limit``.

    >>> readable(b"ok\\n\\n")
    'ok\\\\n\\\\n'
    >>> readable(b"x" * 10, limit=4)
    'xxxx... (10 bytes)'
    """
    if isinstance(data, str):
        return data
    shown = repr(data[:limit])[2:-1]
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
    """One rule: a short name, a one-line description, and the function that tests it.

    ``run`` raises :class:`CheckFailed` when the rule is broken and returns otherwise.
    """

    name: str
    description: str
    run: Callable[[ContextT], None]


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one check; ``detail`` is empty when it passed."""

    name: str
    description: str
    passed: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Report:
    """The results of a run, in the order the checks are listed."""

    target: str
    results: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        """Whether every check passed."""
        return all(result.passed for result in self.results)

    @property
    def failed(self) -> list[str]:
        """The names of the checks that failed."""
        return [result.name for result in self.results if not result.passed]

    def summary(self) -> str:
        """One line: how many passed, and which failed."""
        total = len(self.results)
        passed = total - len(self.failed)
        line = f"{self.target}: {passed}/{total} checks passed"
        return line + (f"; failed: {', '.join(self.failed)}" if self.failed else "")

    def table(self, *, failures_only: bool = False) -> str:
        """The results as a plain-text table (rule, result, detail) and the summary line.

        ``failures_only`` leaves out the rows of the checks that passed.
        """
        rows = [
            (result.name, "pass" if result.passed else "FAIL", result.detail or result.description)
            for result in self.results
            if not (failures_only and result.passed)
        ]
        if not rows:
            return self.summary()
        return "\n".join([*_format_rows(("rule", "result", "detail"), rows), "", self.summary()])

    def to_json(self) -> str:
        """The report as JSON: target, passed, and every result's fields."""
        document = {
            "target": self.target,
            "passed": self.passed,
            "results": [asdict(result) for result in self.results],
        }
        return json.dumps(document, indent=2, ensure_ascii=False)

    def __str__(self) -> str:
        return self.table()


def _format_rows(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(2)]
    lines = []
    for row in [header, ["-" * width for width in widths] + ["-" * 6], *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row[:2], widths, strict=True)]
        lines.append("  ".join([*cells, row[2]]).rstrip())
    return lines


def run_check(check: Check[ContextT], context: ContextT) -> CheckResult:
    """Run one check and turn its outcome into a result; never raises for a peer's fault."""
    try:
        check.run(context)
    except CheckFailed as failure:
        return CheckResult(check.name, check.description, False, failure.detail)
    except Exception as exc:  # the checker must report, not crash, whatever the peer does
        return CheckResult(check.name, check.description, False, f"checker error: {exc!r}")
    return CheckResult(check.name, check.description, True)


def select(checks: Sequence[Check[ContextT]], only: Sequence[str] | None) -> list[Check[ContextT]]:
    """The checks named in ``only`` (all of them for ``None``); raises ValueError for a typo."""
    if only is None:
        return list(checks)
    known = [check.name for check in checks]
    unknown = sorted(set(only) - set(known))
    if unknown:
        raise ValueError(f"unknown check(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return [check for check in checks if check.name in only]
