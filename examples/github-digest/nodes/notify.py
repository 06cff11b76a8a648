"""Posts the digest to the Slack webhook named in secrets (slack.webhook_path)."""


async def run(ctx, input):
    webhook = ctx.secrets.get("slack", {}).get("webhook_path")
    if not webhook:
        ctx.log.warn("no slack.webhook_path secret; digest not sent")
        return {"sent": False, "summary": input["summary"]}
    response = await ctx.fetch("slack", webhook, method="POST", json={"text": input["summary"]})
    if not response.ok:
        raise RuntimeError(f"Slack answered {response.status}")
    return {"sent": True, "summary": input["summary"]}
