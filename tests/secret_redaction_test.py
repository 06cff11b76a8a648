"""Secrets never reach what a user sees of a run: a real `python -m engine`
process, its HTTP answers and the log lines it prints."""

from __future__ import annotations

import base64
import json
import os
import textwrap
from pathlib import Path

import pytest

from tests.serve_harness import ServerProcess, post_json
from tests.support import write_workflow

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


def _pem() -> str:
    """A PEM-shaped private key: 64-character base64 lines between the armour."""
    body = base64.b64encode(os.urandom(600)).decode()
    return "-----BEGIN PRIVATE KEY-----\n" + "\n".join(textwrap.wrap(body, 64)) + "\n-----END PRIVATE KEY-----\n"


LOGS_SECRETS = '''
async def run(ctx, input):
    password, key = ctx.secrets["db"]["password"], ctx.secrets["tls"]["key"]
    ctx.log.info("connecting", password=password, user="ada")
    ctx.log.warn("loading key", key=key, retry={"password": password})
    second = key.splitlines()[1]
    raise ValueError(f"bad key line {second!r}")
'''


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_secrets_with_characters_json_escapes_never_reach_logs_or_errors(tmp_path: Path, log_format: str):
    password, key = 'pa"ss\\wörd\nnext-line-of-it', _pem()
    flow = write_workflow(tmp_path / "flow", {"leak": LOGS_SECRETS},
                          secrets={"db": {"password": password}, "tls": {"key": key}})  # fmt: skip
    server = _serve(flow, "--log-format", log_format)
    try:
        status, body = post_json(server.url + "/run", {})
        output = server.output()
    finally:
        server.close()
    assert status == 500 and body["status"] == "RUN_STATUS_FAILED", body
    shown = output + json.dumps(body)
    assert "connecting" in output and "loading key" in output and "ada" in output
    pieces = [password, "pa\\\"ss", "wörd", "w\\u00f6rd", "next-line-of-it", *[line for line in key.splitlines() if len(line) >= 8]]
    for piece in pieces:
        assert piece not in shown, f"{piece!r} leaked:\n{shown}"
    assert body["nodes"]["leak"]["error"].startswith("ValueError: bad key line '***'"), body
