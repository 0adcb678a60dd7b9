"""tools/learner_copies.py: the learner's copies are made once, kept, and follow the material."""

from __future__ import annotations

import re
import stat
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from tools.learner_copies import MANIFEST, make_copies

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def material(tmp_path: Path) -> Path:
    """A notebooks folder as git has it: two chapters, a solution, and Jupyter's leftovers."""
    source = tmp_path / "notebooks"
    (source / "solutions").mkdir(parents=True)
    (source / "01_first.ipynb").write_text('{"cells": ["first"]}', encoding="utf-8")
    (source / "02_second.ipynb").write_text('{"cells": ["second"]}', encoding="utf-8")
    (source / "solutions" / "01_first.py").write_text("print('solved')\n", encoding="utf-8")
    (source / ".ipynb_checkpoints").mkdir()
    (source / ".ipynb_checkpoints" / "01_first-checkpoint.ipynb").write_text("{}", "utf-8")
    (source / "solutions" / "__pycache__").mkdir()
    (source / "solutions" / "__pycache__" / "01_first.cpython-311.pyc").write_bytes(b"\0")
    return source


def _files(folder: Path) -> set[str]:
    return {path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()}


def test_first_run_copies_the_notebooks_and_the_layout_they_read(material: Path, tmp_path: Path):
    target = tmp_path / "my-notebooks"
    copies = make_copies(material, target)
    assert _files(target) == {
        "01_first.ipynb",
        "02_second.ipynb",
        "solutions/01_first.py",
        MANIFEST,
    }
    assert copies.copied == [Path("01_first.ipynb"), Path("02_second.ipynb")]
    assert copies.refreshed == [Path("solutions/01_first.py")]
    assert (target / "02_second.ipynb").read_bytes() == (material / "02_second.ipynb").read_bytes()


def test_a_learners_notebook_is_never_replaced(material: Path, tmp_path: Path):
    target = tmp_path / "my-notebooks"
    make_copies(material, target)
    mine = '{"cells": ["first", "my exercise"], "outputs": ["a plot"]}'
    (target / "01_first.ipynb").write_text(mine, encoding="utf-8")
    # git pull changes the original, and adds a chapter.
    (material / "01_first.ipynb").write_text('{"cells": ["first, improved"]}', encoding="utf-8")
    (material / "03_third.ipynb").write_text('{"cells": ["third"]}', encoding="utf-8")

    copies = make_copies(material, target)

    assert (target / "01_first.ipynb").read_text(encoding="utf-8") == mine
    assert copies.copied == [Path("03_third.ipynb")]
    assert (target / "03_third.ipynb").is_file()
    assert copies.kept == [Path("01_first.ipynb"), Path("02_second.ipynb")]
    assert copies.changed_upstream == [Path("01_first.ipynb")]


def test_a_deleted_copy_comes_back_fresh(material: Path, tmp_path: Path):
    target = tmp_path / "my-notebooks"
    make_copies(material, target)
    (material / "01_first.ipynb").write_text('{"cells": ["new"]}', encoding="utf-8")
    (target / "01_first.ipynb").unlink()
    copies = make_copies(material, target)
    assert copies.copied == [Path("01_first.ipynb")]
    assert copies.changed_upstream == []
    assert (target / "01_first.ipynb").read_text(encoding="utf-8") == '{"cells": ["new"]}'
    assert make_copies(material, target).changed_upstream == []


def test_solutions_follow_the_originals_and_are_read_only(material: Path, tmp_path: Path):
    target = tmp_path / "my-notebooks"
    make_copies(material, target)
    solution = target / "solutions" / "01_first.py"
    assert not solution.stat().st_mode & stat.S_IWUSR, "a solution's copy should be read-only"
    assert make_copies(material, target).refreshed == [], "an unchanged solution is left alone"

    (material / "solutions" / "01_first.py").write_text("print('solved better')\n", "utf-8")
    assert make_copies(material, target).refreshed == [Path("solutions/01_first.py")]
    assert solution.read_text(encoding="utf-8") == "print('solved better')\n"
    assert not solution.stat().st_mode & stat.S_IWUSR


def test_the_learners_own_files_are_left_alone(material: Path, tmp_path: Path):
    target = tmp_path / "my-notebooks"
    make_copies(material, target)
    (target / "my_server.py").write_text("# mine\n", encoding="utf-8")
    (target / "scratch.ipynb").write_text("{}", encoding="utf-8")
    make_copies(material, target)
    assert (target / "my_server.py").read_text(encoding="utf-8") == "# mine\n"
    assert (target / "scratch.ipynb").read_text(encoding="utf-8") == "{}"


def test_the_command_says_what_it_did(material: Path, tmp_path: Path):
    target = tmp_path / "my-notebooks"
    command = [sys.executable, str(ROOT / "tools" / "learner_copies.py")]
    args = ["--source", str(material), "--target", str(target)]
    first = subprocess.run([*command, *args], capture_output=True, text=True, check=True)
    assert "01_first.ipynb: your copy, made now (never replaced)" in first.stdout
    (material / "02_second.ipynb").write_text('{"cells": ["changed"]}', encoding="utf-8")
    second = subprocess.run([*command, *args], capture_output=True, text=True, check=True)
    assert "2 notebooks kept as you left them" in second.stdout
    assert "02_second.ipynb: its original has changed" in second.stdout

    missing = [*command, "--source", str(tmp_path / "nowhere"), "--target", str(target)]
    refused = subprocess.run(missing, capture_output=True, text=True)
    assert refused.returncode == 1
    assert "is not a folder of notebooks" in refused.stderr


def test_the_paths_the_notebooks_read_resolve_in_the_copies(tmp_path: Path):
    # A notebook runs with its own folder as working directory; a path it names relative to
    # that folder must exist beside the learner's copy as it does beside the original.
    target = tmp_path / "my-notebooks"
    make_copies(ROOT / "notebooks", target)
    named = {
        match.group(1)
        for notebook in (ROOT / "notebooks").glob("*.ipynb")
        for cell in nbformat.read(notebook, as_version=4).cells
        if cell.cell_type == "code"
        for match in re.finditer(r"""["'](solutions/[^"']+)["']""", cell.source)
    }
    missing = sorted(path for path in named if not (target / path).is_file())
    assert missing == [], f"named by a notebook, missing beside the copies: {missing}"
