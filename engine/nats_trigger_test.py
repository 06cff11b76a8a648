"""The pure parts of queue triggers: settings, payloads, the queue group, the server address."""

from __future__ import annotations

import pytest

from engine.nats_trigger import nats_settings, parse_payload, queue_group, queue_triggers
from engine.spec import parse_spec

SPEC = """
name: q
version: "1.0"
triggers:
  - type: manual
  - type: queue
    subject: jobs.a
  - type: queue
    subject: jobs.b
    name: b
config:
  nats_url: tls://nats.example:4443
nodes:
  n:
    path: nodes/n.py
edges: []
"""


def test_settings_come_from_config_and_secrets():
    spec = parse_spec(SPEC).spec
    assert [t.subject for t in queue_triggers(spec)] == ["jobs.a", "jobs.b"]
    assert nats_settings(spec, {"nats": {"token": "t"}}) == ("tls://nats.example:4443", "t", [])
    assert nats_settings(spec, {})[2] == ["secrets.nats.token"]
    bare = parse_spec(SPEC.replace("  nats_url: tls://nats.example:4443\n", "  other: 1\n")).spec
    assert nats_settings(bare, {"nats": {"value": "x"}})[2] == ["config.nats_url", "secrets.nats.token"]


def test_queue_group_is_per_workflow():
    assert queue_group("github-digest") == "pipedreamer.github-digest"


@pytest.mark.parametrize("data, value", [(b"", {}), (b" \n", {}), (b'{"a": 1}', {"a": 1}), (b"[1]", [1]), (b'"s"', "s")])
def test_payloads(data: bytes, value):
    assert parse_payload(data) == value


@pytest.mark.parametrize("data, fragment", [(b"{x", "Expecting property name"), (b"NaN", "NaN is not valid JSON"), (b"\xff", "not UTF-8")])
def test_bad_payloads(data: bytes, fragment: str):
    with pytest.raises(ValueError, match=fragment):
        parse_payload(data)
