"""Tests for webhook signature checks, against signatures made here with hmac (the schemes' own examples)."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from multidict import CIMultiDict

from engine.errors import Problem
from engine.serve.signatures import (
    GITHUB,
    NONE,
    STANDARD,
    SignatureRefused,
    key_bytes,
    key_problems,
    verify,
    webhook_key,
)
from engine.spec import parse_spec

BODY = b'{"zen": "Design for failure."}'
NOW = 1_700_000_000


def _github(key: bytes, body: bytes = BODY) -> CIMultiDict:
    return CIMultiDict({"x-hub-signature-256": "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest(), "X-GitHub-Delivery": "d-1"})


def _standard(key: bytes, msg_id: str = "msg_1", stamp: int = NOW, body: bytes = BODY) -> CIMultiDict:
    digest = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return CIMultiDict({"webhook-id": msg_id, "webhook-timestamp": str(stamp), "webhook-signature": "v1," + base64.b64encode(digest).decode()})


def test_github_signature_passes_with_the_delivery_id_and_header_names_in_any_case():
    assert verify(GITHUB, b"It's a Secret to Everybody", BODY, _github(b"It's a Secret to Everybody"), NOW).delivery_id == "d-1"


def test_github_documented_example():
    """GitHub's documentation: secret "It's a Secret to Everybody", payload "Hello, World!"."""
    headers = CIMultiDict({"X-Hub-Signature-256": "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"})
    assert verify(GITHUB, b"It's a Secret to Everybody", b"Hello, World!", headers, NOW).delivery_id == ""


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        (CIMultiDict(), "missing X-Hub-Signature-256 header"),
        (CIMultiDict({"X-Hub-Signature-256": "sha256=zz"}), "must be sha256= and 64 hex digits"),
        (CIMultiDict({"X-Hub-Signature-256": "sha1=" + "0" * 40}), "must be sha256= and 64 hex digits"),
        (_github(b"other key"), "does not match the body"),
    ],
)
def test_github_refusals(headers, reason):
    with pytest.raises(SignatureRefused, match=reason):
        verify(GITHUB, b"key", BODY, headers, NOW)


def test_standard_signature_with_a_whsec_key_and_the_tolerance_window():
    raw = b"\x00\x01secret bytes\xff"
    key = key_bytes("whsec_" + base64.b64encode(raw).decode(), STANDARD)
    assert key == raw
    assert verify(STANDARD, key, BODY, _standard(raw), NOW).delivery_id == "msg_1"
    assert verify(STANDARD, key, BODY, _standard(raw, stamp=NOW - 300), NOW).delivery_id == "msg_1"
    with pytest.raises(SignatureRefused, match="301 s old"):
        verify(STANDARD, key, BODY, _standard(raw, stamp=NOW - 301), NOW)
    with pytest.raises(SignatureRefused, match="400 s in the future"):
        verify(STANDARD, key, BODY, _standard(raw, stamp=NOW + 400), NOW)


def test_standard_any_of_several_signatures_may_match_and_v1a_is_skipped():
    headers = _standard(b"k")
    headers["webhook-signature"] = "v1a,AAAA v1,bm90IGl0 " + headers["webhook-signature"]
    assert verify(STANDARD, b"k", BODY, headers, NOW).delivery_id == "msg_1"
    headers["webhook-signature"] = "v1a,AAAA"
    with pytest.raises(SignatureRefused, match="has no v1 signature"):
        verify(STANDARD, b"k", BODY, headers, NOW)


def test_a_key_without_the_whsec_prefix_is_its_text_and_a_bad_whsec_key_is_refused():
    assert key_bytes("plain-key", STANDARD) == b"plain-key"
    assert key_bytes("whsec_notbase64!", GITHUB) == b"whsec_notbase64!"  # only Standard Webhooks keys have the prefix
    with pytest.raises(ValueError, match="whsec_ key must be followed by base64"):
        key_bytes("whsec_notbase64!", STANDARD)


def test_signature_none_takes_any_delivery_id():
    assert verify(NONE, None, BODY, CIMultiDict({"webhook-id": "w"}), NOW).delivery_id == "w"


def test_refusals_never_quote_the_key_or_the_expected_signature():
    key = b"super-secret-key"
    expected = hmac.new(key, BODY, hashlib.sha256).hexdigest()
    with pytest.raises(SignatureRefused) as info:
        verify(GITHUB, key, BODY, _github(b"wrong"), NOW)
    assert "super-secret-key" not in str(info.value) and expected not in str(info.value)


def test_key_problems_name_the_trigger_and_the_secret():
    spec = parse_spec(
        "name: x\nversion: 1.0.0\nnodes: {a: {path: a.py}}\ntriggers:\n"
        "  - {type: webhook, path: /hooks/gh}\n  - {type: webhook, path: /hooks/sw, signature: standard}\n"
        "  - {type: webhook, path: /hooks/open, signature: none}\n"
    ).spec
    assert webhook_key({"webhooks": {"gh": 1234}}, "gh") == "1234"
    problems = key_problems(spec, {"webhooks": {"gh": "k", "sw": "whsec_%%%"}}, "flow/workflow.yaml")
    assert problems == [Problem("flow/workflow.yaml", None, "triggers[1]", "secrets.webhooks.sw: a whsec_ key must be followed by base64 (as Standard Webhooks senders show it)")]
    missing = key_problems(spec, {}, "flow/workflow.yaml")
    assert [p.field for p in missing] == ["triggers[0]", "triggers[1]"]
    assert "set secrets.webhooks.gh" in missing[0].message
