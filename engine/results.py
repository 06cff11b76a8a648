"""Builds the protobuf `ExecutionResult` from an executor outcome, and its canonical JSON mapping."""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import duration_pb2, json_format, struct_pb2, timestamp_pb2

from engine.executor import LONE_SURROGATE, RunOutcome
from engine.secrets import Redactor
from proto.pipedreamer.v1 import execution_pb2


def build_result(
    outcome: RunOutcome,
    *,
    run_id: str,
    workflow: str,
    version: str,
    trigger: str = "",
    redactor: Redactor | None = None,
) -> execution_pb2.ExecutionResult:
    """The run's result message; secret values are replaced by *** in outputs and errors."""
    redact = redactor if redactor else None
    result = execution_pb2.ExecutionResult(
        run_id=run_id,
        workflow=workflow,
        version=version,
        status=outcome.status,
        error=_text(redact.text(outcome.error) if redact else outcome.error),
        trigger=trigger,
    )
    _set_time(result.started_at, outcome.started_at)
    _set_time(result.duration, outcome.duration)
    if outcome.output is not None or outcome.status == execution_pb2.RUN_STATUS_SUCCEEDED:
        set_value(result.output, redact.value(outcome.output) if redact else outcome.output)
    nodes = result.nodes
    succeeded = execution_pb2.NODE_STATUS_SUCCEEDED
    # The per-node loop is the result's hot path: plain field sets, no helpers per field.
    for node_id, node in outcome.nodes.items():
        entry = nodes[node_id]
        entry.status = node.status
        entry.attempts = node.attempts
        if node.error:
            entry.error = _text(redact.text(node.error) if redact else node.error)
        started = node.started_at
        if started is not None:
            whole = int(started)
            stamp = entry.started_at
            stamp.seconds, stamp.nanos = whole, int((started - whole) * 1e9)
            took = node.duration
            whole = int(took)
            span = entry.duration
            span.seconds, span.nanos = whole, int((took - whole) * 1e9)
        if node.status == succeeded:
            output = node.output
            kind = type(output)
            # Without secrets a number goes straight in; with them it may be one (`pin: 4821`).
            if (kind is int or kind is float) and redact is None:
                entry.output.number_value = output
            else:
                set_value(entry.output, redact.value(output) if redact else output)
    return result


def _text(text: str) -> str:
    """An error message as a protobuf string can hold it: a lone surrogate (a node's own doing) becomes U+FFFD."""
    return text if text.isascii() else LONE_SURROGATE.sub("\ufffd", text)


def _set_time(message: timestamp_pb2.Timestamp | duration_pb2.Duration, seconds: float) -> None:
    """Seconds (float) into a Timestamp or Duration; faster than FromNanoseconds."""
    whole = int(seconds)
    message.seconds = whole
    message.nanos = int((seconds - whole) * 1e9)


def set_value(target: struct_pb2.Value, value: Any) -> None:
    """Writes a JSON-like Python value into a `google.protobuf.Value` in place."""
    if value is None:
        target.null_value = struct_pb2.NULL_VALUE
    elif isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, (int, float)):
        target.number_value = value
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, dict):
        target.struct_value.Clear()
        target.struct_value.update(value)
    elif isinstance(value, (list, tuple)):
        target.list_value.Clear()
        target.list_value.extend(value)
    else:
        raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def to_value(value: Any) -> struct_pb2.Value:
    message = struct_pb2.Value()
    set_value(message, value)
    return message


def result_to_dict(result: execution_pb2.ExecutionResult) -> dict[str, Any]:
    """The canonical proto3 JSON mapping (camelCase names, enums as names)."""
    return json_format.MessageToDict(result)


def result_to_json(result: execution_pb2.ExecutionResult, *, indent: int | None = None) -> str:
    return json.dumps(result_to_dict(result), indent=indent, ensure_ascii=False)
