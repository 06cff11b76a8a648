"""Run history: where a serving engine records every run's redacted `ExecutionResult`.

`RunHistory` is the seam the gate (engine/serve/admission.py) records through,
so every trigger that goes through the gate is recorded. Two stores:
`MemoryHistory` (the default: this process, the last `--history N` runs) and
`engine.serve.history_nats.NatsHistory` (`config.history: nats`: a JetStream
key-value bucket shared by replicas). Only redacted results reach a store; the
real outputs a resume needs stay in the gate's memory (`ResumeStates`).

Idempotency keys live in the same store: `claim(key, run_id)` is atomic, so a
key claimed on one replica is seen by the others (24 h window).
"""

from __future__ import annotations

import collections
import dataclasses
import time
from typing import Any, Mapping, Protocol

from proto.pipedreamer.v1 import execution_pb2
from engine.errors import PipedreamerError
from engine.results import FinishedRun

DEFAULT_HISTORY = 1000  # runs the memory store keeps (--history); 0 turns history off
DEFAULT_LIST_LIMIT = 20
MAX_LIST_LIMIT = 1000
IDEMPOTENCY_WINDOW = 24 * 3600.0  # seconds a key is remembered
# Keys remembered at once by the memory store: a flood of distinct keys must not grow without bound.
MAX_IDEMPOTENCY_KEYS = 100_000
RUNNING = execution_pb2.RUN_STATUS_RUNNING


class HistoryError(PipedreamerError):
    """The history cannot answer: it is off, or its store cannot be reached."""


class HistoryOff(HistoryError):
    def __init__(self) -> None:
        super().__init__("run history is off on this engine (--history 0): runs are not recorded")


class HistoryUnavailable(HistoryError):
    pass


class InFlight(Protocol):
    """A run still going on (engine.serve.live.LiveRun), as a shared store records it."""

    run_id: str

    def snapshot(self) -> execution_pb2.ExecutionResult: ...


class RunHistory(Protocol):
    """A store of run results, newest first. `record` never blocks the run that calls it."""

    # True when other replicas read it too: runs in flight are recorded as they progress.
    shared: bool

    async def open(self) -> None: ...

    def record(self, result: execution_pb2.ExecutionResult | FinishedRun | InFlight) -> None:
        """Stores a run's result (the message, or a `FinishedRun` in either of its forms),
        replacing an earlier one of the same run.

        A `shared` store also gets runs in flight (an `InFlight`, whose RUNNING
        snapshot is built when the store gets round to writing it, so progress
        of many nodes is written once).
        """
        ...

    async def get(self, run_id: str) -> execution_pb2.ExecutionResult | None: ...

    async def list(self, *, limit: int, status: int = 0, trigger: str | None = None) -> list[execution_pb2.ExecutionResult]:
        """Newest first (by start time), at most `limit`, optionally only one status or trigger."""
        ...

    async def claim(self, key: str, run_id: str) -> str | None:
        """Claims an idempotency key for `run_id`: None if it is ours now, else the run id that holds it."""
        ...

    async def close(self) -> None:
        """Writes what is pending, then lets go of the store."""
        ...


def summary(result: execution_pb2.ExecutionResult) -> execution_pb2.ExecutionResult:
    """A result for a list: everything but the node outputs."""
    brief = execution_pb2.ExecutionResult()
    brief.CopyFrom(result)
    for node in brief.nodes.values():
        node.ClearField("output")
    return brief


def matches(result: execution_pb2.ExecutionResult | FinishedRun, status: int, trigger: str | None) -> bool:
    return (not status or result.status == status) and (trigger is None or result.trigger == trigger)


def started_key(result: execution_pb2.ExecutionResult) -> tuple[int, int]:
    return result.started_at.seconds, result.started_at.nanos


class MemoryHistory:
    """The last `capacity` runs of this process, in insertion (start) order."""

    shared = False

    def __init__(self, capacity: int = DEFAULT_HISTORY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1 (history off is no store at all)")
        self.capacity = capacity
        self._runs: collections.OrderedDict[str, FinishedRun] = collections.OrderedDict()
        self._keys = IdempotencyKeys()

    async def open(self) -> None:
        pass

    def record(self, result: execution_pb2.ExecutionResult | FinishedRun) -> None:
        """Keeps a finished run as it comes (an HTTP answer's JSON is read back only if someone asks)."""
        runs = self._runs
        runs[result.run_id] = result if isinstance(result, FinishedRun) else FinishedRun.of(result)
        if len(runs) > self.capacity:
            runs.popitem(last=False)

    async def get(self, run_id: str) -> execution_pb2.ExecutionResult | None:
        found = self._runs.get(run_id)
        return found.snapshot() if found is not None else None

    async def list(self, *, limit: int, status: int = 0, trigger: str | None = None) -> list[execution_pb2.ExecutionResult]:
        found = [r for r in self._runs.values() if matches(r, status, trigger)]
        # Recorded when they end; listed by when they started.
        found.sort(key=lambda run: run.started, reverse=True)
        return [run.snapshot() for run in found[:limit]]

    async def claim(self, key: str, run_id: str) -> str | None:
        return self._keys.claim(key, run_id)

    async def close(self) -> None:
        pass


class IdempotencyKeys:
    """key → run id for `window` seconds, at most `limit` keys (the oldest go first)."""

    def __init__(self, window: float = IDEMPOTENCY_WINDOW, limit: int = MAX_IDEMPOTENCY_KEYS) -> None:
        self.window = window
        self.limit = limit
        self._keys: collections.OrderedDict[str, tuple[str, float]] = collections.OrderedDict()

    def claim(self, key: str, run_id: str, now: float | None = None) -> str | None:
        now = time.monotonic() if now is None else now
        keys = self._keys
        while keys:
            oldest, (_, expires) = next(iter(keys.items()))
            if expires > now and len(keys) < self.limit:
                break
            del keys[oldest]
        held = keys.get(key)
        if held is not None:
            return held[0]
        keys[key] = (run_id, now + self.window)
        return None


@dataclasses.dataclass(frozen=True)
class ResumeState:
    """What a resume of a run needs that its redacted record lacks: its input and real outputs."""

    input: Any
    outputs: Mapping[str, Any]


class ResumeStates:
    """The real input and succeeded outputs of the last `capacity` runs that did not succeed, in memory only.

    Never written to a store: outputs may hold secrets the records show as ***.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._states: collections.OrderedDict[str, ResumeState] = collections.OrderedDict()

    def keep(self, run_id: str, state: ResumeState) -> None:
        if self.capacity < 1:
            return
        self._states[run_id] = state
        if len(self._states) > self.capacity:
            self._states.popitem(last=False)

    def get(self, run_id: str) -> ResumeState | None:
        return self._states.get(run_id)
