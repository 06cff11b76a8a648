"""Executor: dependency-driven start, input resolution, fail-fast, retries, timeouts, output checks."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable

import pytest

from engine.compiler import compile_dag
from engine.executor import CANCELLED, FAILED, RUN_FAILED, RUN_SUCCEEDED, SKIPPED, SUCCEEDED, TIMED_OUT, DAGExecutor, backoff_delay, node_policies
from engine.values import MAX_JSON_DEPTH
from proto.pipedreamer.v1 import workflow_pb2

Node = Callable[[Any], Awaitable[Any]]
pytestmark = pytest.mark.timeout(30)


def make_dag(nodes: list[str], edges: list[tuple[str, str]], *, timeouts: dict[str, float] | None = None,
             retries: dict[str, int] | None = None, config_timeout: float | None = None, config_retries: int | None = None):
    spec = workflow_pb2.WorkflowSpec(name="t", version="1.0.0")
    for node_id in nodes:
        node = spec.nodes.add(id=node_id, path=f"nodes/{node_id}.py")
        if timeouts and node_id in timeouts:
            node.timeout.FromNanoseconds(int(timeouts[node_id] * 1e9))
        if retries and node_id in retries:
            node.retries = retries[node_id]
    for source, target in edges:
        spec.edges.add(source=source, target=target)
    if config_timeout is not None:
        spec.config.timeout.FromNanoseconds(int(config_timeout * 1e9))
    if config_retries is not None:
        spec.config.retries = config_retries
    return compile_dag(spec)


def runner_for(functions: dict[str, Node]):
    def run(node_id: str, input: Any) -> Awaitable[Any]:
        return functions[node_id](input)

    return run


async def echo(name: str, delay: float = 0.0) -> Node:
    async def node(input: Any) -> Any:
        if delay:
            await asyncio.sleep(delay)
        return {"node": name, "input": input}

    return node


async def test_chain_passes_each_output_to_the_next():
    dag = make_dag(["a", "b", "c"], [("a", "b"), ("b", "c")])

    async def add(input):
        return input + 1

    outcome = await DAGExecutor().execute(dag, runner_for({"a": add, "b": add, "c": add}), 1)
    assert outcome.status == RUN_SUCCEEDED
    assert outcome.output == 4
    assert [outcome.nodes[n].output for n in "abc"] == [2, 3, 4]
    assert all(outcome.nodes[n].status == SUCCEEDED and outcome.nodes[n].attempts == 1 for n in "abc")
    assert outcome.nodes["a"].started_at <= outcome.nodes["b"].started_at <= outcome.nodes["c"].started_at


async def test_fan_out_fan_in_merges_outputs_by_dependency_id():
    dag = make_dag(["src", "x", "y", "sink"], [("src", "x"), ("src", "y"), ("x", "sink"), ("y", "sink")])

    async def src(input):
        return input["n"]

    async def x(input):
        return input * 10

    async def y(input):
        return input * 100

    async def sink(input):
        return input

    outcome = await DAGExecutor().execute(dag, runner_for({"src": src, "x": x, "y": y, "sink": sink}), {"n": 2})
    assert outcome.output == {"x": 20, "y": 200}


async def test_several_sinks_give_a_keyed_output_and_roots_share_the_trigger_input():
    dag = make_dag(["r1", "r2"], [])

    async def ident(input):
        return input

    outcome = await DAGExecutor().execute(dag, runner_for({"r1": ident, "r2": ident}), {"k": 1})
    assert outcome.output == {"r1": {"k": 1}, "r2": {"k": 1}}


async def test_diamond_starts_each_node_when_its_own_dependencies_finish():
    # a → (fast, slow) → join, plus fast → after_fast: after_fast must not wait for slow.
    dag = make_dag(
        ["a", "fast", "slow", "join", "after_fast"],
        [("a", "fast"), ("a", "slow"), ("fast", "join"), ("slow", "join"), ("fast", "after_fast")],
    )
    started: dict[str, float] = {}

    def timed(name: str, delay: float) -> Node:
        async def node(input):
            started[name] = time.perf_counter()
            await asyncio.sleep(delay)
            return name

        return node

    functions = {"a": timed("a", 0), "fast": timed("fast", 0.01), "slow": timed("slow", 0.2),
                 "join": timed("join", 0), "after_fast": timed("after_fast", 0)}
    outcome = await DAGExecutor().execute(dag, runner_for(functions), None)
    assert outcome.status == RUN_SUCCEEDED
    assert started["after_fast"] - started["a"] < 0.1  # no stage barrier behind `slow`
    assert started["join"] - started["a"] >= 0.2
    assert outcome.output == {"after_fast": "after_fast", "join": "join"}
    assert outcome.nodes["join"].output == "join"


async def test_first_failure_cancels_running_siblings_and_skips_downstream():
    dag = make_dag(["root", "bad", "slow", "after_bad", "after_slow"],
                   [("root", "bad"), ("root", "slow"), ("bad", "after_bad"), ("slow", "after_slow")])
    cancelled = asyncio.Event()
    slow_started = asyncio.Event()

    async def root(input):
        return 1

    async def bad(input):
        await slow_started.wait()
        raise ValueError("boom")

    async def slow(input):
        slow_started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def never(input):
        raise AssertionError("must not start")

    outcome = await DAGExecutor().execute(
        dag, runner_for({"root": root, "bad": bad, "slow": slow, "after_bad": never, "after_slow": never}), None
    )
    assert cancelled.is_set()  # its 10 s were cut short, not waited for
    assert outcome.status == RUN_FAILED
    assert outcome.failed_node == "bad"
    assert outcome.error == "node bad failed: ValueError: boom"
    nodes = outcome.nodes
    assert nodes["root"].status == SUCCEEDED
    assert nodes["bad"].status == FAILED and nodes["bad"].error == "ValueError: boom" and nodes["bad"].attempts == 1
    assert nodes["slow"].status == CANCELLED and nodes["slow"].error == "cancelled: node bad failed"
    assert nodes["slow"].started_at is not None and nodes["slow"].duration < 1
    for skipped in ("after_bad", "after_slow"):
        assert nodes[skipped].status == SKIPPED
        assert nodes[skipped].started_at is None and nodes[skipped].attempts == 0
        assert nodes[skipped].error == "skipped: node bad failed"
    assert outcome.output is None


async def test_a_node_that_ignores_cancellation_is_still_awaited():
    dag = make_dag(["bad", "stubborn"], [])
    finished = []

    async def bad(input):
        await asyncio.sleep(0.01)
        raise RuntimeError("x")

    async def stubborn(input):
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)  # cleanup work; nothing may outlive the run
            finished.append(True)
            raise

    outcome = await DAGExecutor().execute(dag, runner_for({"bad": bad, "stubborn": stubborn}), None)
    assert finished == [True]
    assert outcome.nodes["stubborn"].status == CANCELLED and outcome.nodes["stubborn"].duration >= 0.05


async def test_a_sibling_cancelled_before_its_first_step_is_reported_cancelled():
    dag = make_dag(["bad", "other"], [])
    ran = []

    async def bad(input):
        raise RuntimeError("x")  # fails within the same loop step that launched `other`

    async def other(input):
        ran.append(1)

    outcome = await DAGExecutor().execute(dag, runner_for({"bad": bad, "other": other}), None)
    assert ran == []
    assert outcome.nodes["other"].status == CANCELLED
    assert outcome.nodes["other"].error == "cancelled: node bad failed" and outcome.nodes["other"].attempts == 0


async def test_retries_back_off_100_200_400_ms():
    dag = make_dag(["flaky"], [], retries={"flaky": 3})
    calls: list[float] = []

    async def flaky(input):
        calls.append(time.perf_counter())
        if len(calls) < 4:
            raise ConnectionError(f"try {len(calls)}")
        return "ok"

    outcome = await DAGExecutor().execute(dag, runner_for({"flaky": flaky}), None)
    assert outcome.status == RUN_SUCCEEDED
    node = outcome.nodes["flaky"]
    assert node.attempts == 4 and node.error == "" and node.output == "ok"
    gaps = [b - a for a, b in zip(calls, calls[1:])]
    for gap, want in zip(gaps, (0.1, 0.2, 0.4)):
        assert want <= gap < want + 0.08, gaps


async def test_retries_exhausted_report_every_attempt():
    dag = make_dag(["flaky"], [], config_retries=2)
    calls = []

    async def flaky(input):
        calls.append(1)
        raise ConnectionError("down")

    outcome = await DAGExecutor(backoff_base=0.001).execute(dag, runner_for({"flaky": flaky}), None)
    node = outcome.nodes["flaky"]
    assert len(calls) == 3 and node.attempts == 3
    assert node.status == FAILED and node.error == "ConnectionError: down (after 3 attempts)"


def test_backoff_delay_doubles():
    assert [backoff_delay(i) for i in (1, 2, 3, 4)] == [0.1, 0.2, 0.4, 0.8]


def test_node_timeout_and_retries_override_config_and_default_is_30s():
    dag = make_dag(["a", "b", "c"], [], timeouts={"a": 0.5}, retries={"a": 4}, config_retries=1)
    policies = node_policies(dag)
    assert policies["a"].timeout == 0.5 and policies["a"].retries == 4
    assert policies["b"].timeout == 30 and policies["b"].retries == 1
    dag = make_dag(["a"], [], config_timeout=2, retries={"a": 0}, config_retries=3)
    assert node_policies(dag)["a"].timeout == 2 and node_policies(dag)["a"].retries == 0


async def test_timeout_marks_the_node_timed_out_and_fails_the_run():
    dag = make_dag(["hang", "next"], [("hang", "next")], timeouts={"hang": 0.05})

    async def hang(input):
        await asyncio.sleep(10)

    started = time.perf_counter()
    outcome = await DAGExecutor().execute(dag, runner_for({"hang": hang, "next": hang}), None)
    assert time.perf_counter() - started < 1
    node = outcome.nodes["hang"]
    assert node.status == TIMED_OUT and node.error == "timed out after 50 ms"
    assert outcome.status == RUN_FAILED and outcome.nodes["next"].status == SKIPPED


async def test_timeouts_are_retried():
    dag = make_dag(["slow"], [], timeouts={"slow": 0.05}, retries={"slow": 1})
    calls = []

    async def slow(input):
        calls.append(1)
        if len(calls) == 1:
            await asyncio.sleep(1)
        return "second time lucky"

    outcome = await DAGExecutor(backoff_base=0.001).execute(dag, runner_for({"slow": slow}), None)
    assert outcome.status == RUN_SUCCEEDED and outcome.nodes["slow"].attempts == 2


async def test_a_node_raising_timeout_error_itself_is_failed_not_timed_out():
    dag = make_dag(["a"], [])

    async def a(input):
        raise TimeoutError("upstream API timed out")

    outcome = await DAGExecutor().execute(dag, runner_for({"a": a}), None)
    assert outcome.nodes["a"].status == FAILED
    assert outcome.nodes["a"].error == "TimeoutError: upstream API timed out"


async def test_blocking_time_sleep_is_interrupted_by_the_watchdog():
    # asyncio cannot preempt sync code; the watchdog thread signals the main thread and the
    # handler raises inside the overdue node's own frame, so time.sleep stops early.
    dag = make_dag(["blocker", "next"], [("blocker", "next")], timeouts={"blocker": 0.05})

    async def blocker(input):
        try:
            time.sleep(5)
        except Exception:  # noqa: BLE001 - a node's broad except must not swallow the interrupt
            return "swallowed"
        return "too late"

    async def never(input):
        raise AssertionError("must not run")

    started = time.perf_counter()
    outcome = await DAGExecutor().execute(dag, runner_for({"blocker": blocker, "next": never}), None)
    assert time.perf_counter() - started < 1
    node = outcome.nodes["blocker"]
    assert node.status == TIMED_OUT and node.output is None
    assert node.error.startswith("timed out after 50 ms (interrupted after 0.")
    assert "it blocked the event loop" in node.error
    assert outcome.nodes["next"].status == SKIPPED


async def test_cpu_bound_loop_is_interrupted_too():
    dag = make_dag(["spin"], [], timeouts={"spin": 0.05})

    async def spin(input):
        n = 0
        while True:
            n += 1

    started = time.perf_counter()
    outcome = await DAGExecutor().execute(dag, runner_for({"spin": spin}), None)
    assert time.perf_counter() - started < 1
    assert outcome.nodes["spin"].status == TIMED_OUT


async def test_code_outside_nodes_is_never_interrupted():
    # Another task blocks the loop while the node waits: the signal lands outside any node
    # frame and is ignored; the node's own timer fires once the loop is free again.
    dag = make_dag(["waiter"], [], timeouts={"waiter": 0.05})

    async def waiter(input):
        await asyncio.sleep(5)

    finished = []

    async def blocking_bystander():
        await asyncio.sleep(0.01)
        time.sleep(0.3)
        finished.append(True)

    bystander = asyncio.create_task(blocking_bystander())
    outcome = await DAGExecutor().execute(dag, runner_for({"waiter": waiter}), None)
    await bystander
    assert finished == [True]
    assert outcome.nodes["waiter"].status == TIMED_OUT
    assert outcome.nodes["waiter"].error == "timed out after 50 ms"


async def test_without_the_watchdog_blocking_is_caught_when_control_returns():
    # Where no watchdog can run (loop outside the main thread, signal taken): a node that
    # blocks then returns is TIMED_OUT (its output discarded) ...
    dag = make_dag(["blocker"], [], timeouts={"blocker": 0.05})
    executor = DAGExecutor(interrupt_blocking=False)

    async def blocker(input):
        time.sleep(0.2)
        return "too late"

    outcome = await executor.execute(dag, runner_for({"blocker": blocker}), None)
    node = outcome.nodes["blocker"]
    assert node.status == TIMED_OUT and node.output is None
    assert node.error.startswith("timed out: ran 0.2") and "blocked the event loop" in node.error
    assert node.duration >= 0.2

    # ... and one that blocks then awaits is cancelled at that await.
    after = []

    async def blocker_then_await(input):
        time.sleep(0.2)
        await asyncio.sleep(0.01)
        after.append("reached")

    outcome = await executor.execute(dag, runner_for({"blocker": blocker_then_await}), None)
    assert outcome.nodes["blocker"].status == TIMED_OUT and after == []


async def test_output_that_is_not_json_fails_the_node_with_a_clear_error():
    dag = make_dag(["a", "b"], [("a", "b")])

    async def a(input):
        return {"when": {1, 2}}

    async def b(input):
        raise AssertionError("must not run")

    outcome = await DAGExecutor().execute(dag, runner_for({"a": a, "b": b}), None)
    assert outcome.nodes["a"].status == FAILED
    assert outcome.nodes["a"].error == "output of node a is not JSON-serialisable: output.when is a set"
    assert outcome.nodes["b"].status == SKIPPED and outcome.status == RUN_FAILED


def nested(levels: int) -> dict:
    """`levels` dicts, each inside the one before."""
    value: dict = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


async def test_output_larger_than_max_output_fails_the_node_with_the_flag():
    async def big(input):
        return {"rows": ["x" * 1000] * 200}

    outcome = await DAGExecutor(max_output=100_000).execute(make_dag(["a"], []), runner_for({"a": big}), None)
    assert outcome.nodes["a"].status == FAILED
    assert outcome.nodes["a"].error == "output of node a is larger than 100000 bytes as JSON (--max-output)"
    small = await DAGExecutor(max_output=1_000_000).execute(make_dag(["a"], []), runner_for({"a": big}), None)
    assert small.status == RUN_SUCCEEDED


async def test_output_nested_too_deeply_fails_the_node_not_the_run_machinery():
    async def deep(input):
        return nested(5_000)  # deeper than any result could be built from

    outcome = await DAGExecutor().execute(make_dag(["a"], []), runner_for({"a": deep}), None)
    assert outcome.nodes["a"].status == FAILED
    assert f"nests more than {MAX_JSON_DEPTH} levels deep" in outcome.nodes["a"].error


async def test_sys_exit_in_a_node_fails_the_node_not_the_process():
    dag = make_dag(["a"], [])

    async def a(input):
        raise SystemExit(3)

    outcome = await DAGExecutor().execute(dag, runner_for({"a": a}), None)
    assert outcome.nodes["a"].status == FAILED and outcome.nodes["a"].error == "SystemExit: 3"


async def test_cancelling_the_run_cancels_every_node_and_propagates():
    dag = make_dag(["a", "b"], [])
    cancelled = []

    async def sleeper(input):
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(1)
            raise

    task = asyncio.create_task(DAGExecutor().execute(dag, runner_for({"a": sleeper, "b": sleeper}), None))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled == [1, 1]
    assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]


async def test_concurrent_runs_do_not_share_state():
    dag = make_dag(["a", "b"], [("a", "b")])

    async def a(input):
        await asyncio.sleep(0.01)
        return input

    async def b(input):
        return input * 2

    executor = DAGExecutor()
    outcomes = await asyncio.gather(*(executor.execute(dag, runner_for({"a": a, "b": b}), i) for i in range(20)))
    assert [o.output for o in outcomes] == [i * 2 for i in range(20)]


async def test_wide_dag_runs_all_nodes_concurrently():
    names = [f"n{i}" for i in range(50)]
    dag = make_dag(["src", *names, "sink"], [("src", n) for n in names] + [(n, "sink") for n in names])

    running, peak = 0, 0
    all_started = asyncio.Event()

    async def sleepy(input):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if peak == len(names):
            all_started.set()
        if input is not None:  # the fan-out nodes: each waits until all of them are running
            await asyncio.wait_for(all_started.wait(), 10)
        running -= 1
        return 1

    async def count(input):
        return sum(input.values())

    functions = {n: sleepy for n in names} | {"src": sleepy, "sink": count}
    outcome = await DAGExecutor().execute(dag, runner_for(functions), None)
    assert outcome.output == 50
    assert peak == len(names)  # all 50 in flight at once, none waited for another


class _Recorder:
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def run_started(self, run: Any) -> None:
        run.events = self

    def node_started(self, node_id: str, started_at: float) -> None:
        self.events.append(("started", node_id))

    def node_finished(self, node_id: str, outcome: Any, started_at: float) -> None:
        self.events.append(("finished", node_id, outcome.status))


async def test_node_events_tell_each_start_and_finish_in_order():
    dag = make_dag(["a", "b", "c"], [("a", "b"), ("b", "c")])

    async def add(input):
        return input + 1

    async def boom(input):
        raise RuntimeError("b broke")

    events = _Recorder()
    outcome = await DAGExecutor().execute(dag, runner_for({"a": add, "b": boom, "c": add}), 1, observer=events)
    assert outcome.status == RUN_FAILED
    # c never started: no event for it (the result says SKIPPED).
    assert events.events == [("started", "a"), ("finished", "a", SUCCEEDED), ("started", "b"), ("finished", "b", FAILED)]


async def test_a_resume_runs_only_the_nodes_not_carried_feeding_them_the_carried_outputs():
    from engine.executor import NodeOutcome

    dag = make_dag(["a", "b", "c", "d"], [("a", "c"), ("b", "c"), ("c", "d")])
    called = []

    def node(name):
        async def run(input):
            called.append(name)
            return {"from": name, "input": input}

        return run

    carried = {"a": NodeOutcome(SUCCEEDED, "A", 0), "b": NodeOutcome(SUCCEEDED, "B", 0)}
    outcome = await DAGExecutor().execute(dag, runner_for({n: node(n) for n in "abcd"}), "trigger", carried=carried)
    assert called == ["c", "d"]
    assert outcome.status == RUN_SUCCEEDED
    assert outcome.nodes["c"].output == {"from": "c", "input": {"a": "A", "b": "B"}}
    assert outcome.nodes["a"].attempts == 0 and outcome.nodes["a"].started_at is None
    # A root that is not carried gets the new run's input.
    called.clear()
    again = await DAGExecutor().execute(dag, runner_for({n: node(n) for n in "abcd"}), "again", carried={"b": carried["b"]})
    assert called[0] == "a" and again.nodes["a"].output == {"from": "a", "input": "again"}
    # Everything carried: nothing runs, the run still ends.
    everything = {n: NodeOutcome(SUCCEEDED, n, 0) for n in "abcd"}
    called.clear()
    done = await DAGExecutor().execute(dag, runner_for({n: node(n) for n in "abcd"}), None, carried=everything)
    assert called == [] and done.status == RUN_SUCCEEDED and done.output == "d"


async def test_a_chain_runs_in_one_task_and_only_concurrent_nodes_get_their_own():
    from engine.executor import INLINE_NODES

    length = INLINE_NODES * 2 + 5
    ids = [f"n{i}" for i in range(length)]
    fan = ["x", "y", "z"]
    dag = make_dag([*ids, *fan], [*zip(ids, ids[1:]), *((ids[-1], f) for f in fan)])
    tasks: dict[str, asyncio.Task] = {}

    async def record(node_id: str, input: Any) -> Any:
        tasks[node_id] = asyncio.current_task()
        return (input or 0) + 1

    outcome = await DAGExecutor().execute(dag, record, 0)
    assert outcome.status == RUN_SUCCEEDED
    assert outcome.output == {f: length + 1 for f in fan}
    # The chain: a fresh task only every INLINE_NODES nodes; after it, one sibling continues inline.
    chain_tasks = [tasks[node_id] for node_id in ids]
    assert len(set(chain_tasks)) == 3
    assert tasks["x"] is tasks[ids[-1]]
    assert len({tasks[f] for f in fan}) == 3


async def test_a_node_timing_out_mid_chain_stops_the_chain():
    dag = make_dag(["a", "b", "c"], [("a", "b"), ("b", "c")], timeouts={"b": 0.05})

    async def fast(input):
        return 1

    async def slow(input):
        await asyncio.sleep(5)

    outcome = await DAGExecutor().execute(dag, runner_for({"a": fast, "b": slow, "c": fast}), None)
    assert outcome.status == RUN_FAILED
    assert [outcome.nodes[n].status for n in "abc"] == [SUCCEEDED, TIMED_OUT, SKIPPED]
