"""`pipedreamer test`: text like pytest's, one JSON document with --output json, exit codes,
and the permission lock in force before any node is imported.

Each case runs the CLI as a process of its own: the lock is irreversible.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.support import run_cli
from tests.support import write_workflow



def pipedreamer_test(*args: str) -> tuple[int, str]:
    """`pipedreamer test ARGS` in a process of its own: (exit code, stdout)."""
    proc = run_cli("test", *args)
    return proc.returncode, proc.stdout + proc.stderr


DOUBLE = "async def run(ctx, input):\n    return {'n': input['n'] * 2}\n"


@pytest.fixture
def flow(tmp_path: Path) -> Path:
    directory = write_workflow(tmp_path / "flow", {"double": DOUBLE, "again": DOUBLE}, [("double", "again")])
    fixtures = directory / "tests" / "fixtures"
    fixtures.mkdir(parents=True)
    (fixtures / "double.json").write_text(json.dumps({"input": {"n": 1}, "expected": {"n": 2}}))
    (fixtures / "pipeline.json").write_text(json.dumps({"input": {"n": 1}, "expected": {"n": 4}}))
    return directory


def test_passing_run_prints_one_line_per_fixture_and_a_summary(flow):
    code, out = pipedreamer_test(str(flow))
    assert code == 0, out
    assert "PASS  double    tests/fixtures/double.json" in out
    assert "PASS  pipeline  tests/fixtures/pipeline.json" in out
    assert "note: no fixture for again" in out
    assert out.rstrip().splitlines()[-1].startswith("========== 2 passed, 0 failed in ")


def test_mismatch_exits_1_with_a_diff(flow):
    (flow / "tests" / "fixtures" / "double.json").write_text(json.dumps({"input": {"n": 1}, "expected": {"n": 3}}))
    code, out = pipedreamer_test(str(flow))
    assert code == 1
    assert "FAIL  double" in out
    assert '-  "n": 3' in out and '+  "n": 2' in out
    assert "1 passed, 1 failed" in out


def test_single_node_and_pipeline_flags(flow):
    code, out = pipedreamer_test(str(flow / "double"))
    assert code == 0, out
    assert "double" in out and "pipeline.json" not in out
    code, out = pipedreamer_test(str(flow), "--pipeline")
    assert code == 0, out
    assert "pipeline.json" in out and "double.json" not in out


def test_json_output_is_one_document(flow):
    proc = run_cli("test", str(flow), "--output", "json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["passed"] is True and data["summary"]["passed"] == 2
    (workflow,) = data["workflows"]
    assert [r["name"] for r in workflow["results"]] == ["double", "pipeline"]


def test_several_targets_and_plain_files_are_skipped(flow, tmp_path):
    (tmp_path / "BUILD.bazel").write_text("")
    code, out = pipedreamer_test(str(flow), str(tmp_path / "BUILD.bazel"))
    assert code == 0, out
    assert "skipped (a file, not a workflow directory)" in out


def test_broken_workflow_fails_with_its_error(tmp_path):
    write_workflow(tmp_path, {"a": "def run(ctx, input):\n    pass\n"})
    code, out = pipedreamer_test(str(tmp_path))
    assert code == 1
    assert "  error: nodes/a.py:1: `run` must be `async def run(ctx, input)`" in out


def test_examples_pass():
    examples = Path(__file__).resolve().parent.parent / "examples"
    targets = sorted(str(p) for p in examples.iterdir())
    code, out = pipedreamer_test(*targets)
    assert code == 0, out


def test_secret_values_never_reach_the_output(tmp_path):
    leak = "async def run(ctx, input):\n    return {'t': ctx.secrets['svc']['token']}\n"
    directory = write_workflow(tmp_path / "leak", {"leak": leak})
    (directory / "tests" / "fixtures").mkdir(parents=True)
    (directory / "tests" / "fixtures" / "leak.json").write_text(json.dumps({"input": None, "expected": {"t": "other"}}))
    secrets = directory / ".secrets.yaml"
    secrets.write_text("svc:\n  token: hunter2xyz\n")
    code, out = pipedreamer_test(str(directory), "--secrets", str(secrets))
    assert code == 1
    assert "FAIL  leak" in out and '+  "t": "***"' in out and "hunter2xyz" not in out
    proc = run_cli("test", str(directory), "--secrets", str(secrets), "--output", "json")
    assert proc.returncode == 1
    (result,) = json.loads(proc.stdout)["workflows"][0]["results"]
    assert result["passed"] is False and result["actual"] == {"t": "***"} and "hunter2xyz" not in proc.stdout


def test_a_deeply_nested_fixture_fails_and_the_other_workflows_still_run(flow, tmp_path):
    other = write_workflow(tmp_path / "other", {"double": DOUBLE})
    (other / "tests" / "fixtures").mkdir(parents=True)
    (other / "tests" / "fixtures" / "double.json").write_text("[" * 100_000 + "]" * 100_000)
    code, out = pipedreamer_test(str(other), str(flow))
    assert code == 1
    assert "FAIL  double  tests/fixtures/double.json" in out and "double.json: invalid JSON: nested too deeply" in out
    assert "PASS  pipeline" in out and "2 passed, 1 failed" in out


# -- the permission lock --------------------------------------------------------

STEAL_AT_IMPORT = "SHADOW = open('/etc/shadow').read()\n\nasync def run(ctx, input):\n    return SHADOW[:8]\n"
STEAL_IN_RUN = "async def run(ctx, input):\n    return open('/etc/shadow').read()[:5]\n"


def test_a_node_reading_outside_the_policy_at_import_fails_the_workflow_with_file_action_and_flag(tmp_path):
    directory = write_workflow(tmp_path / "evil", {"steal": STEAL_AT_IMPORT})
    (directory / "tests" / "fixtures").mkdir(parents=True)
    (directory / "tests" / "fixtures" / "steal.json").write_text(json.dumps({"input": {}, "expected": "x"}))
    code, out = pipedreamer_test(str(directory))
    assert code == 1
    assert (
        "error: nodes/steal.py:1: import failed: PermissionDenied: read of /etc/shadow denied: "
        "add it to --allow-read (node steal)"
    ) in out
    assert "root:" not in out


def test_a_fixture_cannot_read_outside_the_policy_and_the_flag_allows_it(tmp_path):
    directory = write_workflow(tmp_path / "evil", {"steal": STEAL_IN_RUN})
    (directory / "tests" / "fixtures").mkdir(parents=True)
    (directory / "tests" / "fixtures" / "steal.json").write_text(json.dumps({"input": {}, "expected": "root:"}))
    code, out = pipedreamer_test(str(directory))
    assert code == 1
    assert "FAIL  steal" in out and "PermissionDenied: read of /etc/shadow denied: add it to --allow-read" in out
    code, out = pipedreamer_test(str(directory), "--allow-read=/etc/shadow")
    if os.geteuid() == 0:  # as root only the lock stood in the way
        assert code == 0, out


def test_fixtures_run_without_network_unless_allowed(tmp_path):
    dial = "import socket\n\nasync def run(ctx, input):\n    socket.create_connection(('127.0.0.1', 9), timeout=2)\n"
    directory = write_workflow(tmp_path / "dial", {"dial": dial})
    (directory / "tests" / "fixtures").mkdir(parents=True)
    (directory / "tests" / "fixtures" / "dial.json").write_text(json.dumps({"input": {}, "expected": None}))
    code, out = pipedreamer_test(str(directory))
    assert code == 1 and "connect to 127.0.0.1:9 denied: add it to --allow-net" in out
    code, out = pipedreamer_test(str(directory), "--allow-net=127.0.0.1")
    assert "denied" not in out and "ConnectionRefusedError" in out  # the lock let it through; nothing listens
