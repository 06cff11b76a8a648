"""The in-memory run history, idempotency keys and resume states: bounds and order."""

from __future__ import annotations

from engine.serve.history import IdempotencyKeys, MemoryHistory, ResumeState, ResumeStates, summary
from proto.pipedreamer.v1 import execution_pb2


def _result(run_id: str, started: int, status=execution_pb2.RUN_STATUS_SUCCEEDED, trigger: str = "") -> execution_pb2.ExecutionResult:
    result = execution_pb2.ExecutionResult(run_id=run_id, status=status, trigger=trigger)
    result.started_at.seconds = started
    result.nodes["a"].output.string_value = "big"
    return result


async def test_memory_history_keeps_the_last_n_and_lists_newest_first_with_filters():
    history = MemoryHistory(3)
    for i, status in enumerate([1, 2, 1, 2]):
        history.record(_result(f"r{i}", started=100 + i, status=status, trigger="cron" if i % 2 else ""))
    assert await history.get("r0") is None  # the oldest went when the fourth came
    assert [r.run_id for r in await history.list(limit=10)] == ["r3", "r2", "r1"]
    assert [r.run_id for r in await history.list(limit=1)] == ["r3"]
    assert [r.run_id for r in await history.list(limit=10, status=execution_pb2.RUN_STATUS_FAILED)] == ["r3", "r1"]
    assert [r.run_id for r in await history.list(limit=10, trigger="")] == ["r2"]
    # A run recorded again (RUNNING, then its end) replaces its first record.
    history.record(_result("r2", started=102, status=execution_pb2.RUN_STATUS_CANCELLED))
    assert (await history.get("r2")).status == execution_pb2.RUN_STATUS_CANCELLED


def test_a_summary_leaves_node_outputs_out_and_the_record_untouched():
    result = _result("r", 1)
    brief = summary(result)
    assert not brief.nodes["a"].HasField("output") and result.nodes["a"].output.string_value == "big"


def test_idempotency_keys_are_held_for_the_window_then_forgotten_and_bounded():
    keys = IdempotencyKeys(window=10, limit=2)
    assert keys.claim("k", "r1", now=0) is None
    assert keys.claim("k", "r2", now=5) == "r1"
    assert keys.claim("k", "r3", now=11) is None  # past the window: a new run
    assert keys.claim("a", "r4", now=11) is None
    assert keys.claim("b", "r5", now=11) is None  # the limit: the oldest key goes
    assert keys.claim("k", "r6", now=11) is None


def test_resume_states_keep_the_last_n_only():
    states = ResumeStates(2)
    for i in range(3):
        states.keep(f"r{i}", ResumeState({"i": i}, {}))
    assert states.get("r0") is None and states.get("r2").input == {"i": 2}
    off = ResumeStates(0)
    off.keep("r", ResumeState({}, {}))
    assert off.get("r") is None


def test_the_default_history_size_is_the_flags_default():
    from engine.serve import history, options

    assert history.DEFAULT_HISTORY == options.DEFAULT_HISTORY == 1000
