"""Test support shared by unit and integration tests: workflow directories on disk, free ports,
waiting on a state instead of sleeping, and the CLI as a process of its own."""

from __future__ import annotations

import asyncio
import os
import pathlib
import socket
import subprocess
import sys
import textwrap
import time
from typing import Any, Awaitable, Callable, Iterable, Mapping

import yaml

from tools.pytest import child_python

REPO = pathlib.Path(__file__).resolve().parent.parent

# A node that sleeps `input["sleep"]` seconds (0 without it): runs in flight on demand.
SLEEPING_NODE = """
import asyncio


async def run(ctx, input):
    seconds = input.get("sleep", 0) if isinstance(input, dict) else 0
    await asyncio.sleep(seconds)
    return {"slept": seconds}
"""


def write_workflow(
    directory: pathlib.Path | str,
    nodes: Mapping[str, str],
    edges: Iterable[tuple[str, str]] = (),
    *,
    name: str = "test-flow",
    version: str = "1.0.0",
    config: Mapping[str, Any] | None = None,
    triggers: list[Mapping[str, Any]] | None = None,
    node_options: Mapping[str, Mapping[str, Any]] | None = None,
    secrets: Mapping[str, Any] | None = None,
) -> pathlib.Path:
    """A workflow directory: `nodes` maps node id → the Python source of its module (dedented)."""
    directory = pathlib.Path(directory)
    (directory / "nodes").mkdir(parents=True, exist_ok=True)
    spec_nodes: dict[str, Any] = {}
    for node_id, source in nodes.items():
        (directory / "nodes" / f"{node_id}.py").write_text(textwrap.dedent(source))
        spec_nodes[node_id] = {"path": f"nodes/{node_id}.py", **dict((node_options or {}).get(node_id, {}))}
    document: dict[str, Any] = {"name": name, "version": version, "triggers": triggers or [{"type": "manual"}]}
    if config:
        document["config"] = dict(config)
    document["nodes"] = spec_nodes
    document["edges"] = [{"from": a, "to": b} for a, b in edges]
    (directory / "workflow.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    if secrets is not None:
        (directory / ".secrets.yaml").write_text(yaml.safe_dump(dict(secrets)))
    return directory


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Polls `check()` until it returns something truthy (returned); fails naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


async def wait_for_async(
    what: str, check: Callable[[], Any | Awaitable[Any]], timeout: float = 10.0, interval: float = 0.01
) -> Any:
    """`wait_for` on the running event loop; `check` may be a coroutine function."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(interval)


def run_cli(*args: str, cwd: pathlib.Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`pipedreamer ARGS` as `python -m cli` from this checkout (for commands that lock or exit the process)."""
    env = dict(os.environ, PYTHONPATH=child_python.pythonpath(REPO))
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], cwd=cwd or REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
