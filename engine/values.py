"""How a value crosses the engine, in one place: JSON bytes → Python (a run's input),
Python ↔ `google.protobuf.Value` (results, gRPC), and an `ExecutionResult`'s canonical
proto3 JSON (HTTP answers, NATS replies, the CLI).

The checks that keep a value carriable (depth, finite numbers, real Unicode,
size) are here too, so the HTTP, gRPC and NATS front ends and the executor
refuse the same values with the same words.
"""

from __future__ import annotations

import datetime
import json
import math
import re
import sys
import time
from typing import Any

from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2

from proto.pipedreamer.v1 import execution_pb2

# -- JSON in: a run's input -------------------------------------------------------


# Deepest nesting of objects and arrays a run's input or a node's output may have.
# Results are protobuf Values, built and printed recursively: far deeper data
# would exhaust the interpreter's stack there (JSON documents rarely pass 20).
MAX_JSON_DEPTH = 100


def too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether `value` nests dicts and lists more than `limit` levels (checked without recursion)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        if depth >= limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


# A UTF-16 surrogate on its own is not a Unicode character: no UTF-8 (so no protobuf string) can hold it.
LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# JSON can write one (`"\ud800"`) only as an escape: inputs without such an escape need no search.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
# Results carry numbers as google.protobuf.Value, a 64-bit float.
_LARGEST = sys.float_info.max


def _finite_float(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise ValueError(f"number {_shorten(text)} is too large for a 64-bit float (the limit is about 1.8e308)")
    return number


def _float_sized_int(text: str) -> int:
    # More than 310 digits is past the limit however it starts (and int() refuses past 4300).
    if len(text) > 310 or abs(number := int(text)) > _LARGEST:
        raise ValueError(f"number {_shorten(text)} is too large for a 64-bit float (the limit is about 1.8e308)")
    return number


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _shorten(text: str) -> str:
    return text if len(text) <= 24 else f"{text[:12]}…{text[-6:]} ({len(text)} characters)"


# One decoder for every input: json.loads with hooks would build a new one per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float, parse_int=_float_sized_int)


def parse_input(data: bytes) -> Any:
    """A run's input from a request body or message payload: empty means `{}`.

    Raises ValueError naming what is wrong: not UTF-8, not JSON (`NaN` and
    `Infinity` included), a number a 64-bit float cannot hold (`1e400`), a
    lone surrogate (`"\\ud800"`, not Unicode), or nested more than
    MAX_JSON_DEPTH levels.
    """
    if not data.strip():
        return {}
    try:
        text = data.decode("utf-8")
        value = _DECODER.decode(text)
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except RecursionError:
        # The decoder recurses per nesting level: too deep is bad input, not an engine fault.
        raise ValueError("nested too deeply") from None
    # Each level opens with a bracket: a text this short cannot nest too deeply (most inputs).
    if len(text) > MAX_JSON_DEPTH and too_deep(value):
        raise ValueError(f"nested too deeply (more than {MAX_JSON_DEPTH} levels)")
    if _SURROGATE_ESCAPE.search(text) and (problem := json_problem(value, "input")):
        raise ValueError(problem)
    return value


def _surrogate_problem(text: str, path: str) -> str | None:
    found = LONE_SURROGATE.search(text)
    if found is None:
        return None
    return f"{path} contains a lone surrogate U+{ord(found.group()):04X} (not valid Unicode)"


DEFAULT_MAX_OUTPUT = 16 * 1024 * 1024  # bytes of JSON a node's output may take (--max-output)


def json_problem(value: Any, path: str = "output") -> str | None:
    """None when `value` maps to JSON (and so to google.protobuf.Value), else what is wrong and where."""
    return _problem(value, path, 0, None)


def output_problem(node_id: str, value: Any, max_bytes: int) -> str | None:
    """Why a node's output cannot be its result (not JSON, or `max_bytes` or more as JSON), or None.

    The size is counted in the same walk as the JSON check, as a lower bound of
    the compact JSON's length (a number counts one character): nothing under the
    limit is refused.
    """
    budget = _Budget(max_bytes)
    problem = _problem(value, "output", 0, budget)
    if problem is not None:
        return f"output of node {node_id} is not JSON-serialisable: {problem}"
    if budget.left < 0:
        return f"output of node {node_id} is larger than {_size(max_bytes)} as JSON (--max-output)"
    return None


class _Budget:
    __slots__ = ("left",)

    def __init__(self, left: int) -> None:
        self.left = left


def _size(limit: int) -> str:
    if limit % (1024 * 1024) == 0:
        return f"{limit // (1024 * 1024)} MiB"
    return f"{limit} bytes"


def _problem(value: Any, path: str, depth: int, budget: _Budget | None) -> str | None:
    kind = type(value)
    if kind is bool or value is None:
        if budget is not None:
            budget.left -= 4
        return None
    if kind is str:
        if budget is not None:
            budget.left -= len(value) + 2
        return None if value.isascii() else _surrogate_problem(value, path)
    if kind is int:
        if budget is not None:
            budget.left -= 1
        return None if -_LARGEST <= value <= _LARGEST else f"{path} is an integer too large for a 64-bit float"
    if kind is float:
        if budget is not None:
            budget.left -= 1
        return None if math.isfinite(value) else f"{path} is {value!r} (not a finite number)"
    if depth >= MAX_JSON_DEPTH and isinstance(value, (dict, list, tuple)):
        shown = path if len(path) <= 80 else path[:77] + "…"
        return f"{shown} nests more than {MAX_JSON_DEPTH} levels deep"
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                return f"{path} has a non-string key {key!r} ({type(key).__name__})"
            if not key.isascii() and (problem := _surrogate_problem(key, f"a key of {path}")):
                return problem
            if budget is not None:
                budget.left -= len(key) + 3
                if budget.left < 0:
                    return None  # reported as a whole by json_problem
            problem = _problem(item, f"{path}.{key}", depth + 1, budget)
            if problem:
                return problem
        return None
    if kind is list or kind is tuple:
        for index, item in enumerate(value):
            problem = _problem(item, f"{path}[{index}]", depth + 1, budget)
            if problem:
                return problem
            if budget is not None:
                budget.left -= 1
                if budget.left < 0:
                    return None
        return None
    # Subclasses (IntEnum, OrderedDict, str enums …) are fine: protobuf takes them too.
    if isinstance(value, str):
        return _problem(str(value), path, depth, budget)
    if isinstance(value, int):
        return _problem(int(value), path, depth, budget)
    if isinstance(value, float):
        return _problem(float(value), path, depth, budget)
    if isinstance(value, dict):
        return _problem(dict(value), path, depth, budget)
    if isinstance(value, (list, tuple)):
        return _problem(list(value), path, depth, budget)
    return f"{path} is a {kind.__module__}.{kind.__qualname__}" if kind.__module__ != "builtins" else f"{path} is a {kind.__name__}"


# -- protobuf Value ↔ Python -----------------------------------------------------


def struct_to_python(struct: struct_pb2.Struct) -> dict[str, Any]:
    """Struct → dict, with whole numbers back as ints (Struct keeps only doubles)."""
    return {key: value_to_python(value) for key, value in struct.fields.items()}


def value_to_python(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return struct_to_python(value.struct_value)
    if kind == "list_value":
        return [value_to_python(v) for v in value.list_value.values]
    if kind == "number_value":
        number = value.number_value
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    return None


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


# -- an ExecutionResult as canonical proto3 JSON -----------------------------------
#
# Same document as `json_format.MessageToDict` (same keys, order and value
# formats; values_test holds them together), about ten times faster: on the HTTP
# and NATS paths the generic walker cost as much as running a small DAG.

_RUN_STATUS = RUN_STATUS_NAMES = {v.number: v.name for v in execution_pb2.RunStatus.DESCRIPTOR.values}
_NODE_STATUS = NODE_STATUS_NAMES = {v.number: v.name for v in execution_pb2.NodeStatus.DESCRIPTOR.values}
_EPOCH = datetime.datetime(1970, 1, 1)
_DAY = 86400
_YEAR_10000 = 253402300800


def value_to_json(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return {key: value_to_json(item) for key, item in value.struct_value.fields.items()}
    if kind == "list_value":
        return [value_to_json(item) for item in value.list_value.values]
    if kind == "number_value":
        number = value.number_value
        if math.isinf(number) or math.isnan(number):
            raise ValueError(f"Fail to serialize {number} for Value.number_value")
        return number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    return None


def json_form(value: Any) -> Any:
    """A checked JSON-like Python value as `value_to_json(to_value(value))` gives it back, without
    the protobuf round trip: numbers become floats (a Value holds doubles), tuples lists, and
    subclasses (IntEnum, str enums, OrderedDict) their plain kind."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return value
    if kind is int or kind is float:
        return float(value)
    if kind is dict:
        # Scalars inline: a call per member is most of the cost of a flat object.
        out = {}
        for key, item in value.items():
            member = type(item)
            if member is str or member is float or member is bool or item is None:
                out[key] = item
            elif member is int:
                out[key] = float(item)
            else:
                out[key] = json_form(item)
        return out
    if kind is list or kind is tuple:
        return [json_form(item) for item in value]
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, dict):
        return {str(key): json_form(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_form(item) for item in value]
    raise TypeError(f"{kind.__name__} is not JSON-serialisable")


def _fraction(nanos: int, suffix: str) -> str:
    if nanos == 0:
        return suffix
    if nanos % 1_000_000 == 0:
        return ".%03d%s" % (nanos // 1_000_000, suffix)
    if nanos % 1_000 == 0:
        return ".%06d%s" % (nanos // 1_000, suffix)
    return ".%09d%s" % (nanos, suffix)


# The nodes of a run mostly start within the same second: remember the last one formatted.
_last_second: tuple[int, str] = (-1, "")


def timestamp_to_json(stamp: timestamp_pb2.Timestamp) -> str:
    return timestamp_text(stamp.seconds, stamp.nanos)


def timestamp_text(seconds: int, nanos: int) -> str:
    """A Timestamp's proto3 JSON from its two fields."""
    global _last_second
    if 0 <= seconds < _YEAR_10000:
        cached_seconds, text = _last_second
        if cached_seconds != seconds:
            text = "%04d-%02d-%02dT%02d:%02d:%02d" % time.gmtime(seconds)[:6]
            _last_second = (seconds, text)
        return text + _fraction(nanos, "Z")
    in_day = seconds % _DAY
    moment = _EPOCH + datetime.timedelta((seconds - in_day) // _DAY, in_day)
    return moment.isoformat() + _fraction(nanos, "Z")


def seconds_timestamp_text(moment: float) -> str:
    """`timestamp_text` of a time.time() value cut to whole nanoseconds, as `set_time` stores it
    (the result's hot path: every node has one; the common case formatted inline)."""
    global _last_second
    whole = int(moment)
    nanos = int((moment - whole) * 1e9)
    cached_seconds, text = _last_second
    if cached_seconds != whole or whole < 0:
        return timestamp_text(whole, nanos)
    if nanos % 1_000 or not nanos:
        return "%s.%09dZ" % (text, nanos) if nanos else text + "Z"
    return text + _fraction(nanos, "Z")


def seconds_duration_text(seconds: float) -> str:
    """`duration_text` of a non-negative float of seconds cut to whole nanoseconds, as `set_time` stores it."""
    whole = int(seconds)
    nanos = int((seconds - whole) * 1e9)
    if nanos % 1_000:
        return "%d.%09ds" % (whole, nanos)
    return duration_text(whole, nanos)


def duration_to_json(duration: duration_pb2.Duration) -> str:
    return duration_text(duration.seconds, duration.nanos)


def duration_text(seconds: int, nanos: int) -> str:
    """A Duration's proto3 JSON from its two fields."""
    if seconds < 0 or nanos < 0:
        return "-%d%s" % (-seconds + (-nanos) // 1_000_000_000, _fraction((-nanos) % 1_000_000_000, "s"))
    return "%d%s" % (seconds + nanos // 1_000_000_000, _fraction(nanos % 1_000_000_000, "s"))


def _node_to_dict(node: execution_pb2.NodeResult) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if node.status:
        out["status"] = _NODE_STATUS.get(node.status, node.status)
    if node.HasField("output"):
        out["output"] = value_to_json(node.output)
    if node.attempts:
        out["attempts"] = node.attempts
    if node.error:
        out["error"] = node.error
    if node.HasField("started_at"):
        out["startedAt"] = timestamp_to_json(node.started_at)
    if node.HasField("duration"):
        out["duration"] = duration_to_json(node.duration)
    if node.output_redacted:
        out["outputRedacted"] = True
    return out


def result_to_dict(result: execution_pb2.ExecutionResult) -> dict[str, Any]:
    """What `json_format.MessageToDict(result)` returns, field for field."""
    out = result_head(result.run_id, result.workflow, result.version, result.status)
    if result.HasField("output"):
        out["output"] = value_to_json(result.output)
    if result.nodes:
        out["nodes"] = {node_id: _node_to_dict(node) for node_id, node in result.nodes.items()}
    if result.HasField("started_at"):
        out["startedAt"] = timestamp_to_json(result.started_at)
    if result.HasField("duration"):
        out["duration"] = duration_to_json(result.duration)
    result_tail(out, result.error, result.trigger, result.resumed_from)
    return out


def result_head(run_id: str, workflow: str, version: str, status: int) -> dict[str, Any]:
    """A result's JSON members before `output` (its ids and status), in MessageToDict's order."""
    out: dict[str, Any] = {}
    if run_id:
        out["runId"] = run_id
    if workflow:
        out["workflow"] = workflow
    if version:
        out["version"] = version
    if status:
        out["status"] = _RUN_STATUS.get(status, status)
    return out


def result_tail(out: dict[str, Any], error: str, trigger: str, resumed_from: str) -> None:
    """Adds a result's JSON members after `duration` (error, trigger, resumedFrom) to `out`, in MessageToDict's order."""
    if error:
        out["error"] = error
    if trigger:
        out["trigger"] = trigger
    if resumed_from:
        out["resumedFrom"] = resumed_from


def result_to_json(result: execution_pb2.ExecutionResult) -> str:
    return json.dumps(result_to_dict(result), ensure_ascii=False)


def result_from_json(text: str | bytes) -> execution_pb2.ExecutionResult:
    """An ExecutionResult from its proto3 JSON (a history record, an engine's answer); raises ValueError."""
    from google.protobuf import json_format

    try:
        return json_format.Parse(text, execution_pb2.ExecutionResult(), ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise ValueError(f"not an ExecutionResult: {exc}") from None


def run_status(text: str) -> int:
    """`failed`, `FAILED` or `RUN_STATUS_FAILED` → the RunStatus number; ValueError naming the choices."""
    name = text.strip().upper()
    if not name.startswith("RUN_STATUS_"):
        name = "RUN_STATUS_" + name
    number = {v: k for k, v in _RUN_STATUS.items()}.get(name)
    if number is None or number == 0:
        choices = ", ".join(v.removeprefix("RUN_STATUS_").lower() for k, v in sorted(_RUN_STATUS.items()) if k)
        raise ValueError(f"unknown run status {text!r}: expected one of {choices}")
    return number
