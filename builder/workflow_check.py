"""`bazel test` entry for a workflow (pipedreamer_workflow's :check): validate its spec, then
run its fixtures under the permission lock, as `pipedreamer validate` and `test` do."""

from __future__ import annotations

import asyncio
import pathlib
import sys

from engine import sandbox
from engine.compiler import compile_dag
from engine.errors import PipedreamerError
from engine.fixtures import lock_for_fixtures, run_fixtures
from engine.spec import load_spec

# `pipedreamer test`'s defaults: /tmp writable, no network (fixtures answer ctx.fetch).
POLICY = sandbox.PermissionPolicy(allow_write=("/tmp",))


def check(directory: pathlib.Path) -> int:
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
    lock_for_fixtures([directory], POLICY)
    run = asyncio.run(run_fixtures([directory]))
    print(run.render())
    return 0 if run.ok else 1


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: workflow_check.py <path/to/workflow.yaml>", file=sys.stderr)
        return 2
    return check(pathlib.Path(argv[0]).parent)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
