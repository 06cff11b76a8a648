"""Entry point: global flags, one subcommand per module, errors → exit codes.

Exit codes: 0 success, 1 a failure the message explains, 2 bad usage.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from absl import logging as absl_logging
from absl.flags import argparse_flags

from cli.output import Output

# Verb → module in cli/. Each module has HELP, add_arguments(parser) and run(args, out).
COMMANDS = {
    "init": "cli.init",
    "validate": "cli.validate",
    "dev": "cli.dev",
    "test": "cli.test",
    "build": "cli.build",
    "deploy": "cli.deploy",
    "status": "cli.status",
    "run": "cli.run",
    "runs": "cli.runs",
    "logs": "cli.logs",
    "list": "cli.list",
    "undeploy": "cli.undeploy",
    "cluster": "cli.cluster",
    "visualize": "cli.visualize",
}

# Our own packages: their exceptions are explained failures, not crashes.
_DOMAIN_PACKAGES = ("engine.", "builder.", "k8s.", "cli.")


def _add_global_flags(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """Global flags; on subcommands they default to SUPPRESS so they can come after the verb."""

    def default(value):
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("global flags")
    group.add_argument("--output", "-o", choices=("text", "json"), default=default("text"), help="output format")
    group.add_argument("--namespace", "-n", default=default(None), help="Kubernetes namespace (default: from kubeconfig, else 'default')")
    group.add_argument("--registry", default=default(None), help="image registry, e.g. localhost:5000/team")
    group.add_argument("--kubeconfig", default=default(None), help="path to a kubeconfig (default: $KUBECONFIG or ~/.kube/config)")
    group.add_argument("--context", default=default(None), help="kubeconfig context to use")
    group.add_argument("--debug", action="store_true", default=default(False), help="show tracebacks and debug logs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse_flags.ArgumentParser(
        prog="pipedreamer",
        description="Build, test and run code-first workflow DAGs locally and on Kubernetes.",
    )
    _add_global_flags(parser, suppress=False)
    # Not required here: parse_arguments checks it after unknown options, so
    # `pipedreamer --bogus` names --bogus instead of asking for a command.
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=False)
    for verb, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(verb, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        _add_global_flags(sub, suppress=True)
        sub.set_defaults(handler=module.run)
    return parser


def parse_arguments(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """`parser.parse_args(argv)`, but unknown options are reported before a missing command.

    Exits 2 (argparse's usage error) on either.
    """
    args, unknown = parser.parse_known_args(list(argv))
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command is None:
        parser.error("the following arguments are required: COMMAND")
    return args


def _is_domain_error(exc: BaseException) -> bool:
    module = type(exc).__module__ or ""
    return module.startswith(_DOMAIN_PACKAGES)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse_arguments(parser, sys.argv[1:] if argv is None else argv)
    out = Output(args.output)
    absl_logging.set_verbosity(absl_logging.DEBUG if args.debug else absl_logging.WARNING)
    absl_logging.use_python_logging()
    try:
        return int(args.handler(args, out) or 0)
    except KeyboardInterrupt:
        out.error("interrupted")
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence
        if args.debug:
            raise
        problems = getattr(exc, "problems", None)
        details = {}
        if problems:
            details["problems"] = [p.to_dict() if hasattr(p, "to_dict") else str(p) for p in problems]
        if _is_domain_error(exc):
            out.error(str(exc), details)
        else:
            out.error(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", details)
        return 1
