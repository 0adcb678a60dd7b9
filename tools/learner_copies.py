"""The learner's own copies of the notebooks, which ``make lab`` opens.

    python tools/learner_copies.py [--source notebooks] [--target my-notebooks]

The notebooks in git are stored without outputs, and ``git pull`` updates them: a learner who
typed exercises into them, or saved their outputs, would collide with every update. So the
learner works in copies, in a folder that git ignores:

- every notebook (``*.ipynb``) is copied once, when the copy does not exist yet, and is never
  replaced: a notebook added upstream arrives on the next run, the learner's own copy of an
  existing one stays as they left it. A notebook that changed upstream since its copy was made
  is named, with how to get the new version (move the copy away and run again);
- every other file (``solutions/*.py``) is the material's, not the learner's: it is copied
  again whenever it differs from the original, so that the copies keep the originals' relative
  layout (a notebook that runs ``solutions/06_build_your_own_server.py`` finds it) and follow
  ``git pull``. These copies are made read-only, so that an edit there is refused on save
  rather than lost on the next run.

What was copied from which original is recorded in ``<target>/.learner-copies.json`` (the
originals' SHA-256 at copy time); that is how an upstream change is told from a learner's edit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import stat
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["MANIFEST", "Copies", "main", "make_copies"]

MANIFEST = ".learner-copies.json"
"""The record of each notebook's original at copy time, in the target folder."""

# Left behind by Jupyter and Python next to the originals; never material to copy.
_SKIPPED_PARTS = {".ipynb_checkpoints", "__pycache__"}
_WRITE_BITS = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH


@dataclass
class Copies:
    """What :func:`make_copies` did, as paths relative to the source and target folders."""

    copied: list[Path] = field(default_factory=list)
    """Notebooks copied this time (new to the learner)."""
    kept: list[Path] = field(default_factory=list)
    """Notebooks the learner already had; left as they are."""
    changed_upstream: list[Path] = field(default_factory=list)
    """Kept notebooks whose original changed since the copy was made."""
    refreshed: list[Path] = field(default_factory=list)
    """Other files copied again because they were missing or differed from the original."""


def make_copies(source: Path, target: Path) -> Copies:
    """Bring ``target`` up to date with ``source``: new notebooks in, nothing of the learner's out.

    Never replaces or deletes a notebook in ``target``, and never touches a file in ``target``
    that has no original in ``source`` (the learner's own scripts). Raises ``FileNotFoundError``
    if ``source`` is not a folder.
    """
    if not source.is_dir():
        raise FileNotFoundError(f"{source} is not a folder of notebooks")
    target.mkdir(parents=True, exist_ok=True)
    manifest_path = target / MANIFEST
    manifest: dict[str, str] = (
        json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.is_file() else {}
    )
    copies = Copies()
    for original in _material(source):
        relative = original.relative_to(source)
        copy = target / relative
        if original.suffix == ".ipynb":
            key = relative.as_posix()
            digest = _sha256(original)
            if copy.exists():
                copies.kept.append(relative)
                # A copy made before the manifest existed has no record: nothing to compare.
                if manifest.get(key, digest) != digest:
                    copies.changed_upstream.append(relative)
                continue
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(original, copy)
            manifest[key] = digest
            copies.copied.append(relative)
        elif not copy.exists() or copy.read_bytes() != original.read_bytes():
            if copy.exists():
                copy.chmod(copy.stat().st_mode | stat.S_IWUSR)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(original, copy)
            copy.chmod(copy.stat().st_mode & ~_WRITE_BITS)
            copies.refreshed.append(relative)
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", "utf-8")
    return copies


def _material(source: Path) -> Iterator[Path]:
    """Every file under ``source``, in a stable order, without Jupyter's and Python's leftovers."""
    for path in sorted(source.rglob("*")):
        if path.is_file() and not _SKIPPED_PARTS.intersection(path.relative_to(source).parts):
            yield path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: Sequence[str] | None = None) -> int:
    """Make or update the copies and say what happened; exit status 0, or 1 without a source."""
    parser = argparse.ArgumentParser(
        description="Make or update the learner's own copies of the notebooks (make lab)."
    )
    parser.add_argument("--source", type=Path, default=Path("notebooks"))
    parser.add_argument("--target", type=Path, default=Path("my-notebooks"))
    args = parser.parse_args(argv)
    try:
        copies = make_copies(args.source, args.target)
    except FileNotFoundError as error:
        print(f"learner_copies: {error}", file=sys.stderr)
        return 1
    target = args.target.as_posix()
    for relative in copies.copied:
        print(f"{target}/{relative.as_posix()}: your copy, made now (never replaced)")
    for relative in copies.changed_upstream:
        print(
            f"{target}/{relative.as_posix()}: its original has changed since your copy was made;"
            f" to get the new version, rename your copy and run make lab again"
        )
    if copies.kept:
        print(f"{target}/: {len(copies.kept)} notebooks kept as you left them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
