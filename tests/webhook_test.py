"""Webhook triggers through real HTTP: deliveries signed the GitHub way and the Standard Webhooks way
(signed here with hmac, not with the engine's code), refused ones, repeats, and the engine's own checks."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from pathlib import Path

import aiohttp
import pytest

from tests.serve_harness import ServerProcess, serving
from tests.support import run_cli, wait_for_async, write_workflow

GITHUB_KEY = "gh-hook-secret-4f1b9c"
# A Standard Webhooks key as senders show it: whsec_ + base64 of the key's bytes.
STANDARD_RAW = b"standard-hook-key-bytes-0123456789"
STANDARD_KEY = "whsec_" + base64.b64encode(STANDARD_RAW).decode()

NODES = {
    "handle": """
        import asyncio

        async def run(ctx, input):
            if isinstance(input, dict) and input.get("fail"):
                raise RuntimeError("asked to fail")
            if isinstance(input, dict):
                await asyncio.sleep(input.get("sleep", 0))
            return {"got": input}
    """,
}
TRIGGERS = [
    {"type": "manual"},
    {"type": "webhook", "path": "/hooks/github", "name": "github"},
    {"type": "webhook", "path": "/hooks/billing", "name": "billing", "signature": "standard"},
    {"type": "webhook", "path": "/hooks/open", "name": "open", "signature": "none"},
]


@pytest.fixture
def flow(tmp_path: Path) -> Path:
    return write_workflow(
        tmp_path / "hooks",
        NODES,
        name="hook-flow",
        triggers=TRIGGERS,
        secrets={"webhooks": {"github": GITHUB_KEY, "billing": STANDARD_KEY}},
    )


def github_headers(body: bytes, key: str = GITHUB_KEY, delivery: str | None = None, event: str = "push") -> dict[str, str]:
    digest = hmac.new(key.encode(), body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-Hub-Signature-256": f"sha256={digest}",
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-GitHub-Event": event,
        "User-Agent": "GitHub-Hookshot/test",
    }


def standard_headers(body: bytes, *, key: bytes = STANDARD_RAW, msg_id: str | None = None, timestamp: int | None = None,
                     extra_signatures: tuple[str, ...] = ()) -> dict[str, str]:  # fmt: skip
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signed = f"{msg_id}.{stamp}.".encode() + body
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": stamp,
        "webhook-signature": " ".join((*extra_signatures, f"v1,{signature}")),
    }


async def _post(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    async with session.post(url, data=body, headers=headers) as response:
        return response.status, await response.json(content_type=None)


async def _runs(session: aiohttp.ClientSession, base: str, trigger: str) -> list[dict]:
    async with session.get(f"{base}/runs", params={"trigger": trigger}) as response:
        return (await response.json())["runs"]


async def test_a_github_signed_delivery_runs_with_its_body_and_is_recorded_under_the_trigger(flow: Path):
    body = json.dumps({"ref": "refs/heads/main", "commits": [1, 2]}).encode()
    async with serving(flow) as server, aiohttp.ClientSession() as session:
        status, result = await _post(session, server.http_address + "/hooks/github", body, github_headers(body))
        assert status == 200, result
        assert result["status"] == "RUN_STATUS_SUCCEEDED"
        assert result["trigger"] == "github"
        assert result["output"] == {"got": {"ref": "refs/heads/main", "commits": [1, 2]}}
        runs = await _runs(session, server.http_address, "github")
        assert [r["runId"] for r in runs] == [result["runId"]]


async def test_unsigned_wrongly_signed_and_malformed_github_deliveries_get_401_and_nothing_runs(flow: Path, capfd):
    body = b'{"action": "opened"}'
    async with serving(flow) as server, aiohttp.ClientSession() as session:
        url = server.http_address + "/hooks/github"
        missing = {"Content-Type": "application/json", "X-GitHub-Delivery": "d-1"}
        status, answer = await _post(session, url, body, missing)
        assert status == 401
        assert answer == {"error": "webhook github: missing X-Hub-Signature-256 header: this webhook accepts GitHub-signed deliveries only"}

        status, answer = await _post(session, url, body, github_headers(body, key="not-the-key"))
        assert status == 401
        assert "X-Hub-Signature-256 does not match the body" in answer["error"]

        tampered = github_headers(body)
        status, answer = await _post(session, url, b'{"action": "closed"}', tampered)
        assert status == 401 and "does not match" in answer["error"]

        status, answer = await _post(session, url, body, {**github_headers(body), "X-Hub-Signature-256": "sha1=abc"})
        assert status == 401 and "must be sha256= and 64 hex digits" in answer["error"]

        assert await _runs(session, server.http_address, "github") == []
        assert server.gate.metrics.render().count(b'reason="bad_signature"') == 1
        assert b'pipedreamer_runs_rejected_total{reason="bad_signature",workflow="hook-flow"} 4.0' in server.metrics.render()
    logs = capfd.readouterr()
    assert "webhook github: POST /hooks/github refused: missing X-Hub-Signature-256" in logs.err
    # The key never shows, not in answers (checked above) nor in logs.
    assert GITHUB_KEY not in logs.out + logs.err


async def test_a_repeated_github_delivery_answers_the_first_result_and_runs_nothing(flow: Path):
    body = json.dumps({"sleep": 0.3, "n": 1}).encode()
    async with serving(flow) as server, aiohttp.ClientSession() as session:
        url = server.http_address + "/hooks/github"
        headers = github_headers(body, delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958")
        # The repeat arrives while the first still runs, then once more after it ended.
        (s1, first), (s2, second) = await asyncio.gather(_post(session, url, body, headers), _post(session, url, body, headers))
        s3, third = await _post(session, url, body, headers)
        assert s1 == s2 == s3 == 200
        assert first["runId"] == second["runId"] == third["runId"]
        assert len(await _runs(session, server.http_address, "github")) == 1
        other = github_headers(body)  # another delivery id: another run
        _, fourth = await _post(session, url, body, other)
        assert fourth["runId"] != first["runId"]


async def test_standard_webhooks_signed_deliveries_pass_and_bad_or_expired_ones_get_401(flow: Path):
    body = json.dumps({"type": "invoice.paid", "amount": 42}).encode()
    async with serving(flow) as server, aiohttp.ClientSession() as session:
        url = server.http_address + "/hooks/billing"
        status, result = await _post(session, url, body, standard_headers(body))
        assert status == 200, result
        assert result["trigger"] == "billing" and result["output"] == {"got": {"type": "invoice.paid", "amount": 42}}

        # Several signatures (a key being rotated): any one that matches passes.
        rotated = standard_headers(body, extra_signatures=("v1,bm90LXRoaXMtb25l", "v1a,c29tZXRoaW5nLWVsc2U="))
        status, _ = await _post(session, url, body, rotated)
        assert status == 200

        expired = standard_headers(body, timestamp=int(time.time()) - 600)
        status, answer = await _post(session, url, body, expired)
        assert status == 401
        # 600 s, or 601 when the clock ticked between signing and checking.
        assert re.search(r"webhook-timestamp is 60[01] s old: more than 300 s from this engine's clock", answer["error"])

        future = standard_headers(body, timestamp=int(time.time()) + 900)
        status, answer = await _post(session, url, body, future)
        assert status == 401 and "in the future" in answer["error"]

        # Signed with the whsec_ text itself instead of its base64 bytes: a different key.
        wrong = standard_headers(body, key=STANDARD_KEY.encode())
        status, answer = await _post(session, url, body, wrong)
        assert status == 401 and "webhook-signature does not match" in answer["error"]

        # A signature over another id does not carry over (ids are signed).
        good = standard_headers(body)
        status, _ = await _post(session, url, body, {**good, "webhook-id": "msg_other"})
        assert status == 401

        status, answer = await _post(session, url, body, {"Content-Type": "application/json", "webhook-id": "x"})
        assert status == 401 and answer["error"] == "webhook billing: missing webhook-timestamp, webhook-signature headers (Standard Webhooks)"

        runs = await _runs(session, server.http_address, "billing")
        assert len(runs) == 2


async def test_a_repeated_standard_delivery_answers_the_first_result(flow: Path):
    body = b'{"n": 7}'
    async with serving(flow) as server, aiohttp.ClientSession() as session:
        url = server.http_address + "/hooks/billing"
        headers = standard_headers(body, msg_id="msg_2KWPBgLlAfxdpx2AI54pPJ85f4W")
        _, first = await _post(session, url, body, headers)
        # The sender retries later: same id, a new timestamp and signature.
        _, again = await _post(session, url, body, standard_headers(body, msg_id="msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"))
        assert first["runId"] == again["runId"]
        assert len(await _runs(session, server.http_address, "billing")) == 1


async def test_a_failed_run_answers_500_with_its_result(flow: Path):
    body = b'{"fail": true}'
    async with serving(flow) as server, aiohttp.ClientSession() as session:
        status, result = await _post(session, server.http_address + "/hooks/github", body, github_headers(body))
        assert status == 500
        assert result["status"] == "RUN_STATUS_FAILED" and result["trigger"] == "github"
        assert "asked to fail" in result["nodes"]["handle"]["error"]


async def test_signature_none_accepts_unsigned_calls(flow: Path):
    async with serving(flow) as server, aiohttp.ClientSession() as session:
        status, result = await _post(session, server.http_address + "/hooks/open", b'{"x": 1}', {"Content-Type": "application/json"})
        assert status == 200 and result["trigger"] == "open"


async def test_github_ping_is_answered_without_a_run_and_form_bodies_are_read(flow: Path):
    async with serving(flow) as server, aiohttp.ClientSession() as session:
        url = server.http_address + "/hooks/github"
        ping = b'{"zen": "Keep it logically awesome.", "hook_id": 1}'
        status, answer = await _post(session, url, ping, github_headers(ping, event="ping"))
        assert status == 200 and answer == {"pong": True, "webhook": "github"}
        assert await _runs(session, server.http_address, "github") == []

        form = b"payload=%7B%22action%22%3A%22opened%22%7D"
        headers = {**github_headers(form), "Content-Type": "application/x-www-form-urlencoded"}
        status, result = await _post(session, url, form, headers)
        assert status == 200 and result["output"] == {"got": {"action": "opened"}}

        bad = b"{not json"
        status, answer = await _post(session, url, bad, github_headers(bad))
        assert status == 400 and answer["error"].startswith("invalid JSON body:")


async def test_callers_on_a_loopback_engine_tunnels_pass_browsers_do_not(flow: Path):
    """A dev engine on 127.0.0.1 refuses foreign Host names (DNS rebinding) on /run. A signed webhook is
    reached through a tunnel (smee, ngrok, cloudflared) under the tunnel's Host and proves itself by its
    signature, so the Host rule does not apply there; an unsigned one keeps it. A browser (Origin) never passes."""
    body = b'{"via": "tunnel"}'
    tunnel = {"Host": "abc123.ngrok-free.app"}
    async with serving(flow) as server, aiohttp.ClientSession() as session:
        base = server.http_address
        status, result = await _post(session, base + "/hooks/github", body, {**github_headers(body), **tunnel})
        assert status == 200 and result["trigger"] == "github"
        status, _ = await _post(session, base + "/hooks/billing", body, {**standard_headers(body), **tunnel})
        assert status == 200
        status, answer = await _post(session, base + "/hooks/open", body, {"Content-Type": "application/json", **tunnel})
        assert status == 403 and "listens on loopback only" in answer["error"]
        status, _ = await _post(session, base + "/run", body, {"Content-Type": "application/json", **tunnel})
        assert status == 403
        browser = {**github_headers(body), "Origin": "https://evil.example"}
        status, answer = await _post(session, base + "/hooks/github", body, browser)
        assert status == 403 and "cross-origin request refused" in answer["error"]


async def test_a_sender_that_hangs_up_does_not_cancel_the_run(flow: Path):
    body = json.dumps({"sleep": 0.5}).encode()
    headers = github_headers(body, delivery="hangs-up-1")
    async with serving(flow) as server, aiohttp.ClientSession() as session:
        url = server.http_address + "/hooks/github"
        with pytest.raises(asyncio.TimeoutError):
            async with session.post(url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=0.1)):
                pass

        async def succeeded() -> bool:
            runs = await _runs(session, server.http_address, "github")
            return bool(runs) and runs[0]["status"] == "RUN_STATUS_SUCCEEDED"

        await wait_for_async("the run to finish without its sender", succeeded, timeout=10)
        # GitHub's "Redeliver" gets that run's result.
        status, again = await _post(session, url, body, headers)
        assert status == 200 and again["status"] == "RUN_STATUS_SUCCEEDED"
        assert len(await _runs(session, server.http_address, "github")) == 1


async def test_get_triggers_describes_the_webhooks_without_their_keys(flow: Path):
    async with serving(flow) as server, aiohttp.ClientSession() as session:
        async with session.get(server.http_address + "/triggers") as response:
            text = await response.text()
    report = json.loads(text)
    hooks = {t["name"]: t for t in report["triggers"] if t["type"] == "webhook"}
    assert hooks["github"] == {"type": "webhook", "name": "github", "path": "/hooks/github", "signature": "github", "key_set": True}
    assert hooks["open"]["signature"] == "none" and hooks["open"]["key_set"] is False
    assert GITHUB_KEY not in text and "whsec_" not in text


def test_a_signed_webhook_without_its_key_is_a_validate_error_and_the_engine_refuses_to_start(tmp_path: Path):
    flow = write_workflow(tmp_path / "nokey", NODES, name="no-key", triggers=TRIGGERS, secrets={"webhooks": {"github": GITHUB_KEY}})
    result = run_cli("validate", str(flow))
    assert result.returncode == 1
    assert (
        "triggers[2]: webhook 'billing' (/hooks/billing, signature standard) has no key: set secrets.webhooks.billing"
        in result.stderr
    )
    assert "triggers[3].signature: none: /hooks/open runs the workflow for anyone who can reach it" in result.stderr

    engine = ServerProcess.engine(flow)
    try:
        assert engine.wait(30) == 1
        assert "webhook 'billing' (/hooks/billing, signature standard) has no key" in engine.output()
    finally:
        engine.close()

    # With the key given (here through --secrets) it is valid, with the warning about the unsigned one.
    keys = tmp_path / "keys.yaml"
    keys.write_text(f"webhooks:\n  github: {GITHUB_KEY}\n  billing: {STANDARD_KEY}\n")
    result = run_cli("validate", str(flow), "--secrets", str(keys))
    assert result.returncode == 0, result.stderr
    assert "warning:" in result.stderr and "signature: none" in result.stderr


def test_a_real_engine_process_serves_the_webhook(flow: Path):
    """`python -m engine`, as in the image: a signed delivery over a real socket."""
    engine = ServerProcess.engine(flow)
    try:
        engine.wait_ready()
        import urllib.request

        body = b'{"from": "process"}'
        request = urllib.request.Request(engine.url + "/hooks/github", data=body, method="POST", headers=github_headers(body))
        with urllib.request.urlopen(request, timeout=30) as response:
            result = json.loads(response.read())
        assert result["trigger"] == "github" and result["output"] == {"got": {"from": "process"}}
        assert "webhooks: POST /hooks/github (github), POST /hooks/billing (standard), POST /hooks/open (none)" in engine.output()
    finally:
        engine.close()
