"""Fetches the open pull requests of every configured repository, concurrently."""

import asyncio
import datetime


async def run(ctx, input):
    input = input or {}
    repos = input.get("repos") or ctx.config.get("repos", [])
    # `now` can be pinned by the trigger (and by fixtures) so "stale" is reproducible.
    now = input.get("now") or datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")

    async def pulls(repo):
        response = await ctx.fetch("github", f"/repos/{repo}/pulls?state=open&per_page=100")
        if not response.ok:
            raise RuntimeError(f"GitHub answered {response.status} for {repo}")
        return [
            {
                "repo": repo,
                "number": pr["number"],
                "title": pr["title"],
                "author": (pr.get("user") or {}).get("login", "ghost"),
                "draft": bool(pr.get("draft")),
                "created_at": pr["created_at"],
                "url": pr.get("html_url", ""),
            }
            for pr in await response.json()
        ]

    found = await asyncio.gather(*(pulls(repo) for repo in repos))
    everything = [pr for repo_pulls in found for pr in repo_pulls]
    ctx.log.info(f"{len(everything)} open pull requests in {len(repos)} repositories")
    return {"now": now, "pulls": everything}
