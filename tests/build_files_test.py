"""The repository's Bazel files, checked without Bazel.

Two checks: every .py file belongs to a target, each target's deps cover
its imports, and every label of another package is visible to the package
using it and not testonly unless the user is (tools/bazel_check/buildgraph.py);
and buildifier's format and lint check. Labels, loads and MODULE.bazel are
Bazel's to check (CI runs it: tools/bazel/run.sh). buildifier comes from npm
(``@bazel/buildifier``); when it is missing the test fails and says how to
install it, it never skips.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tools.bazel_check import buildgraph

BUILDIFIER_VERSION = "8.2.1"
INSTALL_HINT = (
    "tools/install_buildifier.sh, i.e. "
    f"npm install --no-save --prefix .tools @bazel/buildifier@{BUILDIFIER_VERSION} "
    "(or set BUILDIFIER to its path)"
)
#: Where npm installs land, relative to the repository root.
NPM_BIN_DIRS = ("node_modules/.bin", ".tools/node_modules/.bin")


def repo_root() -> Path:
    """The source tree: $PIPEDREAMER_REPO_ROOT, else the first parent with MODULE.bazel.

    ``realpath`` follows Bazel's runfiles symlinks back to the workspace, so the
    test also finds the sources under ``bazel test`` (with ``tags = ["local"]``).
    """
    if os.environ.get("PIPEDREAMER_REPO_ROOT"):
        return Path(os.environ["PIPEDREAMER_REPO_ROOT"])
    here = Path(os.path.realpath(__file__))
    return next(p for p in here.parents if (p / buildgraph.MODULE_FILE).is_file())


def find_buildifier(root: Path) -> str | None:
    """$BUILDIFIER, else buildifier on PATH, else one npm installed under the repository:
    the static binary the package bundles for this machine (no node needed, as in
    Bazel's sid root), else its node launcher."""
    if os.environ.get("BUILDIFIER"):
        return shutil.which(os.environ["BUILDIFIER"])
    found = shutil.which("buildifier")
    if found:
        return found
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    bundled = (root / d / f"../@bazel/buildifier/buildifier-{sys.platform}_{arch}" for d in NPM_BIN_DIRS)
    launchers = (root / d / "buildifier" for d in NPM_BIN_DIRS)
    return next((str(c.resolve()) for c in (*bundled, *launchers) if os.access(c, os.X_OK)), None)


def test_build_files_match_the_sources() -> None:
    findings = buildgraph.check_repo(repo_root())
    if findings:
        pytest.fail(buildgraph.format_report(findings), pytrace=False)


def test_buildifier_is_clean() -> None:
    root = repo_root()
    buildifier = find_buildifier(root)
    if buildifier is None:
        where = ", ".join(NPM_BIN_DIRS)
        message = f"buildifier not found on PATH or in {where}; install it: {INSTALL_HINT}"
        pytest.fail(message, pytrace=False)
    command = [buildifier, "-mode=check", "-lint=warn", "-r", "."]
    result = subprocess.run(
        command, cwd=root, capture_output=True, text=True, timeout=300, check=False
    )
    if result.returncode != 0:
        report = (result.stdout + result.stderr).strip()
        fix = f"{buildifier} -mode=fix -lint=fix -r ."
        message = f"{' '.join(command)} exited {result.returncode} (fix: `{fix}`):\n{report}"
        pytest.fail(message, pytrace=False)
