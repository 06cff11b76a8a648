"""Tests for the DAG diagrams (Mermaid, DOT, HTML)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from engine.compiler import compile_dag
from engine.diagram import render, render_dot, render_html, render_mermaid, render_svg
from proto.pipedreamer.v1 import workflow_pb2

SPEC = workflow_pb2.WorkflowSpec(
    name="digest",
    version="1.0.0",
    nodes=[workflow_pb2.NodeSpec(id=n, path=f"nodes/{n}.py") for n in ["fetch-repos", "summarize", "enrich", "notify"]],
    edges=[
        workflow_pb2.Edge(source="fetch-repos", target="summarize"),
        workflow_pb2.Edge(source="fetch-repos", target="enrich"),
        workflow_pb2.Edge(source="summarize", target="notify"),
        workflow_pb2.Edge(source="enrich", target="notify"),
    ],
)


def test_mermaid_lists_nodes_and_edges():
    text = render_mermaid(compile_dag(SPEC))
    assert text.splitlines()[0] == "graph TD"
    assert 'n_fetch_hrepos["fetch-repos"]' in text
    assert re.findall(r"(\w+) --> (\w+)", text) == [
        ("n_fetch_hrepos", "n_enrich"),
        ("n_fetch_hrepos", "n_summarize"),
        ("n_enrich", "n_notify"),
        ("n_summarize", "n_notify"),
    ]


#: Valid node ids that differ only in '-' and '_' (engine/spec.py accepts both).
LOOKALIKE_IDS = ["a-b", "a_b", "a__b", "a-_b", "a_-b", "a--b", "a_hb", "a_h", "a-h", "end"]


def lookalike_dag():
    nodes = [workflow_pb2.NodeSpec(id=n, path=f"nodes/n{i}.py") for i, n in enumerate(LOOKALIKE_IDS)]
    edges = [workflow_pb2.Edge(source="a-b", target="a_b"), workflow_pb2.Edge(source="a_b", target="a__b")]
    return compile_dag(workflow_pb2.WorkflowSpec(name="lookalikes", version="1.0.0", nodes=nodes, edges=edges))


def mermaid_nodes(text):
    """Mermaid id → label, from the node lines of a diagram."""
    return dict(re.findall(r'^    (\w+)\["([^"]*)"\]$', text, re.MULTILINE))


def test_mermaid_ids_are_distinct_for_ids_differing_in_dash_and_underscore():
    text = render_mermaid(lookalike_dag())
    nodes = mermaid_nodes(text)
    assert sorted(nodes.values()) == sorted(LOOKALIKE_IDS)
    assert len(nodes) == len(LOOKALIKE_IDS)
    by_label = {label: mermaid_id for mermaid_id, label in nodes.items()}
    assert by_label["a-b"] == "n_a_hb" and by_label["a_b"] == "n_a__b"
    edges = re.findall(r"(\w+) --> (\w+)", text)
    assert sorted(edges) == sorted(
        [(by_label["a-b"], by_label["a_b"]), (by_label["a_b"], by_label["a__b"])]
    )


def test_mermaid_ids_are_stable_and_plain():
    first, again = render_mermaid(lookalike_dag()), render_mermaid(lookalike_dag())
    assert first == again
    assert all(re.fullmatch(r"n_[A-Za-z0-9_]+", mermaid_id) for mermaid_id in mermaid_nodes(first))


def test_mermaid_escapes_characters_outside_the_node_id_alphabet():
    # The spec parser rejects such ids; a DAG built by hand still renders without merging them.
    nodes = [workflow_pb2.NodeSpec(id=n, path=f"n{i}.py") for i, n in enumerate(["a.b", "a_u2e_b", "a b"])]
    text = render_mermaid(compile_dag(workflow_pb2.WorkflowSpec(name="x", version="1.0.0", nodes=nodes)))
    assert mermaid_nodes(text) == {"n_a_u2e_b": "a.b", "n_a__u2e__b": "a_u2e_b", "n_a_u20_b": "a b"}


def test_dot_and_html_keep_lookalike_ids_apart():
    dag = lookalike_dag()
    dot = render_dot(dag)
    assert '"a-b" -> "a_b";' in dot and '"a_b" -> "a__b";' in dot
    assert sorted(re.findall(r'^    ("[^"]*");$', dot, re.MULTILINE)) == sorted(f'"{n}"' for n in LOOKALIKE_IDS)
    page = render_html(dag)
    svg = ET.fromstring(page[page.index("<svg") : page.index("</svg>") + 6])
    ns = {"s": "http://www.w3.org/2000/svg"}
    assert sorted(g.get("data-id") for g in svg.iterfind(".//s:g", ns)) == sorted(LOOKALIKE_IDS)
    assert "n_a_hb --&gt; n_a__b" in page


def test_dot_is_a_digraph_with_quoted_ids():
    text = render_dot(compile_dag(SPEC))
    assert text.startswith('digraph "digest" {')
    assert '"fetch-repos" -> "summarize";' in text and text.rstrip().endswith("}")


def test_html_is_self_contained_and_draws_every_node_and_edge():
    page = render_html(compile_dag(SPEC))
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    svg = page[page.index("<svg") : page.index("</svg>") + 6]
    root = ET.fromstring(svg)
    ns = {"s": "http://www.w3.org/2000/svg"}
    labels = [t.text for t in root.iterfind(".//s:g/s:text", ns)]
    assert sorted(labels) == ["enrich", "fetch-repos", "notify", "summarize"]
    assert len(root.findall(".//s:line", ns)) == 4


def test_svg_places_dependents_below_their_dependencies():
    svg = ET.fromstring(render_svg(compile_dag(SPEC)))
    ns = {"s": "http://www.w3.org/2000/svg"}
    y = {g.get("data-id"): float(g.find("s:rect", ns).get("y")) for g in svg.iterfind(".//s:g", ns)}
    assert y["fetch-repos"] < y["summarize"] == y["enrich"] < y["notify"]


def test_names_are_escaped():
    spec = workflow_pb2.WorkflowSpec(name="x<y>", version="1.0.0", nodes=[workflow_pb2.NodeSpec(id="a", path="a.py")])
    assert "x&lt;y&gt;" in render_html(compile_dag(spec))


def test_unknown_format():
    with pytest.raises(ValueError, match="unknown format 'png'"):
        render(compile_dag(SPEC), "png")
