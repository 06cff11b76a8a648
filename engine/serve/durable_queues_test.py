"""Tests for the pure parts of durable queue triggers: names, subject matching, the ack wait, dead letters."""

from __future__ import annotations

import json

import pytest

from engine.compiler import compile_dag
from engine.serve.durable_queues import (
    ACK_MARGIN,
    ack_wait_seconds,
    consumer_name,
    dead_letter,
    dead_letter_stream,
    dead_letter_subject,
    longest_run_seconds,
    stream_name,
    subject_matches,
)
from engine.spec import parse_spec
from proto.pipedreamer.v1 import execution_pb2


def test_names_follow_the_workflow():
    assert stream_name("order-intake") == "PIPEDREAMER_ORDER_INTAKE"
    assert dead_letter_stream("order-intake") == "PIPEDREAMER_ORDER_INTAKE_DLQ"
    assert consumer_name("order-intake") == "pipedreamer-order-intake"
    assert dead_letter_subject("order-intake") == "pipedreamer.dlq.order-intake"


@pytest.mark.parametrize(
    ("pattern", "subject", "matches"),
    [
        ("orders.new", "orders.new", True),
        ("orders.new", "orders.old", False),
        ("orders.*", "orders.new", True),
        ("orders.*", "orders.new.eu", False),
        ("orders.>", "orders.new.eu", True),
        ("orders.>", "orders", False),
        ("*.new", "orders.new", True),
    ],
)
def test_subject_matching(pattern, subject, matches):
    assert subject_matches(pattern, subject) is matches


def _dag(text: str):
    return compile_dag(parse_spec("name: x\nversion: 1.0.0\n" + text).spec)


def test_the_ack_wait_is_the_longest_run_along_the_critical_path_plus_a_margin():
    dag = _dag(
        "config: {timeout: 2s}\n"
        "nodes:\n  a: {path: a.py}\n  b: {path: b.py, timeout: 10s, retries: 2}\n  c: {path: c.py}\n"
        "edges: [{from: a, to: b}, {from: a, to: c}]\n"
    )
    # a (2 s) then b: 3 attempts of 10 s with 0.1 s and 0.2 s backoff between them.
    assert longest_run_seconds(dag) == pytest.approx(2 + 30 + 0.3)
    assert ack_wait_seconds(dag) == pytest.approx(32.3 + ACK_MARGIN)
    # Defaults: one node, 30 s; a long run gets 10 % on top.
    assert ack_wait_seconds(_dag("nodes: {a: {path: a.py}}\n")) == 35.0
    assert ack_wait_seconds(_dag("nodes: {a: {path: a.py, timeout: 10m}}\n")) == 660.0


def test_a_dead_letter_carries_the_message_and_its_result_and_drops_outputs_past_the_limit():
    result = execution_pb2.ExecutionResult(run_id="r1", workflow="x", status=execution_pb2.RUN_STATUS_FAILED, error="boom", trigger="orders")
    result.nodes["a"].status = execution_pb2.NODE_STATUS_FAILED
    result.nodes["a"].output.string_value = "x" * 1000
    body = json.loads(dead_letter("x", "orders", "orders.new", b'{"id": 1}', {"Nats-Msg-Id": "m1"}, "PIPEDREAMER_X", 7, 1, result, 100_000))
    assert body["payload"] == '{"id": 1}' and body["sequence"] == 7 and body["headers"] == {"Nats-Msg-Id": "m1"}
    assert body["result"]["runId"] == "r1" and body["result"]["status"] == "RUN_STATUS_FAILED"
    assert body["result"]["nodes"]["a"]["output"] == "x" * 1000
    small = json.loads(dead_letter("x", "orders", "orders.new", b"\xff\xfe", None, "PIPEDREAMER_X", 7, 3, result, 500))
    assert small["payloadBase64"] == "//4=" and small["resultTruncated"] is True
    assert "output" not in small["result"]["nodes"]["a"]
