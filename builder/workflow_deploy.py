"""`bazel run //<workflow>:deploy -- [flags]`: `pipedreamer deploy` on that workflow's directory."""

from __future__ import annotations

import os
import sys

from cli.main import main as cli_main


def workflow_directory(spec: str, environ: dict[str, str]) -> str:
    """The directory of `spec` (a workspace-relative path) in the user's checkout under
    `bazel run`, so secrets beside the workflow count as they do for the CLI; else the
    runfiles copy."""
    directory = os.path.dirname(spec) or "."
    workspace = environ.get("BUILD_WORKSPACE_DIRECTORY")
    return os.path.join(workspace, directory) if workspace else directory


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: workflow_deploy.py <path/to/workflow.yaml> [deploy flags]", file=sys.stderr)
        return 2
    return cli_main(["deploy", workflow_directory(argv[0], dict(os.environ)), *argv[1:]])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
