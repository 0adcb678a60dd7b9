"""The learner's path in a real browser: JupyterLab, Chromium, Run All, every notebook.

Each notebook is opened in a JupyterLab started for the test (loopback, a free port, a token),
run with the menu's Run > Run All Cells, and checked once its kernel is idle: every code cell
ran, no error or stderr output, every figure is an image that loaded, every progress bar is a
widget. A screenshot of the notebook's end goes to ``build/screenshots/<notebook>.png``.

JupyterLab serves a copy of ``notebooks/`` inside a throwaway git repository set up with the
project's notebook filter (``tools/nbstripout.sh``), and each notebook is saved after its run:
``git status`` there must stay clean, as in the README's instructor workflow
(``make edit-notebooks``).

The learner's workflow (``make lab``) has a test of its own: JupyterLab on the learner's copies
(``my-notebooks/``, made by ``tools/learner_copies.py``), a notebook run, an exercise typed and
run, saved, JupyterLab restarted, the notebook reopened: its outputs and the exercise are still
there, and stay there through a ``git pull`` that changed the original; ``git status`` is clean.

Needs Playwright (``make venv`` installs it) and Debian's Chromium (``apt-get install chromium``;
no browser download). Without them the tests skip; with ``METRICS_LAB_REQUIRE_BROWSER=1`` (CI)
they fail instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SCREENSHOTS = ROOT / "build" / "screenshots"
CHROMIUM = os.environ.get("METRICS_LAB_CHROMIUM", "/usr/bin/chromium")
REQUIRED = os.environ.get("METRICS_LAB_REQUIRE_BROWSER") == "1"
TOKEN = "metrics-lab-browser-test"
# Flags that keep a headless Chromium, running as root, away from the internet.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RUN_LIMIT_MS = int(os.environ.get("METRICS_LAB_RUN_LIMIT_MS", "240000"))
"""How long a notebook may take to run before the test gives up (a hang guard, not a timing)."""

# The test's own JupyterLab settings: every cell in the DOM (no windowing, so all outputs can be
# counted), no news or update toasts over the notebook.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}

pytestmark = [pytest.mark.browser, pytest.mark.timeout(400)]


def _missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed: run make test once (it installs the dev group)"
    if not Path(CHROMIUM).is_file():
        return f"no Chromium at {CHROMIUM}: install it with apt-get install chromium"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium from the system, through Playwright (a ``playwright.sync_api.Browser``)."""
    reason = _missing()
    if reason is not None:
        if REQUIRED:
            pytest.fail(f"METRICS_LAB_REQUIRE_BROWSER=1, but {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def lab(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The instructors' JupyterLab: on ``notebooks/`` itself, saving them stripped."""
    repo = _learners_clone(tmp_path_factory.mktemp("clone"))
    # What `make edit-notebooks` sets: notebooks are saved stripped (tools/jupyter/).
    config = {"JUPYTER_CONFIG_PATH": str(ROOT / "tools" / "jupyter")}
    with _jupyterlab(repo / "notebooks", tmp_path_factory.mktemp("lab"), config) as url:
        yield Lab(url, repo, browser)


@contextmanager
def _jupyterlab(folder: Path, scratch: Path, config: dict[str, str]) -> Iterator[str]:
    """A JupyterLab on ``folder`` (loopback, a free port, a token) until the block ends; its URL.

    ``scratch`` holds the test's own settings and the log; ``config`` is added to the
    environment (without it, no ``JUPYTER_CONFIG_PATH``: a learner's plain JupyterLab).
    """
    settings = scratch / "settings"
    for name, values in LAB_SETTINGS.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values), encoding="utf-8")
    env = {key: value for key, value in os.environ.items() if key != "JUPYTER_CONFIG_PATH"}
    env |= {
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(scratch / "workspaces"),
        **config,
    }
    log = scratch / "jupyterlab.log"
    with log.open("wb") as log_file:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyter",
                "lab",
                str(folder),
                "--no-browser",
                "--allow-root",
                "--ServerApp.ip=127.0.0.1",
                "--port=0",  # the system picks a free port; the log line below tells which
                f"--ServerApp.token={TOKEN}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            env=env,
            cwd=folder.parent,
        )
    try:
        yield _wait_for_url(server, log)
    finally:
        server.terminate()
        server.wait(timeout=30)


@dataclass
class Lab:
    """A running JupyterLab (``url`` ends in ``/``) on a git clone, and a browser to drive it."""

    url: str
    repo: Path
    browser: Any  # playwright.sync_api.Browser

    def api(self, method: str, path: str) -> Any:
        request = urllib.request.Request(
            f"{self.url}api/{path}", method=method, headers={"Authorization": f"token {TOKEN}"}
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            body = answer.read()
        return json.loads(body) if body else None


def _learners_clone(where: Path) -> Path:
    """A git repository holding notebooks/ and the project's filter, as a learner's clone does."""
    # The chapters and their solutions (notebook 06 runs one), as git has them.
    shutil.copytree(
        ROOT / "notebooks",
        where / "notebooks",
        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"),
    )
    (where / "tools").mkdir()
    shutil.copy(ROOT / ".gitattributes", where / ".gitattributes")
    for tool in ("nbstripout.sh", "learner_copies.py"):
        shutil.copy(ROOT / "tools" / tool, where / "tools" / tool)
    # The project's own ignore list (it ignores my-notebooks/), and the venv linked in below.
    ignored = (ROOT / ".gitignore").read_text(encoding="utf-8")
    (where / ".gitignore").write_text(ignored + ".venv\n", encoding="utf-8")
    _git(where, "init", "--quiet")
    _set_up_clone(where)
    _git(where, "add", ".")
    _git(where, "commit", "--quiet", "-m", "a fresh clone")
    return where


def _set_up_clone(where: Path) -> None:
    """What ``make venv`` does in a clone: a venv (this one, linked) and the notebook filter."""
    (where / ".venv").symlink_to(Path(sys.prefix))
    _git(where, "config", "user.email", "learner@example.invalid")
    _git(where, "config", "user.name", "learner")
    subprocess.run(["sh", "tools/nbstripout.sh", "--install"], cwd=where, check=True)


def _git(where: Path, *args: str) -> str:
    """Run git in ``where``; its output."""
    return subprocess.run(
        ["git", *args], cwd=where, check=True, capture_output=True, text=True
    ).stdout


def _wait_for_url(server: subprocess.Popen[bytes], log: Path) -> str:
    """Read JupyterLab's log until it says where it listens (it accepts connections then)."""
    while server.poll() is None:
        found = re.search(r"(http://127\.0\.0\.1:\d+/)lab\?token=", log.read_text("utf-8"))
        if found:
            return found.group(1)
        time.sleep(0.2)
    raise AssertionError("JupyterLab exited before it listened:\n" + log.read_text("utf-8"))


# JavaScript run in the page: what the visible notebook shows, cell by cell.
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"
INSPECT = """
(panel) => {
  const root = document.querySelector(panel);
  return Array.from(root.querySelectorAll('.jp-Cell.jp-CodeCell')).map((cell) => {
    const outputs = Array.from(cell.querySelectorAll('.jp-OutputArea-output'));
    return {
      prompt: (cell.querySelector('.jp-InputPrompt') || {}).textContent || '',
      source: (cell.querySelector('.jp-InputArea-editor') || {}).textContent || '',
      mimes: outputs.map((output) => output.getAttribute('data-mime-type') || ''),
      errors: outputs
        .filter((o) => (o.getAttribute('data-mime-type') || '').includes('stderr'))
        .map((o) => o.textContent.slice(0, 500)),
      text: outputs.map((o) => o.textContent).join('\\n'),
      images: Array.from(cell.querySelectorAll('.jp-OutputArea-output img')).map(
        (img) => img.complete && img.naturalWidth > 0
      ),
      progress: cell.querySelectorAll('.widget-progress, .jupyter-widgets.widget-hprogress')
        .length,
    };
  });
}
"""


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs_in_jupyterlab(lab: Lab, path: Path) -> None:
    page = lab.browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        _open(page, lab.url, path.name)
        cells = _run_all(page)
        _save(page)
        _screenshots(page, path, cells)
    except Exception:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{path.stem}-failed.png"))
        raise
    finally:
        page.close()
        for session in lab.api("GET", "sessions"):
            lab.api("DELETE", f"sessions/{session['id']}")

    unrun = [index for index, cell in enumerate(cells) if not re.match(r"\[\d+\]:", cell["prompt"])]
    assert cells, "no code cells found in the page"
    assert not unrun, f"code cells that did not run: {unrun} of {len(cells)}"
    errors = [(index, cell["errors"]) for index, cell in enumerate(cells) if cell["errors"]]
    assert errors == [], f"error or stderr output: {errors}"
    images = [ok for cell in cells for ok in cell["images"]]
    assert all(images), "a figure did not load as an image"
    unrendered = [index for index, cell in enumerate(cells) if "<Figure size" in cell["text"]]
    assert unrendered == [], f"figures shown as text, not images: {unrendered}"
    if "plt." in path.read_text(encoding="utf-8"):
        assert images, "the notebook plots, but no figure appeared"
    bars = [cell for cell in cells if "tqdm(" in cell["source"]]
    assert all(cell["progress"] for cell in bars), "a tqdm bar is not a progress widget"
    assert "Loading widget" not in "".join(cell["text"] for cell in cells)
    status = _git(lab.repo, "status", "--porcelain")
    assert status == "", f"running and saving the notebook dirtied git:\n{status}"


def _open(page: Any, url: str, name: str) -> None:
    """Open a notebook in a fresh workspace, and wait until its kernel is ready."""
    # reset: a fresh workspace, without the tabs of the notebooks tested before.
    page.goto(f"{url}lab/tree/{name}?reset&token={TOKEN}")
    # The status bar says "| Idle" once the page's kernel connection is up; the toolbar's
    # indicator says idle earlier, and cells run then are lost.
    page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=60_000)


def _run_all(page: Any) -> list[dict[str, Any]]:
    """Run > Run All Cells in the visible notebook; what its code cells show once it is done."""
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    # Run All marks every code cell "[*]:"; each becomes "[n]:" once it ran, or "[ ]:" again
    # if an earlier cell failed. Done when the first ran and none is left waiting.
    page.wait_for_function(
        """(panel) => {
          const prompts = Array.from(document.querySelectorAll(
            panel + ' .jp-CodeCell .jp-InputPrompt')).map((p) => p.textContent.trim());
          return prompts.length > 0 && /^\\[\\d+\\]:$/.test(prompts[0]) &&
            !prompts.includes('[*]:');
        }""",
        arg=PANEL,
        timeout=RUN_LIMIT_MS,
        polling=500,
    )
    page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=RUN_LIMIT_MS)
    cells: list[dict[str, Any]] = page.evaluate(INSPECT, PANEL)
    return cells


def _save(page: Any) -> None:
    """File > Save, by its shortcut; returns once the notebook is no longer marked unsaved."""
    # The unsaved mark is on the notebook's tab, outside the panel; the notebook was run, so
    # the mark is there until the save has gone through.
    dirty = page.locator(".lm-TabBar-tab.lm-mod-current.jp-mod-dirty")
    dirty.wait_for(state="attached", timeout=30_000)
    page.keyboard.press("Control+s")
    dirty.wait_for(state="detached", timeout=30_000)


def _screenshots(page: Any, path: Path, cells: list[dict[str, Any]]) -> None:
    """The notebook's end, and each code cell that shows a figure or a progress bar."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for old in SCREENSHOTS.glob(f"{path.stem}*.png"):
        old.unlink()
    code_cells = page.locator(f"{PANEL} .jp-Cell.jp-CodeCell")
    for index, cell in enumerate(cells):
        if cell["images"] or cell["progress"]:
            code_cells.nth(index).screenshot(path=str(SCREENSHOTS / f"{path.stem}-cell{index}.png"))
    page.locator(f"{PANEL} .jp-Cell").last.scroll_into_view_if_needed()
    page.screenshot(path=str(SCREENSHOTS / f"{path.stem}.png"))


# The learner's notebook for the save-and-reopen test: its figures are what a learner who closed
# the tab missed most when `make lab` saved notebooks stripped.
LEARNER_NOTEBOOK = "04_metrics_to_dataframes.ipynb"
EXERCISE = 'print("my exercise:", 6 * 7)'
EXERCISE_OUTPUT = "my exercise: 42"


def test_learners_work_survives_save_reopen_and_pull(browser: Any, tmp_path: Path) -> None:
    upstream = _learners_clone(tmp_path / "upstream")
    learner = tmp_path / "learner"
    _git(tmp_path, "clone", "--quiet", str(upstream), str(learner))
    _set_up_clone(learner)
    folder = learner / "my-notebooks"
    assert "your copy, made now" in _learner_copies(learner)

    with _jupyterlab(folder, tmp_path / "first-lab", {}) as url:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        try:
            _open(page, url, LEARNER_NOTEBOOK)
            _run_all(page)
            _type_exercise(page)
            saved = page.evaluate(INSPECT, PANEL)
            _save(page)
        finally:
            page.close()
    # JupyterLab has stopped, its kernels too: what the second one shows comes from the file.
    on_disk = _outputs_on_disk(folder / LEARNER_NOTEBOOK)
    assert "image/png" in json.dumps(on_disk), "the saved copy has no figure"
    assert EXERCISE_OUTPUT in json.dumps(on_disk[-1]), "the exercise's output was not saved"

    with _jupyterlab(folder, tmp_path / "second-lab", {}) as url:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        try:
            _open(page, url, LEARNER_NOTEBOOK)
            page.wait_for_function(
                """(panel) => Array.from(document.querySelectorAll(panel + ' img'))
                     .every((img) => img.complete)""",
                arg=PANEL,
                timeout=30_000,
            )
            reopened = page.evaluate(INSPECT, PANEL)
            _learner_screenshots(page, reopened)
        finally:
            page.close()

    def shown(cells: list[dict[str, Any]]) -> list[tuple[str, list[str], str]]:
        return [(cell["prompt"], cell["mimes"], cell["text"]) for cell in cells]

    assert shown(reopened) == shown(saved), "the reopened notebook shows other outputs"
    assert all(ok for cell in reopened for ok in cell["images"]), "a figure did not load"
    assert any(cell["images"] for cell in reopened), "no figure after reopening"
    assert any(EXERCISE_OUTPUT in cell["text"] for cell in reopened), "the exercise is gone"
    assert _git(learner, "status", "--porcelain") == "", "the learner's work dirtied git"

    # The material changes upstream, and the learner pulls it.
    original = upstream / "notebooks" / LEARNER_NOTEBOOK
    changed = nbformat.read(original, as_version=4)
    changed.cells.append(nbformat.v4.new_markdown_cell("A paragraph added upstream."))
    nbformat.write(changed, original)
    _git(upstream, "commit", "--quiet", "-am", "the material changes")
    _git(learner, "pull", "--quiet")
    said = _learner_copies(learner)
    assert f"{LEARNER_NOTEBOOK}: its original has changed" in said
    assert _outputs_on_disk(folder / LEARNER_NOTEBOOK) == on_disk, "the pull lost the work"
    assert _git(learner, "status", "--porcelain") == ""


def _learner_copies(clone: Path) -> str:
    """Make or update the learner's copies as ``make lab`` does; what the tool printed."""
    command = [sys.executable, "tools/learner_copies.py", "--source", "notebooks"]
    run = subprocess.run(
        [*command, "--target", "my-notebooks"], cwd=clone, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


def _type_exercise(page: Any) -> None:
    """Add a code cell at the notebook's end, as a learner does for an exercise, and run it."""
    page.locator(f"{PANEL} .jp-Cell").last.locator(".jp-InputPrompt").click()
    page.keyboard.press("Escape")
    page.keyboard.press("b")  # command mode: a new cell below
    page.keyboard.press("Enter")
    page.keyboard.type(EXERCISE)
    page.keyboard.press("Control+Enter")  # run it, and stay there
    page.locator(f"{PANEL} .jp-OutputArea-output", has_text=EXERCISE_OUTPUT).wait_for(
        timeout=60_000
    )


def _outputs_on_disk(path: Path) -> list[list[str]]:
    """Each code cell's outputs in the saved file, as their MIME types or stream texts."""
    notebook = nbformat.read(path, as_version=4)
    return [
        [output.get("text") or " ".join(sorted(output.get("data", {}))) for output in cell.outputs]
        for cell in notebook.cells
        if cell.cell_type == "code"
    ]


def _learner_screenshots(page: Any, cells: list[dict[str, Any]]) -> None:
    """The reopened notebook at its first figure, and at its end (the exercise)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    code_cells = page.locator(f"{PANEL} .jp-Cell.jp-CodeCell")
    figure = next(index for index, cell in enumerate(cells) if cell["images"])
    code_cells.nth(figure).scroll_into_view_if_needed()
    page.screenshot(path=str(SCREENSHOTS / "learner-reopened-figure.png"))
    code_cells.last.scroll_into_view_if_needed()
    page.screenshot(path=str(SCREENSHOTS / "learner-reopened-exercise.png"))
