"""One run of a workflow in this process, under the permission lock, as the image runs it:
`pipedreamer run --local DIR`. No server, no cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TextIO

from engine import sandbox
from engine.executor import RunObserver
from engine.runtime import Engine
from proto.pipedreamer.v1 import execution_pb2

LOCAL_TRIGGER = "local"


async def run_local(
    directory: str | Path,
    input: Any,
    *,
    policy: sandbox.PermissionPolicy,
    secrets_path: Path | None = None,
    log_format: str = "text",
    log_stream: TextIO | None = None,
    observer: RunObserver | None = None,
) -> execution_pb2.ExecutionResult:
    """Loads the workflow, locks this process to `policy` before any node is imported, runs it once.

    The workflow directory is always readable. Raises the engine's load errors
    (SpecError, CompileError, LoadError, SecretsError); node failures are in the
    result. The lock cannot be undone: call it from a process of its own.
    `observer` is told as the run starts and may listen to each node (`run --local --watch`).
    """
    workflow_dir = Path(directory).absolute()
    if workflow_dir.is_file():
        workflow_dir = workflow_dir.parent

    def lock(spec: Any, secrets: Any) -> None:
        sandbox.apply_policy(policy, extra_read=(str(workflow_dir),))

    engine = await Engine.start(
        workflow_dir, secrets_path=secrets_path, log_format=log_format, log_stream=log_stream, before_import=lock
    )
    try:
        return await engine.run(input, trigger=LOCAL_TRIGGER, observer=observer)
    finally:
        await engine.close()
