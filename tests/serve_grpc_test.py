"""The gRPC server through real sockets: WorkflowService/Run, health, the run cap, draining."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from engine.values import result_to_dict
from proto.pipedreamer.v1 import execution_pb2, execution_pb2_grpc
from tests.serve_harness import serving
from tests.support import wait_for_async, write_workflow

NODES = {
    "work": """
        import asyncio

        async def run(ctx, input):
            if isinstance(input, dict) and input.get("fail"):
                raise ValueError("asked to fail")
            if isinstance(input, dict):
                await asyncio.sleep(input.get("sleep", 0))
            return {"got": input}
    """,
}


@pytest.fixture
def workflow(tmp_path: Path) -> Path:
    return write_workflow(tmp_path / "flow", NODES)


def _request(value, trigger: str = "") -> execution_pb2.RunRequest:
    message = struct_pb2.Value()
    if isinstance(value, dict):
        message.struct_value.update(value)
    elif isinstance(value, list):
        message.list_value.extend(value)
    else:
        message.string_value = value
    return execution_pb2.RunRequest(input=message, trigger=trigger)


async def test_run_returns_the_execution_result(workflow: Path):
    async with serving(workflow) as server, grpc.aio.insecure_channel(server.grpc_address) as channel:
        stub = execution_pb2_grpc.WorkflowServiceStub(channel)
        result = await stub.Run(_request({"n": 1, "tags": ["a"]}, trigger="from-grpc"))
        assert result.status == execution_pb2.RUN_STATUS_SUCCEEDED
        assert result.trigger == "from-grpc"
        assert result_to_dict(result)["output"] == {"got": {"n": 1, "tags": ["a"]}}
        assert result.nodes["work"].status == execution_pb2.NODE_STATUS_SUCCEEDED
        empty = await stub.Run(execution_pb2.RunRequest())
        assert result_to_dict(empty)["output"] == {"got": {}}
        listed = await stub.Run(_request(["x", 2]))
        assert result_to_dict(listed)["output"] == {"got": ["x", 2]}


async def test_a_failed_run_is_an_ok_call_with_a_failed_result(workflow: Path):
    async with serving(workflow) as server, grpc.aio.insecure_channel(server.grpc_address) as channel:
        result = await execution_pb2_grpc.WorkflowServiceStub(channel).Run(_request({"fail": True}))
        assert result.status == execution_pb2.RUN_STATUS_FAILED
        assert "asked to fail" in result.nodes["work"].error


async def test_health_is_serving_then_not_serving_while_draining(workflow: Path):
    async with serving(workflow) as server, grpc.aio.insecure_channel(server.grpc_address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        stub = execution_pb2_grpc.WorkflowServiceStub(channel)
        for service in ("", "pipedreamer.v1.WorkflowService"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        slow = asyncio.ensure_future(stub.Run(_request({"sleep": 0.5})))
        await wait_for_async("a run in flight", lambda: server.gate.in_flight == 1)
        shutdown = asyncio.create_task(server.shutdown(timeout=5))

        async def not_serving() -> bool:
            reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
            return reply.status == health_pb2.HealthCheckResponse.NOT_SERVING

        await wait_for_async("health NOT_SERVING while draining", not_serving)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Run(_request({}))
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in refused.value.details()
        assert (await slow).status == execution_pb2.RUN_STATUS_SUCCEEDED
        await shutdown


async def test_runs_past_the_cap_are_resource_exhausted(workflow: Path):
    async with serving(workflow, max_concurrent_runs=1) as server, grpc.aio.insecure_channel(server.grpc_address) as channel:
        stub = execution_pb2_grpc.WorkflowServiceStub(channel)
        slow = asyncio.ensure_future(stub.Run(_request({"sleep": 0.4})))
        await wait_for_async("a run in flight", lambda: server.gate.in_flight == 1)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Run(_request({}))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "the limit is 1 (--max-concurrent-runs)" in refused.value.details()
        assert (await slow).status == execution_pb2.RUN_STATUS_SUCCEEDED
        assert (await stub.Run(_request({}))).status == execution_pb2.RUN_STATUS_SUCCEEDED


async def test_http_and_grpc_share_one_run_cap(workflow: Path):
    import aiohttp

    async with serving(workflow, max_concurrent_runs=1) as server, grpc.aio.insecure_channel(server.grpc_address) as channel:
        stub = execution_pb2_grpc.WorkflowServiceStub(channel)
        slow = asyncio.ensure_future(stub.Run(_request({"sleep": 0.4})))
        await wait_for_async("a run in flight", lambda: server.gate.in_flight == 1)
        async with aiohttp.ClientSession() as session, session.post(server.http_address + "/run", json={}) as response:
            assert response.status == 429
        await slow


async def test_a_message_over_the_body_limit_is_refused(workflow: Path):
    from engine.serve.options import HttpOptions

    async with serving(workflow, http=HttpOptions(max_body=2048)) as server, grpc.aio.insecure_channel(server.grpc_address) as channel:
        stub = execution_pb2_grpc.WorkflowServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Run(_request({"blob": "x" * 5000}))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (await stub.Run(_request({}))).status == execution_pb2.RUN_STATUS_SUCCEEDED


def _nested_request(depth: int) -> execution_pb2.RunRequest:
    """A RunRequest whose input is `depth` lists deep, built without recursion."""
    request = execution_pb2.RunRequest()
    value = request.input
    for _ in range(depth):
        value = value.list_value.values.add()
    value.null_value = struct_pb2.NULL_VALUE
    return request


async def test_an_input_nested_too_deeply_is_invalid_argument_and_the_server_keeps_serving(workflow: Path, capfd):
    async with serving(workflow) as server, grpc.aio.insecure_channel(server.grpc_address) as channel:
        stub = execution_pb2_grpc.WorkflowServiceStub(channel)
        ok = await stub.Run(_nested_request(30))
        assert ok.status == execution_pb2.RUN_STATUS_SUCCEEDED
        for depth in (100, 5000):
            # protobuf itself refuses to decode it (upb's depth limit), before any handler runs.
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Run(_nested_request(depth))
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert refused.value.details() == "invalid RunRequest: input nested too deeply"
        garbage = channel.unary_unary("/pipedreamer.v1.WorkflowService/Run")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await garbage(b"\x0a\xff\xff\xff")  # a length past the end of the message
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.details().startswith("invalid RunRequest: ")
        assert (await stub.Run(_request({"n": 1}))).status == execution_pb2.RUN_STATUS_SUCCEEDED
        text = server.metrics.render().decode()
        assert 'pipedreamer_runs_rejected_total{reason="bad_request",workflow="test-flow"} 3.0' in text
    assert "Traceback" not in capfd.readouterr().err
