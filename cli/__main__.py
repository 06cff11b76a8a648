"""`python -m cli`: the pipedreamer command."""

import os
import sys

from cli.main import main

if __name__ == "__main__":
    # `bazel run` starts us in the runfiles tree; paths on the command line are
    # the user's, relative to where they ran bazel.
    if os.environ.get("BUILD_WORKING_DIRECTORY"):
        os.chdir(os.environ["BUILD_WORKING_DIRECTORY"])
    sys.exit(main())
