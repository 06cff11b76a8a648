"""Turns the repository list into a short digest text."""


async def run(ctx, input):
    top_n = int(ctx.config.get("top_n", 5))
    repos = input["repos"][:top_n]
    if not repos:
        return {"summary": "No repository activity.", "count": 0}
    lines = [f"• {r['name']}: {r['stars']}★, {r['open_issues']} open issues" for r in repos]
    return {"summary": "Recently active repositories:\n" + "\n".join(lines), "count": len(repos)}
