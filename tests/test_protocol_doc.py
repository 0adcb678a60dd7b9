"""docs/PROTOCOL.md names every rule the checker checks, with the source the checker gives it.

The checker's reports name checks (``error-number-underscore``); PROTOCOL.md's last section
lists them, so a learner can look up the rule behind a failed row. When the checker gains,
renames or moves a check to another source, this test fails until the document follows.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from metrics_lab.conformance import CLIENT_CHECKS, SERVER_CHECKS, SOURCE_NAMES
from metrics_lab.conformance.report import Check

SOURCE_LABELS = {name: source for source, name in SOURCE_NAMES.items()}
"""How the document names each of the checker's sources: the checker's own names for them."""

PROTOCOL = Path(__file__).resolve().parent.parent / "docs" / "PROTOCOL.md"


def _table(heading: str) -> dict[str, str]:
    """The ``| `check` | source | ... |`` rows after the line starting with ``heading``."""
    text = PROTOCOL.read_text(encoding="utf-8")
    after = text[text.index("\n" + heading) :]
    block = after.split("\n\n")[1]
    found = re.findall(
        r"^\| `([a-z0-9-]+)` \| (grader|task text|PROTOCOL\.md) \|", block, re.MULTILINE
    )
    return {name: SOURCE_LABELS[label] for name, label in found}


@pytest.mark.parametrize(
    ("heading", "checks"),
    [
        ("Server (`metrics-lab check", SERVER_CHECKS),
        ("Client (`metrics-lab check-client", CLIENT_CHECKS),
    ],
    ids=["server", "client"],
)
def test_every_check_is_listed_with_its_source(heading: str, checks: list[Check[Any]]) -> None:
    listed = _table(heading)
    assert listed == {check.name: check.source for check in checks}


def test_the_document_stands_alone() -> None:
    text = PROTOCOL.read_text(encoding="utf-8")
    assert "seed/" not in text, "PROTOCOL.md cites the course's task file, which is not here"
