"""Prometheus metrics for one engine: runs by status, node durations, runs in flight.

Each engine gets its own `CollectorRegistry`, so several engines (tests, `dev`
reloads) never collide in the process-wide default registry.
"""

from __future__ import annotations

import bisect
import math
from typing import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics, generate_latest
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from engine.executor import RunOutcome
from proto.pipedreamer.v1 import execution_pb2

# `*_created` series double the output and nobody here graphs them.
disable_created_metrics()

# Nodes range from sub-millisecond transforms to 30 s API calls.
NODE_DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

_RUN_STATUS = {
    value.number: value.name.removeprefix("RUN_STATUS_").lower()
    for value in execution_pb2.RunStatus.DESCRIPTOR.values
}
_NODE_STATUS = {
    value.number: value.name.removeprefix("NODE_STATUS_").lower()
    for value in execution_pb2.NodeStatus.DESCRIPTOR.values
}


class NodeDurations(Collector):
    """`pipedreamer_node_duration_seconds`: a histogram kept as plain counts.

    prometheus_client's Histogram takes a lock and walks its buckets per
    observation; a run observes every node, so this records with one bisect
    and builds the exposition only when /metrics is scraped.
    """

    name = "pipedreamer_node_duration_seconds"
    documentation = "Wall time of each node execution (all attempts), by final node status."
    labels = ("workflow", "node", "status")

    def __init__(self, workflow: str, buckets: tuple[float, ...] = NODE_DURATION_BUCKETS) -> None:
        self.workflow = workflow
        self.bounds = (*sorted(buckets), math.inf)
        self._le = [floatToGoString(b) for b in self.bounds]
        # (node, status) → [per-bucket counts (not cumulative)..., sum]
        self._series: dict[tuple[str, str], list[float]] = {}

    def observe(self, node: str, status: str, seconds: float) -> None:
        series = self._series.get((node, status))
        if series is None:
            series = self._series[(node, status)] = [0] * len(self.bounds) + [0.0]
        series[bisect.bisect_left(self.bounds, seconds)] += 1
        series[-1] += seconds

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labels)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for (node, status), series in sorted(self._series.items()):
            cumulative, buckets = 0, []
            for le, count in zip(self._le, series):
                cumulative += count
                buckets.append((le, cumulative))
            family.add_metric([self.workflow, node, status], buckets, series[-1])
        yield family


class EngineMetrics:
    """The metrics one serving engine exports on `/metrics`."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, workflow: str) -> None:
        self.workflow = workflow
        self.registry = CollectorRegistry(auto_describe=True)
        self._runs = Counter(
            "pipedreamer_runs",
            "Workflow runs, by final status.",
            ("workflow", "status"),
            registry=self.registry,
        )
        self._node_duration = NodeDurations(workflow)
        self.registry.register(self._node_duration)
        self._rejected = Counter(
            "pipedreamer_runs_rejected",
            "Run requests refused before starting (draining, too many in flight, bad input).",
            ("workflow", "reason"),
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "pipedreamer_runs_in_flight",
            "Runs currently executing.",
            ("workflow",),
            registry=self.registry,
        ).labels(workflow)
        # Label lookups cost more than the observation; cache the children.
        self._run_children: dict[int, Counter] = {}
        for status in ("succeeded", "failed"):
            self._runs.labels(workflow, status)

    def observe(self, status: int, outcome: RunOutcome | None = None) -> None:
        """Counts a finished run and records the duration of each node of `outcome` that started."""
        child = self._run_children.get(status)
        if child is None:
            child = self._runs.labels(self.workflow, _RUN_STATUS.get(status, "unspecified"))
            self._run_children[status] = child
        child.inc()
        if outcome is None:
            return
        observe = self._node_duration.observe
        for node_id, record in outcome.nodes.items():
            if record.started_at is None:
                continue  # never started here (skipped, or carried by a resume)
            took = record.duration
            whole = int(took)
            # Cut to whole nanoseconds, as the result message holds it.
            observe(node_id, _NODE_STATUS.get(record.status, "unspecified"), whole + int((took - whole) * 1e9) / 1e9)

    def observe_result(self, result: execution_pb2.ExecutionResult) -> None:
        """`observe` for a run known only by its result message (one cancelled before it finished)."""
        self.observe(result.status)
        observe = self._node_duration.observe
        for node_id, node in result.nodes.items():
            if not node.HasField("duration"):
                continue  # never started (skipped)
            duration = node.duration
            observe(node_id, _NODE_STATUS.get(node.status, "unspecified"), duration.seconds + duration.nanos / 1e9)

    def rejected(self, reason: str) -> None:
        self._rejected.labels(self.workflow, reason).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
