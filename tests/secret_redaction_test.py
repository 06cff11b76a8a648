"""Secrets never reach what a user sees of a run: a real `python -m engine`
process, its HTTP answers and the log lines it prints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.serve_harness import ServerProcess, post_json, write_workflow

pytestmark = pytest.mark.timeout(90)


def _serve(flow: Path, *extra: str) -> ServerProcess:
    server = ServerProcess.engine(flow, f"--allow-read={flow}", *extra)
    server.wait_ready()
    return server


def test_a_numeric_secret_returned_by_a_node_is_redacted_in_its_node_output(tmp_path: Path):
    flow = write_workflow(
        tmp_path / "flow",
        {"leak": "async def run(ctx, input):\n    return ctx.secrets['door']['pin']\n"},
        secrets={"door": {"pin": 4821}},
    )
    server = _serve(flow)
    try:
        status, body = post_json(server.url + "/run", {})
    finally:
        server.close()
    assert status == 200, body
    assert body["output"] == "***"
    assert body["nodes"]["leak"]["output"] == "***"
    assert "4821" not in json.dumps(body)
