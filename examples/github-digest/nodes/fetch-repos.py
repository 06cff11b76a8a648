"""Fetches the user's repositories from GitHub, most recently pushed first."""


async def run(ctx, input):
    response = await ctx.fetch("github", "/user/repos?sort=pushed&per_page=50")
    if not response.ok:
        raise RuntimeError(f"GitHub answered {response.status}")
    repos = await response.json()
    ctx.log.info(f"fetched {len(repos)} repositories")
    return {
        "trigger": (input or {}).get("trigger", "manual"),
        "repos": [
            {
                "name": repo["full_name"],
                "stars": repo.get("stargazers_count", 0),
                "open_issues": repo.get("open_issues_count", 0),
                "pushed_at": repo.get("pushed_at"),
            }
            for repo in repos
        ],
    }
