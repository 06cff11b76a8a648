"""`pipedreamer test [DIR | DIR/<node> …] [--pipeline]`: run node and pipeline fixtures offline.

Nodes run under the permission lock, applied before any of them is imported:
the workflow directories are readable, `--allow-write=/tmp`, no network (fixtures
answer `ctx.fetch`). Any `--allow-*` flag replaces those defaults as a whole.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from cli.errors import CommandError
from cli.output import Output
from engine import sandbox
from engine.fixtures import lock_for_fixtures, run_fixtures

DEFAULT_PERMISSIONS = ("--allow-write=/tmp",)

HELP = "run node fixtures and the pipeline fixture (tests/fixtures/*.json)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "targets",
        nargs="*",
        default=["."],
        metavar="DIR[/NODE]",
        help="workflow directories, or DIR/<node> for one node's fixture (default: .)",
    )
    parser.add_argument("--pipeline", action="store_true", help="run only tests/fixtures/pipeline.json")
    parser.add_argument(
        "--secrets",
        type=Path,
        default=None,
        help="secrets file or directory for the nodes (default: none, so fixtures stay hermetic)",
    )
    sandbox.add_permission_flags(parser)


def run(args: argparse.Namespace, out: Output) -> int:
    try:
        policy = sandbox.policy_from_args(sandbox.with_default_flags(args, DEFAULT_PERMISSIONS))
    except ValueError as exc:  # a bad --allow-net entry
        raise CommandError(str(exc)) from None
    lock_for_fixtures(args.targets, policy, secrets_path=args.secrets)
    run = asyncio.run(run_fixtures(args.targets, pipeline_only=args.pipeline, secrets_path=args.secrets))
    out.result(run.to_dict(), run.render())
    return 0 if run.ok else 1
