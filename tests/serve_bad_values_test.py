"""Values JSON or a result cannot carry (lone surrogates, numbers past a 64-bit
float) are bad input or a failed node, never a lost result: one real
`python -m engine` process, asked over HTTP, gRPC and a real nats-server."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Iterator

import grpc
import nats
import pytest
from google.protobuf import struct_pb2

from proto.pipedreamer.v1 import execution_pb2, execution_pb2_grpc
from tests.serve_harness import NatsServer, ServerProcess, post_json
from tests.support import write_workflow

pytestmark = pytest.mark.timeout(120)

SUBJECT = "jobs.values"
ECHO = """
async def run(ctx, input):
    make = input.get("make") if isinstance(input, dict) else None
    if make == "surrogate":
        return {"text": "half a pair: " + chr(0xD800)}
    if make == "huge":
        return {"n": 10 ** 400}
    if make == "raise":
        raise ValueError("cannot read " + chr(0xDC00))
    return input
"""
TOO_LARGE = "is too large for a 64-bit float (the limit is about 1.8e308)"


@pytest.fixture(scope="module")
def nats_server() -> Iterator[NatsServer]:
    server = NatsServer()
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, nats_server: NatsServer) -> Iterator[ServerProcess]:
    flow = write_workflow(
        tmp_path_factory.mktemp("values") / "flow", {"echo": ECHO},
        triggers=[{"type": "manual"}, {"type": "queue", "subject": SUBJECT}],
        config={"nats_url": nats_server.url}, secrets={"nats": {"token": nats_server.token}},
    )  # fmt: skip
    server = ServerProcess.engine(flow, f"--allow-read={flow}", f"--allow-net=127.0.0.1:{nats_server.port}")
    try:
        server.wait_ready()
        deadline = time.monotonic() + 20
        while "subscribed to" not in server.output():
            assert time.monotonic() < deadline, f"engine never subscribed to NATS:\n{server.output()}"
            time.sleep(0.05)
        yield server
    finally:
        server.close()


def _post_raw(engine: ServerProcess, body: str) -> tuple[int, dict]:
    return post_json(engine.url + "/run", data=body.encode())


@pytest.mark.parametrize(
    "body, message",
    [
        ('{"text": "\\ud800"}', "input.text contains a lone surrogate U+D800 (not valid Unicode)"),
        ('{"list": ["ok", {"\\udfff": 1}]}', "a key of input.list[1] contains a lone surrogate U+DFFF (not valid Unicode)"),
        ('{"n": 1e400}', f"number 1e400 {TOO_LARGE}"),
        ('[-1.5e999]', f"number -1.5e999 {TOO_LARGE}"),
        ('{"n": 1' + "0" * 400 + "}", f"number 100000000000…000000 (401 characters) {TOO_LARGE}"),
    ],
    ids=["lone-surrogate", "surrogate-in-a-key", "1e400", "-1.5e999", "401-digit-integer"],
)
def test_http_input_a_result_could_not_carry_is_400_naming_the_problem(engine: ServerProcess, body: str, message: str):
    status, answer = _post_raw(engine, body)
    assert (status, answer) == (400, {"error": f"invalid JSON body: {message}"})


def test_a_valid_surrogate_pair_and_large_finite_numbers_are_fine(engine: ServerProcess):
    status, answer = _post_raw(engine, '{"emoji": "\\ud83d\\ude00", "big": 1e300, "int": 123456789012345678901234567890}')
    assert status == 200, answer
    assert answer["output"] == {"emoji": "😀", "big": 1e300, "int": 1.2345678901234568e29}


@pytest.mark.parametrize(
    "make, error",
    [
        ("surrogate", "output of node echo is not JSON-serialisable: output.text contains a lone surrogate U+D800 (not valid Unicode)"),
        ("huge", "output of node echo is not JSON-serialisable: output.n is an integer too large for a 64-bit float"),
        ("raise", "ValueError: cannot read \ufffd (at nodes/echo.py:9)"),
    ],
)
def test_a_node_producing_such_a_value_fails_with_a_message_and_the_result_is_kept(engine: ServerProcess, make: str, error: str):
    status, answer = post_json(engine.url + "/run", {"make": make})
    assert status == 500 and answer["status"] == "RUN_STATUS_FAILED", answer
    assert answer["nodes"]["echo"]["status"] == "NODE_STATUS_FAILED"
    assert answer["nodes"]["echo"]["error"] == error
    assert answer["error"] == f"node echo failed: {error}"
    status, after = post_json(engine.url + "/run", {"after": make})
    assert status == 200 and after["output"] == {"after": make}, after


@pytest.mark.parametrize("number, shown", [(float("inf"), "inf"), (float("nan"), "nan")])
def test_grpc_input_that_is_not_json_is_invalid_argument(engine: ServerProcess, number: float, shown: str):
    value = struct_pb2.Value()
    value.struct_value.update({"n": number})
    with grpc.insecure_channel(f"127.0.0.1:{engine.grpc_port}") as channel:
        with pytest.raises(grpc.RpcError) as raised:
            execution_pb2_grpc.WorkflowServiceStub(channel).Run(execution_pb2.RunRequest(input=value), timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details() == f"invalid input: input.n is {shown} (not a finite number)"


async def test_nats_payload_a_result_could_not_carry_gets_a_failed_result_naming_it(engine: ServerProcess, nats_server: NatsServer):
    client = await nats.connect(nats_server.url, token=nats_server.token)
    try:
        reply = await client.request(SUBJECT, b'{"text": "\\ud800"}', timeout=20)
        result = json.loads(reply.data)
        assert result["status"] == "RUN_STATUS_FAILED"
        assert result["error"] == "invalid JSON payload: input.text contains a lone surrogate U+D800 (not valid Unicode)"
        reply = await client.request(SUBJECT, b'{"n": 1e400}', timeout=20)
        assert json.loads(reply.data)["error"] == f"invalid JSON payload: number 1e400 {TOO_LARGE}"
        reply = await client.request(SUBJECT, json.dumps({"make": "surrogate"}).encode(), timeout=20)
        result = json.loads(reply.data)
        assert result["status"] == "RUN_STATUS_FAILED" and "output.text contains a lone surrogate" in result["nodes"]["echo"]["error"]
    finally:
        await asyncio.wait_for(client.close(), 10)
