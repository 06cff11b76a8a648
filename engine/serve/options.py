"""How a serving engine is configured: `ServeOptions` and the flags shared by
`python -m engine` and `pipedreamer dev` (kept light: the CLI imports it for every command).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path
from typing import Any

from engine import sandbox
from engine.context import LOG_FORMATS
from engine.spec import parse_duration
from engine.values import DEFAULT_MAX_OUTPUT

# Runs the in-memory history keeps (--history); 0 turns recording off. Same number as
# engine.serve.history.DEFAULT_HISTORY (not imported: the CLI imports this module for every command).
DEFAULT_HISTORY = 1000

MIB = 1024 * 1024
DEFAULT_MAX_BODY = 10 * MIB


@dataclasses.dataclass(frozen=True)
class HttpOptions:
    max_body: int = DEFAULT_MAX_BODY
    # The whole body must arrive within this many seconds (slow-body clients).
    body_timeout: float = 30.0
    # An idle connection, or one that never finishes its request headers
    # (slowloris), is closed after this many seconds.
    idle_timeout: float = 30.0


DEFAULT_SHUTDOWN_TIMEOUT = 25.0
# Runs in flight before new ones get 429 / RESOURCE_EXHAUSTED (queue messages wait):
# bounded by default, so a burst cannot take a 512 MiB pod past its memory limit.
DEFAULT_MAX_CONCURRENT_RUNS = 64  # under Kubernetes' default 30 s grace period
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "ki": 1024, "m": 1000**2, "mb": 1000**2,
               "mib": 1024**2, "mi": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "gi": 1024**3}


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    workflow: Path
    host: str = "0.0.0.0"
    port: int = 8080
    # 0 picks a free port; None turns gRPC off.
    grpc_port: int | None = 9090
    secrets_path: str | None = None
    log_format: str = "text"
    watch: bool = False
    http: HttpOptions = HttpOptions()
    max_concurrent_runs: int | None = DEFAULT_MAX_CONCURRENT_RUNS
    max_output: int = DEFAULT_MAX_OUTPUT
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    # Runs the history keeps in memory (and failed runs whose outputs a resume can use); 0: off.
    history: int = DEFAULT_HISTORY
    # A sandbox.PermissionPolicy; None runs unlocked (in-process tests only).
    policy: Any = None


def parse_size(text: str) -> int:
    """Bytes from `10MiB`, `512KiB`, `1MB`, `1048576`."""
    match = _SIZE_RE.match(text)
    if not match or (match.group(2) or "").lower() not in _SIZE_UNITS:
        raise argparse.ArgumentTypeError(f"expected a size such as 10MiB, 512KiB or 1048576, got {text!r}")
    size = int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").lower()])
    if size < 1:
        raise argparse.ArgumentTypeError(f"size must be at least 1 byte, got {text!r}")
    return size


def _duration(text: str) -> float:
    try:
        return parse_duration(float(text) if re.fullmatch(r"\d+(\.\d+)?", text.strip()) else text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _port(text: str) -> int:
    port = int(text)
    if not -1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535 (0: any free port, -1: off), got {port}")
    return port


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 (no limit) or a positive number, got {text!r}")
    return value


def add_serve_flags(parser: argparse.ArgumentParser, *, host: str, watch: bool) -> None:
    """The flags `python -m engine` and `pipedreamer dev` share (`watch` sets --watch/--no-watch's default)."""
    parser.add_argument("--host", default=host, help=f"address to listen on (default: {host})")
    parser.add_argument("--port", type=_port, default=8080, help="HTTP port (default: 8080; 0: any free port)")
    parser.add_argument("--grpc-port", type=_port, default=9090, help="gRPC port (default: 9090; 0: any free port; -1: off)")
    parser.add_argument("--secrets", default=None, help="secrets file or directory (wins alone over the cascade)")
    parser.add_argument("--log-format", choices=LOG_FORMATS, default="text", help="engine and node log lines (default: text)")
    parser.add_argument("--watch", action=argparse.BooleanOptionalAction, default=watch,
                        help=f"reload node modules when files change (default: {'on' if watch else 'off'})")
    parser.add_argument("--max-body", type=parse_size, default=DEFAULT_MAX_BODY, help="largest accepted request body (default: 10MiB)")
    parser.add_argument("--max-concurrent-runs", type=_count, default=DEFAULT_MAX_CONCURRENT_RUNS,
                        help=f"runs in flight before 429 / RESOURCE_EXHAUSTED (default: {DEFAULT_MAX_CONCURRENT_RUNS}; 0: no limit)")
    parser.add_argument("--max-output", type=parse_size, default=DEFAULT_MAX_OUTPUT,
                        help="largest output a node may return, as JSON; larger fails the node (default: 16MiB)")
    parser.add_argument("--history", type=_count, default=DEFAULT_HISTORY,
                        help=f"runs the engine remembers for GET /runs, resume and idempotency keys (default: {DEFAULT_HISTORY}; "
                             "0: off; config.history: nats shares them between replicas)")
    parser.add_argument("--shutdown-timeout", type=_duration, default=DEFAULT_SHUTDOWN_TIMEOUT,
                        help="how long runs in flight may take to finish on SIGTERM (default: 25s)")
    parser.add_argument("--body-timeout", type=_duration, default=HttpOptions.body_timeout, help="a request body must arrive within this (default: 30s)")
    parser.add_argument("--idle-timeout", type=_duration, default=HttpOptions.idle_timeout,
                        help="close connections idle or stuck in their headers this long (default: 30s)")
    sandbox.add_permission_flags(parser)


def options_from_args(args: argparse.Namespace, workflow: str | Path) -> ServeOptions:
    return ServeOptions(
        workflow=Path(workflow),
        host=args.host,
        port=max(args.port, 0),
        grpc_port=None if args.grpc_port < 0 else args.grpc_port,
        secrets_path=args.secrets,
        log_format=args.log_format,
        watch=args.watch,
        http=HttpOptions(max_body=args.max_body, body_timeout=args.body_timeout, idle_timeout=args.idle_timeout),
        max_concurrent_runs=args.max_concurrent_runs or None,
        max_output=args.max_output,
        shutdown_timeout=args.shutdown_timeout,
        history=args.history,
        policy=sandbox.policy_from_args(args),
    )


