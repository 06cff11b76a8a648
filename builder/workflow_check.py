"""`bazel test` entry for a workflow: validate its spec, then run its fixtures."""

from __future__ import annotations

import pathlib
import sys

from cli.main import main as cli_main


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: workflow_check.py <path/to/workflow.yaml>", file=sys.stderr)
        return 2
    directory = str(pathlib.Path(argv[0]).parent)
    for command in (["validate", directory], ["test", directory]):
        status = cli_main(command)
        if status:
            return status
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
