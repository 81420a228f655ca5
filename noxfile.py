"""Developer sessions: ``nox -s tests lint typecheck docs build lowest bench``.

Extra arguments go to the tool. Development tools come from the dependency
groups of ``pyproject.toml`` (PEP 735).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nox

nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests", "lint", "typecheck", "docs", "build", "lowest"]
# A Python the classifiers claim but the machine lacks is a failure, not a skip.
nox.options.error_on_missing_interpreters = True

PYPROJECT = nox.project.load_toml("pyproject.toml")
PYTHONS = nox.project.python_versions(PYPROJECT)  # every version the classifiers claim


def group(*names: str) -> list[str]:
    return list(nox.project.dependency_groups(PYPROJECT, *names))


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the test suite."""
    session.install("-e", ".", *group("test"))
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHONS[0], venv_backend="uv")
def lowest(session: nox.Session) -> None:
    """The suite on the lowest versions the bounds allow, on the oldest Python.

    uv resolves every direct requirement (the package's and the test group's)
    to its lowest allowed version: a bound that is false fails here.
    """
    session.install("--resolution", "lowest-direct", "-e", ".", *group("test"))
    session.run("uv", "pip", "list", external=True)  # the versions it ran on, for the log
    session.run("pytest", "-q", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install(*group("lint"))
    session.run("ruff", "check", ".", *session.posargs)
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package."""
    session.install("-e", ".", *group("lint"))
    session.run("mypy", "--strict", "capillary_async", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the docs site into site/, failing on any warning (--strict)."""
    session.install("-e", ".", *group("docs"))
    session.run("mkdocs", "build", "--strict", *session.posargs, env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session
def build(session: nox.Session) -> None:
    """Build the sdist and wheel, check their metadata, and run the wheel in a clean venv."""
    session.install("build>=1.2", "twine>=5")
    out = Path(session.create_tmp()) / "dist"
    session.run("python", "-m", "build", "--outdir", str(out))
    packages = sorted(str(p) for p in out.iterdir())
    session.run("twine", "check", "--strict", *packages)
    # The build backend's lower bound holds too: the same build with its lowest version.
    backend = [r.replace(">=", "==") for r in PYPROJECT["build-system"]["requires"]]
    session.install(*backend)
    oldest = Path(session.create_tmp()) / "dist-oldest-backend"
    session.run("python", "-m", "build", "--no-isolation", "--outdir", str(oldest))
    session.run("twine", "check", "--strict", *sorted(str(p) for p in oldest.iterdir()))
    clean = Path(session.create_tmp()) / "clean"
    session.run(sys.executable, "-m", "venv", "--clear", str(clean), external=True)
    python = str(clean / "bin" / "python")
    wheel = next(p for p in packages if p.endswith(".whl"))
    session.run(python, "-m", "pip", "install", "--quiet", wheel, external=True)
    session.run(
        python,
        "-c",
        "import capillary_async, capillary_async.testing; print(capillary_async.__version__)",
        external=True,
    )
    # The installed wheel does a real round trip (its emulator included), away from the tree.
    quickstart = str(Path("examples/quickstart.py").resolve())
    session.run(python, "-I", quickstart, external=True)


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmarks (``python -m benchmarks``)."""
    session.install("-e", ".", *group("bench"))
    session.run("python", "-m", "benchmarks", *session.posargs)
