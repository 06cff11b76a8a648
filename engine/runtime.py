"""The engine: one loaded workflow (spec, DAG, node modules, secrets) that runs on demand and hot-reloads.

The servers, triggers and the fixture runner all go through `Engine.run`.
A run captures the workflow generation current when it starts, so a reload
never changes the code under a run in flight.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import traceback
import types
import uuid
from pathlib import Path
from typing import Any, Callable, Mapping, TextIO

import aiohttp

from engine.compiler import CompileError, CompiledDAG, compile_dag
from engine.context import Context, Fetcher, HttpFetcher, LogSink, RunScope
from engine.executor import SUCCEEDED, DAGExecutor, NodeOutcome, RunObserver, NodeRunner, RunOutcome, WorkflowExecutor, describe_exception
from engine.loader import LoadError, NodeModules, load_nodes
from engine.results import build_result, result_json
from engine.secrets import MOUNT_DIR, Redactor, load_secrets
from engine.spec import SpecError, config_to_dict, load_spec
from engine.values import DEFAULT_MAX_OUTPUT
from proto.pipedreamer.v1 import execution_pb2, workflow_pb2

ENGINE_LOG_NAME = "engine"
# Directories the watcher never descends into.
_UNWATCHED = {"__pycache__", "node_modules", "bazel-bin", "bazel-out", "bazel-testlogs"}


@dataclasses.dataclass(frozen=True)
class Workflow:
    """One consistent generation: spec, compiled DAG, node functions and `ctx.config`."""

    spec: workflow_pb2.WorkflowSpec
    dag: CompiledDAG
    modules: NodeModules
    config: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Resume:
    """A resumed run's starting point: the run it resumes and the real outputs of that run's succeeded nodes.

    Those nodes are not run again; every other node is (failed, cancelled, skipped).
    """

    run_id: str
    outputs: Mapping[str, Any]


# Called with the spec once it is read and compiled, before any node module is
# imported: where the permission lock goes on (no user code has run yet).
BeforeImport = Callable[[workflow_pb2.WorkflowSpec], None]


def load_workflow(directory: Path, *, before_import: BeforeImport | None = None) -> Workflow:
    """workflow.yaml → spec → DAG → imported nodes; raises SpecError, CompileError or LoadError."""
    # The loader checks the node files for real (it imports them), with file and line.
    loaded = load_spec(directory, check_sources=False)
    dag = compile_dag(loaded.spec)
    config = types.MappingProxyType(config_to_dict(loaded.spec.config))
    if before_import is not None:
        before_import(loaded.spec)
    modules = load_nodes(loaded.spec, directory)
    return Workflow(spec=loaded.spec, dag=dag, modules=modules, config=config)


class Engine:
    """Runs one workflow directory. Create with `await Engine.start(dir)`; `await close()` when done."""

    def __init__(
        self,
        directory: Path,
        workflow: Workflow,
        secrets: Mapping[str, Any],
        sink: LogSink,
        executor: WorkflowExecutor | None,
        fetch_session: aiohttp.ClientSession | None,
        max_output: int = DEFAULT_MAX_OUTPUT,
    ):
        self.directory = directory
        self._workflow = workflow
        self._secrets = secrets
        self._redactor = sink.redactor
        self._sink = sink
        self._executor: WorkflowExecutor = executor or DAGExecutor(describe=self.describe_error, max_output=max_output)
        self._session = fetch_session
        self._owns_session = fetch_session is None
        self._fetcher = HttpFetcher(self.session, workflow.config, secrets)
        self._in_flight = 0
        self._reload_lock = asyncio.Lock()
        # Run ids: 80 random bits per engine + a counter; unique across replicas, no syscall per run.
        self._run_prefix = uuid.uuid4().hex[:20]
        self._run_counter = itertools.count(1)

    @classmethod
    async def start(
        cls,
        workflow_dir: str | Path,
        *,
        secrets_path: Path | None = None,
        log_format: str = "text",
        executor: WorkflowExecutor | None = None,
        fetch_session: aiohttp.ClientSession | None = None,
        log_stream: TextIO | None = None,
        log_level: str = "info",
        secrets_mount: Path | None = MOUNT_DIR,
        secrets: Mapping[str, Any] | None = None,
        before_import: Callable[[workflow_pb2.WorkflowSpec, Mapping[str, Any]], None] | None = None,
        max_output: int = DEFAULT_MAX_OUTPUT,
    ) -> "Engine":
        """Loads, compiles and imports the workflow; raises SpecError, CompileError, LoadError or SecretsError.

        Secrets come from the cascade (`secrets_path` alone, else `.secrets/` <
        `.secrets.yaml` < `secrets_mount`) unless `secrets` gives them outright.
        `before_import(spec, secrets)` runs after the spec and secrets are read
        and before the first node module is imported (the permission lock).
        `max_output`: bytes of JSON a node's output may take before it fails the node.
        """
        directory = Path(workflow_dir).absolute()
        if directory.is_file():
            directory = directory.parent
        if secrets is None:
            secrets = load_secrets(directory, secrets_path, mount_dir=secrets_mount)
        sink = LogSink(log_format, log_stream, log_level, Redactor.for_secrets(secrets))
        loaded_secrets = secrets
        workflow = load_workflow(
            directory,
            before_import=None if before_import is None else lambda spec: before_import(spec, loaded_secrets),
        )
        return cls(directory, workflow, types.MappingProxyType(dict(secrets)), sink, executor, fetch_session, max_output)

    # -- what callers read -------------------------------------------------

    @property
    def spec(self) -> workflow_pb2.WorkflowSpec:
        return self._workflow.spec

    @property
    def dag(self) -> CompiledDAG:
        return self._workflow.dag

    @property
    def workflow(self) -> Workflow:
        return self._workflow

    @property
    def secrets(self) -> Mapping[str, Any]:
        return self._secrets

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def log_sink(self) -> LogSink:
        return self._sink

    def redact(self, text: str) -> str:
        """`text` with every secret value replaced by ***."""
        return self._redactor.text(text)

    def log(self, level: str, message: str) -> None:
        """An engine line (not a node's) in the configured format."""
        self._sink.write(level, ENGINE_LOG_NAME, "", message)

    def session(self) -> aiohttp.ClientSession:
        """The shared client session behind `ctx.fetch`, created on first use."""
        if self._session is None or (self._owns_session and self._session.closed):
            self._session = aiohttp.ClientSession()
        return self._session

    # -- running -----------------------------------------------------------

    async def run(
        self,
        input: Any,
        *,
        trigger: str = "",
        run_id: str | None = None,
        fetcher: Fetcher | None = None,
        observer: RunObserver | None = None,
        resume: Resume | None = None,
    ) -> execution_pb2.ExecutionResult:
        """Runs the whole DAG once. Node failures are in the result, never raised."""
        result, _ = await self.execute(input, trigger=trigger, run_id=run_id, fetcher=fetcher, observer=observer, resume=resume)
        return result

    async def execute(
        self,
        input: Any,
        *,
        trigger: str = "",
        run_id: str | None = None,
        fetcher: Fetcher | None = None,
        observer: RunObserver | None = None,
        resume: Resume | None = None,
        as_json: bool = False,
    ) -> tuple[execution_pb2.ExecutionResult | bytes, RunOutcome]:
        """`run`, also returning the executor's outcome (real, unredacted outputs: keep it in memory only).

        `observer` is told as the run starts (engine.executor.RunObserver). `resume` runs only the nodes
        it does not carry; raises ValueError when it names a node this workflow lacks. `as_json`: the
        result as its proto3 JSON (UTF-8) made from the outcome in one walk, without the message
        (`results.result_json`; the message after all if an output no longer encodes).
        """
        workflow = self._workflow  # this run's generation, whatever reloads happen meanwhile
        run_id = run_id or self.new_run_id()
        options: dict[str, Any] = {}
        if observer is not None:
            options["observer"] = observer
        if resume is not None:
            unknown = sorted(set(resume.outputs) - set(workflow.dag.order))
            if unknown:
                raise ValueError(
                    f"run {resume.run_id} has nodes this version of {workflow.spec.name} lacks: {', '.join(unknown)}"
                )
            options["carried"] = {
                node_id: NodeOutcome(status=SUCCEEDED, output=output, attempts=0)
                for node_id, output in resume.outputs.items()
            }
        self._in_flight += 1
        try:
            runner = self.node_runner(workflow, run_id, fetcher or self._fetcher)
            outcome = await self._executor.execute(workflow.dag, runner, input, **options)
        finally:
            self._in_flight -= 1
        if outcome.failed_node is not None and self._sink.enabled("warn"):
            self._sink.write("warn", ENGINE_LOG_NAME, run_id, f"run failed: {outcome.error}")
        names = self._result_names(workflow, run_id, trigger, resume.run_id if resume is not None else "")
        if as_json:
            try:
                return result_json(outcome, **names), outcome
            except (TypeError, ValueError, RecursionError):
                pass  # an output a node's leftover thread changed after its check: the message says what it can
        return build_result(outcome, **names), outcome

    def _result_names(self, workflow: Workflow, run_id: str, trigger: str, resumed_from: str) -> dict[str, Any]:
        """What a result of `workflow` says besides the outcome (and the redactor its values go through)."""
        spec = workflow.spec
        return {
            "run_id": run_id,
            "workflow": spec.name,
            "version": spec.version,
            "trigger": trigger,
            "redactor": self._redactor,
            "resumed_from": resumed_from,
        }

    def build_result(
        self, outcome: RunOutcome, *, run_id: str, trigger: str = "", resumed_from: str = ""
    ) -> execution_pb2.ExecutionResult:
        """A result of this workflow from an outcome (a run in flight, a cancelled one), secrets redacted."""
        return build_result(outcome, **self._result_names(self._workflow, run_id, trigger, resumed_from))

    def new_run_id(self) -> str:
        """32 hex characters, like a uuid4 without dashes."""
        return f"{self._run_prefix}{next(self._run_counter):012x}"

    def node_runner(self, workflow: Workflow, run_id: str, fetcher: Fetcher) -> NodeRunner:
        """(node id, input) → the node's coroutine, with a fresh ctx for this run."""
        functions = workflow.modules.functions
        scope = RunScope(run_id, workflow.config, self._secrets, fetcher, self._sink)

        def call(node_id: str, input: Any) -> Any:
            return functions[node_id](Context(node_id, scope), input)

        return call

    async def run_node(self, node_id: str, input: Any, *, fetcher: Fetcher | None = None, run_id: str | None = None) -> Any:
        """Calls one node directly (no timeout, no retries); its exceptions propagate."""
        workflow = self._workflow
        if node_id not in workflow.modules.functions:
            raise KeyError(f"no node {node_id!r} in {workflow.spec.name} (nodes: {', '.join(workflow.dag.order)})")
        runner = self.node_runner(workflow, run_id or self.new_run_id(), fetcher or self._fetcher)
        return await runner(node_id, input)

    def describe_error(self, exc: BaseException) -> str:
        """`Type: message (at nodes/x.py:12)`: the innermost line of workflow code, secrets redacted."""
        text = describe_exception(exc)
        location = self._workflow_location(exc)
        if location:
            text += f" (at {location})"
        return self.redact(text)

    def _workflow_location(self, exc: BaseException) -> str | None:
        root = str(self.directory.resolve()) + os.sep
        found = None
        for frame in traceback.extract_tb(exc.__traceback__):
            if frame.filename.startswith(root):
                found = f"{frame.filename[len(root):]}:{frame.lineno}"
        return found

    # -- hot reload --------------------------------------------------------

    async def reload(self) -> bool:
        """Re-reads workflow.yaml and re-imports every node; swaps only if all of it loads."""
        async with self._reload_lock:
            try:
                workflow = load_workflow(self.directory)
            except (SpecError, CompileError, LoadError) as exc:
                self.log("error", f"reload failed; still serving the previous version:\n{exc}")
                return False
            previous, self._workflow = self._workflow, workflow
            self._fetcher = HttpFetcher(self.session, workflow.config, self._secrets)
            previous.modules.discard()
            self.log("info", f"reloaded {len(workflow.dag.order)} nodes (generation {workflow.modules.generation})")
            return True

    def watched_files(self) -> dict[str, tuple[int, int]]:
        """(mtime, size) of workflow.yaml, every node file and every .py under the directory."""
        paths = {self.directory / "workflow.yaml", *self._workflow.modules.files.values()}
        for current, dirs, files in os.walk(self.directory):
            dirs[:] = [d for d in dirs if not d.startswith(".") and d not in _UNWATCHED]
            paths.update(Path(current, f) for f in files if f.endswith(".py"))
        stamps = {}
        for path in paths:
            try:
                info = path.stat()
            except OSError:
                continue
            stamps[str(path)] = (info.st_mtime_ns, info.st_size)
        return stamps

    async def watch(self, interval: float = 0.5) -> None:
        """Polls the workflow's files and reloads on any change; runs until cancelled."""
        seen = self.watched_files()
        while True:
            await asyncio.sleep(interval)
            current = self.watched_files()
            if current != seen:
                changed = sorted(set(current.items()) ^ set(seen.items()))
                names = sorted({os.path.relpath(path, self.directory) for path, _ in changed})
                self.log("info", f"change detected in {', '.join(names)}; reloading")
                seen = current
                await self.reload()

    async def close(self) -> None:
        if self._owns_session and self._session is not None and not self._session.closed:
            await self._session.close()

    async def __aenter__(self) -> "Engine":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
