"""Developer sessions: ``nox -s tests lint typecheck build bench``. Extra args go to the tool."""

from __future__ import annotations

import sys
from pathlib import Path

import nox

nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests", "lint", "typecheck", "build"]
# A Python the classifiers claim but the machine lacks is a failure, not a skip.
nox.options.error_on_missing_interpreters = True

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the test suite."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("-e", ".[lint]")
    session.run("ruff", "check", ".", *session.posargs)
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package."""
    session.install("-e", ".[lint]")
    session.run("mypy", "--strict", "capillary_async", *session.posargs)


@nox.session
def build(session: nox.Session) -> None:
    """Build the sdist and wheel, check their metadata, and import the wheel in a clean venv."""
    session.install("build>=1.2", "twine>=5")
    out = Path(session.create_tmp()) / "dist"
    session.run("python", "-m", "build", "--outdir", str(out))
    packages = sorted(str(p) for p in out.iterdir())
    session.run("twine", "check", "--strict", *packages)
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


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmarks (``python -m benchmarks``)."""
    session.install("-e", ".[bench]")
    session.run("python", "-m", "benchmarks", *session.posargs)
