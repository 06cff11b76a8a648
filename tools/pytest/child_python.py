"""The PYTHONPATH a test gives a child `python -m …` so it imports what the test imports.

In a checkout's virtualenv the child's interpreter finds the third-party
packages itself. Under `bazel test` the interpreter is a plain system Python
and every package (ours, generated stubs, and each wheel) is a runfiles
directory on the test's sys.path; the child needs them named.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def first_party_root(checkout: Path) -> Path:
    """Where `engine`, `proto` (with generated stubs), `cli` … import from: the runfiles
    tree under `bazel test`, else the checkout."""
    runfiles = os.environ.get("TEST_SRCDIR")
    if runfiles and (Path(runfiles) / "_main").is_dir():
        return Path(runfiles) / "_main"
    return checkout


def pythonpath(checkout: Path) -> str:
    """The first-party root, then this interpreter's third-party directories. Never a
    package directory such as engine/, whose modules (secrets.py) would shadow the stdlib."""
    third_party = [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    return os.pathsep.join([str(first_party_root(checkout)), *third_party])


def under_bazel() -> bool:
    return bool(os.environ.get("TEST_SRCDIR"))


def cli_command(checkout: Path) -> list[str]:
    """The CLI as a user starts it: the checkout's ./pipedreamer (which sets up and
    execs its .venv). Under `bazel test`, this interpreter with `-m cli` (give it
    PYTHONPATH=pythonpath(checkout)): the checkout's .venv is the host's, not Bazel's."""
    if under_bazel():
        return [sys.executable, "-m", "cli"]
    return [str(checkout / "pipedreamer")]
