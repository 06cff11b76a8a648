"""`pipedreamer deploy`: deploy a workflow to Kubernetes (not implemented yet)."""

from __future__ import annotations

import argparse

from cli.errors import CommandError
from cli.output import Output

HELP = "deploy a workflow to Kubernetes (not implemented yet)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("args", nargs="*", help=argparse.SUPPRESS)


def run(args: argparse.Namespace, out: Output) -> int:
    raise CommandError("`pipedreamer deploy` is not implemented yet")
