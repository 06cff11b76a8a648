"""`pipedreamer runs NAME [RUN_ID]`: a workflow's recorded runs as a table, or one run's result
(through the API server's service proxy, or `--endpoint URL` for an engine reached directly)."""

from __future__ import annotations

import argparse
from typing import Any

from cli.errors import CommandError
from cli.output import Output
from cli.run import engine_api, format_result
from cli.table import render_table

HELP = "list a workflow's recorded runs (newest first), or show one: RUN_ID"
MAX_LIMIT = 1000
FAILED_NODE = ("NODE_STATUS_FAILED", "NODE_STATUS_TIMED_OUT")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", nargs="*", metavar="NAME [RUN_ID]",
                        help="workflow name (deployed) and optionally a run id; with --endpoint, only the run id")
    parser.add_argument("--endpoint", metavar="URL", help="an engine reached directly instead of NAME: http://HOST:PORT or grpc://HOST:PORT")
    parser.add_argument("--status", default="", help="only runs with this status: succeeded, failed, cancelled or running")
    parser.add_argument("--trigger", default=None, help="only runs of this trigger (a cron or queue trigger's name, local …)")
    parser.add_argument("--limit", default="20", help=f"at most this many runs (default: 20, at most {MAX_LIMIT})")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the engine (default: 30)")


def run(args: argparse.Namespace, out: Output) -> int:
    positional = list(args.target)
    if args.endpoint is None:
        if not 1 <= len(positional) <= 2:
            raise CommandError("give a deployed workflow's NAME (and a RUN_ID to see one run), or --endpoint URL")
        args.name, run_id = positional[0], (positional[1] if len(positional) == 2 else None)
    else:
        if len(positional) > 1:
            raise CommandError("with --endpoint, give at most a RUN_ID (the engine is the workflow)")
        args.name, run_id = None, (positional[0] if positional else None)
    status = _status(args.status)
    limit = _limit(args.limit)
    with engine_api(args) as (client, _label):
        if run_id is not None:
            result = client.get_run(run_id, args.timeout)
            out.result(result, format_result(result))
            return 0
        runs = client.list_runs(limit=limit, status=status, trigger=args.trigger, timeout=args.timeout)
    out.result({"runs": runs}, format_runs(runs))
    return 0


def _status(text: str) -> str:
    if not text:
        return ""
    from engine.values import run_status

    try:
        run_status(text)
    except ValueError as exc:
        raise CommandError(f"--status: {exc}") from None
    return text.strip().upper().removeprefix("RUN_STATUS_")


def _limit(text: str) -> int:
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise CommandError(f"--limit: expected a whole number from 1 to {MAX_LIMIT}, got {text!r}")
    return limit


def failing_node(run: dict[str, Any]) -> str:
    """The node whose failure ended the run, or ""."""
    error = str(run.get("error", ""))
    if error.startswith("node ") and " failed: " in error:
        return error[len("node "):].split(" failed: ", 1)[0]
    for node_id, node in (run.get("nodes") or {}).items():
        if node.get("status") in FAILED_NODE:
            return node_id
    return ""


def format_runs(runs: list[dict[str, Any]]) -> str:
    if not runs:
        return "no runs recorded"
    rows = [
        (
            run.get("runId", "?"),
            str(run.get("status", "")).removeprefix("RUN_STATUS_"),
            run.get("trigger") or "-",
            format_when(run.get("startedAt", "")),
            run.get("duration", "-"),
            failing_node(run) or "-",
        )
        for run in runs
    ]
    return render_table(("RUN ID", "STATUS", "TRIGGER", "STARTED", "DURATION", "FAILING NODE"), rows)


def format_when(stamp: str) -> str:
    """`2026-01-02T03:04:05.123456Z` → `2026-01-02 03:04:05Z`."""
    if not stamp:
        return "-"
    head = stamp.split(".", 1)[0].rstrip("Z")
    return head.replace("T", " ") + "Z"
