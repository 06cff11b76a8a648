"""Serving flags: sizes, durations, ports and the options they make."""

from __future__ import annotations

import argparse

import pytest

from engine.serve.options import DEFAULT_MAX_BODY, add_serve_flags, options_from_args, parse_size


@pytest.mark.parametrize(
    "text, size",
    [("10MiB", 10 * 1024 * 1024), ("512KiB", 512 * 1024), ("1MB", 1_000_000), ("1048576", 1048576), ("2 mib", 2 * 1024 * 1024), ("1.5KiB", 1536)],
)
def test_parse_size(text: str, size: int):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "ten", "10XB", "-1", "0"])
def test_parse_size_rejects_nonsense(text: str):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_size(text)


def _parse(*argv: str, host: str = "0.0.0.0", watch: bool = False) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_serve_flags(parser, host=host, watch=watch)
    return parser.parse_args(list(argv))


def test_defaults():
    options = options_from_args(_parse(), "/app")
    assert options.port == 8080 and options.grpc_port == 9090 and options.host == "0.0.0.0"
    assert options.http.max_body == DEFAULT_MAX_BODY == 10 * 1024 * 1024
    assert options.max_concurrent_runs == 64 and options.watch is False
    assert options.shutdown_timeout == 25.0
    assert options.policy.allow_read == () and options.policy.allow_net is None  # deny by default


def test_every_flag():
    args = _parse(
        "--port", "0", "--grpc-port", "-1", "--max-body", "1MiB", "--max-concurrent-runs", "4",
        "--shutdown-timeout", "500ms", "--body-timeout", "2s", "--idle-timeout", "3", "--watch",
        "--log-format", "json", "--secrets", "/s", "--allow-read=/data", "--allow-net=api.github.com",
    )  # fmt: skip
    options = options_from_args(args, "/flow")
    assert options.port == 0 and options.grpc_port is None
    assert options.http.max_body == 1024 * 1024 and options.http.body_timeout == 2 and options.http.idle_timeout == 3
    assert options.max_concurrent_runs == 4 and options.shutdown_timeout == 0.5
    assert options.watch and options.log_format == "json" and options.secrets_path == "/s"
    assert options.policy.allow_read == ("/data",) and options.policy.allow_net == ("api.github.com",)


def test_watch_default_can_be_turned_off():
    assert _parse("--no-watch", watch=True).watch is False


@pytest.mark.parametrize("argv", [["--max-concurrent-runs", "-2"], ["--port", "70000"], ["--shutdown-timeout", "soon"], ["--log-format", "xml"]])
def test_bad_values_are_usage_errors(argv: list[str]):
    with pytest.raises(SystemExit) as exit_info:
        _parse(*argv)
    assert exit_info.value.code == 2
