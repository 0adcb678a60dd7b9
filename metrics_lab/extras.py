"""What to install for the parts of the package that need more than the standard library.

The server, the clients, the checker and the ``metrics-lab`` command need nothing else. The
rest comes with an extra of pyproject.toml; the package is installed from a checkout of the
repository, so the hint names the extra there, and the plain packages for anyone else.

>>> install_hint("postgres", "psycopg[binary]")
"pip install -e '.[postgres]' in the metrics_lab checkout, or pip install 'psycopg[binary]'"
"""

from __future__ import annotations

__all__ = ["install_hint", "missing_extra"]


def install_hint(extra: str, packages: str) -> str:
    """How to install ``extra`` (the ``packages`` it brings, for installs without a checkout)."""
    plain = f"'{packages}'" if "[" in packages else packages  # brackets need shell quotes
    return f"pip install -e '.[{extra}]' in the metrics_lab checkout, or pip install {plain}"


def missing_extra(
    module: str, extra: str, packages: str, cause: ModuleNotFoundError
) -> ModuleNotFoundError:
    """The one-line error for importing ``module`` when a package of ``extra`` is missing.

    Raise it ``from None``: the line says all there is to do.
    """
    missing = cause.name or packages
    return ModuleNotFoundError(
        f"{module} needs {missing}: {install_hint(extra, packages)}", name=cause.name
    )
