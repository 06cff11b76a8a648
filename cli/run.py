"""`pipedreamer run NAME`: trigger a deployed workflow and print its ExecutionResult."""

from __future__ import annotations

import argparse
import json
from typing import Any

from cli.arguments import duration, json_input
from cli.output import Output
from k8s.client import connect
from k8s.run import RunOutcome, run_workflow

HELP = "trigger a deployed workflow (through the API server's service proxy) and print the result"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="workflow name")
    parser.add_argument("--input", help="run input as JSON, or @FILE / @- (stdin); default {}")
    parser.add_argument("--timeout", type=duration, default=30.0, help="how long to wait for the result (default: 30s)")


def run(args: argparse.Namespace, out: Output) -> int:
    payload = json_input(args.input)
    with connect(args.kubeconfig, args.context, args.namespace) as cluster:
        out.progress(f"running {args.name} in namespace {cluster.namespace} …")
        outcome = run_workflow(cluster, args.name, {} if payload is None else payload, timeout=args.timeout)
    out.result(outcome.result, format_result(outcome))
    if not outcome.succeeded:
        if not out.json:
            out.error(f"run of {args.name} did not succeed ({_status(outcome.result)}, HTTP {outcome.http_status})")
        return 1
    return 0


def _status(result: dict[str, Any]) -> str:
    return str(result.get("status", "RUN_STATUS_UNSPECIFIED")).removeprefix("RUN_STATUS_")


def format_result(outcome: RunOutcome) -> str:
    result = outcome.result
    head = f"run {result.get('runId', '?')} of {result.get('workflow', '?')} {result.get('version', '')}".rstrip()
    lines = [f"{head}: {_status(result)} in {result.get('duration', '?')}"]
    if result.get("error"):
        lines.append(f"error: {result['error']}")
    nodes = result.get("nodes") or {}
    for node_id in nodes:
        node = nodes[node_id]
        status = str(node.get("status", "")).removeprefix("NODE_STATUS_")
        attempts = node.get("attempts", 0)
        line = f"  {node_id}: {status} in {node.get('duration', '-')} ({attempts} attempt{'s' if attempts != 1 else ''})"
        if node.get("error"):
            line += f": {node['error']}"
        lines.append(line)
    if "output" in result:
        lines.append("output:")
        lines.append(json.dumps(result["output"], indent=2, sort_keys=True))
    return "\n".join(lines)
