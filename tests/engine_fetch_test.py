"""ctx.fetch over real sockets: a local aiohttp server stands in for GitHub, reached through config.services.*.base_url."""

from __future__ import annotations

import asyncio
import io
import json
import socket
from pathlib import Path

import pytest

from engine.values import result_to_json
from engine.runtime import Engine
from engine.values import value_to_python
from tests.support import write_workflow
from proto.pipedreamer.v1 import execution_pb2
from tests import fake_services
from tests.fake_services import serve

pytestmark = pytest.mark.timeout(60)

TOKEN = "ghp_TestToken0123456789"
API_KEY = "sk_test_ApiKey987"


FETCH_NODE = '''
async def run(ctx, input):
    response = await ctx.fetch(input["service"], input["path"], **input.get("kwargs", {}))
    return {"status": response.status, "ok": response.ok, "body": await response.json(),
            "rate": response.headers.get("x-ratelimit-remaining"), "text_len": len(await response.text()),
            "bytes_len": len(await response.read())}
'''


def workflow(tmp_path: Path, base_url: str, secrets: str) -> Path:
    write_workflow(tmp_path, {"call": FETCH_NODE}, config={"services": {
        "github": {"base_url": base_url}, "stripe": {"base_url": base_url + "/stripe"}, "plain": {"base_url": base_url}}})
    (tmp_path / ".secrets.yaml").write_text(secrets)
    return tmp_path


async def test_bearer_token_injection_and_response_object(tmp_path):
    seen: list[dict] = []
    async with serve(fake_services.echo(seen)) as base:
        engine = await Engine.start(workflow(tmp_path, base, f"github:\n  token: {TOKEN}\n"), secrets_mount=None)
        result = await engine.run({"service": "github", "path": "/user/repos?per_page=2"})
        await engine.close()
    assert result.status == execution_pb2.RUN_STATUS_SUCCEEDED, result.error
    output = value_to_python(result.output)
    assert output["status"] == 200 and output["ok"] is True and output["rate"] == "4999"
    assert output["body"]["path"] == "/user/repos?per_page=2"
    assert output["text_len"] == output["bytes_len"] > 0
    assert seen[0]["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert output["body"]["auth"] == "Bearer ***"  # echoed back, redacted in the result
    assert TOKEN not in result_to_json(result)


async def test_api_key_injection_post_json_and_custom_headers(tmp_path):
    seen: list[dict] = []
    async with serve(fake_services.echo(seen)) as base:
        engine = await Engine.start(workflow(tmp_path, base, f"stripe:\n  api_key: {API_KEY}\n"), secrets_mount=None)
        result = await engine.run({"service": "stripe", "path": "/charges",
                                   "kwargs": {"method": "POST", "json": {"amount": 5}, "headers": {"X-Trace": "t1"}}})
        await engine.close()
    request = seen[0]
    assert request["method"] == "POST" and request["path"] == "/stripe/charges"
    assert request["headers"]["X-API-Key"] == API_KEY and request["headers"]["X-Trace"] == "t1"
    assert "Authorization" not in request["headers"]
    assert json.loads(request["body"]) == {"amount": 5}
    assert value_to_python(result.output)["body"]["key"] == "***"


async def test_no_secret_no_auth_header_and_non_2xx_is_a_response_not_an_error(tmp_path):
    seen: list[dict] = []
    async with serve(fake_services.echo(seen)) as base:
        engine = await Engine.start(workflow(tmp_path, base, ""), secrets_mount=None)
        result = await engine.run({"service": "plain", "path": "/missing"})
        await engine.close()
    output = value_to_python(result.output)
    assert output["status"] == 404 and output["ok"] is False and output["body"] == {"message": "Not Found"}


async def test_connection_refused_fails_the_node_with_a_redacted_error(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    engine = await Engine.start(workflow(tmp_path, f"http://127.0.0.1:{port}", f"github:\n  token: {TOKEN}\n"),
                                secrets_mount=None, log_stream=io.StringIO())
    result = await engine.run({"service": "github", "path": f"/x?token={TOKEN}"})
    await engine.close()
    node = result.nodes["call"]
    assert node.status == execution_pb2.NODE_STATUS_FAILED
    assert node.error.startswith("ClientConnectorError: Cannot connect to host 127.0.0.1")
    assert "(at nodes/call.py:3)" in node.error
    assert TOKEN not in result_to_json(result)


async def test_shared_session_serves_concurrent_runs(tmp_path):
    seen: list[dict] = []
    async with serve(fake_services.echo(seen)) as base:
        engine = await Engine.start(workflow(tmp_path, base, f"github:\n  token: {TOKEN}\n"), secrets_mount=None)
        results = await asyncio.gather(*(engine.run({"service": "github", "path": f"/n/{i}"}) for i in range(20)))
        session = engine.session()
        await engine.close()
    assert session.closed
    assert sorted(value_to_python(r.output)["body"]["path"] for r in results) == sorted(f"/n/{i}" for i in range(20))
