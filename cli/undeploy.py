"""`pipedreamer undeploy NAME [--yes]`: delete everything deploy created for a workflow."""

from __future__ import annotations

import argparse
import sys

from cli.errors import CommandError
from cli.output import Output
from k8s.client import connect
from k8s.delete import delete_objects, find_workflow_objects, require_objects

HELP = "remove a deployed workflow (Deployment, Service, Secret, CronJobs, NetworkPolicy)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="workflow name")
    parser.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")


def run(args: argparse.Namespace, out: Output) -> int:
    if not args.yes and not sys.stdin.isatty():
        raise CommandError("refusing to undeploy without confirmation: stdin is not a terminal; pass --yes")
    with connect(args.kubeconfig, args.context, args.namespace) as cluster:
        namespace = cluster.namespace
        objects = find_workflow_objects(cluster, args.name)
        require_objects(objects, args.name, namespace)
        if not args.yes:
            out.stderr.write(f"This deletes from namespace {namespace!r}:\n")
            out.stderr.write("".join(f"  {ref}\n" for ref in objects))
            out.stderr.write(f"Delete these {len(objects)} objects? [y/N] ")
            out.stderr.flush()
            answer = sys.stdin.readline().strip().lower()
            if answer not in ("y", "yes"):
                raise CommandError("not confirmed; nothing was deleted")
        deleted = delete_objects(cluster, objects)
    out.result(
        {"workflow": args.name, "namespace": namespace, "deleted": [ref.to_dict() for ref in deleted]},
        "\n".join([f"{ref} deleted" for ref in deleted] + [f"{args.name} undeployed from namespace {namespace!r}"]),
    )
    return 0
