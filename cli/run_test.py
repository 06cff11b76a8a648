"""`run`: input parsing and how an ExecutionResult reads."""

from __future__ import annotations

import pytest

from cli.arguments import json_input
from cli.errors import CommandError
from cli.main import main
from cli.run import format_result
from k8s.run import RunOutcome


def test_input_inline_file_and_errors(tmp_path):
    assert json_input(None) is None
    assert json_input('{"a": 1}') == {"a": 1}
    path = tmp_path / "in.json"
    path.write_text("[1, 2]")
    assert json_input(f"@{path}") == [1, 2]
    with pytest.raises(CommandError, match="not valid JSON"):
        json_input("{nope")
    with pytest.raises(CommandError, match="cannot read"):
        json_input(f"@{tmp_path / 'missing.json'}")


def test_bad_input_exits_1_before_contacting_a_cluster(capsys):
    assert main(["run", "wf", "--input", "{oops"]) == 1
    assert "--input: --input is not valid JSON" in capsys.readouterr().err


def test_bad_timeout_is_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", "wf", "--timeout", "soon"])
    assert info.value.code == 2


def test_format_result():
    result = {
        "runId": "r1",
        "workflow": "hello",
        "version": "1.0.0",
        "status": "RUN_STATUS_FAILED",
        "duration": "0.120s",
        "error": "shout: boom",
        "nodes": {
            "greet": {"status": "NODE_STATUS_SUCCEEDED", "attempts": 1, "duration": "0.010s"},
            "shout": {"status": "NODE_STATUS_FAILED", "attempts": 2, "duration": "0.100s", "error": "boom"},
        },
        "output": {"x": 1},
    }
    text = format_result(RunOutcome(500, result))
    assert text.splitlines()[0] == "run r1 of hello 1.0.0: FAILED in 0.120s"
    assert "  shout: FAILED in 0.100s (2 attempts): boom" in text
    assert '"x": 1' in text
    assert not RunOutcome(500, result).succeeded
    assert RunOutcome(200, {**result, "status": "RUN_STATUS_SUCCEEDED"}).succeeded
