"""`pipedreamer visualize [DIR]`: draw the DAG as Mermaid, DOT or an HTML page."""

from __future__ import annotations

import argparse

from cli.output import Output
from engine.compiler import compile_dag
from engine.diagram import FORMATS, render
from engine.spec import load_spec

HELP = "print the workflow DAG (Mermaid by default)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", nargs="?", default=".", help="workflow directory (default: .)")
    parser.add_argument("--format", "-f", choices=FORMATS, default="mermaid", help="diagram format")


def run(args: argparse.Namespace, out: Output) -> int:
    dag = compile_dag(load_spec(args.dir, check_sources=False).spec)
    text = render(dag, args.format)
    out.result({"format": args.format, "diagram": text, "stages": [list(s) for s in dag.stages]}, text)
    return 0
