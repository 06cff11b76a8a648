"""Test support shared by unit and integration tests: the CLI as a process of its own."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent


def run_cli(*args: str, cwd: pathlib.Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`pipedreamer ARGS` as `python -m cli` from this checkout (for commands that lock or exit the process)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], cwd=cwd or REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
