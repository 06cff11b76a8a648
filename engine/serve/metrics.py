"""Prometheus metrics for one engine: runs by status, runs refused, node durations, runs in flight.

Runs change them; a scrape of /metrics reads them. They are kept as plain
numbers (the event loop is one thread) and become prometheus_client metric
families only when scraped, so prometheus_client is imported at the first
scrape, not at start (about 20 ms of a cold start here). Each engine renders
through a `CollectorRegistry` of its own, so several engines (tests, `dev`
reloads) never collide in the process-wide default registry. No `*_created`
series: they would double the output and nobody here graphs them.
"""

from __future__ import annotations

import bisect
import math
from typing import TYPE_CHECKING, Any, Iterator

from engine.executor import RunOutcome
from proto.pipedreamer.v1 import execution_pb2

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

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


class RunCounts:
    """`pipedreamer_runs_total` by final status, `pipedreamer_runs_in_flight` and
    `pipedreamer_runs_rejected_total` by reason, kept as plain ints.

    A run changes them three times (in, out, counted): prometheus_client's
    Counter and Gauge take a lock each time; these are read only when
    /metrics is scraped (the event loop is one thread)."""

    def __init__(self, workflow: str) -> None:
        self.workflow = workflow
        self.in_flight = 0
        # Shown from the start, at 0, so a dashboard has the series before the first run.
        self.by_status: dict[int, int] = {execution_pb2.RUN_STATUS_SUCCEEDED: 0, execution_pb2.RUN_STATUS_FAILED: 0}
        self.rejected: dict[str, int] = {}

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        runs = CounterMetricFamily("pipedreamer_runs", "Workflow runs, by final status.", labels=("workflow", "status"))
        for status, count in sorted(self.by_status.items(), key=lambda item: _RUN_STATUS.get(item[0], "unspecified")):
            runs.add_metric([self.workflow, _RUN_STATUS.get(status, "unspecified")], count)
        yield runs
        in_flight = GaugeMetricFamily("pipedreamer_runs_in_flight", "Runs currently executing.", labels=("workflow",))
        in_flight.add_metric([self.workflow], self.in_flight)
        yield in_flight
        rejected = CounterMetricFamily(
            "pipedreamer_runs_rejected",
            "Run requests refused before starting (draining, too many in flight, bad input).",
            labels=("workflow", "reason"),
        )
        for reason, count in sorted(self.rejected.items()):
            rejected.add_metric([self.workflow, reason], count)
        yield rejected


class NodeDurations:
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
        # (node, NodeStatus number) → [per-bucket counts (not cumulative)..., sum]
        self._series: dict[tuple[str, int], list[float]] = {}

    def observe(self, node: str, status: int, seconds: float) -> None:
        series = self._series.get((node, status))
        if series is None:
            series = self._series[(node, status)] = [0] * len(self.bounds) + [0.0]
        series[bisect.bisect_left(self.bounds, seconds)] += 1
        series[-1] += seconds

    def observe_outcome(self, outcome: RunOutcome) -> None:
        """`observe` for each node of `outcome` that started here (the per-run hot path, inlined)."""
        all_series, bounds = self._series, self.bounds
        for node_id, record in outcome.nodes.items():
            if record.started_at is None:
                continue  # never started here (skipped, or carried by a resume)
            took = record.duration
            whole = int(took)
            # Cut to whole nanoseconds, as the result message holds it.
            seconds = whole + int((took - whole) * 1e9) / 1e9
            series = all_series.get((node_id, record.status))
            if series is None:
                series = all_series[(node_id, record.status)] = [0] * len(bounds) + [0.0]
            series[bisect.bisect_left(bounds, seconds)] += 1
            series[-1] += seconds

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import HistogramMetricFamily
        from prometheus_client.utils import floatToGoString

        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        le = [floatToGoString(bound) for bound in self.bounds]
        named = {(node, _NODE_STATUS.get(status, "unspecified")): series for (node, status), series in self._series.items()}
        for (node, status), series in sorted(named.items()):
            cumulative, buckets = 0, []
            for bound, count in zip(le, series):
                cumulative += count
                buckets.append((bound, cumulative))
            family.add_metric([self.workflow, node, status], buckets, series[-1])
        yield family


class EngineMetrics:
    """The metrics one serving engine exports on `/metrics`."""

    def __init__(self, workflow: str) -> None:
        self.workflow = workflow
        self.runs = RunCounts(workflow)
        self._node_duration = NodeDurations(workflow)
        self._registry: CollectorRegistry | None = None

    def observe(self, status: int, outcome: RunOutcome | None = None) -> None:
        """Counts a finished run and records the duration of each node of `outcome` that started."""
        counts = self.runs.by_status
        counts[status] = counts.get(status, 0) + 1
        if outcome is not None:
            self._node_duration.observe_outcome(outcome)

    def observe_result(self, result: execution_pb2.ExecutionResult) -> None:
        """`observe` for a run known only by its result message (one cancelled before it finished)."""
        self.observe(result.status)
        observe = self._node_duration.observe
        for node_id, node in result.nodes.items():
            if not node.HasField("duration"):
                continue  # never started (skipped)
            duration = node.duration
            observe(node_id, node.status, duration.seconds + duration.nanos / 1e9)

    @property
    def content_type(self) -> str:
        """The Content-Type of `render`'s text."""
        from prometheus_client.exposition import CONTENT_TYPE_LATEST

        return CONTENT_TYPE_LATEST

    def rejected(self, reason: str) -> None:
        rejected = self.runs.rejected
        rejected[reason] = rejected.get(reason, 0) + 1

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        from prometheus_client import CollectorRegistry, generate_latest

        if self._registry is None:
            registry = CollectorRegistry(auto_describe=False)
            registry.register(self.runs)  # type: ignore[arg-type] # a Collector by its collect()
            registry.register(self._node_duration)  # type: ignore[arg-type]
            self._registry = registry
        return generate_latest(self._registry)
