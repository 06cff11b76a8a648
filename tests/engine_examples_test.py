"""The example workflows end to end over real sockets: local aiohttp servers play GitHub, Hacker News and Slack."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
import yaml

from engine.values import result_to_json
from engine.runtime import Engine
from engine.values import value_to_python
from proto.pipedreamer.v1 import execution_pb2
from tests import fake_services
from tests.fake_services import serve

pytestmark = pytest.mark.timeout(60)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TOKEN = "ghp_ExampleToken42"


def copy_example(name: str, tmp_path: Path, base_urls: dict[str, str]) -> Path:
    """The example in a temp dir, its services pointed at the local fakes."""
    directory = tmp_path / name
    shutil.copytree(EXAMPLES / name, directory)
    spec_file = directory / "workflow.yaml"
    document = yaml.safe_load(spec_file.read_text())
    document.setdefault("config", {})["services"] = {svc: {"base_url": url} for svc, url in base_urls.items()}
    spec_file.write_text(yaml.safe_dump(document, sort_keys=False))
    return directory


async def test_hn_digest(tmp_path):
    requests: list[str] = []
    async with serve(fake_services.hacker_news(requests)) as base:
        engine = await Engine.start(copy_example("hn-digest", tmp_path, {"hacker-news": base}),
                                    secrets_mount=None, log_stream=io.StringIO())
        result = await engine.run({})
        await engine.close()
    assert result.status == execution_pb2.RUN_STATUS_SUCCEEDED, result_to_json(result)
    output = value_to_python(result.output)
    assert output["count"] == 2
    assert output["text"].splitlines()[1:3] == [
        "1. Big news (500 points, 10 comments) https://e.com/1",
        "2. Good news (150 points, 1 comments) https://news.ycombinator.com/item?id=3",
    ]
    assert "Most discussed: Small news (99 comments)" in output["text"]
    assert sorted(requests) == sorted(["/v0/topstories.json"] + [f"/v0/item/{i}.json" for i in (3, 1, 2, 404)])


async def test_pr_digest(tmp_path):
    requests: list[dict] = []
    async with serve(fake_services.github(requests)) as base:
        directory = copy_example("pr-digest", tmp_path, {"github": base})
        (directory / ".secrets.yaml").write_text(f"github:\n  token: {TOKEN}\n")
        engine = await Engine.start(directory, secrets_mount=None, log_stream=io.StringIO())
        result = await engine.run({"now": "2026-02-01T00:00:00Z"})
        await engine.close()
    assert result.status == execution_pb2.RUN_STATUS_SUCCEEDED, result_to_json(result)
    output = value_to_python(result.output)
    assert output == {
        "text": "2 open pull requests.\nOpen 7+ days:\n• octo/alpha#1 Old fix (31 days)\nMost open: ada (1), bob (1)",
        "open": 2,
        "stale": 1,
    }
    assert {r["auth"] for r in requests} == {f"Bearer {TOKEN}"}
    assert sorted(r["path"] for r in requests) == [
        "/repos/octo/alpha/pulls?state=open&per_page=100",
        "/repos/octo/beta/pulls?state=open&per_page=100",
    ]
    # Fan-out then fan-in: summary started after both branches finished.
    nodes = result.nodes
    summary_start = nodes["summary"].started_at.ToNanoseconds()
    assert all(summary_start >= nodes[n].started_at.ToNanoseconds() for n in ("stale", "by-author"))


async def test_github_digest_posts_to_the_webhook(tmp_path):
    requests: list[dict] = []
    async with serve(fake_services.github(requests)) as base:
        directory = copy_example("github-digest", tmp_path, {"github": base, "slack": base})
        (directory / ".secrets.yaml").write_text(f"github:\n  token: {TOKEN}\nslack:\n  webhook_path: /hooks/digest\n")
        engine = await Engine.start(directory, secrets_mount=None, log_stream=io.StringIO())
        result = await engine.run({})
        await engine.close()
    assert result.status == execution_pb2.RUN_STATUS_SUCCEEDED, result_to_json(result)
    assert value_to_python(result.output)["sent"] is True
    posted = [r for r in requests if r["path"] == "/hooks/digest"]
    assert posted and "octo/alpha" in posted[0]["json"]["text"]


async def test_upstream_outage_fails_the_run_after_retries(tmp_path):
    async with serve(fake_services.unavailable()) as base:
        directory = copy_example("pr-digest", tmp_path, {"github": base})
        engine = await Engine.start(directory, secrets_mount=None, log_stream=io.StringIO())
        result = await engine.run({})
        await engine.close()
    node = result.nodes["open-pulls"]
    assert result.status == execution_pb2.RUN_STATUS_FAILED
    assert node.attempts == 3  # retries: 2 in the example's config
    assert "GitHub answered 503" in node.error
    assert {result.nodes[n].status for n in ("stale", "by-author", "summary")} == {execution_pb2.NODE_STATUS_SKIPPED}
