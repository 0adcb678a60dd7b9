"""Every notebook runs top to bottom in a fresh kernel, cleanly, and is stored without outputs.

Notebooks are found by globbing ``notebooks/*.ipynb``, so a new chapter is tested as soon as it
exists. They run through ``tools/export_notebooks.py``, the code ``make demo`` uses, once per
test session (``executed_notebook`` in tests/conftest.py): the tests of notebooks 06 and 08 read
the outputs of that same run.
"""

from __future__ import annotations

import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from tools.export_notebooks import KERNEL, export_notebook

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# The numbered solution scripts, one per notebook. server.py and client.py beside them are a
# program that serves until stopped and a module: tests/test_solutions.py runs those.
SOLUTIONS = sorted((ROOT / "notebooks" / "solutions").glob("[0-9][0-9]_*.py"))

WARNING_LIKE = re.compile(r"Warning|Error|Traceback|WARNING|ERROR|CRITICAL")


def _ids(paths: list[Path]) -> list[str]:
    return [path.stem for path in paths]


def test_the_learning_path_is_there():
    names = {path.stem for path in NOTEBOOKS}
    assert {
        "01_protocol_by_hand",
        "02_the_client",
        "03_inside_the_asyncio_server",
        "04_metrics_to_dataframes",
    } <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_is_a_stripped_chapter(path: Path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    assert notebook.metadata["kernelspec"]["name"] == KERNEL
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code), (
        "commit notebooks without outputs: .venv/bin/nbstripout notebooks/*.ipynb"
    )
    # A chapter: a title and what the learner will learn first; a summary and exercises last.
    first = notebook.cells[0]
    assert first.cell_type == "markdown"
    assert first.source.startswith("# ")
    assert "learn" in first.source.lower()
    headings = [
        line.lstrip("#").strip().lower()
        for cell in notebook.cells
        if cell.cell_type == "markdown"
        for line in cell.source.splitlines()
        if line.startswith("#")
    ]
    assert "summary" in headings
    assert "exercises" in headings


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_runs_cleanly_in_a_fresh_kernel(path: Path, executed_notebook):
    notebook = executed_notebook(path)  # the session's one run, with NO_SERVER_LEFT at its end
    REACHED.get(path.stem, _nothing_announced)(notebook)
    # Warnings and log records in a kernel go to the cell's stderr. Progress bars do too, and
    # they are welcome, so only text that looks like a warning, an error or a log fails.
    stderr = [
        (index, output.text)
        for index, cell in enumerate(notebook.cells)
        for output in cell.get("outputs", [])
        if output.output_type == "stream"
        and output.name == "stderr"
        and WARNING_LIKE.search(output.text)
    ]
    assert stderr == [], f"cells wrote warnings or errors to stderr: {stderr}"


@pytest.mark.parametrize("path", SOLUTIONS, ids=_ids(SOLUTIONS))
def test_solution_runs(path: Path, tmp_path: Path):
    run = subprocess.run(
        [sys.executable, "-W", "error", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,  # where a solution saves its figures: not in the source tree
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""


def test_export_tool_writes_notebook_html_and_figures(tmp_path: Path):
    notebooks, build = tmp_path / "notebooks", tmp_path / "build"
    notebooks.mkdir()
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3"}
    notebook.cells = [
        nbformat.v4.new_markdown_cell("# A tiny chapter"),
        nbformat.v4.new_code_cell(
            "import matplotlib.pyplot as plt\n"
            "fig, ax = plt.subplots()\n"
            "ax.plot([1, 2, 3])\n"
            "ax.set_title('a line');"
        ),
    ]
    nbformat.write(notebook, notebooks / "tiny.ipynb")
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "export_notebooks.py"),
            "--notebooks",
            str(notebooks),
            "--build",
            str(build),
        ],
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert run.returncode == 0, run.stderr
    executed = nbformat.read(build / "tiny.ipynb", as_version=4)
    assert executed.cells[1].outputs, "the executed copy keeps its outputs"
    assert "a tiny chapter" in (build / "tiny.html").read_text(encoding="utf-8").lower()
    [figure] = (build / "figures").glob("*.png")
    assert figure.name == "tiny-1.png"
    assert figure.read_bytes().startswith(b"\x89PNG")
    assert str(build.resolve()) in run.stdout


def test_exported_html_shows_progress_bars_offline(tmp_path: Path):
    """A tqdm bar is a widget; the HTML shows its final text and loads no script from the web."""
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3"}
    notebook.cells = [
        nbformat.v4.new_code_cell(
            "from tqdm.auto import tqdm\nfor _ in tqdm(range(3), desc='steps'):\n    pass"
        )
    ]
    path = tmp_path / "bars.ipynb"
    nbformat.write(notebook, path)
    exported = export_notebook(path, tmp_path / "build")
    page = exported.html.read_text(encoding="utf-8")
    assert re.search(r"steps: 100% \|#+\| 3/3", page)
    assert "unpkg.com" not in page
    assert "widget-view+json" not in page
    kept = nbformat.read(exported.notebook, as_version=4)
    assert "widget-view+json" in nbformat.writes(kept), "the executed copy keeps its widgets"


# --- notebooks stay clean: git's filter, the JupyterLab save hook, make test's one line --------

FILTER = ROOT / "tools" / "nbstripout.sh"
LAB_CONFIG = ROOT / "tools" / "jupyter" / "jupyter_server_config.py"
# What JupyterLab writes into a notebook it ran and saved (seen in real runs).
JUPYTERLAB_LANGUAGE_INFO = {
    "codemirror_mode": {"name": "ipython", "version": 3},
    "file_extension": ".py",
    "mimetype": "text/x-python",
    "name": "python",
    "nbconvert_exporter": "python",
    "pygments_lexer": "ipython3",
    "version": "3.11.2",
}


def _as_saved_by_jupyterlab(path: Path) -> nbformat.NotebookNode:
    notebook: nbformat.NotebookNode = nbformat.read(path, as_version=4)
    notebook.metadata["language_info"] = JUPYTERLAB_LANGUAGE_INFO
    for count, cell in enumerate(c for c in notebook.cells if c.cell_type == "code"):
        cell.execution_count = count + 1
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="ran\n")]
    return notebook


def _clone_with_filter(where: Path, *, venv: bool) -> Path:
    """A git repository with one chapter, the project's filter installed, and one commit."""
    (where / "tools").mkdir(parents=True)
    (where / "notebooks").mkdir()
    shutil.copy(FILTER, where / "tools" / FILTER.name)
    shutil.copy(ROOT / ".gitattributes", where / ".gitattributes")
    shutil.copy(NOTEBOOKS[0], where / "notebooks" / NOTEBOOKS[0].name)
    (where / ".gitignore").write_text(".venv\n", encoding="utf-8")
    if venv:
        (where / ".venv").symlink_to(Path(sys.prefix))
    _git(where, "init", "--quiet")
    _git(where, "config", "user.email", "learner@example.invalid")
    _git(where, "config", "user.name", "learner")
    subprocess.run(["sh", "tools/nbstripout.sh", "--install"], cwd=where, check=True)
    _git(where, "add", ".")
    _git(where, "commit", "--quiet", "-m", "a clone")
    return where / "notebooks" / NOTEBOOKS[0].name


def _git(where: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=where, check=True, capture_output=True, text=True
    ).stdout


def test_git_filter_strips_what_jupyterlab_saves(tmp_path: Path):
    chapter = _clone_with_filter(tmp_path, venv=True)
    nbformat.write(_as_saved_by_jupyterlab(chapter), chapter)
    assert _git(tmp_path, "diff") == "", "the filter left outputs or metadata for git to see"
    _git(tmp_path, "add", ".")
    assert _git(tmp_path, "status", "--porcelain") == ""


def test_git_stays_usable_without_the_venv(tmp_path: Path):
    """After `make clean` there is no .venv; diff and stash must work all the same."""
    chapter = _clone_with_filter(tmp_path, venv=False)
    chapter.write_text(chapter.read_text(encoding="utf-8").replace("learn", "study"), "utf-8")
    assert "study" in _git(tmp_path, "diff")
    _git(tmp_path, "stash")
    assert _git(tmp_path, "status", "--porcelain") == ""
    _git(tmp_path, "stash", "pop")


def test_make_test_names_what_to_run_for_a_saved_notebook(tmp_path: Path):
    chapter = _clone_with_filter(tmp_path, venv=True)
    nbformat.write(_as_saved_by_jupyterlab(chapter), chapter)
    verify = subprocess.run(
        ["sh", "tools/nbstripout.sh", "--verify", "notebooks/" + chapter.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 1
    assert verify.stderr.count("\n") == 1
    assert "run: make strip" in verify.stderr
    subprocess.run(
        ["sh", "tools/nbstripout.sh", "--strip", "notebooks/" + chapter.name],
        cwd=tmp_path,
        check=True,
    )
    assert _git(tmp_path, "status", "--porcelain") == ""


def test_jupyterlab_saves_notebooks_as_git_stores_them():
    """`make lab`'s pre-save hook strips the keys the git filter strips, and gives equal bytes."""
    config = runpy.run_path(str(LAB_CONFIG), init_globals={"get_config": _FakeConfig})
    filter_keys = re.search(r'EXTRA_KEYS="([^"]*)"', FILTER.read_text("utf-8"))
    assert filter_keys is not None
    assert set(filter_keys.group(1).split()) <= set(config["STRIPPED_KEYS"])
    for path in NOTEBOOKS:
        model = {"type": "notebook", "content": _as_saved_by_jupyterlab(path)}
        config["save_stripped"](model, path=path.name, contents_manager=None)
        assert nbformat.writes(model["content"]) + "\n" == path.read_text("utf-8"), path.name


class _FakeConfig:
    """Stands in for Jupyter's ``get_config()``: any attribute chain can be assigned."""

    def __getattr__(self, name: str) -> _FakeConfig:
        return self


def test_notebook_06_is_an_exercise_with_the_checkers_verdict_after_each_step():
    notebook = nbformat.read(ROOT / "notebooks" / "06_build_your_own_server.ipynb", as_version=4)
    code = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    steps = [source for source in code if "# TODO" in source]
    assert len(steps) >= 5, "TODO steps for the learner: four server steps and the client"
    assert all("check(" in step or "check_client(" in step for step in steps), (
        "each TODO step ends with the checker's verdict"
    )
    script = next(source for source in code if source.startswith("%%writefile"))
    for part in ("asyncio.run(", "create_server(", "serve_forever()"):
        assert part in script, f"the standalone script shows {part}"
    assert any('"metrics_lab", "check"' in source for source in code), "checked as from a shell"
    prose = " ".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown")
    assert "about half" not in prose, "counts are printed, not guessed in prose"
    assert "PROTOCOL.md" in prose
    assert '"The client"' in prose, "the client scaffold points to PROTOCOL.md's client rules"


# --- each notebook reaches the state it announces, as its executed outputs show -------------


def _stdout(cell: nbformat.NotebookNode) -> str:
    return "".join(
        output.text
        for output in cell.get("outputs", [])
        if output.output_type == "stream" and output.name == "stdout"
    )


def _code_cell(notebook: nbformat.NotebookNode, part: str) -> nbformat.NotebookNode:
    """The one code cell whose source holds ``part``."""
    cells: list[nbformat.NotebookNode] = [
        cell for cell in notebook.cells if cell.cell_type == "code" and part in cell.source
    ]
    assert len(cells) == 1, f"one code cell holds {part!r}, not {len(cells)}"
    return cells[0]


def _nothing_announced(notebook: nbformat.NotebookNode) -> None:
    """Notebooks without a state to check here: running cleanly is what they announce."""


def _03_own_server_passes_the_checker(notebook: nbformat.NotebookNode) -> None:
    report = _stdout(_code_cell(notebook, "\nreport = await asyncio.to_thread(check_server"))
    summary = re.search(r": (\d+)/(\d+) checks passed \(strict profile\)$", report.strip())
    assert summary is not None, f"the checker's summary line is printed: {report[-300:]}"
    assert summary[1] == summary[2], f"the notebook's own server passes every check: {summary[0]}"
    assert "FAIL" not in report


def _05_measures_a_separate_server_and_stops_it(notebook: nbformat.NotebookNode) -> None:
    starts = _code_cell(notebook, "def start_server(").source
    assert '"--port", "0"' in starts, "the server binds any free port and its log says which"
    assert "free_port" not in starts, "no port guessed free, which another program may take"
    results = _code_cell(notebook, "results = pd.DataFrame(")
    [table] = [output for output in results.outputs if output.output_type == "execute_result"]
    assert "points/s" in table.data["text/plain"], "the results table is shown"
    printed = "".join(_stdout(cell) for cell in notebook.cells if cell.cell_type == "code")
    started = re.findall(r"server process (\d+) serving on", printed)
    stopped = re.findall(r"server process (\d+) stopped", printed)
    assert started, "the notebook measures a server in a process of its own"
    assert sorted(stopped) == sorted(started), "every server process it started was stopped"
    arrived = _stdout(_code_cell(notebook, "stored == durable_sent")).strip()
    assert arrived.endswith("the same keys and counts: True"), f"every point arrived: {arrived}"


REACHED = {
    "03_inside_the_asyncio_server": _03_own_server_passes_the_checker,
    "05_load_and_throughput": _05_measures_a_separate_server_and_stops_it,
}
"""Per notebook: asserts on its executed copy that it reached the state it announces."""
