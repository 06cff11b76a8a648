"""Non-draft pull requests open longer than `stale_days`, oldest first."""

import datetime


def _parse(stamp):
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


async def run(ctx, input):
    days = int(ctx.config.get("stale_days", 7))
    now = _parse(input["now"])
    stale = []
    for pr in input["pulls"]:
        age = (now - _parse(pr["created_at"])).days
        if not pr["draft"] and age >= days:
            stale.append({"repo": pr["repo"], "number": pr["number"], "title": pr["title"], "age_days": age, "url": pr["url"]})
    stale.sort(key=lambda pr: (-pr["age_days"], pr["repo"], pr["number"]))
    return {"stale_days": days, "stale": stale}
