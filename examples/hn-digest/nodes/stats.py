"""Summary numbers over every fetched story."""


async def run(ctx, input):
    stories = input["stories"]
    if not stories:
        return {"stories": 0, "average_score": 0, "most_discussed": None}
    busiest = max(stories, key=lambda s: (s["comments"], -s["id"]))
    return {
        "stories": len(stories),
        "average_score": round(sum(s["score"] for s in stories) / len(stories), 1),
        "most_discussed": {"title": busiest["title"], "comments": busiest["comments"]},
    }
