"""Engine: runs from a workflow directory, redaction everywhere, hot reload and watching."""

from __future__ import annotations

import asyncio
import io
import json
import os
from pathlib import Path

import aiohttp
import pytest

from engine.loader import LoadError
from engine.values import result_to_dict, result_to_json
from engine.runtime import Engine
from engine.spec import SpecError
from engine.values import value_to_python
from tests.support import wait_for_async, write_workflow
from proto.pipedreamer.v1 import execution_pb2

pytestmark = pytest.mark.timeout(60)

RETURN = "async def run(ctx, input):\n    return {value}\n"


async def start(directory: Path, **kwargs) -> Engine:
    kwargs.setdefault("secrets_mount", None)
    return await Engine.start(directory, **kwargs)


async def test_runs_a_chain_and_reports_every_node(tmp_path):
    write_workflow(tmp_path, {
        "a": "async def run(ctx, input):\n    return {'n': input['n'] + 1, 'node': ctx.node_id, 'run': ctx.run_id}\n",
        "b": "async def run(ctx, input):\n    return input['n'] * ctx.config['factor']\n",
    }, [("a", "b")], config={"factor": 10, "timeout": "5s"})
    engine = await start(tmp_path)
    result = await engine.run({"n": 1}, trigger="manual", run_id="run-42")
    assert result.status == execution_pb2.RUN_STATUS_SUCCEEDED
    assert (result.run_id, result.workflow, result.version, result.trigger) == ("run-42", "test-flow", "1.0.0", "manual")
    assert value_to_python(result.output) == 20
    assert value_to_python(result.nodes["a"].output) == {"n": 2, "node": "a", "run": "run-42"}
    assert engine.spec.name == "test-flow" and engine.dag.order == ("a", "b")
    assert engine.in_flight == 0
    assert len((await engine.run({"n": 1})).run_id) == 32
    await engine.close()


async def test_node_failure_is_in_the_result_with_its_location(tmp_path):
    write_workflow(tmp_path, {
        "a": "async def run(ctx, input):\n    raise ValueError('bad input')\n",
        "b": RETURN.format(value=1),
    }, [("a", "b")])
    stream = io.StringIO()
    engine = await start(tmp_path, log_stream=stream)
    result = await engine.run({})
    data = result_to_dict(result)
    assert data["status"] == "RUN_STATUS_FAILED"
    assert data["nodes"]["a"]["error"] == "ValueError: bad input (at nodes/a.py:2)"
    assert data["nodes"]["b"]["status"] == "NODE_STATUS_SKIPPED"
    assert data["error"] == "node a failed: ValueError: bad input (at nodes/a.py:2)"
    assert "WARN  [engine] run failed: node a failed" in stream.getvalue()
    assert f"run_id={result.run_id}" in stream.getvalue()


async def test_config_timeout_and_node_retries_apply(tmp_path):
    write_workflow(tmp_path, {
        "slow": "import asyncio\nasync def run(ctx, input):\n    await asyncio.sleep(5)\n",
    }, config={"timeout": "100ms"}, node_options={"slow": {"retries": 1}})
    engine = await start(tmp_path)
    result = await engine.run(None)
    node = result.nodes["slow"]
    assert node.status == execution_pb2.NODE_STATUS_TIMED_OUT and node.attempts == 2
    assert node.error == "timed out after 100 ms (after 2 attempts)"


async def test_not_json_output_fails_the_node(tmp_path):
    write_workflow(tmp_path, {"a": "import datetime\nasync def run(ctx, input):\n    return {'at': datetime.date(2024, 1, 1)}\n"})
    result = await (await start(tmp_path)).run({})
    assert result.status == execution_pb2.RUN_STATUS_FAILED
    assert result.nodes["a"].error == "output of node a is not JSON-serialisable: output.at is a datetime.date"
    json.loads(result_to_json(result))  # the result itself always serialises


SECRET_NODE = '''
async def run(ctx, input):
    token = ctx.secrets["github"]["token"]
    ctx.log.info(f"using {token}")
    if input.get("fail"):
        raise RuntimeError(f"GitHub rejected {token}")
    return {"echo": token, "header": "Bearer " + token}
'''


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_secret_values_never_reach_logs_errors_or_results(tmp_path, log_format):
    write_workflow(tmp_path, {"a": SECRET_NODE})
    (tmp_path / ".secrets.yaml").write_text("github:\n  token: ghp_SuperSecret123\n")
    stream = io.StringIO()
    engine = await start(tmp_path, log_stream=stream, log_format=log_format)
    assert engine.secrets["github"]["token"] == "ghp_SuperSecret123"  # nodes still see the real value
    ok = await engine.run({})
    failed = await engine.run({"fail": True})
    everything = result_to_json(ok) + result_to_json(failed) + stream.getvalue()
    assert "ghp_SuperSecret123" not in everything
    assert value_to_python(ok.output) == {"echo": "***", "header": "Bearer ***"}
    assert failed.nodes["a"].error == "RuntimeError: GitHub rejected *** (at nodes/a.py:6)"
    assert "using ***" in stream.getvalue()
    assert engine.redact("x ghp_SuperSecret123 y") == "x *** y"


async def test_explicit_secrets_path_and_mount_dir(tmp_path):
    write_workflow(tmp_path / "wf", {"a": "async def run(ctx, input):\n    return ctx.secrets\n"})
    (tmp_path / "wf" / ".secrets.yaml").write_text("a:\n  token: from-yaml\n")
    mount = tmp_path / "mount"
    mount.mkdir()
    (mount / "b").write_text("plain")
    engine = await Engine.start(tmp_path / "wf", secrets_mount=mount)
    assert dict(engine.secrets) == {"a": {"token": "from-yaml"}, "b": {"value": "plain"}}
    explicit = tmp_path / "explicit.yaml"
    explicit.write_text("c:\n  api_key: k\n")
    engine = await Engine.start(tmp_path / "wf", secrets_path=explicit, secrets_mount=mount)
    assert dict(engine.secrets) == {"c": {"api_key": "k"}}


async def test_start_errors(tmp_path):
    with pytest.raises(SpecError, match="workflow.yaml: file not found"):
        await start(tmp_path)
    write_workflow(tmp_path, {"a": "def run(ctx, input):\n    return 1\n"})
    with pytest.raises(LoadError, match=r"nodes/a.py:1: `run` must be `async def run\(ctx, input\)`, found a plain function"):
        await start(tmp_path)
    write_workflow(tmp_path, {"a": "async def run(ctx, input):\n    return 1\nraise ImportError('missing dep')\n"})
    with pytest.raises(LoadError, match=r"nodes/a.py:3: import failed: ImportError: missing dep"):
        await start(tmp_path)


VERSIONED = '''
import asyncio
VERSION = {version}
gate = asyncio.Event()

async def run(ctx, input):
    if input and input.get("wait"):
        await input_gate(input)
    return VERSION

async def input_gate(input):
    # A module-level event, created in the module generation the run started with.
    gate_holder.append(gate)
    await gate.wait()

gate_holder = []
'''


async def test_reload_swaps_modules_but_runs_in_flight_keep_the_old_ones(tmp_path):
    write_workflow(tmp_path, {"a": VERSIONED.format(version=1)})
    stream = io.StringIO()
    engine = await start(tmp_path, log_stream=stream)
    old_module = engine.workflow.modules.modules["a"]
    in_flight = asyncio.create_task(engine.run({"wait": True}))
    while not old_module.gate_holder:
        await asyncio.sleep(0.005)
    assert engine.in_flight == 1

    (tmp_path / "nodes" / "a.py").write_text(VERSIONED.format(version=2))
    assert await engine.reload() is True
    assert value_to_python((await engine.run({})).output) == 2

    old_module.gate.set()
    result = await in_flight
    assert value_to_python(result.output) == 1  # finished on the module it started with
    assert engine.in_flight == 0
    assert "reloaded 1 nodes" in stream.getvalue()


async def test_failed_reload_keeps_the_old_modules_and_says_why(tmp_path):
    write_workflow(tmp_path, {"a": RETURN.format(value=1)})
    stream = io.StringIO()
    engine = await start(tmp_path, log_stream=stream)
    (tmp_path / "nodes" / "a.py").write_text("async def run(ctx, input)\n    return 2\n")
    assert await engine.reload() is False
    assert value_to_python((await engine.run({})).output) == 1
    log = stream.getvalue()
    assert "reload failed; still serving the previous version" in log
    assert "nodes/a.py:1: SyntaxError: expected ':' (node a)" in log
    # A broken workflow.yaml is refused the same way.
    (tmp_path / "nodes" / "a.py").write_text(RETURN.format(value=3))
    (tmp_path / "workflow.yaml").write_text("name: Bad Name\n")
    assert await engine.reload() is False
    assert value_to_python((await engine.run({})).output) == 1


async def test_reload_picks_up_workflow_yaml_changes(tmp_path):
    write_workflow(tmp_path, {"a": RETURN.format(value=1)})
    engine = await start(tmp_path)
    write_workflow(tmp_path, {"a": RETURN.format(value=1), "b": "async def run(ctx, input):\n    return input + 1\n"}, [("a", "b")])
    assert await engine.reload() is True
    assert engine.dag.order == ("a", "b")
    assert value_to_python((await engine.run({})).output) == 2


async def test_watch_reloads_on_change(tmp_path):
    write_workflow(tmp_path, {"a": RETURN.format(value=1)})
    (tmp_path / "nodes" / "shared.py").write_text("X = 1\n")
    engine = await start(tmp_path, log_stream=io.StringIO())
    watcher = asyncio.create_task(engine.watch(interval=0.02))
    try:
        await asyncio.sleep(0.05)
        path = tmp_path / "nodes" / "a.py"
        path.write_text(RETURN.format(value=22))
        os.utime(path, ns=(path.stat().st_mtime_ns + 10**9,) * 2)
        for _ in range(200):
            if value_to_python((await engine.run({})).output) == 22:
                break
            await asyncio.sleep(0.01)
        assert value_to_python((await engine.run({})).output) == 22
        assert "change detected in nodes/a.py; reloading" in engine.log_sink.stream.getvalue()
    finally:
        watcher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watcher


async def test_watched_files_skip_hidden_and_cache_dirs(tmp_path):
    write_workflow(tmp_path, {"a": RETURN.format(value=1)})
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "x.py").write_text("")
    (tmp_path / "nodes" / "__pycache__").mkdir()
    (tmp_path / "nodes" / "__pycache__" / "y.py").write_text("")
    (tmp_path / "lib.py").write_text("")
    engine = await start(tmp_path)
    names = sorted(os.path.relpath(p, tmp_path) for p in engine.watched_files())
    assert names == ["lib.py", "nodes/a.py", "workflow.yaml"]


async def test_owned_session_is_closed_and_a_given_one_is_not(tmp_path):
    write_workflow(tmp_path, {"a": RETURN.format(value=1)})
    engine = await start(tmp_path)
    session = engine.session()
    assert engine.session() is session
    await engine.close()
    assert session.closed
    async with aiohttp.ClientSession() as given:
        engine = await start(tmp_path, fetch_session=given)
        assert engine.session() is given
        await engine.close()
        assert not given.closed


async def test_run_node_calls_one_node(tmp_path):
    write_workflow(tmp_path, {"a": "async def run(ctx, input):\n    return [ctx.node_id, input]\n"})
    engine = await start(tmp_path)
    assert await engine.run_node("a", 5) == ["a", 5]
    with pytest.raises(KeyError, match="no node 'zz'"):
        await engine.run_node("zz", 5)


async def test_cancelling_a_run_cancels_its_nodes_and_releases_in_flight(tmp_path):
    write_workflow(tmp_path, {"hang": "import asyncio\nasync def run(ctx, input):\n    await asyncio.sleep(30)\n"})
    engine = await start(tmp_path)
    task = asyncio.create_task(engine.run({}))
    await wait_for_async("the run in flight", lambda: engine.in_flight == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert engine.in_flight == 0
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
