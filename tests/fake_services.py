"""Local stand-ins for third-party APIs (GitHub, Hacker News, Slack): aiohttp apps served on loopback."""

from __future__ import annotations

import contextlib
from typing import AsyncIterator

from aiohttp import web


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """Serves `app` on a free loopback port; yields its base URL (http://127.0.0.1:PORT)."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def hacker_news(requests: list[str]) -> web.Application:
    """/v0/topstories.json and /v0/item/{id}.json over three stories (404 → null, as HN does)."""
    items = {
        1: {"id": 1, "type": "story", "title": "Big news", "url": "https://e.com/1", "score": 500, "by": "a", "descendants": 10},
        2: {"id": 2, "type": "story", "title": "Small news", "url": "https://e.com/2", "score": 50, "by": "b", "descendants": 99},
        3: {"id": 3, "type": "story", "title": "Good news", "score": 150, "by": "c", "descendants": 1},
    }

    async def top(request: web.Request) -> web.Response:
        requests.append(request.path)
        return web.json_response([3, 1, 2, 404])

    async def item(request: web.Request) -> web.Response:
        requests.append(request.path)
        return web.json_response(items.get(int(request.match_info["id"])))

    app = web.Application()
    app.router.add_get("/v0/topstories.json", top)
    app.router.add_get("/v0/item/{id}.json", item)
    return app


def github(requests: list[dict]) -> web.Application:
    """/repos/{owner}/{repo}/pulls, /user/repos, and a Slack-style webhook at /hooks/digest."""
    pulls = {
        "octo/alpha": [{"number": 1, "title": "Old fix", "user": {"login": "ada"}, "draft": False,
                        "created_at": "2026-01-01T00:00:00Z", "html_url": "https://gh/octo/alpha/pull/1"}],
        "octo/beta": [{"number": 7, "title": "New feature", "user": {"login": "bob"}, "draft": False,
                       "created_at": "2026-01-30T00:00:00Z", "html_url": "https://gh/octo/beta/pull/7"}],
    }

    def record(request: web.Request) -> None:
        requests.append({"path": request.path_qs, "auth": request.headers.get("Authorization")})

    async def repo_pulls(request: web.Request) -> web.Response:
        record(request)
        return web.json_response(pulls.get(f"{request.match_info['owner']}/{request.match_info['repo']}", []))

    async def user_repos(request: web.Request) -> web.Response:
        record(request)
        return web.json_response([{"full_name": "octo/alpha", "stargazers_count": 3, "open_issues_count": 1, "pushed_at": "x"}])

    async def webhook(request: web.Request) -> web.Response:
        requests.append({"path": request.path, "json": await request.json()})
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/repos/{owner}/{repo}/pulls", repo_pulls)
    app.router.add_get("/user/repos", user_repos)
    app.router.add_post("/hooks/digest", webhook)
    return app


def echo(seen: list[dict]) -> web.Application:
    """Echoes method, path, auth headers and body as JSON; /missing answers 404."""

    async def answer(request: web.Request) -> web.Response:
        body = await request.text()
        seen.append({"method": request.method, "path": request.path_qs, "headers": dict(request.headers), "body": body})
        return web.json_response({"path": request.path_qs, "auth": request.headers.get("Authorization"),
                                  "key": request.headers.get("X-API-Key"), "body": body},
                                 headers={"X-RateLimit-Remaining": "4999"})

    async def missing(request: web.Request) -> web.Response:
        return web.json_response({"message": "Not Found"}, status=404)

    app = web.Application()
    app.router.add_route("*", "/missing", missing)
    app.router.add_route("*", "/{tail:.*}", answer)
    return app


def unavailable() -> web.Application:
    """Answers 503 to everything."""

    async def down(request: web.Request) -> web.Response:
        return web.json_response({"message": "unavailable"}, status=503)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", down)
    return app
