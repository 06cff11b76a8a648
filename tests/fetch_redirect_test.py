"""`ctx.fetch` credentials stay on the service's origin: a real `python -m engine`
process, a local service that redirects, and a second local server (another
origin) recording what reaches it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp import web

from tests.fake_services import serve
from tests.serve_harness import ServerProcess, post_json
from tests.support import write_workflow

pytestmark = pytest.mark.timeout(90)

TOKEN = "ghp_RedirectToken0123456789"
API_KEY = "sk_live_RedirectApiKey987"
CREDENTIAL_HEADERS = ("Authorization", "X-API-Key")

FETCH = """
async def run(ctx, input):
    response = await ctx.fetch(input["service"], input["path"])
    return {"status": response.status, "url": response.url, "body": await response.json()}
"""


def recording(seen: list[dict], name: str):
    """A handler recording each request's credential headers; 401 without one, as an API answers."""

    async def handle(request: web.Request) -> web.Response:
        got = {h: request.headers[h] for h in CREDENTIAL_HEADERS if h in request.headers}
        seen.append({"server": name, "path": request.path, **got})
        if not got:
            return web.json_response({"message": "Requires authentication"}, status=401)
        return web.json_response({"server": name, "path": request.path, "authenticated": True})

    return handle


def other_origin(seen: list[dict]) -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recording(seen, "other"))
    return app


def redirecting_service(seen: list[dict], other: str) -> web.Application:
    """The service: /elsewhere redirects to another origin, /here to a path of its own."""

    async def elsewhere(request: web.Request) -> web.Response:
        raise web.HTTPFound(other + "/collect")

    async def here(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("/landing")

    app = web.Application()
    app.router.add_get("/elsewhere", elsewhere)
    app.router.add_get("/here", here)
    app.router.add_route("*", "/{tail:.*}", recording(seen, "service"))
    return app


@pytest.mark.parametrize("service, secret", [("github", TOKEN), ("stripe", API_KEY)])
async def test_injected_credentials_never_follow_a_redirect_to_another_origin(tmp_path: Path, service: str, secret: str):
    seen: list[dict] = []
    async with serve(other_origin(seen)) as other, serve(redirecting_service(seen, other)) as base:
        flow = write_workflow(
            tmp_path / "flow", {"call": FETCH},
            config={"services": {"github": {"base_url": base}, "stripe": {"base_url": base}}},
            secrets={"github": {"token": TOKEN}, "stripe": {"api_key": API_KEY}},
        )  # fmt: skip
        server = ServerProcess.engine(flow, f"--allow-read={flow}", "--allow-net")
        try:
            await asyncio.to_thread(server.wait_ready)
            away = await asyncio.to_thread(post_json, server.url + "/run", {"service": service, "path": "/elsewhere"})
            home = await asyncio.to_thread(post_json, server.url + "/run", {"service": service, "path": "/here"})
        finally:
            server.close()

    # The other origin got the redirected request, without the service's credentials; the user
    # sees what it answered (its 401) and where the request ended up.
    status, body = away
    assert status == 200, body
    assert body["output"]["status"] == 401 and body["output"]["url"] == f"{other}/collect"
    at_other = [r for r in seen if r["server"] == "other"]
    assert at_other == [{"server": "other", "path": "/collect"}]
    # A redirect within the service's origin keeps them.
    status, body = home
    assert status == 200 and body["output"]["status"] == 200 and body["output"]["body"]["authenticated"], body
    landing = [r for r in seen if r["path"] == "/landing"]
    assert landing and all(secret in r.get("Authorization", "") + r.get("X-API-Key", "") for r in landing)
