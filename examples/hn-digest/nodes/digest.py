"""Joins the ranking and the stats into the digest text."""


async def run(ctx, input):
    top, stats = input["rank"]["top"], input["stats"]
    if not top:
        return {"text": "Nothing on Hacker News cleared the bar today.", "count": 0}
    lines = [f"{i}. {s['title']} ({s['score']} points, {s['comments']} comments) {s['url']}" for i, s in enumerate(top, 1)]
    footer = f"{stats['stories']} stories looked at, average score {stats['average_score']}."
    if stats["most_discussed"]:
        footer += f" Most discussed: {stats['most_discussed']['title']} ({stats['most_discussed']['comments']} comments)."
    return {"text": "Top stories on Hacker News:\n" + "\n".join(lines) + "\n" + footer, "count": len(top)}
