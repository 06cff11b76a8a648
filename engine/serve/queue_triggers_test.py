"""The pure parts of queue triggers: settings, payloads, the queue group, the server address."""

from __future__ import annotations

import ssl

import pytest

from engine.serve.queue_triggers import nats_settings, nats_tls, parse_payload, queue_group, queue_triggers
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


@pytest.mark.parametrize(
    "data, fragment",
    [(b"{x", "Expecting property name"), (b"NaN", "NaN is not valid JSON"), (b"\xff", "not UTF-8"),
     (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"), (b'{"a": ' * 100_000, "nested too deeply"),
     (b"[" * 150 + b"]" * 150, r"nested too deeply \(more than 100 levels\)")],
)
def test_bad_payloads(data: bytes, fragment: str):
    with pytest.raises(ValueError, match=fragment):
        parse_payload(data)


# A self-signed CA certificate (its key was thrown away), as `secrets.nats.ca` holds it.
CA_PEM = """-----BEGIN CERTIFICATE-----
MIIBnTCCAUOgAwIBAgIUM6IslbUhziYmBFmRcavi7Gql9gcwCgYIKoZIzj0EAwIw
IzEhMB8GA1UEAwwYcGlwZWRyZWFtZXIgdW5pdCB0ZXN0IENBMCAXDTI2MTEyNzAz
MzI0OVoYDzIxMjYxMTAzMDMzMjQ5WjAjMSEwHwYDVQQDDBhwaXBlZHJlYW1lciB1
bml0IHRlc3QgQ0EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAASixdYZeYwVaxLR
BIgOGSPyaQekLw5F09IBwy+LuK5o3X0VuppbJvwv7N+vJ9UaqDpAMY2JdwQZhEPp
YnZrSkPEo1MwUTAdBgNVHQ4EFgQUnyspbNIbJdlSDZAJky4GOZmZ4swwHwYDVR0j
BBgwFoAUnyspbNIbJdlSDZAJky4GOZmZ4swwDwYDVR0TAQH/BAUwAwEB/zAKBggq
hkjOPQQDAgNIADBFAiEAnXUj1Iet2rjb5UZT+AQVpn5NqgGS0JguRHzcX8eeuIQC
IAtiw85uXfZeJHC9HIjg8TXmHtodN2IQ1MZf045nzbBM
-----END CERTIFICATE-----
"""


def test_tls_only_for_tls_urls_or_a_ca():
    assert nats_tls("nats://127.0.0.1:4222", {"nats": {"token": "t"}}) is None
    system = nats_tls("tls://nats.example:4443", {"nats": {"token": "t"}})
    assert system.verify_mode == ssl.CERT_REQUIRED and system.check_hostname
    assert nats_tls("tls://nats.example:4443", {"nats": {"token": "t", "ca": "  "}}).check_hostname


def test_a_ca_from_the_secrets_is_the_only_one_trusted():
    context = nats_tls("tls://127.0.0.1:4443", {"nats": {"token": "t", "ca": CA_PEM}})
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [ca["subject"] for ca in context.get_ca_certs()] == [((("commonName", "pipedreamer unit test CA"),),)]
    # A server that upgrades a nats:// connection to TLS is checked against it too.
    assert nats_tls("nats://127.0.0.1:4222", {"nats": {"ca": CA_PEM}}) is not None


@pytest.mark.parametrize(
    "ca, fragment",
    [("not a certificate", "must be PEM text"), (42, "must be PEM text"),
     ("-----BEGIN CERTIFICATE-----\nbm9wZQ==\n-----END CERTIFICATE-----\n", "not a valid PEM certificate")],
)
def test_a_bad_ca_is_refused_with_a_message(ca, fragment):
    with pytest.raises(ValueError, match=fragment):
        nats_tls("tls://127.0.0.1:4443", {"nats": {"token": "t", "ca": ca}})
