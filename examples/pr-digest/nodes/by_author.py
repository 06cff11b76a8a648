"""Open pull requests per author, most first."""

import collections


async def run(ctx, input):
    counts = collections.Counter(pr["author"] for pr in input["pulls"])
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return {"total": sum(counts.values()), "authors": [{"author": a, "open": n} for a, n in ranked]}
