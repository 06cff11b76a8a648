"""Keeps stories at or above `min_score`, best first, at most `top_n`."""


async def run(ctx, input):
    min_score = int(ctx.config.get("min_score", 0))
    top_n = int(ctx.config.get("top_n", 5))
    kept = [s for s in input["stories"] if s["score"] >= min_score]
    kept.sort(key=lambda s: (-s["score"], s["id"]))
    return {"top": kept[:top_n]}
