"""A run in flight as others see it: its node events so far, a RUNNING snapshot, and its watchers.

The gate makes one `LiveRun` per run and hands it to the executor as its
`NodeEvents` listener. Per node it appends to a list (and notifies watchers,
when there are any); results are only built when someone asks.
"""

from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator, Callable

from engine.executor import NodeOutcome, RunOutcome
from engine.results import set_time
from proto.pipedreamer.v1 import execution_pb2

RUNNING = execution_pb2.RUN_STATUS_RUNNING

# (outcome, run id, trigger, resumed_from) → the redacted result: Engine.build_result.
BuildResult = Callable[..., execution_pb2.ExecutionResult]


class LiveRun:
    """One run between its start and its final result; a `NodeEvents` for the executor."""

    __slots__ = ("run_id", "trigger", "resumed_from", "build", "on_progress", "started_at", "_mono",
                 "log", "watchers", "result", "done")

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
        self._mono = time.monotonic()
        # (node id, its outcome or None when it just started, wall-clock start)
        self.log: list[tuple[str, NodeOutcome | None, float]] = []
        self.watchers: list[asyncio.Queue] = []
        self.result: execution_pb2.ExecutionResult | None = None
        self.done = asyncio.Event()

    # -- NodeEvents --------------------------------------------------------

    def node_started(self, node_id: str, started_at: float) -> None:
        self.log.append((node_id, None, started_at))
        if self.watchers:
            self._tell((node_id, None, started_at))

    def node_finished(self, node_id: str, outcome: NodeOutcome, started_at: float) -> None:
        entry = (node_id, outcome, started_at)
        self.log.append(entry)
        if self.watchers:
            self._tell(entry)
        if self.on_progress is not None:
            self.on_progress(self)

    def _tell(self, item: object) -> None:
        for queue in self.watchers:
            queue.put_nowait(item)

    # -- what others see ---------------------------------------------------

    def finished_nodes(self) -> dict[str, NodeOutcome]:
        """Nodes finished so far, their outcomes with wall-clock start times."""
        nodes = {}
        for node_id, outcome, started_at in self.log:
            if outcome is not None:
                nodes[node_id] = NodeOutcome(
                    outcome.status, outcome.output, outcome.attempts, outcome.error, started_at, outcome.duration
                )
        return nodes

    def snapshot(self, status: int = RUNNING, error: str = "") -> execution_pb2.ExecutionResult:
        """The run as it stands: RUNNING (or `status`) with the nodes finished so far."""
        if self.result is not None:
            return self.result
        outcome = RunOutcome(
            status=status,
            output=None,
            nodes=self.finished_nodes(),
            error=error,
            started_at=self.started_at,
            duration=time.monotonic() - self._mono,
        )
        return self.build(outcome, run_id=self.run_id, trigger=self.trigger, resumed_from=self.resumed_from)

    def finish(self, result: execution_pb2.ExecutionResult) -> None:
        self.result = result
        self.done.set()
        if self.watchers:
            self._tell(result)

    async def events(self) -> AsyncIterator[execution_pb2.RunEvent]:
        """Every node event so far, then new ones as they happen, then the final result."""
        queue: asyncio.Queue = asyncio.Queue()
        # Replay and subscribe with no await between: no event falls in the gap.
        backlog = list(self.log)
        final = self.result
        if final is None:
            self.watchers.append(queue)
        try:
            for item in backlog:
                yield self._event(item)
            while final is None:
                item = await queue.get()
                if isinstance(item, execution_pb2.ExecutionResult):
                    final = item
                else:
                    yield self._event(item)
            yield execution_pb2.RunEvent(run_id=self.run_id, finished=final)
        finally:
            if queue in self.watchers:
                self.watchers.remove(queue)

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
            nodes={node_id: NodeOutcome(outcome.status, outcome.output, outcome.attempts, outcome.error, started_at, outcome.duration)},
            error="",
            started_at=self.started_at,
            duration=0.0,
        )
        built = self.build(single, run_id=self.run_id, trigger=self.trigger, resumed_from=self.resumed_from)
        event.node_finished.node_id = node_id
        event.node_finished.result.CopyFrom(built.nodes[node_id])
        return event


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
