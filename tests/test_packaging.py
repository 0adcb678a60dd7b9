"""What `pip install` gets: a standard-library core, the extras apart, the licence and the
protocol in the wheel; and environment.yml (conda) describing the same environment as pip."""

from __future__ import annotations

import email.parser
import os
import re
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest
import yaml

import metrics_lab

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = ROOT / "docs" / "PROTOCOL.md"
EXTRAS = {"data", "lab", "fast", "postgres"}
CONDA_NAMES = {"python-build": "build"}
"""conda-forge's names for the packages whose PyPI name is another."""


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def _pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_environment_yml_lists_exactly_the_pyproject_dependencies() -> None:
    pyproject = _pyproject()
    project = pyproject["project"]
    assert isinstance(project, dict)
    pip_side = {_name(r) for r in project["dependencies"]}
    # fast (uvloop) is left out: an optional speed-up, and not built for Windows.
    for extra in ("data", "lab", "postgres"):
        pip_side |= {_name(r) for r in project["optional-dependencies"][extra]}
    groups = pyproject["dependency-groups"]
    assert isinstance(groups, dict)
    pip_side |= {_name(r) for r in groups["dev"]}
    pip_side.discard("metrics-lab")  # an extra that names another (lab includes data)
    environment = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))
    conda_side: set[str] = set()
    for entry in environment["dependencies"]:
        if isinstance(entry, dict):
            conda_side |= {_name(r) for r in entry["pip"] if not r.startswith("-")}
        else:
            conda_side.add(CONDA_NAMES.get(_name(entry), _name(entry)))
    # postgresql: the database server's programs (for tests and notebook 07), not on PyPI.
    conda_side -= {"python", "pip", "postgresql"}
    assert conda_side == pip_side


def test_the_package_is_typed() -> None:
    assert (ROOT / "metrics_lab" / "py.typed").is_file()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built as pip would from a source distribution of this checkout."""
    out = tmp_path_factory.mktemp("dist")
    command = [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)]
    built = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert built.returncode == 0, built.stdout + built.stderr
    [path] = out.glob("*.whl")
    return path


def _metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        [name] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return email.parser.Parser().parsestr(archive.read(name).decode())


def test_the_wheel_holds_the_licence_and_the_protocol(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        [licence] = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
        assert archive.read(licence) == (ROOT / "LICENSE").read_bytes()
        # Copied from docs/ when the wheel is built: one text, no copy to keep in step.
        assert archive.read("metrics_lab/PROTOCOL.md") == PROTOCOL.read_bytes()
    assert "MIT License" in (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert _metadata(wheel)["License-Expression"] == "MIT"


def test_the_core_needs_no_third_party_package(wheel: Path) -> None:
    metadata = _metadata(wheel)
    requirements = metadata.get_all("Requires-Dist") or []
    assert requirements, "the extras' requirements are missing"
    assert [r for r in requirements if "extra ==" not in r] == []
    assert set(metadata.get_all("Provides-Extra") or []) == EXTRAS
    assert metadata["Version"] == metrics_lab.__version__


def test_test_tools_are_not_an_extra_a_learner_can_get() -> None:
    project = _pyproject()["project"]
    assert isinstance(project, dict)
    learner = {_name(r) for extra in EXTRAS for r in project["optional-dependencies"][extra]}
    assert learner.isdisjoint({"playwright", "pytest", "mypy", "ruff"})


_OWN_ENV = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
"""The environment for the bare venv: no PYTHONPATH that would show it another metrics_lab."""


@pytest.fixture(scope="module")
def bare_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment with the wheel and nothing else: its ``bin`` folder."""
    folder = tmp_path_factory.mktemp("bare-venv")
    venv.create(folder, with_pip=False)
    scripts = folder / ("Scripts" if os.name == "nt" else "bin")
    python = scripts / ("python.exe" if os.name == "nt" else "python")
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet"]
    subprocess.run([*install, "--no-index", str(wheel)], check=True, timeout=120, env=_OWN_ENV)
    return scripts


def _run(scripts: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run a program of ``scripts`` outside the checkout, so only the installed wheel counts."""
    program = [str(scripts / argv[0]), *argv[1:]]
    return subprocess.run(
        program, capture_output=True, text=True, timeout=120, env=_OWN_ENV, cwd=scripts, check=False
    )


def test_the_core_runs_on_the_standard_library_alone(bare_venv: Path) -> None:
    # --no-index above: had the wheel required anything, pip could not have installed it.
    assert _run(bare_venv, "metrics-lab", "--version").stdout == (
        f"metrics-lab {metrics_lab.__version__}\n"
    )
    demo = _run(bare_venv, "metrics-lab", "demo", "--points", "2")
    assert demo.returncode == 0, demo.stderr
    assert "Round trip complete: 18 of 18 points read back." in demo.stdout
    protocol = _run(bare_venv, "metrics-lab", "protocol")
    assert protocol.stdout == PROTOCOL.read_text(encoding="utf-8")
    where = _run(bare_venv, "metrics-lab", "protocol", "--path").stdout.strip()
    assert Path(where).parent.name == "metrics_lab"  # the package's copy, not the checkout's


DATA_HINT = "pip install -e '.[data]' in the metrics_lab checkout, or pip install pandas matplotlib"
POSTGRES_HINT = (
    "pip install -e '.[postgres]' in the metrics_lab checkout, or pip install 'psycopg[binary]'"
)


@pytest.mark.parametrize(
    ("module", "needs", "hint"),
    [
        ("metrics_lab.dataframes", "numpy", DATA_HINT),
        ("metrics_lab.plots", "matplotlib", DATA_HINT),
        ("metrics_lab.postgres_store", "psycopg", POSTGRES_HINT),
    ],
)
def test_a_helper_without_its_extra_says_what_to_install(
    bare_venv: Path, module: str, needs: str, hint: str
) -> None:
    python = "python.exe" if os.name == "nt" else "python"
    done = _run(bare_venv, python, "-c", f"import {module}")
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last == f"ModuleNotFoundError: {module} needs {needs}: {hint}"


def test_postgresql_without_its_extra_says_what_to_install(bare_venv: Path) -> None:
    url = "postgresql://metrics@127.0.0.1/metrics"
    done = _run(bare_venv, "metrics-lab", "serve", "--port", "0", "--db", url)
    assert done.returncode == 1
    assert done.stderr == f"metrics-lab: a postgresql:// database needs psycopg: {POSTGRES_HINT}\n"
