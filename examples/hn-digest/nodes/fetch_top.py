"""Fetches the ids of the current top stories (first `candidates` of them)."""


async def run(ctx, input):
    limit = int((input or {}).get("candidates", ctx.config.get("candidates", 30)))
    response = await ctx.fetch("hacker-news", "/v0/topstories.json")
    if not response.ok:
        raise RuntimeError(f"Hacker News answered {response.status}")
    ids = await response.json()
    ctx.log.info(f"{len(ids)} top stories, keeping {limit}")
    return {"ids": ids[:limit]}
