"""JupyterLab settings for editing the originals, loaded by ``make edit-notebooks`` and
tests/test_browser.py (the instructors' workflow; a learner's ``make lab`` does not load them).

They put ``tools/jupyter`` on ``JUPYTER_CONFIG_PATH``. A notebook saved from JupyterLab (by
hand or by autosave) is written as git stores it: without outputs, execution counts, widget
state and the kernel's full ``language_info``. So running the chapters leaves ``git status``
clean and ``make test`` passing; the outputs stay on screen until the tab is closed.

The keys are those of git's filter, ``tools/nbstripout.sh`` (a test checks that they agree).
"""

from typing import Any

import nbformat
from nbstripout import strip_output

# nbstripout's own defaults, then what JupyterLab adds to a notebook's metadata.
STRIPPED_KEYS = [
    "metadata.signature",
    "metadata.widgets",
    "cell.metadata.collapsed",
    "cell.metadata.ExecuteTime",
    "cell.metadata.execution",
    "cell.metadata.heading_collapsed",
    "cell.metadata.hidden",
    "cell.metadata.scrolled",
    "metadata.language_info.codemirror_mode",
    "metadata.language_info.file_extension",
    "metadata.language_info.mimetype",
    "metadata.language_info.nbconvert_exporter",
    "metadata.language_info.pygments_lexer",
    "metadata.language_info.version",
]


def save_stripped(model: dict[str, Any], **_: Any) -> None:
    """A pre-save hook: strip a notebook's model in place, as the git filter would."""
    if model.get("type") != "notebook":
        return
    notebook = nbformat.from_dict(model["content"])
    strip_output(
        notebook, keep_output=False, keep_count=False, keep_id=False, extra_keys=STRIPPED_KEYS
    )
    model["content"] = notebook


c = get_config()  # type: ignore[name-defined]  # noqa: F821 (Jupyter defines it here)
c.FileContentsManager.pre_save_hook = save_stripped
