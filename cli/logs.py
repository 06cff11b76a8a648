"""`pipedreamer logs NAME [--follow] [--tail N]`: the engine pods' logs, prefixed by pod."""

from __future__ import annotations

import argparse

from cli.errors import CommandError
from cli.output import Output
from k8s.client import connect
from k8s.logs import DEFAULT_TAIL, follow_logs, read_logs

HELP = "show a deployed workflow's logs (all pods, each line prefixed by its pod)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="workflow name")
    parser.add_argument("--follow", "-f", action="store_true", help="stream new lines until interrupted")
    parser.add_argument("--tail", type=int, default=DEFAULT_TAIL, help=f"lines per pod from the end (default: {DEFAULT_TAIL}; -1: all)")


def run(args: argparse.Namespace, out: Output) -> int:
    if args.follow and out.json:
        raise CommandError("--follow streams text; it cannot be combined with --output json")
    tail = None if args.tail < 0 else args.tail
    with connect(args.kubeconfig, args.context, args.namespace) as cluster:
        if args.follow:
            def emit(pod: str, line: str) -> None:
                out.stdout.write(f"[{pod}] {line}\n")
                out.stdout.flush()

            try:
                follow_logs(cluster, args.name, emit, tail=tail)
            except KeyboardInterrupt:
                pass
            return 0
        logs = read_logs(cluster, args.name, tail=tail)
    text = []
    for log in logs:
        if log.note:
            text.append(f"[{log.pod}] (no logs: {log.note})")
        text += [f"[{log.pod}] {line}" for line in log.lines]
    out.result({"pods": [log.to_dict() for log in logs]}, "\n".join(text))
    return 0
