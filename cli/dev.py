"""`pipedreamer dev [DIR]`: serve a workflow locally (HTTP + gRPC), reloading nodes as they change.

Nodes run under the same permission lock as in the image, with the workflow
directory in place of /app: by default `--allow-read=DIR --allow-write=/tmp
--allow-net`. Any `--allow-*` flag replaces those defaults as a whole.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from cli.errors import CommandError
from cli.output import Output
from engine import sandbox
from engine.serve.options import add_serve_flags, options_from_args

HELP = "serve a workflow locally over HTTP and gRPC, with hot reload"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", nargs="?", default=".", help="workflow directory (default: .)")
    add_serve_flags(parser, host="127.0.0.1", watch=True)


def dev_permission_args(args: argparse.Namespace, directory: Path) -> argparse.Namespace:
    """The image's policy for DIR unless the user gave `--allow-*` flags of their own."""
    return sandbox.with_default_flags(args, [f"--allow-read={directory}", "--allow-write=/tmp", "--allow-net"])


def run(args: argparse.Namespace, out: Output) -> int:
    from engine.serve.process import serve  # the server stack loads only for `dev`

    directory = Path(args.dir).resolve()
    workflow_dir = directory.parent if directory.is_file() else directory
    try:
        options = options_from_args(dev_permission_args(args, workflow_dir), directory)
    except ValueError as exc:  # a bad --allow-net entry
        raise CommandError(str(exc)) from None
    out.info(f"pipedreamer dev: starting {directory} (Ctrl-C to stop)")
    return asyncio.run(serve(options))
