"""Fixture runner: node and pipeline fixtures, fetch stubs, diffs, target resolution."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.fixtures import (
    FixtureError,
    StubFetcher,
    diff_json,
    json_equal,
    resolve_target,
    run_workflow_fixtures,
)
from tests.support import write_workflow

FETCHER = '''
async def run(ctx, input):
    repos = await (await ctx.fetch("github", "/user/repos?per_page=2")).json()
    other = await (await ctx.fetch("hn", "/v0/item/1.json")).json()
    return {"repos": repos, "other": other, "n": input["n"]}
'''
DOUBLE = "async def run(ctx, input):\n    return {'n': input['n'] * 2}\n"


def fixture(directory: Path, name: str, data: dict) -> None:
    folder = directory / "tests" / "fixtures"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(data))


@pytest.fixture
def flow(tmp_path: Path) -> Path:
    write_workflow(tmp_path, {"fetch": FETCHER, "double": DOUBLE}, [("fetch", "double")])
    fixture(tmp_path, "fetch", {
        "input": {"n": 1},
        "fetch": {"github /user/repos?per_page=2": [{"name": "a"}]},
        "expected": {"repos": [{"name": "a"}], "other": {"mock": True, "service": "hn", "path": "/v0/item/1.json"}, "n": 1},
    })
    fixture(tmp_path, "double", {"input": {"repos": [], "n": 4}, "expected": {"n": 8}})
    fixture(tmp_path, "pipeline", {"input": {"n": 3}, "expected": {"n": 6}})
    return tmp_path


async def test_all_fixtures_pass(flow):
    report = await run_workflow_fixtures(flow)
    assert report.passed and report.error == "" and report.workflow == "test-flow 1.0.0"
    assert [(r.name, r.file, r.passed) for r in report.results] == [
        ("fetch", "tests/fixtures/fetch.json", True),
        ("double", "tests/fixtures/double.json", True),
        ("pipeline", "tests/fixtures/pipeline.json", True),
    ]


async def test_one_node_and_pipeline_only(flow):
    report = await run_workflow_fixtures(flow / "double")
    assert [r.name for r in report.results] == ["double"] and report.passed
    report = await run_workflow_fixtures(flow, pipeline_only=True)
    assert [r.name for r in report.results] == ["pipeline"] and report.passed


async def test_mismatch_gives_a_readable_diff(flow):
    fixture(flow, "double", {"input": {"n": 4}, "expected": {"n": 9}})
    report = await run_workflow_fixtures(flow)
    assert not report.passed
    (failed,) = [r for r in report.results if not r.passed]
    assert failed.name == "double" and failed.actual == {"n": 8}
    assert failed.diff.splitlines() == ["--- expected", "+++ actual", "@@ -1,3 +1,3 @@", " {", '-  "n": 9', '+  "n": 8', " }"]


async def test_node_errors_and_logs_are_reported(tmp_path):
    write_workflow(tmp_path, {"boom": "async def run(ctx, input):\n    ctx.log.info('about to fail')\n    raise KeyError('x')\n"})
    fixture(tmp_path, "boom", {"input": {}, "expected": 1})
    (result,) = (await run_workflow_fixtures(tmp_path)).results
    assert not result.passed and result.error == "KeyError: 'x' (at nodes/boom.py:3)"
    assert "[boom] about to fail" in result.logs


async def test_node_timeouts_are_reported(tmp_path):
    write_workflow(tmp_path, {
        "slow": "import asyncio\nasync def run(ctx, input):\n    await asyncio.sleep(5)\n",
        "own": "async def run(ctx, input):\n    raise TimeoutError('upstream')\n",
    }, node_options={"slow": {"timeout": "50ms"}})
    fixture(tmp_path, "slow", {"input": {}, "expected": 1})
    fixture(tmp_path, "own", {"input": {}, "expected": 1})
    results = {r.name: r for r in (await run_workflow_fixtures(tmp_path)).results}
    assert results["slow"].error == "timed out after 0.05 s"
    assert results["own"].error == "TimeoutError: upstream (at nodes/own.py:2)"


async def test_pipeline_failure_is_reported(tmp_path):
    write_workflow(tmp_path, {"boom": "async def run(ctx, input):\n    raise ValueError('nope')\n"})
    fixture(tmp_path, "pipeline", {"input": {}, "expected": 1})
    (result,) = (await run_workflow_fixtures(tmp_path)).results
    assert result.error == "node boom failed: ValueError: nope (at nodes/boom.py:2)"


async def test_untested_nodes_unknown_fixtures_and_bad_json(flow):
    (flow / "tests" / "fixtures" / "double.json").unlink()
    fixture(flow, "typo", {"input": 1, "expected": 1})
    (flow / "tests" / "fixtures" / "fetch.json").write_text("{not json")
    report = await run_workflow_fixtures(flow)
    assert report.untested == ("double",)
    by_name = {r.name: r for r in report.results}
    assert by_name["typo"].error.startswith("no node 'typo' in workflow.yaml")
    assert "fetch.json:1: invalid JSON" in by_name["fetch"].error
    assert by_name["pipeline"].passed


async def test_missing_expected_only_checks_that_it_runs(tmp_path):
    write_workflow(tmp_path, {"a": DOUBLE})
    fixture(tmp_path, "a", {"input": {"n": 1}})
    assert (await run_workflow_fixtures(tmp_path)).passed


async def test_bad_targets(tmp_path, flow):
    report = await run_workflow_fixtures(flow / "nope")
    assert "no node 'nope'" in report.error
    report = await run_workflow_fixtures(tmp_path / "missing" / "dir")
    assert "no workflow.yaml here" in report.error
    (tmp_path / "README.md").write_text("x")
    report = await run_workflow_fixtures(tmp_path / "README.md")
    assert report.skipped and report.passed
    report = await run_workflow_fixtures(flow / "nope", pipeline_only=True)
    assert not report.passed


async def test_pipeline_only_needs_the_pipeline_fixture(tmp_path):
    write_workflow(tmp_path, {"a": DOUBLE})
    report = await run_workflow_fixtures(tmp_path, pipeline_only=True)
    assert "pipeline.json: not found" in report.error


async def test_runs_are_hermetic_unless_secrets_are_given(tmp_path):
    write_workflow(tmp_path, {"a": "async def run(ctx, input):\n    return sorted(ctx.secrets)\n"})
    (tmp_path / ".secrets.yaml").write_text("github:\n  token: t\n")
    fixture(tmp_path, "a", {"input": None, "expected": []})
    assert (await run_workflow_fixtures(tmp_path)).passed
    fixture(tmp_path, "a", {"input": None, "expected": ["github"]})
    assert (await run_workflow_fixtures(tmp_path, secrets_path=tmp_path / ".secrets.yaml")).passed


def test_resolve_target(flow):
    assert resolve_target(flow) == (flow, None)
    assert resolve_target(flow / "workflow.yaml") == (flow, None)
    assert resolve_target(flow / "fetch") == (flow, "fetch")
    with pytest.raises(FixtureError):
        resolve_target(flow / "a" / "b")


async def test_stub_fetcher_matches_exact_key_then_path_without_query():
    stub = StubFetcher({"svc /a": {"x": 1}, "svc /b": [1]})
    assert await (await stub.fetch("svc", "/a")).json() == {"x": 1}
    assert await (await stub.fetch("svc", "/b?page=2")).json() == [1]
    assert await (await stub.fetch("svc", "/c", method="post")).json() == {"mock": True, "service": "svc", "path": "/c"}
    assert stub.calls[-1] == {"service": "svc", "path": "/c", "method": "POST"}


@pytest.mark.parametrize(
    "a, b, equal",
    [(1, 1.0, True), (True, 1, False), ({"a": [1, None]}, {"a": [1.0, None]}, True), ([1], [1, 2], False),
     ({"a": 1}, {"b": 1}, False), ("1", 1, False), (None, None, True), (False, 0, False)],
)
def test_json_equal(a, b, equal):
    assert json_equal(a, b) is equal


def test_diff_is_sorted_pretty_json():
    assert "+  \"b\": 2" in diff_json({"a": 1}, {"a": 1, "b": 2})


SECRET = "hunter2xyz"
LEAKER = "async def run(ctx, input):\n    return {'t': ctx.secrets['svc']['token'], 'n': input}\n"
BAD_KEY = "async def run(ctx, input):\n    return {ctx.secrets['svc']['token']: {1, 2}}\n"


@pytest.fixture
def leaky(tmp_path: Path) -> Path:
    write_workflow(tmp_path, {"leak": LEAKER})
    (tmp_path / ".secrets.yaml").write_text(f"svc:\n  token: {SECRET}\n")
    return tmp_path


async def test_secret_values_are_compared_raw_but_never_shown(leaky):
    fixture(leaky, "leak", {"input": 1, "expected": {"t": "other", "n": 1}})
    fixture(leaky, "pipeline", {"input": 1, "expected": {"t": SECRET, "n": 2}})
    report = await run_workflow_fixtures(leaky, secrets_path=leaky / ".secrets.yaml")
    by_name = {r.name: r for r in report.results}
    assert not by_name["leak"].passed
    assert by_name["leak"].actual == {"t": "***", "n": 1}
    assert '-  "t": "other"' in by_name["leak"].diff and '+  "t": "***"' in by_name["leak"].diff
    # The expectation holds the secret too: shown redacted, the diff is about `n`.
    assert not by_name["pipeline"].passed
    assert by_name["pipeline"].expected == {"t": "***", "n": 2}
    assert '-  "n": 2' in by_name["pipeline"].diff
    assert SECRET not in json.dumps(report.to_dict())


async def test_a_node_returning_the_expected_secret_passes(leaky):
    fixture(leaky, "leak", {"input": 1, "expected": {"t": SECRET, "n": 1}})
    fixture(leaky, "pipeline", {"input": 1, "expected": {"t": SECRET, "n": 1}})
    report = await run_workflow_fixtures(leaky, secrets_path=leaky / ".secrets.yaml")
    assert [r.name for r in report.results if r.passed] == ["leak", "pipeline"]
    assert SECRET not in json.dumps(report.to_dict())


async def test_a_difference_only_inside_secrets_still_fails_without_showing_them(leaky):
    (leaky / ".secrets.yaml").write_text(f"svc:\n  token: {SECRET}\nother:\n  token: s3cr3t-two\n")
    fixture(leaky, "leak", {"input": 1, "expected": {"t": "s3cr3t-two", "n": 1}})
    (result,) = (await run_workflow_fixtures(leaky, secrets_path=leaky / ".secrets.yaml")).results
    assert not result.passed and result.diff == "expected and actual differ only in secret values (shown as ***)\n"
    assert SECRET not in json.dumps(result.to_dict()) and "s3cr3t-two" not in json.dumps(result.to_dict())


async def test_errors_naming_a_secret_are_redacted(leaky):
    write_workflow(leaky, {"bad": BAD_KEY})
    fixture(leaky, "bad", {"input": None, "expected": None})
    (result,) = (await run_workflow_fixtures(leaky, secrets_path=leaky / ".secrets.yaml")).results
    assert result.error == "output of node bad is not JSON-serialisable: output.*** is a set"


async def test_a_deeply_nested_fixture_fails_alone(flow):
    (flow / "tests" / "fixtures" / "fetch.json").write_text("[" * 100_000 + "]" * 100_000)
    report = await run_workflow_fixtures(flow)
    by_name = {r.name: r for r in report.results}
    assert not by_name["fetch"].passed
    assert by_name["fetch"].error.endswith("fetch.json: invalid JSON: nested too deeply")
    assert by_name["double"].passed and by_name["pipeline"].passed


async def test_a_value_too_deep_for_a_result_fails_only_its_fixture(tmp_path):
    write_workflow(tmp_path, {"echo": "async def run(ctx, input):\n    return input\n"})
    deep = "[" * 500 + "]" * 500  # json.loads takes it; the protobuf result cannot hold it
    (tmp_path / "tests" / "fixtures").mkdir(parents=True)
    (tmp_path / "tests" / "fixtures" / "pipeline.json").write_text(f'{{"input": {deep}}}')
    fixture(tmp_path, "echo", {"input": [[1]], "expected": [[1]]})
    by_name = {r.name: r for r in (await run_workflow_fixtures(tmp_path)).results}
    assert by_name["echo"].passed
    pipeline_file = tmp_path / "tests" / "fixtures" / "pipeline.json"
    assert by_name["pipeline"].error == f"{pipeline_file}: 'input' is nested too deeply (more than 100 levels)"
