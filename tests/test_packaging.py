"""pyproject.toml (pip) and environment.yml (conda) describe one environment."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def test_environment_yml_lists_exactly_the_pyproject_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pip_side = {_name(r) for r in project["dependencies"]}
    for extra in ("lab", "dev", "postgres"):
        pip_side |= {_name(r) for r in project["optional-dependencies"][extra]}
    environment = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))
    conda_side: set[str] = set()
    for entry in environment["dependencies"]:
        if isinstance(entry, dict):
            conda_side |= {_name(r) for r in entry["pip"] if not r.startswith("-")}
        else:
            conda_side.add(_name(entry))
    # postgresql: the database server's programs (for tests and notebook 07), not on PyPI.
    conda_side -= {"python", "pip", "postgresql"}
    assert conda_side == pip_side


def test_the_package_is_typed() -> None:
    assert (ROOT / "metrics_lab" / "py.typed").is_file()
