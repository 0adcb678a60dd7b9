"""The learner's path in a real browser: JupyterLab, Chromium, Run All, every notebook.

Each notebook is opened in a JupyterLab started for the test (loopback, a free port, a token),
run with the menu's Run > Run All Cells, and checked once its kernel is idle: every code cell
ran, no error or stderr output, every figure is an image that loaded, every progress bar is a
widget. A screenshot of the notebook's end goes to ``build/screenshots/<notebook>.png``.

JupyterLab serves a copy of ``notebooks/`` inside a throwaway git repository set up with the
project's notebook filter (``tools/nbstripout.sh``), and each notebook is saved after its run:
``git status`` there must stay clean, as in the README's instructor workflow.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
        return "Playwright is not installed: run make venv (it installs the dev extras)"
    if not Path(CHROMIUM).is_file():
        return f"no Chromium at {CHROMIUM}: install it with apt-get install chromium"
    return None


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    reason = _missing()
    if reason is not None:
        if REQUIRED:
            pytest.fail(f"METRICS_LAB_REQUIRE_BROWSER=1, but {reason}")
        pytest.skip(reason)
    repo = _learners_clone(tmp_path_factory.mktemp("clone"))
    settings = tmp_path_factory.mktemp("lab-settings")
    for name, values in LAB_SETTINGS.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values), encoding="utf-8")
    env = {
        **os.environ,
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path_factory.mktemp("workspaces")),
        # What `make lab` sets: notebooks are saved stripped (tools/jupyter/).
        "JUPYTER_CONFIG_PATH": str(ROOT / "tools" / "jupyter"),
    }
    log = tmp_path_factory.mktemp("lab-log") / "jupyterlab.log"
    with log.open("wb") as log_file:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyter",
                "lab",
                str(repo / "notebooks"),
                "--no-browser",
                "--allow-root",
                "--ServerApp.ip=127.0.0.1",
                "--port=0",  # the system picks a free port; the log line below tells which
                f"--ServerApp.token={TOKEN}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            env=env,
            cwd=repo,
        )
    try:
        url = _wait_for_url(server, log)
        with _browser() as browser:
            yield Lab(url, repo, browser)
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
    shutil.copy(ROOT / "tools" / "nbstripout.sh", where / "tools" / "nbstripout.sh")
    (where / ".venv").symlink_to(Path(sys.prefix))
    (where / ".gitignore").write_text(".venv\n.ipynb_checkpoints/\n", encoding="utf-8")

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=where, check=True, capture_output=True)

    git("init", "--quiet")
    git("config", "user.email", "learner@example.invalid")
    git("config", "user.name", "learner")
    subprocess.run(["sh", "tools/nbstripout.sh", "--install"], cwd=where, check=True)
    git("add", ".")
    git("commit", "--quiet", "-m", "a fresh clone")
    return where


def _wait_for_url(server: subprocess.Popen[bytes], log: Path) -> str:
    """Read JupyterLab's log until it says where it listens (it accepts connections then)."""
    while server.poll() is None:
        found = re.search(r"(http://127\.0\.0\.1:\d+/)lab\?token=", log.read_text("utf-8"))
        if found:
            return found.group(1)
        time.sleep(0.2)
    raise AssertionError("JupyterLab exited before it listened:\n" + log.read_text("utf-8"))


class _browser:
    """Chromium from the system, through Playwright; a context manager."""

    def __enter__(self) -> Any:
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        self._browser = self._playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS
        )
        return self._browser

    def __exit__(self, *exc: object) -> None:
        self._browser.close()
        self._playwright.stop()


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
        # reset: a fresh workspace, without the tabs of the notebooks tested before.
        page.goto(f"{lab.url}lab/tree/{path.name}?reset&token={TOKEN}")
        # The status bar says "| Idle" once the page's kernel connection is up; the toolbar's
        # indicator says idle earlier, and cells run then are lost.
        page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=60_000)
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
        cells = page.evaluate(INSPECT, PANEL)
        page.keyboard.press("Control+s")
        page.locator(f"{PANEL} .jp-mod-dirty").wait_for(state="detached", timeout=30_000)
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
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=lab.repo, capture_output=True, text=True, check=True
    )
    assert status.stdout == "", f"running and saving the notebook dirtied git:\n{status.stdout}"


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
