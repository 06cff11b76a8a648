"""result_json gives exactly json_format's canonical mapping."""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format

from engine import result_json
from engine.results import to_value
from proto.pipedreamer.v1 import execution_pb2


def _canonical(result: execution_pb2.ExecutionResult) -> str:
    return json.dumps(json_format.MessageToDict(result), ensure_ascii=False)


def _result(**overrides) -> execution_pb2.ExecutionResult:
    result = execution_pb2.ExecutionResult(
        run_id="r1", workflow="wf", version="1.0.0", status=execution_pb2.RUN_STATUS_FAILED,
        error="node b failed: ValueError: ünïcode ✓", trigger="cron",
    )  # fmt: skip
    result.output.CopyFrom(to_value({"a": [1, 2.5, "x", None, True, {"deep": []}], "b": {}, "n": -0.0001}))
    result.started_at.FromNanoseconds(1_795_735_285_652_042_912)
    result.duration.FromNanoseconds(123_456_789)
    a = result.nodes["a"]
    a.status, a.attempts = execution_pb2.NODE_STATUS_SUCCEEDED, 1
    a.output.CopyFrom(to_value("out"))
    a.started_at.FromNanoseconds(1_795_735_285_000_000_000)
    a.duration.FromNanoseconds(1_000_000)
    b = result.nodes["b"]
    b.status, b.attempts, b.error = execution_pb2.NODE_STATUS_TIMED_OUT, 3, "timed out"
    b.started_at.FromNanoseconds(1_795_735_285_000_001_000)
    b.duration.FromNanoseconds(30_000_000_000)
    result.nodes["c"].status = execution_pb2.NODE_STATUS_SKIPPED
    for key, value in overrides.items():
        setattr(result, key, value)
    return result


@pytest.mark.parametrize(
    "result",
    [
        _result(),
        execution_pb2.ExecutionResult(),
        execution_pb2.ExecutionResult(workflow="w", status=execution_pb2.RUN_STATUS_CANCELLED, error="deadline"),
        _result(status=execution_pb2.RUN_STATUS_SUCCEEDED, error=""),
    ],
)
def test_same_document_as_json_format(result: execution_pb2.ExecutionResult):
    assert result_json.result_to_json(result) == _canonical(result)


@pytest.mark.parametrize("nanos", [0, 1, 999, 1000, 1_000_000, 123_456_789, 999_999_999])
def test_timestamp_and_duration_precision(nanos: int):
    result = execution_pb2.ExecutionResult()
    result.started_at.seconds, result.started_at.nanos = 1_700_000_000, nanos
    result.duration.seconds, result.duration.nanos = 2, nanos
    assert result_json.result_to_json(result) == _canonical(result)


def test_null_and_unset_values():
    result = execution_pb2.ExecutionResult()
    result.output.null_value = 0
    result.nodes["x"].output.CopyFrom(to_value(None))
    assert result_json.result_to_json(result) == _canonical(result)


@pytest.mark.parametrize("seconds", [0, 1, 86399, 951782400, 1_795_735_285, 253402300799, -1, -62135596800])
def test_timestamps_across_the_range(seconds: int):
    result = execution_pb2.ExecutionResult()
    result.started_at.seconds, result.started_at.nanos = seconds, 5000
    assert result_json.result_to_json(result) == _canonical(result)
