"""`pipedreamer cluster check [--fix]`: preflight checks for deploying to a cluster."""

from __future__ import annotations

import argparse

from cli.output import Output
from cli.table import render_table
from k8s.client import connect
from k8s.preflight import FAILED, PreflightReport, run_preflight

HELP = "check that a cluster is ready for pipedreamer (check [--fix])"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("check",), help="check: API, gVisor RuntimeClass, namespace, RBAC, secrets, API server addresses, IngressClass, deployed workflows' triggers")
    parser.add_argument("--fix", action="store_true", help="create the namespace when it is missing")


def run(args: argparse.Namespace, out: Output) -> int:
    with connect(args.kubeconfig, args.context, args.namespace) as cluster:
        report = run_preflight(cluster, fix=args.fix)
    out.result(report.to_dict(), format_report(report))
    return 0 if report.passed else 1


def format_report(report: PreflightReport) -> str:
    rows = [(c.name, c.status.upper(), c.message) for c in report.checks]
    lines = [f"cluster {report.server}, namespace {report.namespace}:", render_table(("CHECK", "STATUS", "DETAIL"), rows)]
    fixes = [c for c in report.checks if c.remediation and c.status != "ok"]
    if fixes:
        lines.append("")
        lines += [f"{c.name}: {c.remediation}" for c in fixes]
    failed = sum(c.status == FAILED for c in report.checks)
    lines.append("")
    lines.append("all checks passed" if report.passed else f"{failed} check{'s' if failed != 1 else ''} failed")
    return "\n".join(lines)
