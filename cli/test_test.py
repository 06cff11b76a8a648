"""`pipedreamer test`: text like pytest's, one JSON document with --output json, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.main import main
from engine.testing import write_workflow

DOUBLE = "async def run(ctx, input):\n    return {'n': input['n'] * 2}\n"


@pytest.fixture
def flow(tmp_path: Path) -> Path:
    directory = write_workflow(tmp_path / "flow", {"double": DOUBLE, "again": DOUBLE}, [("double", "again")])
    fixtures = directory / "tests" / "fixtures"
    fixtures.mkdir(parents=True)
    (fixtures / "double.json").write_text(json.dumps({"input": {"n": 1}, "expected": {"n": 2}}))
    (fixtures / "pipeline.json").write_text(json.dumps({"input": {"n": 1}, "expected": {"n": 4}}))
    return directory


def test_passing_run_prints_one_line_per_fixture_and_a_summary(flow, capsys):
    assert main(["test", str(flow)]) == 0
    out = capsys.readouterr().out
    assert "PASS  double    tests/fixtures/double.json" in out
    assert "PASS  pipeline  tests/fixtures/pipeline.json" in out
    assert "note: no fixture for again" in out
    assert out.rstrip().splitlines()[-1].startswith("========== 2 passed, 0 failed in ")


def test_mismatch_exits_1_with_a_diff(flow, capsys):
    (flow / "tests" / "fixtures" / "double.json").write_text(json.dumps({"input": {"n": 1}, "expected": {"n": 3}}))
    assert main(["test", str(flow)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  double" in out
    assert '-  "n": 3' in out and '+  "n": 2' in out
    assert "1 passed, 1 failed" in out


def test_single_node_and_pipeline_flags(flow, capsys):
    assert main(["test", str(flow / "double")]) == 0
    out = capsys.readouterr().out
    assert "double" in out and "pipeline.json" not in out
    assert main(["test", str(flow), "--pipeline"]) == 0
    out = capsys.readouterr().out
    assert "pipeline.json" in out and "double.json" not in out


def test_json_output_is_one_document(flow, capsys):
    assert main(["test", str(flow), "--output", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["passed"] is True and data["summary"]["passed"] == 2
    (workflow,) = data["workflows"]
    assert [r["name"] for r in workflow["results"]] == ["double", "pipeline"]


def test_several_targets_and_plain_files_are_skipped(flow, tmp_path, capsys):
    (tmp_path / "BUILD.bazel").write_text("")
    assert main(["test", str(flow), str(tmp_path / "BUILD.bazel")]) == 0
    assert "skipped (a file, not a workflow directory)" in capsys.readouterr().out


def test_broken_workflow_fails_with_its_error(tmp_path, capsys):
    write_workflow(tmp_path, {"a": "def run(ctx, input):\n    pass\n"})
    assert main(["test", str(tmp_path)]) == 1
    assert "  error: nodes/a.py:1: `run` must be `async def run(ctx, input)`" in capsys.readouterr().out


def test_examples_pass(capsys):
    examples = Path(__file__).resolve().parent.parent / "examples"
    targets = sorted(str(p) for p in examples.iterdir())
    assert main(["test", *targets]) == 0, capsys.readouterr().out


def test_secret_values_never_reach_the_output(tmp_path, capsys):
    leak = "async def run(ctx, input):\n    return {'t': ctx.secrets['svc']['token']}\n"
    directory = write_workflow(tmp_path / "leak", {"leak": leak})
    (directory / "tests" / "fixtures").mkdir(parents=True)
    (directory / "tests" / "fixtures" / "leak.json").write_text(json.dumps({"input": None, "expected": {"t": "other"}}))
    secrets = directory / ".secrets.yaml"
    secrets.write_text("svc:\n  token: hunter2xyz\n")
    assert main(["test", str(directory), "--secrets", str(secrets)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  leak" in out and '+  "t": "***"' in out and "hunter2xyz" not in out
    assert main(["test", str(directory), "--secrets", str(secrets), "--output", "json"]) == 1
    out = capsys.readouterr().out
    (result,) = json.loads(out)["workflows"][0]["results"]
    assert result["passed"] is False and result["actual"] == {"t": "***"} and "hunter2xyz" not in out


def test_a_deeply_nested_fixture_fails_and_the_other_workflows_still_run(flow, tmp_path, capsys):
    other = write_workflow(tmp_path / "other", {"double": DOUBLE})
    (other / "tests" / "fixtures").mkdir(parents=True)
    (other / "tests" / "fixtures" / "double.json").write_text("[" * 100_000 + "]" * 100_000)
    assert main(["test", str(other), str(flow)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  double  tests/fixtures/double.json" in out and "double.json: invalid JSON: nested too deeply" in out
    assert "PASS  pipeline" in out and "2 passed, 1 failed" in out
