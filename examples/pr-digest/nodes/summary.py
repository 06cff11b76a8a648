"""Joins the stale list and the per-author counts into the digest text."""


async def run(ctx, input):
    stale, authors = input["stale"], input["by-author"]
    if authors["total"] == 0:
        return {"text": "No open pull requests. Nice.", "open": 0, "stale": 0}
    lines = [f"{authors['total']} open pull requests."]
    if stale["stale"]:
        lines.append(f"Open {stale['stale_days']}+ days:")
        lines += [f"• {pr['repo']}#{pr['number']} {pr['title']} ({pr['age_days']} days)" for pr in stale["stale"]]
    else:
        lines.append(f"Nothing older than {stale['stale_days']} days.")
    lines.append("Most open: " + ", ".join(f"{a['author']} ({a['open']})" for a in authors["authors"][:3]))
    return {"text": "\n".join(lines), "open": authors["total"], "stale": len(stale["stale"])}
