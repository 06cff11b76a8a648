"""`pipedreamer list`: every workflow deployed by pipedreamer, with version and readiness."""

from __future__ import annotations

import argparse

from cli.output import Output
from cli.table import render_table
from k8s.client import connect
from k8s.listing import list_workflows

HELP = "list deployed workflows (everything labelled managed-by=pipedreamer)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--all-namespaces", "-A", action="store_true", help="list across all namespaces")


def run(args: argparse.Namespace, out: Output) -> int:
    with connect(args.kubeconfig, args.context, args.namespace) as cluster:
        rows = list_workflows(cluster, all_namespaces=args.all_namespaces)
        namespace = cluster.namespace
    data = {"workflows": [r.to_dict() for r in rows]}
    if not rows:
        where = "any namespace" if args.all_namespaces else f"namespace {namespace!r}"
        out.result(data, f"no workflows deployed in {where}")
        return 0
    headers = ["NAME", "VERSION", "READY", "CRON", "IMAGE"]
    table = [[r.name, r.version, _ready(r), r.cronjobs, r.image or "-"] for r in rows]
    if args.all_namespaces:
        headers.insert(0, "NAMESPACE")
        table = [[r.namespace, *row] for r, row in zip(rows, table)]
    text = render_table(headers, table)
    notes = [
        f"{r.name}: no Deployment, only {', '.join(r.leftovers)} left; remove them with "
        f"`pipedreamer undeploy {r.name}{'' if not args.all_namespaces else f' -n {r.namespace}'}`"
        for r in rows
        if r.leftovers
    ]
    if notes:
        text += "\n\n" + "\n".join(notes)
    out.result(data, text)
    return 0


def _ready(row) -> str:
    return "no deployment" if row.leftovers else f"{row.ready}/{row.desired}"
