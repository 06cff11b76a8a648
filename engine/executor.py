"""Runs a compiled DAG: each node starts the moment its dependencies finish; the first failure cancels the rest.

Structured concurrency as `asyncio.TaskGroup` does it, with per-node
bookkeeping a TaskGroup lacks: every node task is owned by the run, a failure
cancels the running ones (CANCELLED), nodes that never started are SKIPPED,
and `execute` returns only after every task has finished. Outputs stay
Python objects here; the protobuf result is built once, at the end.

A node that blocks the event loop (time.sleep, a CPU loop) cannot be
preempted by asyncio: with the loop in the main thread, `engine.preempt`
interrupts it inside its own frame shortly after its deadline; elsewhere the
overrun is caught when the node returns. Either way the node is TIMED_OUT,
and while it blocks, everything else on the loop waits.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import types
from typing import Any, Awaitable, Callable, Mapping, Protocol

from engine import preempt
from engine.compiler import CompiledDAG
from engine.values import DEFAULT_MAX_OUTPUT, output_problem
from proto.pipedreamer.v1 import execution_pb2

DEFAULT_TIMEOUT = 30.0
# Nodes one task runs in a row (a chain) before the next one gets a task of its own.
INLINE_NODES = 64
BACKOFF_BASE = 0.1
BLOCKING_HINT = (
    "it blocked the event loop, e.g. time.sleep or CPU-bound work; use await asyncio.sleep or asyncio.to_thread"
)

# The event loop's clock (BaseEventLoop.time is time.monotonic), without the method call:
# deadlines given to loop.call_at are on this clock.
_now = time.monotonic

SUCCEEDED = execution_pb2.NODE_STATUS_SUCCEEDED
FAILED = execution_pb2.NODE_STATUS_FAILED
TIMED_OUT = execution_pb2.NODE_STATUS_TIMED_OUT
CANCELLED = execution_pb2.NODE_STATUS_CANCELLED
SKIPPED = execution_pb2.NODE_STATUS_SKIPPED
RUN_SUCCEEDED = execution_pb2.RUN_STATUS_SUCCEEDED
RUN_FAILED = execution_pb2.RUN_STATUS_FAILED

# Calls one node: (node id, input) → awaitable output. The engine's builds the ctx.
NodeRunner = Callable[[str, Any], Awaitable[Any]]
DescribeError = Callable[[BaseException], str]


@dataclasses.dataclass(frozen=True)
class NodePolicy:
    timeout: float
    retries: int


@dataclasses.dataclass(slots=True)
class NodeOutcome:
    status: int = SKIPPED
    output: Any = None
    attempts: int = 0
    error: str = ""
    # Wall-clock seconds since the epoch; None when the node never started.
    started_at: float | None = None
    duration: float = 0.0


@dataclasses.dataclass(slots=True)
class RunOutcome:
    status: int
    output: Any
    nodes: dict[str, NodeOutcome]
    error: str
    started_at: float
    duration: float
    # The node whose failure ended the run.
    failed_node: str | None = None


class NodeEvents(Protocol):
    """Told when a node starts and when it ends (after its retries); times are wall-clock seconds.

    Called on the event loop, inline: keep it cheap and never raise. With no
    listener the executor pays one `is None` check per node.
    """

    def node_started(self, node_id: str, started_at: float) -> None: ...

    def node_finished(self, node_id: str, outcome: NodeOutcome, started_at: float) -> None: ...


class RunProgress(Protocol):
    """A run as it goes, for an observer: what has started and finished, and where node events go."""

    # Set it to hear every node start and finish from now on (None: nobody listens).
    events: NodeEvents | None
    # Nodes a resume carried over (not run), or None.
    carried: Mapping[str, NodeOutcome] | None

    def progress(self) -> list[tuple[str, NodeOutcome, float, bool]]: ...


class RunObserver(Protocol):
    """Told once, as a run starts, about its `RunProgress`: it reads it when asked (a RUNNING
    snapshot) and sets `events` only while someone follows the run node by node, so a run
    nobody watches costs one call."""

    def run_started(self, run: RunProgress) -> None: ...


class WorkflowExecutor(Protocol):
    """Pluggable execution strategy (the seed's `WorkflowExecutor`).

    `observer` is told as the run starts (see RunObserver); `carried` (a resume)
    maps nodes that already succeeded to their outcome: they are not run, their
    outputs feed their dependents.
    """

    async def execute(
        self,
        dag: CompiledDAG,
        runner: NodeRunner,
        input: Any,
        *,
        observer: RunObserver | None = None,
        carried: Mapping[str, NodeOutcome] | None = None,
    ) -> RunOutcome: ...


@dataclasses.dataclass(frozen=True)
class ExecutionPlan:
    """The DAG reduced to what the hot loop reads: edges, policies, in-degrees."""

    order: tuple[str, ...]
    dependencies: Mapping[str, tuple[str, ...]]
    dependents: Mapping[str, tuple[str, ...]]
    roots: tuple[str, ...]
    sinks: tuple[str, ...]
    indegree: Mapping[str, int]
    policies: Mapping[str, NodePolicy]

    @classmethod
    def from_dag(cls, dag: CompiledDAG, default_timeout: float = DEFAULT_TIMEOUT) -> "ExecutionPlan":
        return cls(
            order=dag.order,
            dependencies=dict(dag.dependencies),
            dependents=dict(dag.dependents),
            roots=dag.roots,
            sinks=dag.sinks,
            indegree={n: len(d) for n, d in dag.dependencies.items()},
            policies=node_policies(dag, default_timeout),
        )


def node_policies(dag: CompiledDAG, default_timeout: float = DEFAULT_TIMEOUT) -> dict[str, NodePolicy]:
    """Per node: its own timeout/retries, else `config.timeout`/`config.retries`, else 30 s / 0."""
    config = dag.spec.config
    base_timeout = config.timeout.ToTimedelta().total_seconds() if config.HasField("timeout") else default_timeout
    base_retries = config.retries if config.HasField("retries") else 0
    policies = {}
    for node in dag.spec.nodes:
        timeout = node.timeout.ToTimedelta().total_seconds() if node.HasField("timeout") else base_timeout
        retries = node.retries if node.HasField("retries") else base_retries
        policies[node.id] = NodePolicy(timeout=timeout, retries=retries)
    return policies


def backoff_delay(retry: int, base: float = BACKOFF_BASE) -> float:
    """Delay before retry number `retry` (1-based): 100 ms, 200 ms, 400 ms …"""
    return base * (2 ** (retry - 1))


def describe_exception(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class DAGExecutor:
    """The default executor: dependency-driven start, per-node timeout and retries, fail-fast."""

    def __init__(
        self,
        default_timeout: float = DEFAULT_TIMEOUT,
        backoff_base: float = BACKOFF_BASE,
        describe: DescribeError = describe_exception,
        interrupt_blocking: bool = True,
        max_output: int = DEFAULT_MAX_OUTPUT,
    ):
        self.default_timeout = default_timeout
        self.max_output = max_output
        self.backoff_base = backoff_base
        self.describe = describe
        self._cached: tuple[CompiledDAG, ExecutionPlan] | None = None
        self._interrupt_blocking = interrupt_blocking
        self._watchdog: preempt.Watchdog | None = None
        self._watchdog_checked = False

    def plan(self, dag: CompiledDAG) -> ExecutionPlan:
        cached = self._cached
        if cached is not None and cached[0] is dag:
            return cached[1]
        plan = ExecutionPlan.from_dag(dag, self.default_timeout)
        self._cached = (dag, plan)
        return plan

    async def execute(
        self,
        dag: CompiledDAG,
        runner: NodeRunner,
        input: Any,
        *,
        observer: RunObserver | None = None,
        carried: Mapping[str, NodeOutcome] | None = None,
    ) -> RunOutcome:
        if not self._watchdog_checked:
            self._watchdog_checked = True
            if self._interrupt_blocking:
                self._watchdog = preempt.watchdog(_interrupt_overdue)
        return await _Run(self.plan(dag), runner, self, observer, carried).execute(input)


class _Run:
    """One execution's state. Node tasks do their own bookkeeping when they end (no callbacks).

    Timeouts use one deadline timer per run, armed at the earliest deadline of
    the nodes in flight, instead of a timer per node: it keeps the per-node
    overhead close to a bare `create_task`.
    """

    __slots__ = (
        "plan", "runner", "executor", "loop", "pending", "outputs", "nodes", "running", "done",
        "failed_node", "stopping", "cancel_reason", "wall_start", "mono_start",
        "deadlines", "expired", "timer", "timer_at", "events", "carried",
    )

    def __init__(
        self,
        plan: ExecutionPlan,
        runner: NodeRunner,
        executor: DAGExecutor,
        observer: RunObserver | None = None,
        carried: Mapping[str, NodeOutcome] | None = None,
    ):
        self.plan = plan
        self.runner = runner
        self.executor = executor
        self.loop = asyncio.get_running_loop()
        self.pending = dict(plan.indegree)
        self.outputs: dict[str, Any] = {}
        self.nodes: dict[str, NodeOutcome] = {}
        self.running: dict[str, asyncio.Task] = {}
        self.done: asyncio.Future = self.loop.create_future()
        self.failed_node: str | None = None
        self.stopping = False  # fail-fast or outside cancellation under way
        self.cancel_reason = "cancelled"
        self.wall_start = 0.0
        self.mono_start = 0.0
        self.deadlines: dict[str, float] = {}
        self.expired: set[str] = set()
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        self.events: NodeEvents | None = None
        self.carried = carried or None
        if observer is not None:
            observer.run_started(self)

    async def execute(self, input: Any) -> RunOutcome:
        self.wall_start = time.time()
        self.mono_start = _now()
        watchdog = self.executor._watchdog
        if watchdog is not None:
            watchdog.runs.add(self)
        if self.carried is None:
            for root in self.plan.roots:
                self.launch(root, input)
        else:
            self.launch_resumed(input)
        try:
            await self.done
            if self.running:
                # Fail-fast: the cancelled siblings must finish before the run does.
                await asyncio.wait(list(self.running.values()))
        except asyncio.CancelledError:
            # Cancelled from outside (shutdown, client gone): nothing may outlive the run.
            await self.cancel_all("cancelled: the run was cancelled")
            raise
        finally:
            if self.timer is not None:
                self.timer.cancel()
            if watchdog is not None:
                watchdog.runs.discard(self)
        return self.outcome()

    def launch(self, node_id: str, input: Any) -> None:
        self.running[node_id] = self.loop.create_task(self.run_nodes(node_id, input))

    async def run_nodes(self, node_id: str, input: Any) -> None:
        """A node task: its node, then, while one of the dependents that node made ready is left
        for it (the first; the others got tasks of their own), that dependent, and so on. A chain
        runs in one task: a task is needed only where there is concurrency. After
        INLINE_NODES nodes in a row the next one gets a task (and the loop a turn)."""
        following: tuple[str, Any] | None = (node_id, input)
        inline = 0
        while following is not None:
            following = await self.run_node(*following)
            inline += 1
            if following is not None and inline >= INLINE_NODES:
                self.running[following[0]] = self.loop.create_task(self.run_nodes(*following))
                return

    def launch_resumed(self, input: Any) -> None:
        """A resume: carried nodes count as done; every other node whose dependencies are all carried starts."""
        plan, pending, outputs = self.plan, self.pending, self.outputs
        carried = self.carried or {}
        for node_id, outcome in carried.items():
            outputs[node_id] = outcome.output
            for child in plan.dependents[node_id]:
                pending[child] -= 1
        for node_id in plan.order:
            if node_id in carried or pending[node_id]:
                continue
            deps = plan.dependencies[node_id]
            if not deps:
                self.launch(node_id, input)
            else:
                self.launch(node_id, outputs[deps[0]] if len(deps) == 1 else {d: outputs[d] for d in deps})
        if not self.running:
            self.done.set_result(None)

    # -- one node ----------------------------------------------------------

    async def run_node(self, node_id: str, input: Any) -> tuple[str, Any] | None:
        """Runs one node to its final outcome; returns the dependent this task runs next, if any."""
        timeout = self.plan.policies[node_id].timeout
        record = NodeOutcome(SUCCEEDED, None, 1)
        self.nodes[node_id] = record
        start = began = _now()
        record.started_at = start  # monotonic here; made wall-clock in outcome()
        if self.events is not None:
            self.events.node_started(node_id, start + self.wall_start - self.mono_start)
        deadlines = self.deadlines
        while True:
            # Arming the deadline timer, inlined: this is the per-node hot path.
            deadline = deadlines[node_id] = began + timeout
            if self.timer is None or deadline < self.timer_at:
                self.arm(deadline)
            try:
                output = await self.runner(node_id, input)
            except asyncio.CancelledError:
                deadlines.pop(node_id, None)
                if not self.timed_out(node_id):
                    record.status, record.error = CANCELLED, self.cancel_reason
                    break
                record.status, record.error = TIMED_OUT, f"timed out after {_seconds(timeout)}"
            except (Exception, SystemExit, preempt.Interrupted) as exc:  # noqa: BLE001 - a node may raise anything
                deadlines.pop(node_id, None)
                if self.timed_out(node_id):
                    record.status, record.error = TIMED_OUT, f"timed out after {_seconds(timeout)}"
                    if isinstance(exc, preempt.Interrupted):
                        record.error += f" (interrupted after {_now() - began:.3f} s: {BLOCKING_HINT})"
                else:
                    record.status, record.error = FAILED, self.executor.describe(exc)
            else:
                deadlines.pop(node_id, None)
                elapsed = _now() - began
                if elapsed <= timeout and node_id not in self.expired:
                    break
                self.timed_out(node_id)
                # Returned without yielding to the loop (time.sleep, CPU-bound work), so the
                # timer could not fire in time: the overrun is caught now that control is back.
                record.status = TIMED_OUT
                record.error = f"timed out: ran {elapsed:.3f} s, limit {_seconds(timeout)} ({BLOCKING_HINT})"
            if not await self.retry(node_id, record):
                break
            began = _now()
        record.duration = _now() - start
        if record.status == SUCCEEDED:
            if (problem := output_problem(node_id, output, self.executor.max_output)) is None:
                record.output = output
                self.outputs[node_id] = output
            else:
                record.status = FAILED
                record.error = problem
        # Read again: a watcher may have started listening while this node ran.
        if self.events is not None:
            self.events.node_finished(node_id, record, start + self.wall_start - self.mono_start)
        return self.finish(node_id, record.status == SUCCEEDED)

    async def retry(self, node_id: str, record: NodeOutcome) -> bool:
        """After a failed attempt: back off and return True, or False when no attempts are left."""
        retries = self.plan.policies[node_id].retries
        if record.attempts > retries:
            if record.attempts > 1:
                record.error += f" (after {record.attempts} attempts)"
            return False
        try:
            await asyncio.sleep(backoff_delay(record.attempts, self.executor.backoff_base))
        except asyncio.CancelledError:
            record.status, record.error = CANCELLED, self.cancel_reason
            return False
        record.attempts += 1
        record.status, record.error = SUCCEEDED, ""
        return True

    def progress(self) -> list[tuple[str, NodeOutcome, float, bool]]:
        """Nodes started so far, in start order: (id, record, wall-clock start, finished).

        Valid while the run goes on (records hold monotonic starts until `outcome`)."""
        offset = self.wall_start - self.mono_start
        running = self.running
        return [(node_id, record, record.started_at + offset, node_id not in running) for node_id, record in self.nodes.items()]

    # -- the deadline timer ------------------------------------------------

    def arm(self, deadline: float) -> None:
        """(Re)schedules the run's deadline timer for `deadline`, earlier than the one it had."""
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_at(deadline, self.expire)
        self.timer_at = deadline

    def expire(self) -> None:
        """Cancels every node past its deadline, then re-arms for the next one."""
        now = _now() + 1e-6
        self.timer = None
        following = None
        for node_id, deadline in list(self.deadlines.items()):
            if deadline <= now:
                del self.deadlines[node_id]
                task = self.running.get(node_id)
                if task is not None and not self.stopping:
                    self.expired.add(node_id)
                    task.cancel()
            elif following is None or deadline < following:
                following = deadline
        if following is not None:
            self.arm(following)

    def timed_out(self, node_id: str) -> bool:
        """True (once) when the deadline timer (or the preempt watchdog) stopped this node; takes its cancel back."""
        if node_id not in self.expired:
            return False
        self.expired.discard(node_id)
        self.deadlines.pop(node_id, None)
        if self.stopping:
            return False
        self.running[node_id].uncancel()
        return True

    # -- the graph ---------------------------------------------------------

    def finish(self, node_id: str, succeeded: bool) -> tuple[str, Any] | None:
        """Books a node's end, starts what it made ready; returns the dependent its task runs next."""
        task = self.running.pop(node_id)
        following = None
        if succeeded:
            if self.failed_node is None:
                following = self.start_ready(node_id, task)
        elif self.failed_node is None and self.nodes[node_id].status != CANCELLED:
            self.failed_node = node_id
            self.stop(f"cancelled: node {node_id} failed")
            # A task cancelled before its first step never runs `finish`: don't wait on it here.
            self.done.set_result(None)
        if not self.running and not self.done.done():
            self.done.set_result(None)
        return following

    def start_ready(self, node_id: str, task: asyncio.Task) -> tuple[str, Any] | None:
        """Starts the dependents `node_id` made ready: the first is returned for `task` (which ran
        `node_id`) to run next, the others get tasks of their own, in dependents' order."""
        plan = self.plan
        pending = self.pending
        outputs = self.outputs
        following = None
        for child in plan.dependents[node_id]:
            left = pending[child] - 1
            pending[child] = left
            if left == 0:
                deps = plan.dependencies[child]
                input = outputs[deps[0]] if len(deps) == 1 else {d: outputs[d] for d in deps}
                if following is None:
                    following = (child, input)
                    self.running[child] = task
                else:
                    self.launch(child, input)
        return following

    def stop(self, reason: str) -> None:
        self.stopping = True
        self.cancel_reason = reason
        for task in self.running.values():
            task.cancel()

    async def cancel_all(self, reason: str) -> None:
        self.stop(reason)
        tasks = list(self.running.values())
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def outcome(self) -> RunOutcome:
        nodes = self.nodes
        failed = self.failed_node
        offset = self.wall_start - self.mono_start
        for record in nodes.values():
            record.started_at += offset
        if self.carried is not None:
            nodes.update(self.carried)
        for node_id in self.plan.order:
            if node_id in nodes:
                continue
            if node_id in self.running:  # launched, but cancelled before its first step
                nodes[node_id] = NodeOutcome(status=CANCELLED, error=self.cancel_reason)
            else:
                nodes[node_id] = NodeOutcome(status=SKIPPED, error=f"skipped: node {failed} failed" if failed else "skipped")
        if failed is None:
            sinks = self.plan.sinks
            output = self.outputs[sinks[0]] if len(sinks) == 1 else {s: self.outputs[s] for s in sinks}
            status, error = RUN_SUCCEEDED, ""
        else:
            output, status = None, RUN_FAILED
            error = f"node {failed} failed: {nodes[failed].error}"
        return RunOutcome(
            status=status,
            output=output,
            nodes=nodes,
            error=error,
            started_at=self.wall_start,
            duration=_now() - self.mono_start,
            failed_node=failed,
        )


def _interrupt_overdue(frame: types.FrameType | None) -> None:
    """Watchdog signal handler: raises `Interrupted` only inside the code of a node past its deadline."""
    child = None
    while frame is not None and frame.f_code is not _RUN_NODE_CODE:
        child, frame = frame, frame.f_back
    # `child` is what run_node is executing: the node's coroutine, or the executor's own helpers.
    if frame is None or child is None or child.f_code in _EXECUTOR_CODES:
        return
    local = frame.f_locals
    run, node_id = local.get("self"), local.get("node_id")
    deadline = run.deadlines.get(node_id) if isinstance(run, _Run) else None
    if deadline is None or run.stopping or _now() < deadline:
        return
    run.expired.add(node_id)
    raise preempt.Interrupted(f"node {node_id} blocked the event loop past its deadline")


_RUN_NODE_CODE = _Run.run_node.__code__
_EXECUTOR_CODES = frozenset(
    value.__code__ for value in vars(_Run).values() if isinstance(value, types.FunctionType)
)


def _seconds(value: float) -> str:
    return f"{value * 1000:g} ms" if value < 1 else f"{value:g} s"
