"""`pipedreamer init NAME`: scaffold a workflow project in ./NAME."""

from __future__ import annotations

import argparse

from builder.scaffold import scaffold_workflow
from cli.output import Output

HELP = "create a new workflow project in ./NAME"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="workflow name (kebab-case); the directory ./NAME is created")


def run(args: argparse.Namespace, out: Output) -> int:
    created = scaffold_workflow(args.name)
    files = [str(p) for p in created.files]
    out.result(
        {"directory": str(created.directory), "files": files},
        f"created {created.directory}/\n"
        + "".join(f"  {p}\n" for p in files)
        + f"next: ./pipedreamer validate {args.name} && ./pipedreamer test {args.name}",
    )
    return 0
