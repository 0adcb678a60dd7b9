"""Execute notebooks headless and export them: executed ``.ipynb``, HTML and every figure as PNG.

``make demo`` runs this after the command-line round trip::

    python tools/export_notebooks.py [--notebooks notebooks] [--build build]

Each ``notebooks/*.ipynb`` runs top to bottom in a fresh ``python3`` kernel, with the
notebook's folder as working directory. The results go to ``build/<name>.ipynb``,
``build/<name>.html`` and ``build/figures/<name>-<n>.png`` (the n-th image the notebook
shows). The HTML needs no internet: a widget (a tqdm progress bar) is shown there as the text
of its final state, ``label 100% |##########| 2000/2000 [...]``, instead of a script that
would be loaded from the web; the executed ``.ipynb`` keeps the widgets.

Nothing here knows about metrics_lab; the notebook tests (``tests/conftest.py``) use
:func:`run_notebook` too, so ``make test`` and ``make demo`` run notebooks the same way.
"""

from __future__ import annotations

import argparse
import base64
import copy
import html
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbconvert import HTMLExporter

__all__ = [
    "Exported",
    "execute_notebook",
    "export_notebook",
    "main",
    "run_notebook",
    "widgets_as_text",
]

KERNEL = "python3"
CELL_TIMEOUT = 120
"""Seconds any one cell may run before the notebook counts as failed (none comes close)."""


def execute_notebook(
    path: Path, *, cell_timeout: int = CELL_TIMEOUT
) -> tuple[nbformat.NotebookNode, float]:
    """Run the notebook at ``path`` in a fresh kernel; return it with outputs, and the seconds.

    Raises :class:`nbclient.exceptions.CellExecutionError` at the first cell that fails.
    """
    notebook = nbformat.read(path, as_version=4)
    return notebook, run_notebook(notebook, path.parent, cell_timeout=cell_timeout)


def run_notebook(
    notebook: nbformat.NotebookNode, cwd: Path, *, cell_timeout: int = CELL_TIMEOUT
) -> float:
    """Run ``notebook`` in place in a fresh kernel working in ``cwd``; return the seconds."""
    client = NotebookClient(
        notebook,
        kernel_name=KERNEL,
        timeout=cell_timeout,
        resources={"metadata": {"path": str(cwd)}},
        # ipykernel warns on every start that its local TCP link is unencrypted; errors still show.
        extra_arguments=["--IPKernelApp.log_level=ERROR"],
    )
    started = time.perf_counter()
    client.execute()
    return time.perf_counter() - started


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
BAR_WIDTH = 10


def widgets_as_text(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``notebook`` whose widget outputs are plain text of their final state.

    Progress bars (an HBox of a label, a progress model and a counter, as tqdm draws them)
    become one line; any other widget, its text fallback. The widget state is dropped, so
    an HTML export loads no widget scripts.
    """
    result = copy.deepcopy(notebook)
    state = result.metadata.pop("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    for cell in result.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if WIDGET_VIEW not in data:
                continue
            text = _widget_text(state, data[WIDGET_VIEW]["model_id"])
            output["data"] = {"text/plain": text or data.get("text/plain", "")}
    return result


def _widget_text(state: dict[str, dict[str, Any]], model_id: str) -> str | None:
    model = state.get(model_id)
    if model is None:
        return None
    fields = model.get("state", {})
    if "Progress" in model.get("model_name", ""):
        done = float(fields.get("value", 0)) / float(fields.get("max") or 1)
        filled = round(BAR_WIDTH * min(max(done, 0.0), 1.0))
        return "|" + "#" * filled + " " * (BAR_WIDTH - filled) + "|"
    if "children" in fields:
        parts = [
            _widget_text(state, child.removeprefix("IPY_MODEL_")) for child in fields["children"]
        ]
        return " ".join(part for part in parts if part)
    value = fields.get("value")
    if isinstance(value, str):
        text: str = html.unescape(re.sub(r"<[^>]*>", "", value))
        return text.replace("\u2007", " ").strip()
    return None


@dataclass(frozen=True)
class Exported:
    """Where one notebook's results went, and how long it ran."""

    notebook: Path
    html: Path
    figures: list[Path]
    seconds: float


def export_notebook(path: Path, build: Path) -> Exported:
    """Execute ``path`` and write its executed copy, HTML and PNG figures under ``build``."""
    notebook, seconds = execute_notebook(path)
    figures_dir = build / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    executed = build / path.name
    nbformat.write(notebook, executed)
    html_body, _ = HTMLExporter().from_notebook_node(widgets_as_text(notebook))
    html = executed.with_suffix(".html")
    html.write_text(html_body, encoding="utf-8")
    figures: list[Path] = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            png = output.get("data", {}).get("image/png")
            if png is None:
                continue
            figure = figures_dir / f"{path.stem}-{len(figures) + 1}.png"
            figure.write_bytes(base64.b64decode(png))
            figures.append(figure)
    return Exported(executed, html, figures, seconds)


def main(argv: Sequence[str] | None = None) -> int:
    """Export every notebook; print where the results are; return 1 if any notebook failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebooks", type=Path, default=Path("notebooks"))
    parser.add_argument("--build", type=Path, default=Path("build"))
    args = parser.parse_args(argv)
    paths = sorted(args.notebooks.glob("*.ipynb"))
    if not paths:
        print(f"no notebooks in {args.notebooks}", file=sys.stderr)
        return 1
    args.build.mkdir(parents=True, exist_ok=True)
    failed = []
    print(f"Executing {len(paths)} notebooks into {args.build}/ ...")
    for path in paths:
        try:
            result = export_notebook(path, args.build)
        except CellExecutionError as exc:
            failed.append(path.name)
            print(f"  FAILED {path.name}:\n{exc}", file=sys.stderr)
            continue
        print(
            f"  {path.name:40} {result.seconds:5.1f} s  -> {result.html}, "
            f"{len(result.figures)} figures"
        )
    figures = sorted((args.build / "figures").glob("*.png"))
    print(f"\nExecuted notebooks and HTML: {args.build.resolve()}")
    print(f"Figures ({len(figures)} PNG files): {(args.build / 'figures').resolve()}")
    if failed:
        print(f"\n{len(failed)} notebooks failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
