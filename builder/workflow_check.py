"""`bazel test` entry for a workflow (pipedreamer_workflow's :check): validate its spec, then
run its fixtures under the permission lock, as `pipedreamer validate` and `test` do."""

from __future__ import annotations

import asyncio
import os
import pathlib
import shutil
import sys
import tempfile

from engine import sandbox
from engine.compiler import compile_dag
from engine.errors import PipedreamerError
from engine.fixtures import lock_for_fixtures, run_fixtures
from engine.spec import load_spec


def check(directory: pathlib.Path, policy: sandbox.PermissionPolicy) -> int:
    """0 when the spec is valid and every fixture passes; the report goes to stdout, problems to stderr."""
    try:
        loaded = load_spec(directory)
        dag = compile_dag(loaded.spec)
    except PipedreamerError as exc:
        print(str(exc) if str(exc).startswith(("error: ", "warning: ")) else f"error: {exc}", file=sys.stderr)
        return 1
    for warning in loaded.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{loaded.file}: {loaded.spec.name} {loaded.spec.version} is valid ({len(dag.order)} nodes)")
    lock_for_fixtures([directory], policy)
    run = asyncio.run(run_fixtures([directory]))
    print(run.render())
    return 0 if run.ok else 1


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: workflow_check.py <path/to/workflow.yaml>", file=sys.stderr)
        return 2
    directory = pathlib.Path(argv[0]).parent
    if directory.is_absolute():  # given by hand rather than by Bazel: copied under its whole path
        os.chdir(directory.anchor)
        directory = directory.relative_to(directory.anchor)
    # Bazel hands the workflow over as runfiles, one symlink per file, and the
    # loader rightly refuses nodes that resolve outside their directory. So the
    # check runs on a copy at the same relative path: messages name the files
    # as they are named in the checkout.
    parent = os.environ.get("TEST_TMPDIR") or tempfile.gettempdir()
    with tempfile.TemporaryDirectory(dir=parent) as scratch:
        shutil.copytree(directory, pathlib.Path(scratch) / directory, symlinks=False)
        os.chdir(scratch)
        # `pipedreamer test`'s defaults (/tmp writable, no network: fixtures answer
        # ctx.fetch), and where the scratch copy lives, so that it can be removed.
        return check(directory, sandbox.PermissionPolicy(allow_write=("/tmp", parent)))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
