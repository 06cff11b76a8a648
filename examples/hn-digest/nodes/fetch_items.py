"""Fetches every story concurrently; stories that vanished (null) or failed are dropped."""

import asyncio


async def run(ctx, input):
    async def item(story_id):
        response = await ctx.fetch("hacker-news", f"/v0/item/{story_id}.json")
        if not response.ok:
            ctx.log.warn(f"item {story_id}: HTTP {response.status}, skipped")
            return None
        return await response.json()

    items = await asyncio.gather(*(item(i) for i in input["ids"]))
    stories = [
        {
            "id": it["id"],
            "title": it.get("title", ""),
            "url": it.get("url") or f"https://news.ycombinator.com/item?id={it['id']}",
            "score": it.get("score", 0),
            "by": it.get("by", ""),
            "comments": it.get("descendants", 0),
        }
        for it in items
        if it and it.get("type", "story") == "story" and not it.get("dead") and not it.get("deleted")
    ]
    return {"stories": stories}
