"""program_file: classes written in a notebook become a program that runs them as they ran."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from metrics_lab.program_file import program_source

LEARNER = """\
import math
import re as regex

NUMBER = regex.compile(r"-?[0-9]+")
LIMIT = 3


def is_big(text):
    return bool(NUMBER.fullmatch(text)) and math.fabs(int(text)) > LIMIT


class Base:
    greeting = "hi"

    def hello(self):
        return self.greeting


class Checker(Base):
    def check(self, text):
        # TODO: a note to the learner
        # that goes on here
        return [self.hello(), is_big(text)]
"""


def learner_namespace(tmp_path: Path, source: str) -> dict[str, object]:
    """The module-level names of ``source``, run from a file as a notebook's cells run."""
    path = tmp_path / "learner_cells.py"
    path.write_text(source)
    return runpy.run_path(str(path), run_name="learner_cells")


def test_the_program_holds_what_the_class_uses_and_runs_as_it_ran(tmp_path: Path) -> None:
    namespace = learner_namespace(tmp_path, LEARNER)
    program = program_source({"MyChecker": namespace["Checker"]}, namespace)  # type: ignore[dict-item]
    assert "TODO" not in program
    assert "goes on here" not in program
    assert program.index("def is_big(") < program.index("class MyChecker:")
    assert "import re\n" in program, "a compiled pattern is written as re.compile(...)"
    assert "LIMIT = 3\n" in program
    assert "class Base" not in program, "a notebook base's members are folded into the class"
    file = tmp_path / "program.py"
    file.write_text(program + "\nprint(MyChecker().check('-7'), MyChecker().check('2'))\n")
    ran = subprocess.run([sys.executable, str(file)], capture_output=True, text=True, check=True)
    assert ran.stdout == "['hi', True] ['hi', False]\n"


def test_a_value_that_cannot_be_written_as_code_is_named(tmp_path: Path) -> None:
    source = """\
import io

LOG = io.StringIO()


class Logger:
    def log(self):
        LOG.close()
"""
    namespace = learner_namespace(tmp_path, source)
    with pytest.raises(ValueError, match=r"Logger use\(s\) LOG \(StringIO\), which cannot"):
        program_source({"Logger": namespace["Logger"]}, namespace)  # type: ignore[dict-item]
