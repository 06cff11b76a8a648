"""`pipedreamer run NAME`: trigger a deployed workflow and print its ExecutionResult;
`pipedreamer run --local DIR`: run a workflow once in this process, under the image's permission lock."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from cli.arguments import duration, json_input
from cli.errors import CommandError
from cli.output import Output
from engine import sandbox
from proto.pipedreamer.v1 import execution_pb2

HELP = "run a workflow: a deployed one (through the API server's service proxy), or --local DIR in this process"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="workflow name (deployed)")
    parser.add_argument("--local", metavar="DIR", help="run the workflow in DIR once, here, under the permission lock")
    parser.add_argument("--input", help="run input as JSON, or @FILE / @- (stdin); default {}")
    parser.add_argument("--timeout", type=duration, default=30.0, help="how long to wait for the result (default: 30s)")
    parser.add_argument("--secrets", type=Path, default=None, help="with --local: secrets file or directory (wins alone over the cascade)")
    sandbox.add_permission_flags(parser)


def local_permission_args(args: argparse.Namespace, directory: Path) -> argparse.Namespace:
    """The image's policy with DIR for /app, unless the user gave `--allow-*` flags of their own."""
    return sandbox.with_default_flags(args, [f"--allow-read={directory}", "--allow-write=/tmp", "--allow-net"])


def run(args: argparse.Namespace, out: Output) -> int:
    if (args.local is None) == (args.name is None):
        raise CommandError("give a deployed workflow's NAME, or --local DIR to run a workflow directory here")
    payload = json_input(args.input)
    payload = {} if payload is None else payload
    if args.local is not None:
        return _run_local(args, out, payload)
    from k8s.client import connect
    from k8s.run import run_workflow

    with connect(args.kubeconfig, args.context, args.namespace) as cluster:
        out.progress(f"running {args.name} in namespace {cluster.namespace} …")
        outcome = run_workflow(cluster, args.name, payload, timeout=args.timeout)
    return _report(out, outcome.result, outcome.succeeded, args.name, f", HTTP {outcome.http_status}")


def _run_local(args: argparse.Namespace, out: Output, payload: Any) -> int:
    from engine.local import run_local
    from engine.values import result_to_dict

    directory = Path(args.local).resolve()
    try:
        policy = sandbox.policy_from_args(local_permission_args(args, directory))
    except ValueError as exc:  # a bad --allow-net entry
        raise CommandError(str(exc)) from None
    result = asyncio.run(run_local(directory, payload, policy=policy, secrets_path=args.secrets))
    succeeded = result.status == execution_pb2.RUN_STATUS_SUCCEEDED
    return _report(out, result_to_dict(result), succeeded, result.workflow, "")


def _report(out: Output, result: dict[str, Any], succeeded: bool, name: str, detail: str) -> int:
    out.result(result, format_result(result))
    if not succeeded:
        if not out.json:
            out.error(f"run of {name} did not succeed ({_status(result)}{detail})")
        return 1
    return 0


def _status(result: dict[str, Any]) -> str:
    return str(result.get("status", "RUN_STATUS_UNSPECIFIED")).removeprefix("RUN_STATUS_")


def format_result(result: dict[str, Any]) -> str:
    """An ExecutionResult (its proto3 JSON mapping) for a terminal."""
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
