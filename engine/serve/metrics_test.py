"""EngineMetrics: names, labels and values of what /metrics exports."""

from __future__ import annotations

from engine.serve.metrics import EngineMetrics
from proto.pipedreamer.v1 import execution_pb2


def _result(status: int, nodes: dict[str, tuple[int, float | None]]) -> execution_pb2.ExecutionResult:
    result = execution_pb2.ExecutionResult(workflow="wf", status=status)
    for node_id, (node_status, seconds) in nodes.items():
        entry = result.nodes[node_id]
        entry.status = node_status
        if seconds is not None:
            entry.duration.FromNanoseconds(int(seconds * 1e9))
    return result


def test_runs_are_counted_by_status_and_nodes_timed_by_status():
    metrics = EngineMetrics("wf")
    metrics.observe_result(_result(execution_pb2.RUN_STATUS_SUCCEEDED, {"a": (execution_pb2.NODE_STATUS_SUCCEEDED, 0.002)}))
    metrics.observe_result(_result(execution_pb2.RUN_STATUS_SUCCEEDED, {"a": (execution_pb2.NODE_STATUS_SUCCEEDED, 0.2)}))
    metrics.observe_result(
        _result(
            execution_pb2.RUN_STATUS_FAILED,
            {"a": (execution_pb2.NODE_STATUS_TIMED_OUT, 30.0), "b": (execution_pb2.NODE_STATUS_SKIPPED, None)},
        )
    )
    text = metrics.render().decode()
    assert 'pipedreamer_runs_total{status="succeeded",workflow="wf"} 2.0' in text
    assert 'pipedreamer_runs_total{status="failed",workflow="wf"} 1.0' in text
    assert 'pipedreamer_node_duration_seconds_bucket{le="0.005",node="a",status="succeeded",workflow="wf"} 1.0' in text
    assert 'pipedreamer_node_duration_seconds_count{node="a",status="succeeded",workflow="wf"} 2.0' in text
    assert 'pipedreamer_node_duration_seconds_sum{node="a",status="timed_out",workflow="wf"} 30.0' in text
    assert 'node="b"' not in text  # a skipped node never ran: no duration
    assert "_created" not in text


def test_in_flight_and_rejections():
    metrics = EngineMetrics("wf")
    metrics.runs.in_flight += 1
    metrics.rejected("draining")
    text = metrics.render().decode()
    assert 'pipedreamer_runs_in_flight{workflow="wf"} 1.0' in text
    assert 'pipedreamer_runs_rejected_total{reason="draining",workflow="wf"} 1.0' in text


def test_each_engine_has_its_own_registry():
    first, second = EngineMetrics("wf"), EngineMetrics("wf")
    first.observe_result(_result(execution_pb2.RUN_STATUS_SUCCEEDED, {}))
    assert b'status="succeeded",workflow="wf"} 1.0' in first.render()
    assert b'status="succeeded",workflow="wf"} 0.0' in second.render()


def test_observing_from_the_outcome_counts_what_the_result_shows():
    from engine.executor import FAILED, RUN_FAILED, SKIPPED, SUCCEEDED, NodeOutcome, RunOutcome
    from engine.results import build_result

    nodes = {
        "a": NodeOutcome(SUCCEEDED, 1, 1, "", 1_700_000_000.1, 0.0009999999999),
        "b": NodeOutcome(FAILED, None, 2, "ValueError", 1_700_000_000.2, 2.5000000001),
        "c": NodeOutcome(SKIPPED, None, 0, "skipped"),
    }
    outcome = RunOutcome(status=RUN_FAILED, output=None, nodes=nodes, error="node b failed", started_at=1.0, duration=3.0)
    result = build_result(outcome, run_id="r", workflow="wf", version="1")
    from_result, from_outcome = EngineMetrics("wf"), EngineMetrics("wf")
    from_result.observe_result(result)
    from_outcome.observe(outcome.status, outcome)
    assert from_outcome.render() == from_result.render()
