"""Entry point: global flags, one subcommand per module, errors → exit codes.

Exit codes: 0 success, 1 a failure the message explains, 2 bad usage.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from cli.output import Output
from engine.errors import PipedreamerError

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
    parser = argparse.ArgumentParser(
        prog="pipedreamer",
        description="Build, test and run code-first workflow DAGs locally and on Kubernetes.",
        exit_on_error=False,  # parse_arguments names unknown options before other usage errors
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
    """`parser.parse_args(argv)`, but unknown options are reported before anything else.

    `pipedreamer -v 1 validate` would otherwise complain about the command `1`:
    whatever else is wrong, an option no parser knows is named first. Exits 2
    (argparse's usage error).
    """
    argv = list(argv)
    try:
        args, unknown = parser.parse_known_args(argv)
    except argparse.ArgumentError as err:
        unknown = _unknown_options(parser, argv)
        parser.error(f"unrecognized arguments: {' '.join(unknown)}" if unknown else str(err))
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command is None:
        parser.error("the following arguments are required: COMMAND")
    return args


def _unknown_options(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """The options in `argv` (before `--`) that neither the top parser nor any command defines."""
    known: set[str] = set()
    parsers = [parser]
    while parsers:
        current = parsers.pop()
        for action in current._actions:  # argparse has no public listing of its actions
            known.update(action.option_strings)
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
    unknown = []
    for token in argv:
        if token == "--":
            break
        name = token.split("=", 1)[0]
        if not token.startswith("-") or token == "-" or _is_number(token):
            continue
        # argparse takes unambiguous prefixes of long options (--out for --output).
        if name in known or (name.startswith("--") and any(k.startswith(name) for k in known)):
            continue
        unknown.append(name)
    return unknown


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class _StderrHandler(logging.Handler):
    """The CLI's one log handler: `warning: pipedreamer.nats: …` on stderr, worded as Output words it."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            # sys.stderr as it is now, not at set-up: tests and `Output` may have replaced it.
            sys.stderr.write(f"{record.levelname.lower()}: {self.format(record)}\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def configure_logging(debug: bool) -> None:
    """Standard logging for the CLI process: warnings and errors (the root logger's
    default level), everything with --debug."""
    root = logging.getLogger()
    if debug:
        root.setLevel(logging.DEBUG)
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        root.addHandler(_StderrHandler())


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse_arguments(parser, sys.argv[1:] if argv is None else argv)
    out = Output(args.output)
    configure_logging(args.debug)
    try:
        return int(args.handler(args, out) or 0)
    except KeyboardInterrupt:
        out.error("interrupted")
        return 130
    except PipedreamerError as exc:  # explained: the message says what and where
        if args.debug:
            raise
        out.error(str(exc), {k: v for k, v in exc.to_dict().items() if k != "error"})
        return 1
    except Exception as exc:  # the CLI's last line of defence: a bug
        if args.debug:
            raise
        out.error(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)")
        return 1
