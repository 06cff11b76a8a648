"""The benchmark workflows, written to a directory: chain-10, fan-out 1→50→1, a 200-node
layered DAG and a DAG of sleeping nodes; plus the critical path of the latter."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import yaml

PASS = "async def run(ctx, input):\n    return 1\n"


def _sleeper(ms: int) -> str:
    return f"import asyncio\n\n\nasync def run(ctx, input):\n    await asyncio.sleep({ms / 1000!r})\n    return {ms}\n"


def write(directory: Path, name: str, nodes: dict[str, str], edges: Iterable[tuple[str, str]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "nodes").mkdir(exist_ok=True)
    spec = {
        "name": name,
        "version": "1.0",
        "triggers": [{"type": "manual"}],
        "nodes": {},
        "edges": [{"from": a, "to": b} for a, b in edges],
    }
    for node_id, source in nodes.items():
        (directory / "nodes" / f"{node_id}.py").write_text(source)
        spec["nodes"][node_id] = {"path": f"nodes/{node_id}.py"}
    (directory / "workflow.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return directory


def chain(root: Path, length: int = 10) -> Path:
    ids = [f"n{i}" for i in range(length)]
    return write(root / f"chain-{length}", f"chain-{length}", dict.fromkeys(ids, PASS), zip(ids, ids[1:]))


def fan_out(root: Path, width: int = 50) -> Path:
    middle = [f"m{i}" for i in range(width)]
    nodes = {"src": PASS, **dict.fromkeys(middle, PASS), "sink": PASS}
    edges = [("src", m) for m in middle] + [(m, "sink") for m in middle]
    return write(root / f"fan-out-{width}", f"fan-out-{width}", nodes, edges)


def layered(root: Path, layers: int = 10, width: int = 20) -> Path:
    """`layers` × `width` nodes; each node depends on 3 nodes of the layer above (deterministic)."""
    nodes: dict[str, str] = {}
    edges: list[tuple[str, str]] = []
    for layer in range(layers):
        for i in range(width):
            node = f"l{layer}n{i}"
            nodes[node] = PASS
            if layer:
                for k in (0, 1, 7):
                    edges.append((f"l{layer - 1}n{(i + k) % width}", node))
    return write(root / f"layered-{layers * width}", f"layered-{layers * width}", nodes, edges)


# a(20) → b(30) → d(20) ; a → c(10) → d ; e(15) → d    critical path a-b-d = 70 ms
SLEEPING = {"a": 20, "b": 30, "c": 10, "d": 20, "e": 15}
SLEEPING_EDGES = [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"), ("e", "d")]
SLEEPING_CRITICAL_PATH = 0.070


def sleeping(root: Path) -> Path:
    return write(root / "sleeping", "sleeping", {n: _sleeper(ms) for n, ms in SLEEPING.items()}, SLEEPING_EDGES)
