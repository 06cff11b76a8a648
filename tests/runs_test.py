"""Runs you can find again, through real engine processes (`python -m engine`), real HTTP and gRPC
clients and the CLI: history, async submit, RUNNING snapshots, Watch, resume, idempotency keys,
history off, server reflection."""

from __future__ import annotations

import concurrent.futures
import json
import urllib.request
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from proto.pipedreamer.v1 import execution_pb2, execution_pb2_grpc
from tests.k8s_support import cli
from tests.serve_harness import ServerProcess, post_json
from tests.support import wait_for, write_workflow

# `first` counts its calls in DIR/first.calls; `second` waits for DIR/go when asked, and
# fails when asked until DIR/fixed exists.
FIRST = """
import pathlib


async def run(ctx, input):
    with (pathlib.Path(input["dir"]) / "first.calls").open("a") as calls:
        calls.write("x")
    return input
"""
SECOND = """
import asyncio
import pathlib


async def run(ctx, input):
    directory = pathlib.Path(input["dir"])
    if input.get("wait"):
        while not (directory / "go").exists():
            await asyncio.sleep(0.02)
    if input.get("fail") and not (directory / "fixed").exists():
        raise RuntimeError("second is broken")
    return {"done": input.get("n", 0)}
"""


def _flow(tmp_path: Path, name: str = "runs-flow", **options) -> Path:
    return write_workflow(tmp_path / name, {"first": FIRST, "second": SECOND}, [("first", "second")], name=name, **options)


def _engine(flow: Path, *extra: str) -> ServerProcess:
    server = ServerProcess.engine(flow, f"--allow-read={flow}", f"--allow-write={flow}", *extra)
    server.wait_ready()
    return server


@pytest.fixture
def flow(tmp_path: Path) -> Path:
    return _flow(tmp_path)


@pytest.fixture
def engine(flow: Path):
    server = _engine(flow)
    yield server
    server.close()


def _request(url: str, *, method: str = "GET", body: object = None, headers: dict | None = None) -> tuple[int, dict, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def _calls(flow: Path) -> int:
    path = flow / "first.calls"
    return len(path.read_text()) if path.exists() else 0


def test_every_run_is_recorded_and_found_again_over_http_grpc_and_the_cli(engine: ServerProcess, flow: Path):
    ok_status, ok = post_json(engine.url + "/run?trigger=nightly", {"dir": str(flow), "n": 1})
    failed_status, failed = post_json(engine.url + "/run", {"dir": str(flow), "fail": True})
    assert (ok_status, failed_status) == (200, 500)
    with grpc.insecure_channel(f"127.0.0.1:{engine.grpc_port}") as channel:
        stub = execution_pb2_grpc.WorkflowServiceStub(channel)
        request = execution_pb2.RunRequest(trigger="grpc-caller")
        request.input.struct_value.update({"dir": str(flow), "n": 3})
        by_grpc = stub.Run(request, timeout=30)
        listed = stub.ListRuns(execution_pb2.ListRunsRequest(limit=10), timeout=10)
        assert [r.run_id for r in listed.runs] == [by_grpc.run_id, failed["runId"], ok["runId"]]
        assert not listed.runs[0].nodes["second"].HasField("output")  # the list leaves node outputs out
        only_failed = stub.ListRuns(execution_pb2.ListRunsRequest(status=execution_pb2.RUN_STATUS_FAILED), timeout=10)
        assert [r.run_id for r in only_failed.runs] == [failed["runId"]]
        again = stub.GetRun(execution_pb2.GetRunRequest(run_id=ok["runId"]), timeout=10)
        assert again.trigger == "nightly" and json_format.MessageToDict(again.output) == {"done": 1}
        with pytest.raises(grpc.RpcError) as missing:
            stub.GetRun(execution_pb2.GetRunRequest(run_id="nope"), timeout=10)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND

    status, _, body = _request(engine.url + "/runs?limit=2")
    assert status == 200 and [r["runId"] for r in body["runs"]] == [by_grpc.run_id, failed["runId"]]
    status, _, one = _request(engine.url + f"/runs/{failed['runId']}")
    assert status == 200 and one == failed
    assert _request(engine.url + "/runs/nope")[0] == 404
    status, _, bad = _request(engine.url + "/runs?status=sideways")
    assert status == 400 and "sideways" in bad["error"]

    table = cli("runs", "--endpoint", engine.url)
    assert table.code == 0, table.err
    lines = table.out.splitlines()
    assert lines[0].split() == ["RUN", "ID", "STATUS", "TRIGGER", "STARTED", "DURATION", "FAILING", "NODE"]
    assert lines[1].split()[:3] == [by_grpc.run_id, "SUCCEEDED", "grpc-caller"]
    assert lines[2].split()[:3] == [failed["runId"], "FAILED", "-"] and lines[2].split()[-1] == "second"
    assert lines[3].split()[:3] == [ok["runId"], "SUCCEEDED", "nightly"]
    as_json = cli("runs", "--endpoint", f"grpc://127.0.0.1:{engine.grpc_port}", "--status", "failed", "-o", "json")
    assert as_json.code == 0, as_json.err
    assert [r["runId"] for r in as_json.json()["runs"]] == [failed["runId"]]
    shown = cli("runs", "--endpoint", engine.url, failed["runId"])
    assert shown.code == 0 and shown.out.splitlines()[0].startswith(f"run {failed['runId']} of runs-flow 1.0.0: FAILED")
    assert "second is broken" in shown.out
    unknown = cli("runs", "--endpoint", engine.url, "nope")
    assert unknown.code == 1 and "no run 'nope'" in unknown.err
    bad_status = cli("runs", "--endpoint", engine.url, "--status", "meh")
    assert bad_status.code == 1 and "--status: unknown run status 'meh'" in bad_status.err


def test_an_async_run_answers_at_once_and_shows_running_with_the_nodes_finished_so_far(engine: ServerProcess, flow: Path):
    status, headers, body = _request(
        engine.url + "/run", method="POST", body={"dir": str(flow), "wait": True, "n": 7}, headers={"Prefer": "respond-async"}
    )
    assert status == 202 and headers["Location"] == f"/runs/{body['runId']}"
    run_id = body["runId"]

    def running_with_first_done():
        found = _request(engine.url + f"/runs/{run_id}")[2]
        return found if "first" in found.get("nodes", {}) else None

    running = wait_for("the run RUNNING with node first finished", running_with_first_done)
    assert running["status"] == "RUN_STATUS_RUNNING"
    assert running["nodes"]["first"]["status"] == "NODE_STATUS_SUCCEEDED" and "second" not in running["nodes"]
    listed = _request(engine.url + "/runs?status=running")[2]["runs"]
    assert [r["runId"] for r in listed] == [run_id]
    (flow / "go").write_text("")
    done = wait_for("the run to end", lambda: (r := _request(engine.url + f"/runs/{run_id}")[2])["status"] != "RUN_STATUS_RUNNING" and r)
    assert done["status"] == "RUN_STATUS_SUCCEEDED" and done["output"] == {"done": 7}

    submitted = cli("run", "--endpoint", engine.url, "--async", "--input", json.dumps({"dir": str(flow)}), "-o", "json")
    assert submitted.code == 0, submitted.err
    final = wait_for("the CLI's run to end", lambda: (r := _request(engine.url + f"/runs/{submitted.json()['runId']}")[2])["status"] != "RUN_STATUS_RUNNING" and r)
    assert final["status"] == "RUN_STATUS_SUCCEEDED"


def test_watch_streams_node_events_then_the_result_over_grpc_and_in_the_cli(engine: ServerProcess, flow: Path):
    with grpc.insecure_channel(f"127.0.0.1:{engine.grpc_port}") as channel:
        stub = execution_pb2_grpc.WorkflowServiceStub(channel)
        request = execution_pb2.RunRequest()
        request.input.struct_value.update({"dir": str(flow), "wait": True, "n": 2})
        run_id = stub.Submit(request, timeout=10).run_id
        stream = stub.Watch(execution_pb2.WatchRequest(run_id=run_id), timeout=30)
        seen = []
        for event in stream:
            kind = event.WhichOneof("event")
            assert event.run_id == run_id
            if kind == "node_started":
                seen.append(("started", event.node_started.node_id))
                if event.node_started.node_id == "second":
                    (flow / "go").write_text("")  # let it finish only once the watcher saw it start
            elif kind == "node_finished":
                seen.append(("finished", event.node_finished.node_id, execution_pb2.NodeStatus.Name(event.node_finished.result.status)))
            else:
                seen.append(("result", execution_pb2.RunStatus.Name(event.finished.status)))
        assert seen == [
            ("started", "first"), ("finished", "first", "NODE_STATUS_SUCCEEDED"),
            ("started", "second"), ("finished", "second", "NODE_STATUS_SUCCEEDED"),
            ("result", "RUN_STATUS_SUCCEEDED"),
        ]  # fmt: skip
        # A finished run: its events again, from the record, then the result.
        replay = [e.WhichOneof("event") for e in stub.Watch(execution_pb2.WatchRequest(run_id=run_id), timeout=10)]
        assert replay == ["node_finished", "node_finished", "finished"]

    watched = cli("run", "--endpoint", f"grpc://127.0.0.1:{engine.grpc_port}", "--watch", "--input", json.dumps({"dir": str(flow), "n": 5}))
    assert watched.code == 0, watched.err
    lines = watched.out.splitlines()
    assert lines[0].startswith("run ") and lines[0].endswith(":")
    # Node lines as they came (a node's start too, when the stream caught it before it ended), then the result.
    events = [line for line in lines[1:] if line.startswith("  ")]
    finished = [line.split(":")[0].strip() for line in events if ": SUCCEEDED in " in line]
    assert finished[:2] == ["first", "second"]
    assert all(line.endswith(": started") or ": SUCCEEDED in " in line for line in events[: events.index(next(e for e in events if e.startswith("  second: SUCCEEDED"))) + 1])
    assert any(": SUCCEEDED in " in line and line.startswith("run ") for line in lines[1:]) and '"done": 5' in watched.out
    polled = cli("run", "--endpoint", engine.url, "--watch", "--input", json.dumps({"dir": str(flow), "fail": True}))
    assert polled.code == 1
    assert "  second: FAILED in " in polled.out and "second is broken" in polled.out


def test_resume_reruns_only_what_failed_feeding_it_the_outputs_that_succeeded(engine: ServerProcess, flow: Path):
    status, failed = post_json(engine.url + "/run", {"dir": str(flow), "fail": True, "n": 4})
    assert status == 500 and _calls(flow) == 1
    (flow / "fixed").write_text("")
    resumed = cli("run", "--endpoint", engine.url, "--resume", failed["runId"], "-o", "json")
    assert resumed.code == 0, resumed.err
    result = resumed.json()
    assert result["resumedFrom"] == failed["runId"] and result["runId"] != failed["runId"]
    assert result["status"] == "RUN_STATUS_SUCCEEDED" and result["output"] == {"done": 4}
    assert _calls(flow) == 1  # `first` was not run again: its output was fed to `second`
    assert result["nodes"]["first"].get("attempts", 0) == 0 and result["nodes"]["second"]["attempts"] == 1
    text = cli("runs", "--endpoint", engine.url, result["runId"])
    assert f"resumed from run {failed['runId']}" in text.out
    assert "  first: SUCCEEDED (output carried from the resumed run)" in text.out

    again = cli("run", "--endpoint", engine.url, "--resume", result["runId"])
    assert again.code == 1 and "succeeded: there is nothing to resume" in again.err
    unknown = cli("run", "--endpoint", f"grpc://127.0.0.1:{engine.grpc_port}", "--resume", "nope")
    assert unknown.code == 1 and "no run 'nope'" in unknown.err and "NOT_FOUND" in unknown.err


def test_an_idempotency_key_returns_the_first_runs_result_and_a_concurrent_duplicate_waits_for_it(engine: ServerProcess, flow: Path):
    body = {"dir": str(flow), "wait": True, "n": 9}
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(_request, engine.url + "/run", method="POST", body=body, headers={"Idempotency-Key": "order-1"})
        wait_for("the first run to start", lambda: _calls(flow) == 1)
        duplicate = pool.submit(_request, engine.url + "/run", method="POST", body=body, headers={"Idempotency-Key": "order-1"})
        listed = wait_for("the first run listed", lambda: _request(engine.url + "/runs")[2]["runs"])
        assert not duplicate.done()
        (flow / "go").write_text("")
        (s1, _, r1), (s2, _, r2) = first.result(30), duplicate.result(30)
    assert s1 == s2 == 200 and r1 == r2 and r1["runId"] == listed[0]["runId"]
    assert _calls(flow) == 1
    # Later retries, over HTTP, gRPC or the CLI, get the same result; nothing runs again.
    assert _request(engine.url + "/run", method="POST", body=body, headers={"Idempotency-Key": "order-1"})[2] == r1
    with grpc.insecure_channel(f"127.0.0.1:{engine.grpc_port}") as channel:
        stub = execution_pb2_grpc.WorkflowServiceStub(channel)
        assert stub.Run(execution_pb2.RunRequest(idempotency_key="order-1"), timeout=10).run_id == r1["runId"]
    by_cli = cli("run", "--endpoint", engine.url, "--idempotency-key", "order-1", "-o", "json")
    assert by_cli.code == 0 and by_cli.json()["runId"] == r1["runId"]
    assert _calls(flow) == 1
    fresh = _request(engine.url + "/run", method="POST", body={"dir": str(flow)}, headers={"Idempotency-Key": "order-2"})[2]
    assert fresh["runId"] != r1["runId"] and _calls(flow) == 2


def test_history_off_answers_with_a_message_and_runs_still_work(flow: Path):
    server = _engine(flow, "--history", "0")
    try:
        assert post_json(server.url + "/run", {"dir": str(flow)})[0] == 200
        status, _, body = _request(server.url + "/runs")
        assert status == 404 and "run history is off on this engine (--history 0)" in body["error"]
        status, _, body = _request(server.url + "/run", method="POST", body={"dir": str(flow)}, headers={"Idempotency-Key": "k"})
        assert status == 400 and "--history 0" in body["error"]
        listed = cli("runs", "--endpoint", server.url)
        assert listed.code == 1 and "run history is off" in listed.err
    finally:
        server.close()


def test_grpc_reflection_describes_the_service_to_a_client_without_our_protos(engine: ServerProcess, flow: Path):
    with grpc.insecure_channel(f"127.0.0.1:{engine.grpc_port}") as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {"pipedreamer.v1.WorkflowService", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= services
        # A pool built from reflection alone (as grpcurl does) is enough to call Run.
        pool = descriptor_pool.DescriptorPool(database)
        service = pool.FindServiceByName("pipedreamer.v1.WorkflowService")
        assert {m.name for m in service.methods} == {"Run", "Submit", "GetRun", "ListRuns", "Watch"}
        method = service.methods_by_name["Run"]
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        call = channel.unary_unary("/pipedreamer.v1.WorkflowService/Run",
                                   request_serializer=request_class.SerializeToString,
                                   response_deserializer=response_class.FromString)  # fmt: skip
        request = json_format.ParseDict({"input": {"dir": str(flow), "n": 11}, "trigger": "grpcurl"}, request_class())
        answer = json_format.MessageToDict(call(request, timeout=30))
    assert answer["status"] == "RUN_STATUS_SUCCEEDED" and answer["output"] == {"done": 11} and answer["trigger"] == "grpcurl"
