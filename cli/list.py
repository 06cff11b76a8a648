"""`pipedreamer list`: list deployed workflows (not implemented yet)."""

from __future__ import annotations

import argparse

from cli.errors import CommandError
from cli.output import Output

HELP = "list deployed workflows (not implemented yet)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("args", nargs="*", help=argparse.SUPPRESS)


def run(args: argparse.Namespace, out: Output) -> int:
    raise CommandError("`pipedreamer list` is not implemented yet")
