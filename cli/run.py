"""`pipedreamer run NAME`: trigger a deployed workflow (through the API server's service proxy) and print its
ExecutionResult; `--endpoint URL`: an engine reached directly; `--local DIR`: run a workflow once in this
process, under the image's permission lock. `--async` submits and prints the run id, `--watch` prints node
events as they happen, `--resume RUN_ID` re-runs what that run did not finish."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any, Iterator

from cli.arguments import duration, json_input
from cli.errors import CommandError
from cli.output import Output
from engine import sandbox
from proto.pipedreamer.v1 import execution_pb2

HELP = "run a workflow: a deployed one (through the API server's service proxy), one at --endpoint, or --local DIR in this process"
MAX_KEY = 255


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="workflow name (deployed)")
    parser.add_argument("--local", metavar="DIR", help="run the workflow in DIR once, here, under the permission lock")
    parser.add_argument("--endpoint", metavar="URL",
                        help="an engine reached directly instead of NAME: http://HOST:PORT (a dev server, a port-forward) or grpc://HOST:PORT")
    parser.add_argument("--input", help="run input as JSON, or @FILE / @- (stdin); default {}")
    parser.add_argument("--timeout", type=duration, default=30.0, help="how long to wait for the result (default: 30s)")
    parser.add_argument("--async", dest="submit", action="store_true", help="submit the run and print its id at once (see `pipedreamer runs`)")
    parser.add_argument("--watch", action="store_true", help="print each node as it starts and finishes, then the result")
    parser.add_argument("--resume", metavar="RUN_ID", default="", help="re-run only the failed, cancelled and skipped nodes of RUN_ID")
    parser.add_argument("--idempotency-key", metavar="KEY", default="",
                        help="a repeat with the same KEY within 24 h returns the first run's result instead of running again")
    parser.add_argument("--secrets", type=Path, default=None, help="with --local: secrets file or directory (wins alone over the cascade)")
    sandbox.add_permission_flags(parser)


def local_permission_args(args: argparse.Namespace, directory: Path) -> argparse.Namespace:
    """The image's policy with DIR for /app, unless the user gave `--allow-*` flags of their own."""
    return sandbox.with_default_flags(args, [f"--allow-read={directory}", "--allow-write=/tmp", "--allow-net"])


def run(args: argparse.Namespace, out: Output) -> int:
    targets = [t for t in (args.name, args.local, args.endpoint) if t is not None]
    if len(targets) != 1:
        raise CommandError("give a deployed workflow's NAME, --endpoint URL of an engine, or --local DIR to run a workflow directory here")
    if len(args.idempotency_key) > MAX_KEY:
        raise CommandError(f"--idempotency-key is {len(args.idempotency_key)} characters long; at most {MAX_KEY} are accepted")
    payload = json_input(args.input)
    if args.local is not None:
        for flag, given in (("--async", args.submit), ("--resume", args.resume), ("--idempotency-key", args.idempotency_key)):
            if given:
                raise CommandError(f"{flag} needs a serving engine (NAME or --endpoint); --local runs once, here, and keeps no history")
        return _run_local(args, out, {} if payload is None else payload)
    from engine.serve.client import RunRequest

    request = RunRequest(
        input=payload if payload is not None or args.resume else {},
        idempotency_key=args.idempotency_key,
        resume_from=args.resume,
    )
    with engine_api(args) as (client, label):
        if args.submit and not args.watch:
            run_id = client.submit(request, args.timeout)
            hint = f"`pipedreamer runs {label} {run_id}`"
            out.result({"runId": run_id}, f"run {run_id} submitted; see {hint}, or add --watch")
            return 0
        if args.watch:
            run_id = client.submit(request, args.timeout)
            out.line(f"run {run_id}:")
            result: dict[str, Any] = {}
            for event in client.watch(run_id, args.timeout):
                if "finished" in event:
                    result = event["finished"]
                else:
                    out.line(format_event(event))
        else:
            result = client.run(request, args.timeout)
    return _report(out, result, result.get("status") == "RUN_STATUS_SUCCEEDED", str(result.get("workflow") or label), "")


@contextlib.contextmanager
def engine_api(args: argparse.Namespace) -> Iterator[tuple[Any, str]]:
    """(the run API of NAME through the cluster, or of --endpoint; how to name it in a hint)."""
    if args.endpoint is not None:
        from engine.serve.client import connect_endpoint

        try:
            client = connect_endpoint(args.endpoint)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        yield client, f"--endpoint {args.endpoint}"
        return
    from k8s.client import connect
    from k8s.run import engine_client

    with connect(args.kubeconfig, args.context, args.namespace) as cluster:
        yield engine_client(cluster, args.name), args.name


class _LocalEvents:
    """--local --watch: node events printed as the executor reports them."""

    def __init__(self, out: Output) -> None:
        self.out = out

    def run_started(self, run: Any) -> None:
        run.events = self

    def node_started(self, node_id: str, started_at: float) -> None:
        self.out.line(format_event({"nodeStarted": {"nodeId": node_id}}))

    def node_finished(self, node_id: str, outcome: Any, started_at: float) -> None:
        node = {"status": execution_pb2.NodeStatus.Name(outcome.status), "attempts": outcome.attempts,
                "duration": f"{outcome.duration:.6f}s"}  # fmt: skip
        if outcome.error:
            node["error"] = outcome.error
        self.out.line(format_event({"nodeFinished": {"nodeId": node_id, "result": node}}))


def _run_local(args: argparse.Namespace, out: Output, payload: Any) -> int:
    from engine.local import run_local
    from engine.values import result_to_dict

    directory = Path(args.local).resolve()
    try:
        policy = sandbox.policy_from_args(local_permission_args(args, directory))
    except ValueError as exc:  # a bad --allow-net entry
        raise CommandError(str(exc)) from None
    events = _LocalEvents(out) if args.watch else None
    result = asyncio.run(run_local(directory, payload, policy=policy, secrets_path=args.secrets, observer=events))
    succeeded = result.status == execution_pb2.RUN_STATUS_SUCCEEDED
    return _report(out, result_to_dict(result), succeeded, result.workflow, "")


def format_event(event: dict[str, Any]) -> str:
    """A node event (`nodeStarted` / `nodeFinished`, proto3 JSON) as one line."""
    if "nodeStarted" in event:
        return f"  {event['nodeStarted'].get('nodeId', '?')}: started"
    finished = event.get("nodeFinished") or {}
    return format_node(finished.get("nodeId", "?"), finished.get("result") or {})


def format_node(node_id: str, node: dict[str, Any]) -> str:
    status = str(node.get("status", "")).removeprefix("NODE_STATUS_")
    attempts = node.get("attempts", 0)
    if not attempts and status == "SUCCEEDED":
        line = f"  {node_id}: SUCCEEDED (output carried from the resumed run)"
    else:
        line = f"  {node_id}: {status} in {node.get('duration', '-')} ({attempts} attempt{'s' if attempts != 1 else ''})"
    if node.get("error"):
        line += f": {node['error']}"
    return line


def _report(out: Output, result: dict[str, Any], succeeded: bool, name: str, detail: str) -> int:
    out.result(result, format_result(result))
    if not succeeded:
        if not out.json:
            out.error(f"run of {name} did not succeed ({_status(result)}{detail})")
        return 1
    return 0


def _status(result: dict[str, Any]) -> str:
    return str(result.get("status", "RUN_STATUS_UNSPECIFIED")).removeprefix("RUN_STATUS_")


def _instant(stamp: str | None) -> tuple[bool, str]:
    """A proto3 JSON timestamp as a sort key (its fraction has 0, 3, 6 or 9 digits); None sorts last."""
    if not stamp:
        return (True, "")
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    return (False, whole + "." + fraction.ljust(9, "0"))


def format_result(result: dict[str, Any]) -> str:
    """An ExecutionResult (its proto3 JSON mapping) for a terminal."""
    head = f"run {result.get('runId', '?')} of {result.get('workflow', '?')} {result.get('version', '')}".rstrip()
    lines = [f"{head}: {_status(result)} in {result.get('duration', '?')}"]
    if result.get("resumedFrom"):
        lines.append(f"resumed from run {result['resumedFrom']}")
    if result.get("error"):
        lines.append(f"error: {result['error']}")
    nodes = result.get("nodes") or {}
    # In the order they started (a result's node map has none); carried and skipped ones last.
    for node_id in sorted(nodes, key=lambda n: (_instant(nodes[n].get("startedAt")), n)):
        lines.append(format_node(node_id, nodes[node_id]))
    if "output" in result:
        lines.append("output:")
        lines.append(json.dumps(result["output"], indent=2, sort_keys=True))
    return "\n".join(lines)
