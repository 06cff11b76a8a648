"""The permission flags and the policy they describe (nothing here locks the test process)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from engine import sandbox
from engine.sandbox import PermissionPolicy


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sandbox.add_permission_flags(parser)
    parser.add_argument("rest", nargs="*")
    return parser.parse_args(list(argv))


def policy(*argv: str) -> PermissionPolicy:
    return sandbox.policy_from_args(parse(*argv))


def test_deny_by_default():
    assert policy() == PermissionPolicy(allow_read=(), allow_write=(), allow_net=None, allow_run=False)


def test_the_images_flags():
    got = policy("--allow-read=/app", "--allow-write=/tmp", "--allow-net")
    assert got == PermissionPolicy(allow_read=("/app",), allow_write=("/tmp",), allow_net=(), allow_run=False)


def test_lists_repeats_and_relative_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    got = policy("--allow-read=/a,b", "--allow-read=/c,/a", "--allow-net=x.com,y.com:443", "--allow-net=x.com", "--allow-run")
    assert got.allow_read == ("/a", str(tmp_path / "b"), "/c")
    assert got.allow_net == ("x.com", "y.com:443")
    assert got.allow_run is True


def test_bare_flags_allow_everything_and_never_swallow_the_next_argument():
    ns = parse("--allow-net", "flowdir", "--allow-read", "--allow-write")
    assert ns.rest == ["flowdir"]
    got = sandbox.policy_from_args(ns)
    assert got == PermissionPolicy(allow_read=("/",), allow_write=("/",), allow_net=(), allow_run=False)
    # A bare flag wins over listed values of the same flag.
    assert policy("--allow-net=x.com", "--allow-net").allow_net == ()
    # After "--" nothing is a flag.
    assert parse("--", "--allow-net").rest == ["--allow-net"]


def test_flags_work_in_a_subcommand_parser():
    top = argparse.ArgumentParser()
    sub = top.add_subparsers(dest="command")
    dev = sub.add_parser("dev")
    dev.add_argument("dir")
    sandbox.add_permission_flags(dev)
    ns = top.parse_args(["dev", "--allow-net", "./flow"])
    assert ns.dir == "./flow" and sandbox.policy_from_args(ns).allow_net == ()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--allow-net="], "--allow-net needs a value"),
        (["--allow-read=,"], "--allow-read needs a value"),
        (["--allow-net=https://example.com"], "not a URL"),
        (["--allow-net=example.com:99999"], "port must be 1-65535"),
    ],
)
def test_bad_flag_values_are_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit) as exc:
        parse(*argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_policy_validates_net_entries():
    with pytest.raises(ValueError, match="port must be"):
        PermissionPolicy(allow_net=("example.com:0",))


@pytest.mark.parametrize(
    "value",
    [
        PermissionPolicy(),
        PermissionPolicy(allow_read=("/app",), allow_write=("/tmp",), allow_net=()),
        PermissionPolicy(allow_read=("/",), allow_write=("/",), allow_net=("a.com", "[::1]:80"), allow_run=True),
    ],
)
def test_to_flags_round_trips(value: PermissionPolicy):
    assert policy(*value.to_flags()) == value


def test_describe():
    assert PermissionPolicy().describe() == "read=- write=- net=denied run=denied"
    assert PermissionPolicy(("/app",), ("/tmp",), (), True).describe() == "read=/app write=/tmp net=all hosts run=allowed"


def test_policy_accepts_lists_and_refuses_a_bare_string():
    assert PermissionPolicy(allow_read=["/app"], allow_net=["a.com"]) == PermissionPolicy(allow_read=("/app",), allow_net=("a.com",))
    with pytest.raises(TypeError, match="not one string"):
        PermissionPolicy(allow_read="/app")
