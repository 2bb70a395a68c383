"""Test sessions: the whole suite on each supported Python, and the linters once.

``python3 -m nox`` runs everything; ``python3 -m nox -s tests-3.12`` one Python;
arguments after ``--`` go to pytest (``python3 -m nox -s tests-3.13 -- -k shm``).
Each session builds a fresh virtualenv. Interpreters come from PATH, and from pyenv
when it is installed (``$(pyenv root)/versions/3.X.*``), so pyenv versions need not
be activated. A missing interpreter fails the run: it is never skipped.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile

import nox

PYTHONS = ["3.11", "3.12", "3.13"]

nox.options.error_on_missing_interpreters = True
nox.options.reuse_existing_virtualenvs = False
nox.options.sessions = [f"tests-{v}" for v in PYTHONS] + ["lint"]
# Outside the work tree: a clone stays clean, and the editable install's egg-info
# is the only thing written next to the sources.
nox.options.envdir = os.path.join(tempfile.gettempdir(), f"procpool-nox-{os.getuid()}")


def _pyenv_root() -> str | None:
    root = os.environ.get("PYENV_ROOT")
    if not root and shutil.which("pyenv"):
        try:
            root = subprocess.run(
                ["pyenv", "root"], capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            root = None
    if not root and os.path.isdir(os.path.expanduser("~/.pyenv")):
        root = os.path.expanduser("~/.pyenv")
    return root


def _add_pyenv_to_path() -> None:
    """Put the newest pyenv install of each supported version first on PATH."""
    root = _pyenv_root()
    if not root:
        return
    dirs = []
    for version in PYTHONS:
        found = sorted(
            glob.glob(os.path.join(root, "versions", f"{version}.*", "bin", f"python{version}")),
            key=lambda p: [int(x) for x in p.split(os.sep)[-3].split(".") if x.isdigit()],
        )
        if found:
            dirs.append(os.path.dirname(found[-1]))
    if dirs:
        os.environ["PATH"] = os.pathsep.join([*dirs, os.environ.get("PATH", "")])


_add_pyenv_to_path()


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The whole test suite (CPython's Pool and futures suites included)."""
    session.install("-e", ".[test]")
    session.run("python", "-c", "import sys; print(sys.version)")
    session.run("python", "-m", "pytest", "-n", "2", *session.posargs)


@nox.session(python=PYTHONS[0])
def lint(session: nox.Session) -> None:
    """ruff, mypy (strict on src) and the import contracts of the layers, once."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "ruff", "check", "src", "tests", "benchmarks", "noxfile.py")
    session.run("python", "-m", "mypy")
    session.run("lint-imports")
