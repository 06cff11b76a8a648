"""`pipedreamer status NAME [--detail]`: how a deployed workflow is doing."""

from __future__ import annotations

import argparse

from cli.output import Output
from cli.runs import format_when, failing_node
from cli.table import render_table
from k8s.client import connect
from k8s.status import WorkflowStatus, get_status, trigger_source, trigger_state

HELP = "show a deployed workflow's health (--detail: image, runtime, pods, triggers, runs, events)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="workflow name")
    parser.add_argument("--detail", action="store_true", help="also show image, runtime class, network policy, Ingress, pods, CronJobs, triggers (streams, lag, dead letters), last runs and recent events")


def run(args: argparse.Namespace, out: Output) -> int:
    with connect(args.kubeconfig, args.context, args.namespace) as cluster:
        status = get_status(cluster, args.name, detail=args.detail)
    out.result(status.to_dict(), format_status(status, args.detail))
    return 0


def format_status(status: WorkflowStatus, detail: bool) -> str:
    health = "healthy" if status.healthy else "not ready"
    lines = [
        f"{status.name} {status.version} in namespace {status.namespace}: {health}",
        f"  replicas: {status.ready}/{status.desired} ready, {status.updated} updated, {status.available} available",
    ]
    if not detail:
        return "\n".join(lines)
    lines += [
        f"  image: {status.image}",
        f"  runtime class: {status.runtime_class or '(none: runs on the node default runtime)'}",
    ]
    if status.conditions:
        lines.append(f"  conditions: {', '.join(status.conditions)}")
    if status.network_policy:
        lines.append(f"  network policy: {status.network_policy.name}, admits:")
        lines += [f"    {line}" for line in status.network_policy.admits or ["no one"]]
    else:
        lines.append("  network policy: none: any pod in the cluster can call the engine (redeploy to restore it)")
    if status.ingress:
        ingress = status.ingress
        scheme = "https" if ingress.tls else "http"
        where = f" at {ingress.address}" if ingress.address else " (no address published yet: is an ingress controller running?)"
        lines.append(f"  ingress: {ingress.name}{where}, class {ingress.ingress_class or '(default)'}, exposes "
                     + ", ".join(f"{scheme}://{ingress.host}{path}" for path in ingress.paths))  # fmt: skip
    lines.append("")
    if status.pods:
        lines.append("pods:")
        rows = [(p.name, p.phase, "yes" if p.ready else "no", p.restarts, p.node or "-", p.reason) for p in status.pods]
        lines += ["  " + line for line in render_table(("NAME", "PHASE", "READY", "RESTARTS", "NODE", "REASON"), rows).splitlines()]
    else:
        lines.append("pods: none")
    if status.cronjobs:
        lines.append("cron jobs:")
        rows = [(c.name, c.schedule, "yes" if c.suspended else "no", c.last_schedule or "never", c.active) for c in status.cronjobs]
        lines += ["  " + line for line in render_table(("NAME", "SCHEDULE", "SUSPENDED", "LAST RUN", "ACTIVE"), rows).splitlines()]
    if status.triggers:
        lines.append("triggers:")
        rows = [(t.get("name", "?"), t.get("type", "?"), trigger_source(t), trigger_state(t)) for t in status.triggers]
        lines += ["  " + line for line in render_table(("NAME", "TYPE", "SOURCE", "STATE"), rows).splitlines()]
    else:
        lines.append(f"triggers: {status.triggers_error or 'none'}")
    if status.last_runs:
        lines.append("last run of each trigger:")
        rows = [(r.get("trigger") or "-", r.get("runId", "?"), str(r.get("status", "")).removeprefix("RUN_STATUS_"),
                 format_when(r.get("startedAt", "")), failing_node(r) or "-") for r in status.last_runs]  # fmt: skip
        lines += ["  " + line for line in render_table(("TRIGGER", "RUN ID", "STATUS", "STARTED", "FAILING NODE"), rows).splitlines()]
    else:
        lines.append(f"last runs: {status.runs_error or 'none recorded'}")
    if status.events:
        lines.append("recent events:")
        rows = [(e.time, e.type, e.object, e.reason, e.message) for e in status.events]
        lines += ["  " + line for line in render_table(("TIME", "TYPE", "OBJECT", "REASON", "MESSAGE"), rows).splitlines()]
    else:
        lines.append("recent events: none")
    return "\n".join(lines)
