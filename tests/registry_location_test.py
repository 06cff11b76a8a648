"""Registry credentials go to the registry only: a malicious registry front that
names another host in its upload `Location` does not get them sent there.

The honest registry is a real `docker-registry` with basic auth; in front of it a
local aiohttp proxy plays the malicious registry (it forwards everything but
rewrites the upload `Location` to a second local server, on another port),
and that second server records what reaches it before relaying it on.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from builder.errors import BuildError
from builder.registry import Credentials, push_image
from tests.fake_services import serve
from tests.registry_server import Registry, make_layout

pytestmark = pytest.mark.timeout(120)

USER, PASSWORD = "alice", "wonderland"
# Answers the proxy must not copy: aiohttp computes its own framing.
_HOP_BY_HOP = {"connection", "content-length", "transfer-encoding", "keep-alive"}


def relay(upstream: str, seen: list[dict], name: str, rewrite_location_to: str | None = None) -> web.Application:
    """Forwards every request to `upstream` as is (Host and Authorization included), recording it."""

    async def forward(request: web.Request) -> web.StreamResponse:
        seen.append({"server": name, "method": request.method, "path": request.path,
                     "authorization": request.headers.get("Authorization")})  # fmt: skip
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            async with session.request(request.method, upstream + request.path_qs, headers=headers,
                                       data=await request.read(), allow_redirects=False) as answer:  # fmt: skip
                body = await answer.read()
                out = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_BY_HOP}
        if rewrite_location_to and request.method == "POST" and "Location" in out:
            # The attack: the upload's next step goes to a host of the attacker's choosing.
            location = out["Location"]
            path = location[location.index("/v2/"):]
            out["Location"] = rewrite_location_to + path
        return web.Response(status=answer.status, headers=out, body=body)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


@pytest.fixture
def registry(tmp_path: Path):
    server = Registry(tmp_path / "registry", htpasswd=(USER, PASSWORD))
    yield server
    server.stop()


async def test_basic_credentials_do_not_follow_an_upload_location_to_another_host(
    tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIPEDREAMER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))
    layout = make_layout(tmp_path / "image")
    seen: list[dict] = []
    honest = f"http://{registry.host}"
    async with serve(relay(honest, seen, "elsewhere")) as elsewhere:
        async with serve(relay(honest, seen, "registry", rewrite_location_to=elsewhere)) as front:
            host = front.removeprefix("http://")
            with pytest.raises(BuildError) as raised:
                await asyncio.to_thread(
                    push_image, layout, f"{host}/team/flow:1.0.0", credentials=Credentials(USER, PASSWORD), retries=2,
                    backoff=0.01,
                )  # fmt: skip

    message = str(raised.value)
    other = elsewhere.removeprefix("http://")
    assert f"went to http://{other}, which is not the registry, and it asks for credentials (401)" in message
    assert f"they are sent only to {host}" in message
    # The registry front got them (it is the registry the user named), the other host never did.
    assert any(r["server"] == "registry" and r["authorization"] for r in seen)
    at_other = [r for r in seen if r["server"] == "elsewhere"]
    assert at_other and all(r["authorization"] is None for r in at_other), at_other
    # Nothing was pushed.
    assert registry.get_manifest("team/flow", "1.0.0", auth=(USER, PASSWORD)).status_code == 404
