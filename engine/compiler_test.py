"""Tests for the DAG compiler: shapes, determinism and rejected graphs."""

from __future__ import annotations

import pytest

from engine.compiler import CompileError, compile_dag, find_cycle
from proto.pipedreamer.v1 import workflow_pb2


def make_spec(nodes: list[str], edges: list[tuple[str, str]]) -> workflow_pb2.WorkflowSpec:
    return workflow_pb2.WorkflowSpec(
        name="t",
        version="1.0.0",
        nodes=[workflow_pb2.NodeSpec(id=n, path=f"nodes/{n}.py") for n in nodes],
        edges=[workflow_pb2.Edge(source=s, target=t) for s, t in edges],
    )


def test_single_node():
    dag = compile_dag(make_spec(["a"], []))
    assert dag.order == ("a",) and dag.stages == (("a",),)
    assert dag.roots == ("a",) and dag.sinks == ("a",)


def test_chain():
    dag = compile_dag(make_spec(["c", "b", "a"], [("a", "b"), ("b", "c")]))
    assert dag.order == ("a", "b", "c")
    assert dag.dependencies == {"a": (), "b": ("a",), "c": ("b",)}
    assert dag.stages == (("a",), ("b",), ("c",))


def test_seed_example_stages():
    dag = compile_dag(
        make_spec(
            ["fetch", "transform", "enrich", "notify"],
            [("fetch", "transform"), ("fetch", "enrich"), ("transform", "notify"), ("enrich", "notify")],
        )
    )
    assert dag.stages == (("fetch",), ("enrich", "transform"), ("notify",))
    assert dag.dependencies["notify"] == ("enrich", "transform")
    assert dag.dependents["fetch"] == ("enrich", "transform")
    assert dag.roots == ("fetch",) and dag.sinks == ("notify",)


def test_fan_out_and_uneven_depth():
    dag = compile_dag(make_spec(["a", "b", "c", "d"], [("a", "b"), ("b", "c"), ("a", "d")]))
    assert dag.stages == (("a",), ("b", "d"), ("c",))
    assert set(dag.sinks) == {"c", "d"}


def test_order_is_deterministic_whatever_the_declaration_order():
    edges = [("a", "x"), ("a", "y"), ("x", "z"), ("y", "z")]
    first = compile_dag(make_spec(["a", "x", "y", "z"], edges))
    second = compile_dag(make_spec(["z", "y", "x", "a"], list(reversed(edges))))
    assert first.order == second.order == ("a", "x", "y", "z")


def test_every_problem_is_reported():
    with pytest.raises(CompileError) as info:
        compile_dag(make_spec(["a", "b"], [("a", "ghost"), ("b", "b"), ("nope", "a")]))
    assert tuple(str(p) for p in info.value.problems) == (
        "edges[0].to: unknown node 'ghost'",
        "edges[1]: self-loop: b → b",
        "edges[2].from: unknown node 'nope'",
    )


def test_cycle_names_its_nodes():
    with pytest.raises(CompileError, match="cycle: b → c → d → b"):
        compile_dag(make_spec(["a", "b", "c", "d"], [("a", "b"), ("b", "c"), ("c", "d"), ("d", "b")]))


def test_empty_and_duplicate_nodes():
    with pytest.raises(CompileError, match="at least one node"):
        compile_dag(make_spec([], []))
    with pytest.raises(CompileError, match="nodes.a: defined more than once"):
        compile_dag(make_spec(["a", "a"], []))


def test_long_chain_does_not_recurse():
    n = 5000
    ids = [f"n{i:05d}" for i in range(n)]
    dag = compile_dag(make_spec(ids, list(zip(ids, ids[1:]))))
    assert dag.order == tuple(ids) and len(dag.stages) == n
    assert find_cycle(ids, list(zip(ids, ids[1:])) + [(ids[-1], ids[0])])[0] == ids[0]


def test_duplicate_edges_are_merged():
    dag = compile_dag(make_spec(["a", "b"], [("a", "b"), ("a", "b")]))
    assert dag.dependencies["b"] == ("a",)
