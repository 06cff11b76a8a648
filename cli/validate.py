"""`pipedreamer validate [DIR]`: check workflow.yaml, the node files it names and the webhook keys it needs."""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.output import Output
from engine.compiler import compile_dag
from engine.secrets import load_secrets
from engine.serve.signatures import NONE, key_problems, webhook_triggers
from engine.spec import SpecError, load_spec

HELP = "check a workflow's workflow.yaml and node files"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", nargs="?", default=".", help="workflow directory (default: .)")
    parser.add_argument(
        "--secrets",
        type=Path,
        help="secrets file or directory holding the webhooks' keys (default: the cascade, .secrets/ < .secrets.yaml < /app/secrets)",
    )


def run(args: argparse.Namespace, out: Output) -> int:
    loaded = load_spec(args.dir)
    dag = compile_dag(loaded.spec)
    spec = loaded.spec
    if any(t.signature != NONE for t in webhook_triggers(spec)):
        # A signed webhook without its key would refuse every delivery: an error here, not a surprise later.
        directory = Path(args.dir)
        problems = key_problems(spec, load_secrets(directory if directory.is_dir() else directory.parent, args.secrets), loaded.file)
        if problems:
            raise SpecError([*problems, *loaded.warnings])
    for warning in loaded.warnings:
        out.warning(str(warning))
    out.result(
        {
            "valid": True,
            "name": spec.name,
            "version": spec.version,
            "nodes": list(dag.order),
            "stages": [list(s) for s in dag.stages],
            "warnings": [w.to_dict() for w in loaded.warnings],
        },
        f"{loaded.file}: {spec.name} {spec.version} is valid "
        f"({len(dag.order)} nodes, {len(spec.edges)} edges, {len(dag.stages)} stages)",
    )
    return 0
