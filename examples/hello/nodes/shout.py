"""Upper-cases the greeting from `greet`."""


async def run(ctx, input):
    return {"greeting": input["greeting"].upper()}
