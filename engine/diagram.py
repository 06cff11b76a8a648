"""Renders a compiled DAG as Mermaid, Graphviz DOT or a self-contained HTML page."""

from __future__ import annotations

import html
import json

from engine.compiler import CompiledDAG

FORMATS = ("mermaid", "dot", "html")


def _mermaid_id(node_id: str) -> str:
    """The Mermaid id of a node: distinct for distinct node ids, the same on every run.

    Not every renderer takes '-' in an id, so ids keep ASCII letters and digits
    and escape the rest: '_' as '__', '-' as '_h', anything else as '_u<hex>_'.
    Every escape starts with '_' and its second character says which it is, so
    two node ids never share a Mermaid id ('a-b' is n_a_hb, 'a_b' is n_a__b).
    The 'n_' prefix keeps ids such as 'end' clear of Mermaid's keywords; labels
    show the real id.
    """
    return "n_" + "".join(_MERMAID_ESCAPES.get(c) or _mermaid_char(c) for c in node_id)


_MERMAID_ESCAPES = {"_": "__", "-": "_h"}


def _mermaid_char(char: str) -> str:
    if char.isascii() and char.isalnum():
        return char
    return f"_u{ord(char):x}_"


def render_mermaid(dag: CompiledDAG) -> str:
    lines = ["graph TD"]
    for node_id in dag.order:
        lines.append(f'    {_mermaid_id(node_id)}["{node_id}"]')
    for node_id in dag.order:
        for child in dag.dependents[node_id]:
            lines.append(f"    {_mermaid_id(node_id)} --> {_mermaid_id(child)}")
    return "\n".join(lines) + "\n"


def render_dot(dag: CompiledDAG) -> str:
    lines = [f"digraph {json.dumps(dag.spec.name)} {{", "    rankdir=TB;", "    node [shape=box, style=rounded];"]
    for node_id in dag.order:
        lines.append(f"    {json.dumps(node_id)};")
    for node_id in dag.order:
        for child in dag.dependents[node_id]:
            lines.append(f"    {json.dumps(node_id)} -> {json.dumps(child)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


_BOX_W, _BOX_H, _GAP_X, _GAP_Y, _MARGIN = 180, 44, 40, 70, 30


def render_svg(dag: CompiledDAG) -> str:
    """A layered drawing: one row per stage, edges as arrows. No scripts, no fetches."""
    widest = max(len(stage) for stage in dag.stages)
    width = _MARGIN * 2 + widest * _BOX_W + (widest - 1) * _GAP_X
    height = _MARGIN * 2 + len(dag.stages) * _BOX_H + (len(dag.stages) - 1) * _GAP_Y
    position: dict[str, tuple[float, float]] = {}
    for row, stage in enumerate(dag.stages):
        row_width = len(stage) * _BOX_W + (len(stage) - 1) * _GAP_X
        left = (width - row_width) / 2
        for col, node_id in enumerate(stage):
            position[node_id] = (left + col * (_BOX_W + _GAP_X), _MARGIN + row * (_BOX_H + _GAP_Y))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(dag.spec.name)} DAG">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" '
        'markerHeight="8" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>',
    ]
    for node_id in dag.order:
        x1, y1 = position[node_id]
        for child in dag.dependents[node_id]:
            x2, y2 = position[child]
            parts.append(
                f'<line class="edge" x1="{x1 + _BOX_W / 2:.1f}" y1="{y1 + _BOX_H:.1f}" '
                f'x2="{x2 + _BOX_W / 2:.1f}" y2="{y2:.1f}" stroke="#555" stroke-width="1.5" marker-end="url(#arrow)"/>'
            )
    for node_id in dag.order:
        x, y = position[node_id]
        label = html.escape(node_id)
        parts.append(
            f'<g class="node" data-id="{label}"><rect x="{x:.1f}" y="{y:.1f}" width="{_BOX_W}" height="{_BOX_H}" '
            f'rx="8" fill="#eef4ff" stroke="#3b6fd8"/><text x="{x + _BOX_W / 2:.1f}" y="{y + _BOX_H / 2 + 5:.1f}" '
            f'text-anchor="middle" font-family="sans-serif" font-size="14">{label}</text></g>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


def render_html(dag: CompiledDAG) -> str:
    name = html.escape(dag.spec.name)
    version = html.escape(dag.spec.version)
    stages = "".join(
        f"<li>Stage {i + 1}: {html.escape(', '.join(stage))}</li>" for i, stage in enumerate(dag.stages)
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{name} {version} — Pipedreamer DAG</title>
<style>body{{font-family:sans-serif;margin:2rem;color:#222}}h1{{font-size:1.3rem}}</style>
</head>
<body>
<h1>{name} <small>{version}</small></h1>
{render_svg(dag)}
<h2>Stages</h2>
<ol>{stages}</ol>
<details><summary>Mermaid source</summary><pre>{html.escape(render_mermaid(dag))}</pre></details>
</body>
</html>
"""


def render(dag: CompiledDAG, fmt: str) -> str:
    if fmt == "mermaid":
        return render_mermaid(dag)
    if fmt == "dot":
        return render_dot(dag)
    if fmt == "html":
        return render_html(dag)
    raise ValueError(f"unknown format {fmt!r} (expected one of: {', '.join(FORMATS)})")
