"""`pipedreamer dev` flags: the image's permission policy for DIR unless --allow-* flags are given."""

from __future__ import annotations

import argparse
from pathlib import Path

from cli import dev
from engine.serve.options import options_from_args


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    dev.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults_are_the_images_policy_with_the_workflow_dir_for_app(tmp_path: Path):
    args = _parse(str(tmp_path))
    options = options_from_args(dev.dev_permission_args(args, tmp_path), tmp_path)
    assert options.policy.allow_read == (str(tmp_path),)
    assert options.policy.allow_write == ("/tmp",)
    assert options.policy.allow_net == ()  # every host
    assert options.policy.allow_run is False
    assert options.watch is True and options.host == "127.0.0.1"
    assert options.port == 8080 and options.grpc_port == 9090


def test_allow_flags_replace_the_defaults(tmp_path: Path):
    args = _parse(str(tmp_path), "--allow-net=api.github.com", "--no-watch", "--port", "9000")
    options = options_from_args(dev.dev_permission_args(args, tmp_path), tmp_path)
    assert options.policy.allow_net == ("api.github.com",)
    assert options.policy.allow_read == () and options.policy.allow_write == ()
    assert options.watch is False and options.port == 9000
