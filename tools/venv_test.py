"""tools/venv.sh: .venv gets the tests' lock, and a change to any lock rebuilds it.

The script runs for real in a scratch checkout; the interpreter it is given is
a stand-in that records what it is asked to do (no pip, no network).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

VENV_SH = Path(__file__).resolve().parent / "venv.sh"

# `python -m venv DIR` makes DIR/bin/python, which logs its arguments.
FAKE_PYTHON = """\
#!/usr/bin/env bash
set -eu
if [[ "$1 $2" == "-m venv" ]]; then
  mkdir -p "$3/bin"
  printf '#!/usr/bin/env bash\\necho "$*" >> "%s"\\n' "$LOG" > "$3/bin/python"
  chmod +x "$3/bin/python"
  echo "created $3" >> "$LOG"
fi
"""


def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "checkout"
    (root / "tools").mkdir(parents=True)
    shutil.copy(VENV_SH, root / "tools" / "venv.sh")
    (root / "requirements").mkdir()
    for audience in ("runtime", "cli", "dev"):
        (root / "requirements" / f"{audience}.txt").write_text(f"# {audience} lock\n")
    return root


def run(root: Path, tmp_path: Path) -> list[str]:
    log = tmp_path / "log"
    log.unlink(missing_ok=True)
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    env = dict(os.environ, PIPEDREAMER_PYTHON=str(fake), LOG=str(log))
    result = subprocess.run(["bash", str(root / "tools" / "venv.sh")], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return log.read_text().splitlines() if log.exists() else []


def test_first_run_installs_the_tests_lock_with_hashes(tmp_path: Path) -> None:
    root = checkout(tmp_path)
    log = run(root, tmp_path)
    assert log[0] == f"created {root}/.venv"
    install = next(line for line in log if line.startswith("-m pip install"))
    assert "--require-hashes" in install and "--only-binary=:all:" in install
    assert install.endswith(f"-r {root}/requirements/dev.txt")
    assert log[-1] == f"{root}/tools/gen_proto.py --if-stale"


def test_any_lock_changing_rebuilds_the_venv_and_nothing_else_does(tmp_path: Path) -> None:
    root = checkout(tmp_path)
    run(root, tmp_path)
    assert not any(line.startswith("created") for line in run(root, tmp_path))  # current: kept
    for audience in ("runtime", "cli", "dev"):
        lock = root / "requirements" / f"{audience}.txt"
        lock.write_text(lock.read_text() + "# re-locked\n")
        assert run(root, tmp_path)[0] == f"created {root}/.venv", f"{audience}.txt changed, .venv kept"
        assert not any(line.startswith("created") for line in run(root, tmp_path))
