"""Admission of runs: one gate shared by HTTP, gRPC and NATS.

It refuses new runs while draining or past `--max-concurrent-runs`, counts runs
in flight for metrics and shutdown, and cancels what is left when the shutdown
deadline passes.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from engine.serve.metrics import EngineMetrics
from proto.pipedreamer.v1 import execution_pb2


class RunRejected(Exception):
    """A run was refused before it started; `reason` is a short metric label."""

    reason = "rejected"


class Draining(RunRejected):
    reason = "draining"

    def __init__(self) -> None:
        super().__init__("the engine is shutting down and accepts no new runs")


class AtCapacity(RunRejected):
    reason = "at_capacity"

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(
            f"too many runs in flight: the limit is {limit} (--max-concurrent-runs); retry later"
        )


class RunsWorkflows(Protocol):
    """What the gate needs from `engine.runtime.Engine`."""

    async def run(self, input: Any, *, trigger: str = "", run_id: str | None = None) -> execution_pb2.ExecutionResult: ...


class RunGate:
    """Starts runs on the engine unless draining or full; remembers them for shutdown."""

    def __init__(
        self,
        engine: RunsWorkflows,
        metrics: EngineMetrics,
        *,
        workflow: str,
        version: str,
        max_concurrent_runs: int | None = None,
    ) -> None:
        if max_concurrent_runs is not None and max_concurrent_runs < 1:
            raise ValueError("max_concurrent_runs must be at least 1")
        self.engine = engine
        self.metrics = metrics
        self.workflow = workflow
        self.version = version
        self.max_concurrent_runs = max_concurrent_runs
        self._slots = asyncio.Semaphore(max_concurrent_runs) if max_concurrent_runs else None
        self._runs: set[asyncio.Task] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._draining = False
        self._cancelled_reason = ""
        self._cancelled: set[asyncio.Task] = set()

    @property
    def draining(self) -> bool:
        return self._draining

    @property
    def in_flight(self) -> int:
        return len(self._runs)

    async def run(
        self,
        input: Any,
        *,
        trigger: str = "",
        wait_for_slot: bool = False,
        while_draining: bool = False,
    ) -> execution_pb2.ExecutionResult:
        """Runs the workflow once; raises `Draining` or `AtCapacity` instead of starting.

        `wait_for_slot` queues for a slot instead of refusing (queue triggers,
        whose messages have nowhere else to go); `while_draining` admits a run
        during shutdown (a queue message already delivered to this replica).
        """
        if self._draining and not while_draining:
            self.metrics.rejected(Draining.reason)
            raise Draining()
        slots = self._slots
        if slots is not None:
            if slots.locked() and not wait_for_slot:
                self.metrics.rejected(AtCapacity.reason)
                raise AtCapacity(self.max_concurrent_runs or 0)
            await slots.acquire()
        task = asyncio.current_task()
        assert task is not None
        self._runs.add(task)
        self._idle.clear()
        self.metrics.in_flight.inc()
        try:
            result = await self.engine.run(input, trigger=trigger)
        except asyncio.CancelledError:
            if task not in self._cancelled:
                # The caller went away (an HTTP client hung up, a gRPC call was cancelled):
                # the run stopped with it, its nodes cancelled.
                self.metrics.observe(self.synthetic_result(execution_pb2.RUN_STATUS_CANCELLED, "", trigger))
                raise
            # Cancelled by the shutdown deadline: the caller still gets an answer.
            task.uncancel()
            result = self.synthetic_result(execution_pb2.RUN_STATUS_CANCELLED, self._cancelled_reason, trigger)
        finally:
            self._runs.discard(task)
            self._cancelled.discard(task)
            self.metrics.in_flight.dec()
            if not self._runs:
                self._idle.set()
            if slots is not None:
                slots.release()
        self.metrics.observe(result)
        return result

    def drain(self) -> None:
        """Refuses new runs from now on; runs in flight go on."""
        self._draining = True

    async def wait_idle(self, timeout: float | None) -> bool:
        """True once no run is in flight; False when `timeout` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def cancel_all(self, reason: str) -> int:
        """Cancels every run in flight (each caller gets a CANCELLED result); returns how many."""
        self._cancelled_reason = reason
        tasks = list(self._runs)
        for task in tasks:
            self._cancelled.add(task)
            task.cancel()
        # Each caller's task goes on (to answer), so wait for the runs to leave the gate.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while self._runs.intersection(tasks) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        return len(tasks)

    def synthetic_result(self, status: int, error: str, trigger: str = "") -> execution_pb2.ExecutionResult:
        """A result for a run that never ran its nodes (refused, bad input, cancelled at shutdown)."""
        result = execution_pb2.ExecutionResult(
            workflow=self.workflow, version=self.version, status=status, error=error, trigger=trigger
        )
        result.started_at.GetCurrentTime()
        return result
