"""The one build step pyproject.toml cannot state: ship docs/PROTOCOL.md inside the package.

The wheel gets it as ``metrics_lab/PROTOCOL.md``, copied from docs/ at build time, so there is
one text to edit and no copy to keep in step. An editable install reads docs/ directly
(``metrics-lab protocol`` looks there when the package has no copy).
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithProtocol(build_py):
    """build_py, plus docs/PROTOCOL.md into the built package."""

    def run(self) -> None:
        super().run()
        if not self.editable_mode:
            target = Path(self.build_lib) / "metrics_lab" / "PROTOCOL.md"
            self.copy_file(str(Path("docs") / "PROTOCOL.md"), str(target))


setup(cmdclass={"build_py": BuildPyWithProtocol})
