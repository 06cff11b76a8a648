"""`run`: input parsing, how an ExecutionResult reads, and `run --local` as a process of its own."""

from __future__ import annotations

import json

import pytest

from cli.arguments import json_input
from cli.errors import CommandError
from cli.main import main
from cli.run import format_result
from k8s.run import RunOutcome
from tests.support import REPO, run_cli


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
    text = format_result(result)
    assert text.splitlines()[0] == "run r1 of hello 1.0.0: FAILED in 0.120s"
    assert "  shout: FAILED in 0.100s (2 attempts): boom" in text
    assert '"x": 1' in text
    assert not RunOutcome(500, result).succeeded
    assert RunOutcome(200, {**result, "status": "RUN_STATUS_SUCCEEDED"}).succeeded


def test_name_or_local_but_not_both(capsys):
    assert main(["run"]) == 1
    assert "give a deployed workflow's NAME, --endpoint URL of an engine, or --local DIR" in capsys.readouterr().err
    assert main(["run", "wf", "--local", "examples/hello"]) == 1


def test_local_run_prints_the_result_and_exits_0():
    proc = run_cli("run", "--local", "examples/hello", "--input", '{"name": "Ada"}')
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("run ") and " of hello 1.0.0: SUCCEEDED in " in lines[0]
    assert "  greet: SUCCEEDED in " in proc.stdout and "  shout: SUCCEEDED in " in proc.stdout
    assert '"greeting": "HELLO, ADA!"' in proc.stdout
    assert "[greet] greeting Ada" in proc.stderr  # the node's log line
    proc = run_cli("run", "--local", str(REPO / "examples" / "hello"), "-o", "json")
    result = json.loads(proc.stdout)
    assert result["status"] == "RUN_STATUS_SUCCEEDED" and result["trigger"] == "local"
    assert result["output"] == {"greeting": "HELLO, WORLD!"}


def test_local_watch_prints_each_node_as_it_starts_and_finishes_then_the_result():
    proc = run_cli("run", "--local", "examples/hello", "--watch", "--input", '{"name": "Ada"}')
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[:4] == ["  greet: started", lines[1], "  shout: started", lines[3]]
    assert lines[1].startswith("  greet: SUCCEEDED in ") and lines[3].startswith("  shout: SUCCEEDED in ")
    assert " of hello 1.0.0: SUCCEEDED in " in lines[4]


def test_flags_that_need_a_serving_engine_are_refused_with_local(capsys):
    assert main(["run", "--local", "examples/hello", "--resume", "r1"]) == 1
    assert "--resume needs a serving engine (NAME or --endpoint)" in capsys.readouterr().err
    assert main(["run", "--endpoint", "ftp://x", "--input", "{}"]) == 1
    assert "--endpoint 'ftp://x': expected an engine's HTTP address" in capsys.readouterr().err
    assert main(["runs", "wf", "--limit", "0"]) == 1
    assert "--limit: expected a whole number from 1 to 1000, got '0'" in capsys.readouterr().err


def test_local_run_is_under_the_image_lock_and_a_failure_exits_1(tmp_path):
    from tests.support import write_workflow

    steal = "async def run(ctx, input):\n    return open('/etc/shadow').read()[:5]\n"
    flow = write_workflow(tmp_path / "flow", {"steal": steal}, node_options={"steal": {"retries": 0}})
    proc = run_cli("run", "--local", str(flow))
    assert proc.returncode == 1
    assert "steal: FAILED" in proc.stdout
    assert "read of /etc/shadow denied: add it to --allow-read" in proc.stdout
    assert "run of test-flow did not succeed (FAILED)" in proc.stderr
    at_import = "DATA = open('/etc/shadow').read()\n\n" + steal
    (flow / "nodes" / "steal.py").write_text(at_import)
    proc = run_cli("run", "--local", str(flow))
    assert proc.returncode == 1
    assert "nodes/steal.py:1: import failed: PermissionDenied: read of /etc/shadow denied" in proc.stderr
