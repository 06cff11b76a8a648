"""Tests for --allow-net rules: parsing, lookup and connect decisions, remembered addresses."""

from __future__ import annotations

import socket

import pytest

from engine.sandbox.netguard import NetGuard, NetRule, is_abstract_unix, parse_net_rule

INET, INET6, UNIX = socket.AF_INET, socket.AF_INET6, socket.AF_UNIX


def info(ip: str, port: int = 0) -> tuple:
    family = INET6 if ":" in ip else INET
    return (family, socket.SOCK_STREAM, 6, "", (ip, port))


@pytest.mark.parametrize(
    "text, rule",
    [
        ("example.com", NetRule("example.com")),
        ("Example.COM.:443", NetRule("example.com", 443)),
        ("10.0.0.1", NetRule("10.0.0.1")),
        ("10.0.0.1:8080", NetRule("10.0.0.1", 8080)),
        ("::1", NetRule("::1")),
        ("[::1]:80", NetRule("::1", 80)),
        ("[2001:DB8::1]", NetRule("2001:db8::1")),
        (" api.github.com ", NetRule("api.github.com")),
    ],
)
def test_parse_net_rule(text: str, rule: NetRule):
    assert parse_net_rule(text) == rule


@pytest.mark.parametrize(
    "text, problem",
    [
        ("", "empty"),
        ("https://example.com", "not a URL"),
        ("example.com:0", "port must be 1-65535"),
        ("example.com:http", "port must be 1-65535"),
        ("example.com:70000", "port must be 1-65535"),
        ("[::1", "unbalanced"),
        ("[example.com]:80", "not an IPv6 address"),
        ("a:b:c", "not a host[:port]"),
        (":80", "missing host"),
    ],
)
def test_parse_net_rule_rejects(text: str, problem: str):
    with pytest.raises(ValueError, match=problem.replace("[", r"\[")):
        parse_net_rule(text)


def test_rule_str_round_trips():
    for text in ("example.com", "example.com:443", "[::1]:80", "10.0.0.1"):
        assert str(parse_net_rule(text)) == text


def test_no_allow_net_denies_everything_but_literals_and_local_lookups():
    guard = NetGuard(None)
    assert guard.deny_lookup("example.com", 443) == "connect to example.com:443 denied: add it to --allow-net"
    assert guard.deny_lookup("example.com", None) == "lookup of example.com denied: add it to --allow-net"
    # Binding servers look up literals, None and localhost: no DNS traffic, so fine.
    for host in (None, "", "0.0.0.0", "::", "127.0.0.1", "localhost", b"localhost"):
        assert guard.deny_lookup(host, 8080) is None
    assert guard.deny_connect(INET, ("127.0.0.1", 80)) == "connect to 127.0.0.1:80 denied: add it to --allow-net"
    assert guard.deny_connect(INET6, ("::1", 80, 0, 0)) == "connect to [::1]:80 denied: add it to --allow-net"


def test_bare_allow_net_allows_everything():
    guard = NetGuard(())
    assert guard.allow_all
    assert guard.deny_lookup("example.com", 443) is None
    assert guard.deny_connect(INET, ("203.0.113.9", 443)) is None
    assert guard.deny_connect(UNIX, "\0abstract") is None
    assert guard.describe() == "all hosts"


def test_ip_rules_with_and_without_port():
    guard = NetGuard(["127.0.0.1", "10.0.0.1:8080"])
    assert guard.deny_connect(INET, ("127.0.0.1", 1234)) is None
    assert guard.deny_connect(INET, ("10.0.0.1", 8080)) is None
    assert guard.deny_connect(INET, ("10.0.0.1", 8081)) == "connect to 10.0.0.1:8081 denied: add it to --allow-net"
    assert guard.deny_connect(INET, ("127.0.0.2", 1234)) == "connect to 127.0.0.2:1234 denied: add it to --allow-net"
    # IPv4-mapped IPv6 is the same host.
    assert guard.deny_connect(INET6, ("::ffff:127.0.0.1", 80, 0, 0)) is None


def test_name_rules_allow_the_lookup_and_the_addresses_it_returned():
    guard = NetGuard(["api.example.com:443"], resolver=lambda *a: [])
    assert guard.deny_lookup("API.example.com", 443) is None
    assert guard.deny_lookup("api.example.com", "https") is None  # service names count as their port
    assert guard.deny_lookup("api.example.com", None) is None
    assert guard.deny_lookup("api.example.com", 80) == "connect to api.example.com:80 denied: add it to --allow-net"
    assert guard.deny_connect(INET, ("192.0.2.10", 443)) is not None
    guard.remember("api.example.com", [info("192.0.2.10", 443), info("2001:db8::10", 443)])
    assert guard.deny_connect(INET, ("192.0.2.10", 443)) is None
    assert guard.deny_connect(INET6, ("2001:db8::10", 443, 0, 0)) is None
    assert guard.deny_connect(INET, ("192.0.2.10", 80)) == "connect to 192.0.2.10:80 denied: add it to --allow-net"


def test_remember_ignores_names_outside_the_rules():
    guard = NetGuard(["api.example.com"], resolver=lambda *a: [])
    guard.remember("evil.example.net", [info("192.0.2.66")])
    assert guard.deny_connect(INET, ("192.0.2.66", 443)) is not None


def test_unseen_addresses_are_checked_by_resolving_the_allowed_names_once():
    calls = []

    def resolver(host, port):
        calls.append(host)
        return [info("192.0.2.20")]

    guard = NetGuard(["api.example.com"], resolver=resolver)
    assert guard.deny_connect(INET, ("192.0.2.20", 443)) is None
    assert guard.deny_connect(INET, ("192.0.2.21", 443)) is not None
    assert guard.deny_connect(INET, ("192.0.2.22", 443)) is not None
    assert calls == ["api.example.com"]  # cached for the next decisions


def test_resolver_failures_deny():
    def resolver(host, port):
        raise socket.gaierror("no such host")

    guard = NetGuard(["api.example.com"], resolver=resolver)
    assert guard.deny_connect(INET, ("192.0.2.20", 443)) is not None


def test_names_in_connect_addresses():
    guard = NetGuard(["api.example.com:443", "127.0.0.1"], resolver=lambda *a: [])
    assert guard.deny_connect(INET, ("api.example.com", 443)) is None
    assert guard.deny_connect(INET, ("other.example.com", 443)) == "connect to other.example.com:443 denied: add it to --allow-net"
    assert guard.deny_connect(INET, ("localhost", 5000)) is None  # 127.0.0.1 is allowed


def test_unix_and_other_families():
    guard = NetGuard(["127.0.0.1"])
    assert guard.deny_connect(UNIX, "\0dbus") == "connect to abstract unix socket @dbus denied: add --allow-net"
    assert guard.deny_connect(UNIX, "/run/app.sock") is None  # a file: the sandbox's file rules decide
    assert guard.deny_connect(socket.AF_NETLINK, (0, 0)) is None
    assert "family" in guard.deny_connect(999, None)
    assert is_abstract_unix(b"\0x") and is_abstract_unix("") and not is_abstract_unix("/tmp/s")


def test_kernel_tcp_ports():
    assert NetGuard(None).kernel_tcp_ports() == ()
    assert NetGuard(()).kernel_tcp_ports() is None
    assert NetGuard(["10.0.0.1:8080", "10.0.0.2:9090"]).kernel_tcp_ports() == (8080, 9090)
    assert NetGuard(["api.example.com:443"]).kernel_tcp_ports() == (53, 443)  # the resolver's TCP fallback
    assert NetGuard(["10.0.0.1:8080", "api.example.com"]).kernel_tcp_ports() is None
