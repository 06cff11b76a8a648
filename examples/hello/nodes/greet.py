"""Builds a greeting for the name in the input."""


async def run(ctx, input):
    name = (input or {}).get("name", "world")
    ctx.log.info(f"greeting {name}")
    return {"greeting": f"Hello, {name}!"}
