"""Results: protobuf building (with redaction) and the canonical JSON mapping."""

from __future__ import annotations

import json


from engine.executor import CANCELLED, FAILED, RUN_FAILED, RUN_SUCCEEDED, SKIPPED, SUCCEEDED, NodeOutcome, RunOutcome
from engine.results import build_result
from engine.values import result_to_dict, result_to_json
from engine.secrets import Redactor
from engine.values import value_to_python
from proto.pipedreamer.v1 import execution_pb2


def outcome(**overrides) -> RunOutcome:
    nodes = {
        "a": NodeOutcome(SUCCEEDED, {"n": 1, "list": [1, "x", None, True], "f": 1.5}, 1, "", 1_700_000_000.25, 0.5),
        "b": NodeOutcome(SUCCEEDED, "text", 2, "", 1_700_000_000.75, 0.001),
    }
    values = dict(status=RUN_SUCCEEDED, output="text", nodes=nodes, error="", started_at=1_700_000_000.0, duration=1.25)
    values.update(overrides)
    return RunOutcome(**values)


def test_canonical_json_mapping():
    result = build_result(outcome(), run_id="r1", workflow="wf", version="1.0.0", trigger="manual")
    data = result_to_dict(result)
    assert data == {
        "runId": "r1",
        "workflow": "wf",
        "version": "1.0.0",
        "status": "RUN_STATUS_SUCCEEDED",
        "trigger": "manual",
        "output": "text",
        "startedAt": "2023-11-14T22:13:20Z",
        "duration": "1.250s",
        "nodes": {
            "a": {
                "status": "NODE_STATUS_SUCCEEDED",
                "output": {"n": 1.0, "list": [1.0, "x", None, True], "f": 1.5},
                "attempts": 1,
                "startedAt": "2023-11-14T22:13:20.250Z",
                "duration": "0.500s",
            },
            "b": {
                "status": "NODE_STATUS_SUCCEEDED",
                "output": "text",
                "attempts": 2,
                "startedAt": "2023-11-14T22:13:20.750Z",
                "duration": "0.001s",
            },
        },
    }
    assert json.loads(result_to_json(result)) == data


def test_failed_run_has_errors_statuses_and_no_output():
    nodes = {
        "a": NodeOutcome(FAILED, None, 3, "ValueError: x", 1.0, 0.1),
        "b": NodeOutcome(CANCELLED, None, 1, "cancelled: node a failed", 1.0, 0.1),
        "c": NodeOutcome(SKIPPED, None, 0, "skipped: node a failed", None, 0.0),
    }
    result = build_result(outcome(status=RUN_FAILED, output=None, nodes=nodes, error="node a failed: ValueError: x"),
                          run_id="r", workflow="w", version="1")
    data = result_to_dict(result)
    assert data["status"] == "RUN_STATUS_FAILED" and "output" not in data
    assert data["error"] == "node a failed: ValueError: x"
    assert data["nodes"]["a"] == {"status": "NODE_STATUS_FAILED", "attempts": 3, "error": "ValueError: x",
                                  "startedAt": "1970-01-01T00:00:01Z", "duration": "0.100s"}
    assert data["nodes"]["c"] == {"status": "NODE_STATUS_SKIPPED", "error": "skipped: node a failed"}
    assert result.nodes["b"].status == execution_pb2.NODE_STATUS_CANCELLED


def test_null_output_of_a_successful_run_is_present():
    nodes = {"a": NodeOutcome(SUCCEEDED, None, 1, "", 1.0, 0.0)}
    data = result_to_dict(build_result(outcome(output=None, nodes=nodes), run_id="r", workflow="w", version="1"))
    assert data["output"] is None and data["nodes"]["a"]["output"] is None


def test_secrets_are_redacted_in_outputs_and_errors():
    redactor = Redactor(["s3cr3t"])
    nodes = {
        "a": NodeOutcome(SUCCEEDED, {"echo": "key=s3cr3t", "s3cr3t": 1}, 1, "", 1.0, 0.0),
        "b": NodeOutcome(FAILED, None, 1, "bad token s3cr3t", 1.0, 0.0),
    }
    result = build_result(outcome(status=RUN_FAILED, output=None, nodes=nodes, error="node b failed: bad token s3cr3t"),
                          run_id="r", workflow="w", version="1", redactor=redactor)
    text = result_to_json(result)
    assert "s3cr3t" not in text
    assert value_to_python(result.nodes["a"].output) == {"echo": "key=***", "***": 1}
    assert result.error == "node b failed: bad token ***"


def test_a_node_returning_a_numeric_secret_is_redacted_in_its_node_output_too():
    redactor = Redactor.for_secrets({"door": {"pin": 4821}})
    nodes = {"leak": NodeOutcome(SUCCEEDED, 4821, 1, "", 1.0, 0.0), "other": NodeOutcome(SUCCEEDED, 4822, 1, "", 1.0, 0.0)}
    result = build_result(outcome(output={"leak": 4821, "other": 4822}, nodes=nodes),
                          run_id="r", workflow="w", version="1", redactor=redactor)  # fmt: skip
    assert "4821" not in result_to_json(result)
    assert result.nodes["leak"].output.string_value == "***"
    assert result.nodes["other"].output.number_value == 4822


class _Level(int):
    pass


class _Name(str):
    pass


def _outcomes() -> list[RunOutcome]:
    """Outcomes of every shape the HTTP answer is built from (see result_json)."""
    odd = {
        "int": 7, "big": 2**60, "neg": -0.0, "float": 0.1, "bool": False, "none": None, "tuple": (1, "t"),
        "sub": _Level(3), "name": _Name("n"), "nested": [{"k": [1, {"d": "é ☃ 😀"}]}], "": "",
    }  # fmt: skip
    secretive = {"token": "s3cr3t-value", "note": "has s3cr3t-value inside", "pin": 4821, "s3cr3t-value": 1}
    nodes = {
        "a": NodeOutcome(SUCCEEDED, odd, 1, "", 1_700_000_000.123456789, 0.000019506),
        "b": NodeOutcome(SUCCEEDED, secretive, 2, "", 1_700_000_001.5, 12.0),
        "c": NodeOutcome(SUCCEEDED, (1, 2), 1, "", 1_700_000_001.9, 0.25),
        "d": NodeOutcome(SUCCEEDED, None, 1, "", 1_700_000_002.0, 0.0),
        "e": NodeOutcome(SUCCEEDED, 3, 1, "", 1_700_000_002.0, 0.0),
    }
    failed = {
        "x": NodeOutcome(FAILED, None, 3, "ValueError: s3cr3t-value \ud800 leaked (after 3 attempts)", 1.0, 0.1),
        "y": NodeOutcome(CANCELLED, None, 1, "cancelled: node x failed", 1.5, 0.2),
        "z": NodeOutcome(SKIPPED, None, 0, "skipped: node x failed"),
        "w": NodeOutcome(SUCCEEDED, "ok", 0, "", None, 0.0),  # carried by a resume: never started here
    }
    return [
        outcome(),
        outcome(nodes=nodes, output={"d": None, "e": 3}),
        outcome(nodes=nodes, output=odd),
        outcome(status=RUN_FAILED, output=None, nodes=failed, error="node x failed: s3cr3t-value"),
        outcome(status=RUN_FAILED, output=None, nodes={}, error=""),
        outcome(output=None, nodes={"only": NodeOutcome(SUCCEEDED, None, 1, "", 5.0, 1.0)}),
    ]


def test_result_json_is_the_results_json():
    from engine.results import FinishedRun, result_dict, result_json

    redactors = [None, Redactor(), Redactor(["s3cr3t-value", "4821"])]
    for index, found in enumerate(_outcomes()):
        for redactor in redactors:
            for extra in ({}, {"trigger": "cron", "resumed_from": "r0"}):
                names = {"run_id": f"r{index}", "workflow": "wf", "version": "1.0.0", "redactor": redactor, **extra}
                result = build_result(found, **names)
                expected = result_to_dict(result)
                assert result_dict(found, **names) == expected
                text = result_json(found, **names)
                assert json.loads(text) == json.loads(result_to_json(result))
                # Same members, same order where the message keeps one (everything but its maps).
                assert list(result_dict(found, **names)) == list(expected)
                if redactor:
                    assert b"s3cr3t-value" not in text and b"4821" not in text
                # What a history gives back of an HTTP answer is the message the run would have built.
                finished = FinishedRun.from_text(text, found, run_id=names["run_id"], trigger=extra.get("trigger", ""))
                assert finished.snapshot() == result
                assert (finished.status, finished.trigger, finished.started) == (
                    result.status, result.trigger, (result.started_at.seconds, result.started_at.nanos)
                )
                assert FinishedRun.of(result).json() == result_to_json(result).encode()
