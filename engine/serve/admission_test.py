"""RunGate: the run cap, draining, queueing for a slot and the shutdown deadline, on a real Engine."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.serve.admission import AtCapacity, Draining, RunGate
from engine.serve.metrics import EngineMetrics
from engine.runtime import Engine
from proto.pipedreamer.v1 import execution_pb2
from tests.support import SLEEPING_NODE, wait_for_async, write_workflow


@pytest.fixture
async def engine(tmp_path: Path):
    write_workflow(tmp_path, {"wait": SLEEPING_NODE}, name="gate")
    engine = await Engine.start(tmp_path, secrets_mount=None)
    yield engine
    await engine.close()


def _gate(engine: Engine, limit: int | None = None) -> RunGate:
    return RunGate(engine, EngineMetrics("gate"), workflow="gate", version="1.0.0", max_concurrent_runs=limit)


async def test_runs_past_the_cap_are_refused_and_counted(engine: Engine):
    gate = _gate(engine, 1)
    first = asyncio.create_task(gate.run({"sleep": 0.2}))
    await wait_for_async("the first run in flight", lambda: gate.in_flight == 1)
    with pytest.raises(AtCapacity, match="the limit is 1"):
        await gate.run({})
    assert (await first).status == execution_pb2.RUN_STATUS_SUCCEEDED
    assert (await gate.run({})).status == execution_pb2.RUN_STATUS_SUCCEEDED
    assert b'reason="at_capacity",workflow="gate"} 1.0' in gate.metrics.render()


async def test_waiting_for_a_slot_queues_instead_of_refusing(engine: Engine):
    gate = _gate(engine, 1)
    runs = [asyncio.create_task(gate.run({"sleep": 0.1, "i": i}, wait_for_slot=True)) for i in range(3)]
    await wait_for_async("one run in flight", lambda: gate.in_flight == 1)
    await asyncio.sleep(0)  # the other two got their turn on the loop, and queued
    assert gate.in_flight == 1
    results = await asyncio.gather(*runs)
    assert [r.status for r in results] == [execution_pb2.RUN_STATUS_SUCCEEDED] * 3


async def test_draining_refuses_new_runs_but_not_those_already_delivered(engine: Engine):
    gate = _gate(engine)
    running = asyncio.create_task(gate.run({"sleep": 0.1}))
    await wait_for_async("a run in flight", lambda: gate.in_flight == 1)
    gate.drain()
    with pytest.raises(Draining):
        await gate.run({})
    assert (await gate.run({}, while_draining=True)).status == execution_pb2.RUN_STATUS_SUCCEEDED
    assert await gate.wait_idle(2)
    assert (await running).status == execution_pb2.RUN_STATUS_SUCCEEDED


async def test_cancel_all_answers_each_caller_with_a_cancelled_result(engine: Engine):
    gate = _gate(engine)
    runs = [asyncio.create_task(gate.run({"sleep": 60}, trigger="t")) for _ in range(2)]
    await wait_for_async("two runs in flight", lambda: gate.in_flight == 2)
    assert not await gate.wait_idle(0.05)
    assert await gate.cancel_all("deadline passed") == 2
    for result in await asyncio.gather(*runs):
        assert result.status == execution_pb2.RUN_STATUS_CANCELLED
        assert result.error == "deadline passed" and result.trigger == "t" and result.workflow == "gate"
    assert gate.in_flight == 0
    assert b'status="cancelled",workflow="gate"} 2.0' in gate.metrics.render()


async def test_a_caller_cancelled_from_outside_is_not_turned_into_a_result(engine: Engine):
    gate = _gate(engine)
    run = asyncio.create_task(gate.run({"sleep": 60}))
    await wait_for_async("a run in flight", lambda: gate.in_flight == 1)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert gate.in_flight == 0


async def test_a_key_whose_first_run_left_the_history_is_refused_not_run_again(engine: Engine):
    from engine.serve.admission import FirstRunLost
    from engine.serve.history import MemoryHistory

    gate = RunGate(engine, EngineMetrics("gate"), workflow="gate", version="1.0.0", history=MemoryHistory(1))
    first = await gate.run({}, idempotency_key="k")
    assert (await gate.run({}, idempotency_key="k")).run_id == first.run_id
    await gate.run({})  # the history keeps one run: the first one goes
    with pytest.raises(FirstRunLost, match=f"first used by run {first.run_id}, which is no longer in the history"):
        await gate.run({}, idempotency_key="k")
