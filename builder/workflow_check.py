"""`bazel test` entry for a workflow: validate its spec, then run its fixtures."""

from __future__ import annotations

import os
import pathlib
import shutil
import sys
import tempfile

from cli.main import main as cli_main


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: workflow_check.py <path/to/workflow.yaml>", file=sys.stderr)
        return 2
    directory = pathlib.Path(argv[0]).parent
    # Bazel hands the workflow over as runfiles, one symlink per file, and the
    # loader rightly refuses nodes that resolve outside their directory. So the
    # check runs on a copy at the same relative path: messages name the files
    # as they are named in the checkout.
    with tempfile.TemporaryDirectory(dir=os.environ.get("TEST_TMPDIR")) as scratch:
        copy = pathlib.Path(scratch) / directory
        shutil.copytree(directory, copy, symlinks=False)
        cwd = os.getcwd()
        os.chdir(scratch)
        try:
            for command in (["validate", str(directory)], ["test", str(directory)]):
                status = cli_main(command)
                if status:
                    return status
        finally:
            os.chdir(cwd)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
