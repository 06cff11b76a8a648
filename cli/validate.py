"""`pipedreamer validate [DIR]`: check workflow.yaml and the node files it names."""

from __future__ import annotations

import argparse

from cli.output import Output
from engine.compiler import compile_dag
from engine.spec import load_spec

HELP = "check a workflow's workflow.yaml and node files"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", nargs="?", default=".", help="workflow directory (default: .)")


def run(args: argparse.Namespace, out: Output) -> int:
    loaded = load_spec(args.dir)
    dag = compile_dag(loaded.spec)
    for warning in loaded.warnings:
        out.warning(str(warning))
    spec = loaded.spec
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
