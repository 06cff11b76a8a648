"""A run in flight as others see it: a RUNNING snapshot with the nodes finished so far, and its watchers.

The gate makes one `LiveRun` per run and hands it to the executor as its
`RunObserver`: it is told once that the run started, and reads the run's
progress only when asked. Node by node it listens only while someone watches
(or a store shared by replicas wants each node's progress), so recording a run
nobody follows costs a few attribute sets.
"""

from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator, Callable

from engine.executor import NodeOutcome, RunOutcome, RunProgress
from engine.results import FinishedRun, set_time
from proto.pipedreamer.v1 import execution_pb2

RUNNING = execution_pb2.RUN_STATUS_RUNNING

# (outcome, run id, trigger, resumed_from) → the redacted result: Engine.build_result.
BuildResult = Callable[..., execution_pb2.ExecutionResult]


class LiveRun:
    """One run between its start and its final result; a `RunObserver` and `NodeEvents` for the executor."""

    __slots__ = ("run_id", "trigger", "resumed_from", "build", "on_progress", "started_at", "run", "watchers", "result", "_done")

    def __init__(
        self,
        run_id: str,
        trigger: str,
        build: BuildResult,
        *,
        resumed_from: str = "",
        on_progress: Callable[["LiveRun"], None] | None = None,
    ) -> None:
        self.run_id = run_id
        self.trigger = trigger
        self.resumed_from = resumed_from
        self.build = build
        self.on_progress = on_progress
        self.started_at = time.time()
        self.run: RunProgress | None = None  # None until the executor starts it (it may wait for a slot)
        self.watchers: list[asyncio.Queue] = []
        self.result: FinishedRun | None = None
        self._done: asyncio.Event | None = None

    # -- RunObserver and NodeEvents ----------------------------------------

    def run_started(self, run: RunProgress) -> None:
        self.run = run
        if self.watchers or self.on_progress is not None:
            run.events = self

    def node_started(self, node_id: str, started_at: float) -> None:
        if self.watchers:
            self._tell((node_id, None, started_at))

    def node_finished(self, node_id: str, outcome: NodeOutcome, started_at: float) -> None:
        if self.watchers:
            self._tell((node_id, outcome, started_at))
        if self.on_progress is not None:
            self.on_progress(self)

    def _tell(self, item: object) -> None:
        for queue in self.watchers:
            queue.put_nowait(item)

    # -- what others see ---------------------------------------------------

    def finished_nodes(self) -> dict[str, NodeOutcome]:
        """Nodes finished so far (carried ones of a resume included), outcomes with wall-clock starts."""
        run = self.run
        if run is None:
            return {}
        nodes = dict(run.carried or {})
        for node_id, record, started_at, finished in run.progress():
            if finished:
                nodes[node_id] = _at(record, started_at)
        return nodes

    def snapshot(self, status: int = RUNNING, error: str = "") -> execution_pb2.ExecutionResult:
        """The run as it stands: RUNNING (or `status`) with the nodes finished so far."""
        if self.result is not None:
            return self.result.snapshot()
        outcome = RunOutcome(
            status=status,
            output=None,
            nodes=self.finished_nodes(),
            error=error,
            started_at=self.started_at,
            duration=max(0.0, time.time() - self.started_at),
        )
        return self.build(outcome, run_id=self.run_id, trigger=self.trigger, resumed_from=self.resumed_from)

    def finish(self, result: FinishedRun) -> None:
        self.result = result
        if self._done is not None:
            self._done.set()
        if self.watchers:
            self._tell(result)

    async def wait(self) -> execution_pb2.ExecutionResult:
        """The final result, once there is one."""
        if self.result is None:
            if self._done is None:
                self._done = asyncio.Event()
            await self._done.wait()
        assert self.result is not None
        return self.result.snapshot()

    async def events(self) -> AsyncIterator[execution_pb2.RunEvent]:
        """Every node event so far, then new ones as they happen, then the final result."""
        queue: asyncio.Queue = asyncio.Queue()
        # Read what happened and start listening with no await between: no event falls in the gap.
        backlog: list[tuple[str, NodeOutcome | None, float]] = []
        final = self.result.snapshot() if self.result is not None else None
        if final is None:
            if self.run is not None:
                for node_id, record, started_at, finished in self.run.progress():
                    backlog.append((node_id, None, started_at))
                    if finished:
                        backlog.append((node_id, _at(record, started_at), started_at))
                self.run.events = self
            self.watchers.append(queue)
        try:
            for item in backlog:
                yield self._event(item)
            while final is None:
                item = await queue.get()
                if isinstance(item, FinishedRun):
                    final = item.snapshot()
                else:
                    yield self._event(item)
            yield execution_pb2.RunEvent(run_id=self.run_id, finished=final)
        finally:
            if queue in self.watchers:
                self.watchers.remove(queue)
            if not self.watchers and self.on_progress is None and self.run is not None and self.result is None:
                self.run.events = None

    def _event(self, item: tuple[str, NodeOutcome | None, float]) -> execution_pb2.RunEvent:
        node_id, outcome, started_at = item
        event = execution_pb2.RunEvent(run_id=self.run_id)
        if outcome is None:
            event.node_started.node_id = node_id
            set_time(event.node_started.started_at, started_at)
            return event
        single = RunOutcome(
            status=RUNNING,
            output=None,
            nodes={node_id: _at(outcome, started_at)},
            error="",
            started_at=self.started_at,
            duration=0.0,
        )
        built = self.build(single, run_id=self.run_id, trigger=self.trigger, resumed_from=self.resumed_from)
        event.node_finished.node_id = node_id
        event.node_finished.result.CopyFrom(built.nodes[node_id])
        return event


def _at(record: NodeOutcome, started_at: float | None) -> NodeOutcome:
    """A copy of a node's record with its wall-clock start (the executor's holds a monotonic one while running)."""
    return NodeOutcome(record.status, record.output, record.attempts, record.error, started_at, record.duration)


def node_events_between(
    before: execution_pb2.ExecutionResult | None, after: execution_pb2.ExecutionResult
) -> list[execution_pb2.RunEvent]:
    """node_finished events for the nodes `after` has finished that `before` had not (following a record by polling)."""
    seen = set(before.nodes) if before is not None else set()
    events = []
    for node_id, node in sorted(after.nodes.items(), key=lambda item: (item[1].started_at.seconds, item[1].started_at.nanos)):
        if node_id in seen or (after.status != RUNNING and not node.HasField("started_at")):
            continue
        event = execution_pb2.RunEvent(run_id=after.run_id)
        event.node_finished.node_id = node_id
        event.node_finished.result.CopyFrom(node)
        events.append(event)
    return events
