"""Admission of runs: one gate shared by HTTP, gRPC and NATS (and every trigger to come).

It refuses new runs while draining or past `--max-concurrent-runs`, counts runs
in flight for metrics and shutdown, and cancels what is left when the shutdown
deadline passes. It is also where runs are recorded: with a `RunHistory`, each
run gets a `LiveRun` (node events, RUNNING snapshots, watchers) and its final
redacted result goes to the history, whatever front end started it. Async
submits, idempotency keys and resumes are served here for the same reason.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator, Protocol

from engine.executor import RunObserver, RunOutcome
from engine.results import FinishedRun
from engine.runtime import Resume
from engine.serve.history import HistoryOff, ResumeState, ResumeStates, RunHistory, summary
from engine.serve.live import LiveRun, node_events_between
from engine.serve.metrics import EngineMetrics
from engine.values import value_to_python
from proto.pipedreamer.v1 import execution_pb2

log = logging.getLogger("pipedreamer.gate")

RUNNING = execution_pb2.RUN_STATUS_RUNNING
SUCCEEDED = execution_pb2.RUN_STATUS_SUCCEEDED
# How often a run held by another replica is read again while someone waits on it.
POLL_INTERVAL = 0.2


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


class RunNotFound(LookupError):
    """No run with that id in this engine's history."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"no run {run_id!r} in the history of this workflow (unknown, or older than the history keeps)")

    def __str__(self) -> str:
        return str(self.args[0])


class RunConflict(ValueError):
    """The request names a run it cannot have its way with (HTTP 409, gRPC FAILED_PRECONDITION)."""


class CannotResume(RunConflict):
    """The run exists but cannot be resumed (still running, succeeded, its needed outputs redacted …)."""


class FirstRunLost(RunConflict):
    """An idempotency key's first run is no longer in the history: its result cannot be answered."""

    def __init__(self, run_id: str) -> None:
        super().__init__(
            f"this idempotency key was first used by run {run_id}, which is no longer in the history "
            "(older than the history keeps, or its engine stopped before recording it); use a new key to run again"
        )


# How long a key's first run may stay missing from a shared store (its record still on the way).
LOST_AFTER = 30.0


class RunsWorkflows(Protocol):
    """What the gate needs from `engine.runtime.Engine`."""

    async def run(self, input: Any, *, trigger: str = "", run_id: str | None = None) -> execution_pb2.ExecutionResult: ...

    async def execute(
        self,
        input: Any,
        *,
        trigger: str = "",
        run_id: str | None = None,
        observer: RunObserver | None = None,
        resume: Resume | None = None,
        as_json: bool = False,
    ) -> tuple[execution_pb2.ExecutionResult | bytes, RunOutcome]: ...

    def build_result(
        self, outcome: RunOutcome, *, run_id: str, trigger: str = "", resumed_from: str = ""
    ) -> execution_pb2.ExecutionResult: ...


    def new_run_id(self) -> str: ...

    def redact(self, text: str) -> str: ...


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
        history: RunHistory | None = None,
        resume_capacity: int = 1000,
    ) -> None:
        """`history` None: runs are not recorded (and submit, get, list, watch, resume and
        idempotency keys raise HistoryOff). `resume_capacity`: how many runs that did not
        succeed keep their real outputs in memory for a resume."""
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
        self.history = history
        self._live: dict[str, LiveRun] = {}
        self._resumable = ResumeStates(resume_capacity)
        self._submitted: set[asyncio.Task] = set()

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
        idempotency_key: str = "",
        resume_from: str = "",
        input_given: bool = True,
    ) -> execution_pb2.ExecutionResult:
        """Runs the workflow once; raises `Draining` or `AtCapacity` instead of starting.

        `wait_for_slot` queues for a slot instead of refusing (queue triggers,
        whose messages have nowhere else to go); `while_draining` admits a run
        during shutdown (a queue message already delivered to this replica).
        `idempotency_key`: a key seen in the last 24 h answers that run's result
        (waiting for it if it is still going) and nothing runs. `resume_from`:
        re-run only what that run did not finish (`input_given` False: its root
        nodes get that run's input, when this engine still holds it).
        Raises HistoryOff, RunNotFound or CannotResume for keys and resumes it cannot serve.
        """
        finished = await self.run_finished(
            input,
            trigger=trigger,
            wait_for_slot=wait_for_slot,
            while_draining=while_draining,
            idempotency_key=idempotency_key,
            resume_from=resume_from,
            input_given=input_given,
        )
        return finished.snapshot()

    async def run_finished(
        self,
        input: Any,
        *,
        trigger: str = "",
        wait_for_slot: bool = False,
        while_draining: bool = False,
        idempotency_key: str = "",
        resume_from: str = "",
        input_given: bool = True,
        text: bool = False,
    ) -> FinishedRun:
        """`run`, its result as a `FinishedRun`. `text`: the caller answers JSON (HTTP), so the result
        is made as its JSON from the run's outcome and the message only if something asks for it."""
        self._admit(wait_for_slot, while_draining)
        history = self.history
        if history is None:
            if idempotency_key or resume_from:
                raise HistoryOff()
            return await self._run_unrecorded(input, trigger, text)
        resume = None
        if resume_from:
            resume, input = await self._resume(resume_from, input, input_given)
        run_id = self.engine.new_run_id()
        if idempotency_key:
            first = await history.claim(idempotency_key, run_id)
            if first is not None:
                return FinishedRun.of(await self.wait_result(first))
        live = self._start_live(run_id, trigger, resume)
        return await self._run_recorded(live, input, resume, text)

    async def submit(
        self,
        input: Any,
        *,
        trigger: str = "",
        idempotency_key: str = "",
        resume_from: str = "",
        input_given: bool = True,
    ) -> str:
        """Starts a run that no caller waits on; returns its id at once (the first run's, for a repeated key)."""
        self._admit(False, False)
        history = self.history
        if history is None:
            raise HistoryOff()
        resume = None
        if resume_from:
            resume, input = await self._resume(resume_from, input, input_given)
        run_id = self.engine.new_run_id()
        if idempotency_key:
            first = await history.claim(idempotency_key, run_id)
            if first is not None:
                return first
        live = self._start_live(run_id, trigger, resume)
        task = asyncio.get_running_loop().create_task(self._run_recorded(live, input, resume, False))
        self._submitted.add(task)
        task.add_done_callback(self._submitted_done)
        return run_id

    def _submitted_done(self, task: asyncio.Task) -> None:
        self._submitted.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("submitted run failed inside the engine: %s", self.engine.redact(f"{type(exc).__name__}: {exc}"))

    def _admit(self, wait_for_slot: bool, while_draining: bool) -> None:
        if self._draining and not while_draining:
            self.metrics.rejected(Draining.reason)
            raise Draining()
        slots = self._slots
        if slots is not None and slots.locked() and not wait_for_slot:
            self.metrics.rejected(AtCapacity.reason)
            raise AtCapacity(self.max_concurrent_runs or 0)

    def _enter(self, task: asyncio.Task) -> None:
        self._runs.add(task)
        self._idle.clear()
        self.metrics.runs.in_flight += 1

    def _leave(self, task: asyncio.Task) -> None:
        self._runs.discard(task)
        self._cancelled.discard(task)
        self.metrics.runs.in_flight -= 1
        if not self._runs:
            self._idle.set()

    @staticmethod
    def _finished(result: execution_pb2.ExecutionResult | bytes, outcome: RunOutcome, run_id: str, trigger: str) -> FinishedRun:
        """What `Engine.execute` answered (the message, or its JSON), as a FinishedRun."""
        if isinstance(result, bytes):
            return FinishedRun.from_text(result, outcome, run_id=run_id, trigger=trigger)
        return FinishedRun.of(result)

    async def _run_unrecorded(self, input: Any, trigger: str, text: bool) -> FinishedRun:
        """History off: the run as it always was, no events, nothing kept."""
        slots = self._slots
        if slots is not None:
            await slots.acquire()
        task = asyncio.current_task()
        assert task is not None
        self._enter(task)
        try:
            run_id = self.engine.new_run_id()
            result, outcome = await self.engine.execute(input, trigger=trigger, run_id=run_id, as_json=text)
            finished = self._finished(result, outcome, run_id, trigger)
        except asyncio.CancelledError:
            if task not in self._cancelled:
                # The caller went away (an HTTP client hung up, a gRPC call was cancelled):
                # the run stopped with it, its nodes cancelled.
                self.metrics.observe(execution_pb2.RUN_STATUS_CANCELLED)
                raise
            # Cancelled by the shutdown deadline: the caller still gets an answer.
            task.uncancel()
            cancelled = self.synthetic_result(execution_pb2.RUN_STATUS_CANCELLED, self._cancelled_reason, trigger)
            self.metrics.observe_result(cancelled)
            return FinishedRun.of(cancelled)
        finally:
            self._leave(task)
            if slots is not None:
                slots.release()
        self.metrics.observe(outcome.status, outcome)
        return finished

    def _start_live(self, run_id: str, trigger: str, resume: Resume | None) -> LiveRun:
        history = self.history
        assert history is not None
        live = LiveRun(
            run_id,
            trigger,
            self.engine.build_result,
            resumed_from=resume.run_id if resume is not None else "",
            # A store other replicas read gets each node's progress; this process answers from `_live`.
            on_progress=self._progress if history.shared else None,
        )
        self._live[run_id] = live
        if history.shared:
            history.record(live)
        return live

    def _progress(self, live: LiveRun) -> None:
        assert self.history is not None
        self.history.record(live)

    async def _run_recorded(self, live: LiveRun, input: Any, resume: Resume | None, text: bool) -> FinishedRun:
        slots = self._slots
        task = asyncio.current_task()
        assert task is not None
        try:
            if slots is not None:
                await slots.acquire()
        except asyncio.CancelledError:
            cancelled = live.snapshot(execution_pb2.RUN_STATUS_CANCELLED, "cancelled: the caller went away")
            self._end_live(live, FinishedRun.of(cancelled), None, input)
            raise
        self._enter(task)
        outcome: RunOutcome | None = None
        try:
            result, outcome = await self.engine.execute(
                input, trigger=live.trigger, run_id=live.run_id, observer=live, resume=resume, as_json=text
            )
            finished = self._finished(result, outcome, live.run_id, live.trigger)
        except asyncio.CancelledError:
            if task not in self._cancelled:
                cancelled = live.snapshot(execution_pb2.RUN_STATUS_CANCELLED, "cancelled: the caller went away")
                self.metrics.observe_result(cancelled)
                self._end_live(live, FinishedRun.of(cancelled), None, input)
                raise
            task.uncancel()
            outcome = None
            cancelled = live.snapshot(execution_pb2.RUN_STATUS_CANCELLED, self._cancelled_reason)
            self.metrics.observe_result(cancelled)
            finished = FinishedRun.of(cancelled)
        except BaseException as exc:
            message_text = self.engine.redact(f"internal error: {type(exc).__name__}: {exc}")
            self._end_live(live, FinishedRun.of(live.snapshot(execution_pb2.RUN_STATUS_FAILED, message_text)), None, input)
            raise
        finally:
            self._leave(task)
            if slots is not None:
                slots.release()
        self._end_live(live, finished, outcome, input)
        if outcome is not None:
            self.metrics.observe(finished.status, outcome)
        return finished

    def _end_live(self, live: LiveRun, finished: FinishedRun, outcome: RunOutcome | None, input: Any) -> None:
        live.finish(finished)
        self._live.pop(live.run_id, None)
        assert self.history is not None
        self.history.record(finished)
        if outcome is not None and finished.status != SUCCEEDED:
            succeeded = execution_pb2.NODE_STATUS_SUCCEEDED
            outputs = {node_id: node.output for node_id, node in outcome.nodes.items() if node.status == succeeded}
            self._resumable.keep(live.run_id, ResumeState(input, outputs))

    # -- runs recorded: read, wait, watch, resume ---------------------------

    def _history(self) -> RunHistory:
        if self.history is None:
            raise HistoryOff()
        return self.history

    async def get_run(self, run_id: str) -> execution_pb2.ExecutionResult:
        """The run's result, RUNNING with the nodes finished so far while it goes on; raises RunNotFound."""
        history = self._history()
        live = self._live.get(run_id)
        if live is not None:
            return live.snapshot()
        found = await history.get(run_id)
        if found is None:
            raise RunNotFound(run_id)
        return found

    async def list_runs(self, *, limit: int, status: int = 0, trigger: str | None = None) -> list[execution_pb2.ExecutionResult]:
        """Newest first, node outputs left out; runs in flight here are shown as they stand now."""
        history = self._history()
        stored = await history.list(limit=limit, status=status, trigger=trigger)
        if status and status != RUNNING:
            live = []
        else:
            live = [r for r in (run.snapshot() for run in list(self._live.values())) if trigger is None or r.trigger == trigger]
        mine = {r.run_id for r in live}
        runs = live + [r for r in stored if r.run_id not in mine]
        runs.sort(key=lambda r: (r.started_at.seconds, r.started_at.nanos), reverse=True)
        return [summary(r) for r in runs[:limit]]

    async def wait_result(self, run_id: str) -> execution_pb2.ExecutionResult:
        """The final result of a run, waiting for it while it goes on (here, or on another replica)."""
        history = self._history()
        loop = asyncio.get_running_loop()
        missing_since: float | None = None
        while True:
            live = self._live.get(run_id)
            if live is not None:
                return await live.wait()
            found = await history.get(run_id)
            if found is not None and found.status != RUNNING:
                return found
            if found is None:
                # In a shared store another replica's record may still be on its way.
                missing_since = loop.time() if missing_since is None else missing_since
                if not history.shared or loop.time() - missing_since > LOST_AFTER:
                    raise FirstRunLost(run_id)
            else:
                missing_since = None
            await asyncio.sleep(POLL_INTERVAL)

    async def watch(self, run_id: str) -> AsyncIterator[execution_pb2.RunEvent]:
        """Node events of a run (those so far first), ending with its final result; raises RunNotFound."""
        history = self._history()
        live = self._live.get(run_id)
        if live is not None:
            async for event in live.events():
                yield event
            return
        seen = await history.get(run_id)
        if seen is None:
            raise RunNotFound(run_id)
        for event in node_events_between(None, seen):
            yield event
        # Held by another replica (a shared store): follow its record.
        while seen.status == RUNNING:
            await asyncio.sleep(POLL_INTERVAL)
            live = self._live.get(run_id)
            if live is not None:  # it was still being set up here
                async for event in live.events():
                    if event.WhichOneof("event") != "node_finished" or event.node_finished.node_id not in seen.nodes:
                        yield event
                return
            now = await history.get(run_id)
            if now is None:
                break
            for event in node_events_between(seen, now):
                yield event
            seen = now
        yield execution_pb2.RunEvent(run_id=run_id, finished=seen)

    async def _resume(self, run_id: str, input: Any, input_given: bool) -> tuple[Resume, Any]:
        """What a resume of `run_id` starts from, and the input its root nodes get."""
        if run_id in self._live:
            raise CannotResume(f"run {run_id} is still running: wait for it to end before resuming it")
        kept = self._resumable.get(run_id)
        if kept is not None:
            return Resume(run_id, kept.outputs), (kept.input if not input_given else input)
        record = await self._history().get(run_id)
        if record is None:
            raise RunNotFound(run_id)
        if record.status == RUNNING:
            raise CannotResume(f"run {run_id} is still running: wait for it to end before resuming it")
        if record.status == SUCCEEDED:
            raise CannotResume(f"run {run_id} succeeded: there is nothing to resume")
        succeeded = {n for n, node in record.nodes.items() if node.status == execution_pb2.NODE_STATUS_SUCCEEDED}
        if not succeeded and not record.nodes:
            raise CannotResume(f"run {run_id} never ran its nodes ({record.error or 'no node results'}): start a new run instead")
        dag = getattr(self.engine, "dag", None)
        needed = sorted(
            n for n in succeeded
            if record.nodes[n].output_redacted
            and (dag is None or any(child not in succeeded for child in dag.dependents.get(n, ())))
        )
        if needed:
            raise CannotResume(
                f"run {run_id}: the recorded output of {', '.join(needed)} had secrets replaced by *** and the real "
                "output is no longer held by this engine (it keeps them in memory only, on the engine that ran it, "
                "for the last --history runs); start a new run instead"
            )
        roots_rerun = dag is not None and any(r not in succeeded for r in dag.roots)
        if roots_rerun and not input_given:
            raise CannotResume(
                f"run {run_id}: its root nodes run again and need its input, which is not in the history "
                "(only the engine that ran it holds it, in memory): give the input again with the resume request"
            )
        outputs = {n: value_to_python(record.nodes[n].output) for n in succeeded}
        return Resume(run_id, outputs), input

    async def wait_recorded(self, run_id: str, timeout: float) -> bool:
        """True once the run's final result is in the history store (at once for memory, or with history
        off); False when `timeout` passed first. Durable queue messages are acknowledged after it."""
        written = getattr(self.history, "wait_written", None)
        if written is None:
            return True
        return await written(run_id, timeout)

    async def open_history(self) -> None:
        if self.history is not None:
            await self.history.open()

    async def close_history(self) -> None:
        """Waits for submitted runs' tasks to finish recording, then closes the store."""
        if self._submitted:
            await asyncio.wait(set(self._submitted), timeout=5)
        if self.history is not None:
            await self.history.close()

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

    def internal_error(self, exc: BaseException, where: str = "") -> str:
        """`internal error: Type: message`, secrets redacted, logged with its traceback once: what
        every front end answers (HTTP 500, gRPC INTERNAL, a FAILED NATS reply) when a bug in the
        engine, not a node, broke a run."""
        message = self.engine.redact(f"{type(exc).__name__}: {exc}")
        log.error("%srun failed inside the engine: %s", f"{where}: " if where else "", message, exc_info=exc)
        return f"internal error: {message}"

    def synthetic_result(self, status: int, error: str, trigger: str = "") -> execution_pb2.ExecutionResult:
        """A result for a run that never ran its nodes (refused, bad input, cancelled at shutdown)."""
        result = execution_pb2.ExecutionResult(
            workflow=self.workflow, version=self.version, status=status, error=error, trigger=trigger
        )
        result.started_at.GetCurrentTime()
        return result
