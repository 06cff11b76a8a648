"""Values in one place: input parsing, the checks on outputs (depth, numbers, Unicode, size),
Python ↔ google.protobuf.Value, and the result's JSON — exactly json_format's canonical mapping."""

from __future__ import annotations

import json
import time

import pytest
from google.protobuf import json_format

from engine import values
from engine.values import MAX_JSON_DEPTH, json_problem, output_problem, to_value, too_deep, value_to_python
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
    assert values.result_to_json(result) == _canonical(result)


@pytest.mark.parametrize("nanos", [0, 1, 999, 1000, 1_000_000, 123_456_789, 999_999_999])
def test_timestamp_and_duration_precision(nanos: int):
    result = execution_pb2.ExecutionResult()
    result.started_at.seconds, result.started_at.nanos = 1_700_000_000, nanos
    result.duration.seconds, result.duration.nanos = 2, nanos
    assert values.result_to_json(result) == _canonical(result)


def test_null_and_unset_values():
    result = execution_pb2.ExecutionResult()
    result.output.null_value = 0
    result.nodes["x"].output.CopyFrom(to_value(None))
    assert values.result_to_json(result) == _canonical(result)


@pytest.mark.parametrize("seconds", [0, 1, 86399, 951782400, 1_795_735_285, 253402300799, -1, -62135596800])
def test_timestamps_across_the_range(seconds: int):
    result = execution_pb2.ExecutionResult()
    result.started_at.seconds, result.started_at.nanos = seconds, 5000
    assert values.result_to_json(result) == _canonical(result)


# -- checks on values ------------------------------------------------------------


@pytest.mark.parametrize(
    "value, problem",
    [
        ({"a": [1, "x", None, True, 2.5, {"b": ()}]}, None),
        (float("nan"), "output is nan (not a finite number)"),
        ({1: "x"}, "output has a non-string key 1 (int)"),
        ([object()], "output[0] is a object"),
        ({"t": time}, "output.t is a module"),
        ({"s": "ok 😀 " + chr(0xD800)}, "output.s contains a lone surrogate U+D800 (not valid Unicode)"),
        ({chr(0xDC00): 1}, "a key of output contains a lone surrogate U+DC00 (not valid Unicode)"),
        ([10**308], None),
        ([10**400], "output[0] is an integer too large for a 64-bit float"),
    ],
)
def test_json_problem(value, problem):
    assert json_problem(value) == problem


def nested(levels: int) -> dict:
    """`levels` dicts, each inside the one before."""
    value: dict = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def test_nesting_beyond_the_limit():
    assert not too_deep(nested(MAX_JSON_DEPTH)) and too_deep(nested(MAX_JSON_DEPTH + 1))
    assert too_deep([[[]]], limit=2) and too_deep([[], [[]]], limit=2) and not too_deep([[], []], limit=2) and not too_deep("x", limit=0)
    assert json_problem(nested(MAX_JSON_DEPTH)) is None
    problem = json_problem(nested(MAX_JSON_DEPTH + 1))
    assert problem.startswith("output.a.a") and problem.endswith(f"… nests more than {MAX_JSON_DEPTH} levels deep")


def test_output_size_is_counted_in_the_same_walk_as_a_lower_bound():
    assert output_problem("a", "x" * 100, 102) is None
    assert output_problem("a", "x" * 100, 101) == "output of node a is larger than 101 bytes as JSON (--max-output)"
    rows = {"rows": [{"id": i, "name": "n" * 50, "ok": True, "score": 0.5} for i in range(1000)]}
    size = len(json.dumps(rows, separators=(",", ":")))
    assert output_problem("a", rows, size) is None  # never more than the real size
    assert output_problem("a", rows, size // 2) is not None
    assert output_problem("a", "x" * 3 * 1024 * 1024, 2 * 1024 * 1024) == (
        "output of node a is larger than 2 MiB as JSON (--max-output)"
    )
    assert output_problem("a", {"when": {1}}, 10) == "output of node a is not JSON-serialisable: output.when is a set"


# -- protobuf Value ↔ Python ----------------------------------------------------------


@pytest.mark.parametrize("value", [None, True, 3, 2.5, "s", [1, [2]], {"a": {"b": (1, 2)}}])
def test_to_value_round_trips(value):
    expected = json.loads(json.dumps(value))
    assert value_to_python(to_value(value)) == expected


def test_to_value_rejects_other_types():
    with pytest.raises(TypeError, match="set is not JSON-serialisable"):
        to_value({1, 2})


def test_float_seconds_format_as_the_message_holds_them():
    from engine.values import duration_text, seconds_duration_text, seconds_timestamp_text, timestamp_text

    moments = [1_700_000_000.123456789, 1_700_000_000.0, 1_700_000_000.5, 1_700_000_000.000001, 1_700_000_001.25, 0.0, 12.3456]
    for moment in moments + moments[::-1]:  # the cached second changes both ways
        whole = int(moment)
        nanos = int((moment - whole) * 1e9)
        assert seconds_timestamp_text(moment) == timestamp_text(whole, nanos)
    for seconds in [0.0, 1.5, 0.000019506, 12.0, 0.25, 3600.000000001, 1e-9]:
        whole = int(seconds)
        assert seconds_duration_text(seconds) == duration_text(whole, int((seconds - whole) * 1e9))
