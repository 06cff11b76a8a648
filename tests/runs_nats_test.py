"""Run history shared by replicas in a real nats-server's JetStream key-value store (`config.history: nats`),
and Nats-Msg-Id as a queue message's idempotency key."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import grpc
import nats
import pytest

from proto.pipedreamer.v1 import execution_pb2, execution_pb2_grpc
from tests.k8s_support import cli
from tests.serve_harness import JetStreamNatsServer, ServerProcess, post_json, serving
from tests.support import wait_for, write_workflow

SECRET = "hunter2-very-secret-value"
# `leak` returns the API token (redacted in every result); `count` appends to DIR/count.calls.
LEAK = """
async def run(ctx, input):
    return {"token": ctx.secrets["api"]["token"], "dir": input.get("dir", "")}
"""
CHECK = """
import pathlib


async def run(ctx, input):
    directory = pathlib.Path(input["dir"])
    with (directory / "count.calls").open("a") as calls:
        calls.write("x")
    if not (directory / "fixed").exists():
        raise RuntimeError("check is broken")
    return {"ok": True}
"""
COUNT = """
import pathlib


async def run(ctx, input):
    with (pathlib.Path(input["dir"]) / "count.calls").open("a") as calls:
        calls.write("x")
    return {"n": input.get("n", 0)}
"""


@pytest.fixture
def js(tmp_path: Path):
    server = JetStreamNatsServer(tmp_path / "jetstream")
    server.start()
    yield server
    server.close()


def _flow(tmp_path: Path, js: JetStreamNatsServer, nodes: dict, edges=(), name: str = "shared-flow", **config) -> Path:
    return write_workflow(
        tmp_path / name,
        nodes,
        edges,
        name=name,
        triggers=[{"type": "manual"}, {"type": "queue", "subject": "jobs.shared", "name": "jobs"}],
        config={"nats_url": js.url, "history": "nats", **config},
        secrets={"nats": {"token": js.token}, "api": {"token": SECRET}},
    )


def _engine(flow: Path) -> ServerProcess:
    server = ServerProcess.engine(flow, f"--allow-read={flow}", f"--allow-write={flow}", "--allow-net=127.0.0.1")
    server.wait_ready()
    return server


def _runs(server: ServerProcess) -> list[dict]:
    import urllib.request

    with urllib.request.urlopen(server.url + "/runs?limit=50", timeout=10) as response:
        return json.loads(response.read())["runs"]


async def _bucket_values(js: JetStreamNatsServer, bucket: str) -> dict[str, bytes]:
    client = await nats.connect(js.url, token=js.token)
    try:
        kv = await client.jetstream().key_value(bucket)
        values = {}
        for key in await kv.keys():
            values[key] = (await kv.get(key)).value
        return values
    finally:
        await client.close()


def test_replicas_share_the_history_and_a_dead_replicas_runs_stay_visible(tmp_path: Path, js: JetStreamNatsServer):
    flow = _flow(tmp_path, js, {"leak": LEAK, "check": CHECK}, [("leak", "check")])
    first, second = _engine(flow), _engine(flow)
    try:
        status, failed = post_json(first.url + "/run", {"dir": str(flow)})
        assert status == 500 and failed["nodes"]["leak"]["output"]["token"] == "***"
        status, other = post_json(second.url + "/run?trigger=from-second", {"dir": str(flow)})
        assert status == 500
        # Each replica lists both runs, whichever ran it.
        for server in (first, second):
            ids = wait_for("both runs listed", lambda s=server: [r["runId"] for r in _runs(s)] if len(_runs(s)) == 2 else None)
            assert ids == [other["runId"], failed["runId"]]
        first.proc.send_signal(signal.SIGKILL)
        first.wait()
        after = cli("runs", "--endpoint", second.url, "-o", "json")
        assert after.code == 0, after.err
        assert [r["runId"] for r in after.json()["runs"]] == [other["runId"], failed["runId"]]
        shown = cli("runs", "--endpoint", second.url, failed["runId"], "-o", "json").json()
        assert shown["status"] == "RUN_STATUS_FAILED" and shown["nodes"]["check"]["error"].startswith("RuntimeError: check is broken")

        # Secrets never reach the store: the bucket holds the redacted results only.
        values = asyncio.run(_bucket_values(js, "pipedreamer-runs-shared-flow"))
        assert set(values) == {failed["runId"], other["runId"]}
        assert all(SECRET.encode() not in value for value in values.values())
        record = json.loads(values[failed["runId"]])
        assert record["nodes"]["leak"]["output"]["token"] == "***" and record["nodes"]["leak"]["outputRedacted"] is True

        # The run of the dead replica cannot be resumed from the record: the output its
        # failed node needs was redacted there, and only the dead engine held the real one.
        (flow / "fixed").write_text("")
        refused = cli("run", "--endpoint", second.url, "--resume", failed["runId"])
        assert refused.code == 1 and "the recorded output of leak had secrets replaced by ***" in refused.err
        # The replica that ran it resumes it with the real output it kept in memory.
        resumed = cli("run", "--endpoint", second.url, "--resume", other["runId"], "-o", "json")
        assert resumed.code == 0, resumed.err
        assert resumed.json()["resumedFrom"] == other["runId"] and resumed.json()["status"] == "RUN_STATUS_SUCCEEDED"
        assert (flow / "count.calls").read_text() == "xxx"  # check ran three times: twice failing, once resumed
    finally:
        first.close()
        second.close()


def test_a_run_in_flight_on_one_replica_shows_running_on_the_other(tmp_path: Path, js: JetStreamNatsServer):
    wait_node = """
import asyncio
import pathlib


async def run(ctx, input):
    directory = pathlib.Path(input["dir"])
    while not (directory / "go").exists():
        await asyncio.sleep(0.02)
    return "done"
"""
    start = """
async def run(ctx, input):
    return input
"""
    flow = _flow(tmp_path, js, {"start": start, "wait": wait_node}, [("start", "wait")])
    first, second = _engine(flow), _engine(flow)
    try:
        import urllib.request

        request = urllib.request.Request(first.url + "/run", data=json.dumps({"dir": str(flow)}).encode(), method="POST",
                                         headers={"Prefer": "respond-async", "Content-Type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(request, timeout=10) as response:
            run_id = json.loads(response.read())["runId"]
        seen = wait_for(
            "the other replica to see the run RUNNING with node start finished",
            lambda: next((r for r in _runs(second) if r["runId"] == run_id and "start" in r.get("nodes", {})), None),
        )
        assert seen["status"] == "RUN_STATUS_RUNNING", json.dumps(seen)
        assert seen["nodes"]["start"]["status"] == "NODE_STATUS_SUCCEEDED"
        # Watched from the replica that does not run it: it follows the shared record to the end.
        with grpc.insecure_channel(f"127.0.0.1:{second.grpc_port}") as channel:
            stub = execution_pb2_grpc.WorkflowServiceStub(channel)
            stream = stub.Watch(execution_pb2.WatchRequest(run_id=run_id), timeout=30)
            first_event = next(stream)
            assert first_event.node_finished.node_id == "start"
            (flow / "go").write_text("")
            rest = list(stream)
        assert [e.WhichOneof("event") for e in rest] == ["node_finished", "finished"]
        assert rest[0].node_finished.node_id == "wait" and rest[1].finished.status == execution_pb2.RUN_STATUS_SUCCEEDED
    finally:
        first.close()
        second.close()


async def test_nats_msg_id_makes_a_redelivered_message_answer_the_first_result(tmp_path: Path, js: JetStreamNatsServer):
    flow = _flow(tmp_path, js, {"count": COUNT}, name="queue-flow")
    async with serving(flow) as first, serving(flow) as second:
        await asyncio.wait_for(first.queues.subscribed.wait(), 10)
        await asyncio.wait_for(second.queues.subscribed.wait(), 10)
        client = await nats.connect(js.url, token=js.token)
        try:
            payload = json.dumps({"dir": str(flow), "n": 1}).encode()
            replies = []
            for _ in range(4):  # the queue group spreads them over both replicas
                reply = await client.request("jobs.shared", payload, timeout=10, headers={"Nats-Msg-Id": "invoice-77"})
                replies.append(json.loads(reply.data))
            assert len({r["runId"] for r in replies}) == 1
            assert replies[0]["trigger"] == "jobs" and replies[0]["output"] == {"n": 1}
            assert (flow / "count.calls").read_text() == "x"
            other = json.loads((await client.request("jobs.shared", payload, timeout=10, headers={"Nats-Msg-Id": "invoice-78"})).data)
            assert other["runId"] != replies[0]["runId"] and (flow / "count.calls").read_text() == "xx"
        finally:
            await client.close()
        listed = await first.gate.list_runs(limit=10, trigger="jobs")
        assert {r.run_id for r in listed} == {replies[0]["runId"], other["runId"]}


def test_history_nats_without_the_settings_it_needs_refuses_to_start(tmp_path: Path):
    flow = write_workflow(tmp_path / "nope", {"count": COUNT}, name="nope", config={"history": "nats"})
    server = ServerProcess.engine(flow)
    try:
        assert server.wait(30) == 1
        assert "config.history: nats needs config.nats_url and secrets.nats.token" in server.output()
    finally:
        server.close()
