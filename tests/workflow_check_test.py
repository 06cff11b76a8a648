"""The check Bazel runs for each workflow (pipedreamer_workflow's :check), as a process of its own:
the spec is validated, then the fixtures run under the permission lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.support import REPO, write_workflow
from tools.pytest import child_python


def check(workflow_yaml) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=child_python.pythonpath(REPO))
    return subprocess.run(
        [sys.executable, "-m", "builder.workflow_check", str(workflow_yaml)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_an_example_passes_validation_and_its_fixtures():
    proc = check(REPO / "examples" / "hello" / "workflow.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "hello 1.0.0 is valid (2 nodes)" in proc.stdout
    assert "PASS  greet" in proc.stdout and "0 failed" in proc.stdout


def test_an_invalid_spec_or_a_failing_fixture_fails_the_check(tmp_path):
    broken = write_workflow(tmp_path / "broken", {"a": "def run(ctx, input):\n    return 1\n"})
    proc = check(broken / "workflow.yaml")
    assert proc.returncode == 1 and "nodes/a.py" in proc.stderr
    steal = "async def run(ctx, input):\n    return open('/etc/shadow').read()[:5]\n"
    flow = write_workflow(tmp_path / "flow", {"steal": steal})
    (flow / "tests" / "fixtures").mkdir(parents=True)
    (flow / "tests" / "fixtures" / "steal.json").write_text(json.dumps({"input": {}, "expected": "root:"}))
    proc = check(flow / "workflow.yaml")
    assert proc.returncode == 1
    assert "FAIL  steal" in proc.stdout and "read of /etc/shadow denied: add it to --allow-read" in proc.stdout
