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
    assert 'n_fetch_repos["fetch-repos"]' in text
    assert re.findall(r"(\w+) --> (\w+)", text) == [
        ("n_fetch_repos", "n_enrich"),
        ("n_fetch_repos", "n_summarize"),
        ("n_enrich", "n_notify"),
        ("n_summarize", "n_notify"),
    ]


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
