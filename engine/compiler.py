"""Compiles a `WorkflowSpec` into the DAG the executor walks.

Rejects unknown edge ends, self-loops and cycles (naming the cycle); orders
nodes deterministically; keeps the seed's stage view for display only — the
executor starts each node as soon as its own dependencies are done.
"""

from __future__ import annotations

import dataclasses
import heapq
from typing import Iterable, Mapping

from engine.errors import PipedreamerError, Problem
from proto.pipedreamer.v1 import workflow_pb2


class CompileError(PipedreamerError):
    """The spec's graph cannot run; `problems` lists every reason (field path and what is wrong)."""

    def __init__(self, problems: list[str]):
        described = [Problem("", None, *text.split(": ", 1)) if ": " in text else Problem("", None, "", text) for text in problems]
        super().__init__("; ".join(problems), problems=described)


@dataclasses.dataclass(frozen=True)
class CompiledDAG:
    spec: workflow_pb2.WorkflowSpec
    # Topological order; ties broken by node id so it never changes run to run.
    order: tuple[str, ...]
    dependencies: Mapping[str, tuple[str, ...]]
    dependents: Mapping[str, tuple[str, ...]]
    # Nodes grouped by depth (longest path from a root): the seed's stages.
    stages: tuple[tuple[str, ...], ...]

    @property
    def roots(self) -> tuple[str, ...]:
        return tuple(n for n in self.order if not self.dependencies[n])

    @property
    def sinks(self) -> tuple[str, ...]:
        return tuple(n for n in self.order if not self.dependents[n])


def find_cycle(nodes: Iterable[str], edges: Iterable[tuple[str, str]]) -> list[str] | None:
    """One cycle as [a, b, …] (a → b → … → a), or None. Deterministic."""
    successors: dict[str, list[str]] = {n: [] for n in nodes}
    for source, target in edges:
        if source in successors and target in successors:
            successors[source].append(target)
    for targets in successors.values():
        targets.sort()
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(successors, white)
    for start in sorted(successors):
        if color[start] != white:
            continue
        # Iterative DFS: deep chains must not hit Python's recursion limit.
        path: list[str] = [start]
        iterators = [iter(successors[start])]
        color[start] = grey
        while iterators:
            nxt = next(iterators[-1], None)
            if nxt is None:
                color[path.pop()] = black
                iterators.pop()
            elif color[nxt] == grey:
                return path[path.index(nxt) :]
            elif color[nxt] == white:
                color[nxt] = grey
                path.append(nxt)
                iterators.append(iter(successors[nxt]))
    return None


def compile_dag(spec: workflow_pb2.WorkflowSpec) -> CompiledDAG:
    ids = [node.id for node in spec.nodes]
    problems: list[str] = []
    if not ids:
        problems.append("nodes: at least one node is required")
    known = set(ids)
    for duplicate in sorted({i for i in ids if ids.count(i) > 1}):
        problems.append(f"nodes.{duplicate}: defined more than once")
    dependencies: dict[str, list[str]] = {i: [] for i in ids}
    dependents: dict[str, list[str]] = {i: [] for i in ids}
    for index, edge in enumerate(spec.edges):
        bad = False
        for end, name in (("from", edge.source), ("to", edge.target)):
            if name not in known:
                problems.append(f"edges[{index}].{end}: unknown node {name!r}")
                bad = True
        if bad:
            continue
        if edge.source == edge.target:
            problems.append(f"edges[{index}]: self-loop: {edge.source} → {edge.source}")
            continue
        if edge.source not in dependencies[edge.target]:
            dependencies[edge.target].append(edge.source)
            dependents[edge.source].append(edge.target)
    if not problems:
        cycle = find_cycle(ids, [(e.source, e.target) for e in spec.edges])
        if cycle:
            problems.append("edges: cycle: " + " → ".join(cycle + [cycle[0]]))
    if problems:
        raise CompileError(problems)

    # Kahn's algorithm with a heap: deterministic order, O((V + E) log V).
    remaining = {i: len(dependencies[i]) for i in ids}
    ready = [i for i in ids if remaining[i] == 0]
    heapq.heapify(ready)
    order: list[str] = []
    depth: dict[str, int] = {}
    while ready:
        current = heapq.heappop(ready)
        order.append(current)
        depth[current] = max((depth[d] + 1 for d in dependencies[current]), default=0)
        for child in dependents[current]:
            remaining[child] -= 1
            if remaining[child] == 0:
                heapq.heappush(ready, child)
    stages: list[list[str]] = [[] for _ in range(max(depth.values()) + 1)]
    for node_id in sorted(order):
        stages[depth[node_id]].append(node_id)
    return CompiledDAG(
        spec=spec,
        order=tuple(order),
        dependencies={i: tuple(sorted(dependencies[i])) for i in ids},
        dependents={i: tuple(sorted(dependents[i])) for i in ids},
        stages=tuple(tuple(s) for s in stages),
    )
