"""`pipedreamer test [DIR | DIR/<node> …] [--pipeline]`: run node and pipeline fixtures offline.

Nodes run under the permission lock, applied before any of them is imported:
the workflow directories are readable, `--allow-write=/tmp`, no network (fixtures
answer `ctx.fetch`). Any `--allow-*` flag replaces those defaults as a whole.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from cli.errors import CommandError
from cli.output import Output
from engine import sandbox
from engine.fixtures import WorkflowReport, lock_for_fixtures, run_workflow_fixtures

DEFAULT_PERMISSIONS = ("--allow-write=/tmp",)

HELP = "run node fixtures and the pipeline fixture (tests/fixtures/*.json)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "targets",
        nargs="*",
        default=["."],
        metavar="DIR[/NODE]",
        help="workflow directories, or DIR/<node> for one node's fixture (default: .)",
    )
    parser.add_argument("--pipeline", action="store_true", help="run only tests/fixtures/pipeline.json")
    parser.add_argument(
        "--secrets",
        type=Path,
        default=None,
        help="secrets file or directory for the nodes (default: none, so fixtures stay hermetic)",
    )
    sandbox.add_permission_flags(parser)


def run(args: argparse.Namespace, out: Output) -> int:
    try:
        policy = sandbox.policy_from_args(sandbox.with_default_flags(args, DEFAULT_PERMISSIONS))
    except ValueError as exc:  # a bad --allow-net entry
        raise CommandError(str(exc)) from None
    lock_for_fixtures(args.targets, policy, secrets_path=args.secrets)
    started = time.perf_counter()
    reports = asyncio.run(_run_targets(args.targets, args.pipeline, args.secrets))
    elapsed = time.perf_counter() - started
    passed = sum(1 for r in reports for f in r.results if f.passed)
    failed = sum(1 for r in reports for f in r.results if not f.passed) + sum(1 for r in reports if r.error)
    ok = all(r.passed for r in reports)
    out.result(
        {
            "passed": ok,
            "summary": {"passed": passed, "failed": failed, "seconds": round(elapsed, 3)},
            "workflows": [r.to_dict() for r in reports],
        },
        render_text(reports, passed, failed, elapsed),
    )
    return 0 if ok else 1


async def _run_targets(targets: list[str], pipeline_only: bool, secrets: Path | None) -> list[WorkflowReport]:
    return [await run_workflow_fixtures(t, pipeline_only=pipeline_only, secrets_path=secrets) for t in targets]


def render_text(reports: list[WorkflowReport], passed: int, failed: int, elapsed: float) -> str:
    lines: list[str] = []
    for report in reports:
        if report.skipped:
            lines.append(f"{report.directory}: skipped ({report.skipped.split(': ', 1)[-1]})")
            continue
        lines.append(f"{report.directory}" + (f" ({report.workflow})" if report.workflow else ""))
        if report.error:
            # A spec report already starts each line with "error: " / "warning: ".
            error = report.error if report.error.startswith(("error: ", "warning: ")) else f"error: {report.error}"
            lines.append("  " + error.replace("\n", "\n  "))
        width = max((len(r.name) for r in report.results), default=0)
        for result in report.results:
            status = "PASS" if result.passed else "FAIL"
            lines.append(f"  {status}  {result.name:<{width}}  {result.file}  ({result.duration * 1000:.1f} ms)")
            if result.error:
                lines.append("        " + result.error.replace("\n", "\n        "))
            if result.diff:
                lines.extend("        " + line for line in result.diff.rstrip("\n").splitlines())
            if result.logs and not result.passed:
                lines.append("        logs:")
                lines.extend("          " + line for line in result.logs.rstrip("\n").splitlines())
        if report.untested and not report.error:
            lines.append(f"  note: no fixture for {', '.join(report.untested)}")
        if not report.results and not report.error:
            lines.append("  note: no fixtures in tests/fixtures/")
    summary = f"{passed} passed, {failed} failed in {elapsed:.2f}s"
    lines.append(f"{'=' * 10} {summary} {'=' * 10}")
    return "\n".join(lines)
