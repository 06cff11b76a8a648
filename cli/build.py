"""`pipedreamer build`: build the workflow's OCI image (not implemented yet)."""

from __future__ import annotations

import argparse

from cli.errors import CommandError
from cli.output import Output

HELP = "build the workflow's OCI image (not implemented yet)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("args", nargs="*", help=argparse.SUPPRESS)


def run(args: argparse.Namespace, out: Output) -> int:
    raise CommandError("`pipedreamer build` is not implemented yet")
