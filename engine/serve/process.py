"""The serving process: start the engine, bind HTTP and gRPC, lock permissions,
start queue triggers, and shut all of it down gracefully on SIGTERM/SIGINT.

`python -m engine` (the image's entrypoint) and `pipedreamer dev` both come
through `serve`; they differ only in defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal
import socket
import sys
from pathlib import Path
from typing import Any, Callable

from aiohttp import web

from engine import sandbox
from engine.serve.admission import RunGate
from engine.context import LogSink
from engine.serve.grpc_frontend import GrpcFrontend
from engine.serve.history import MemoryHistory, RunHistory
from engine.serve.metrics import EngineMetrics
from engine.serve.queue_triggers import QueueTriggers, nats_server_address
from engine.runtime import Engine
from engine.serve.options import ServeOptions, add_serve_flags, options_from_args
from engine.serve.http_frontend import HttpFrontend, create_runner, is_loopback_host
from engine.serve.webhooks import Webhooks

log = logging.getLogger("pipedreamer.serve")


class _SinkHandler(logging.Handler):
    """Engine log records through the engine's LogSink: same format, secrets redacted."""

    _LEVELS = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn", logging.ERROR: "error"}

    def __init__(self, sink: LogSink):
        super().__init__()
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = self._LEVELS.get(record.levelno, "error" if record.levelno > logging.ERROR else "debug")
            message = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                message += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
            # Structured fields only in JSON: text lines already say it in the message.
            fields = getattr(record, "fields", None) if self.sink.format == "json" else None
            self.sink.write(level, record.name.removeprefix("pipedreamer."), "", message, fields)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def configure_logging(sink: LogSink) -> Callable[[], None]:
    """Routes `pipedreamer.*` loggers into `sink`; returns a function that undoes it."""
    logger = logging.getLogger("pipedreamer")
    handler = _SinkHandler(sink)
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    logger.propagate = False

    def undo() -> None:
        logger.removeHandler(handler)
        logger.setLevel(previous)
        logger.propagate = True

    return undo


def _bind_http(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port} for HTTP: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


def _policy_with_nats(policy: sandbox.PermissionPolicy, nats_address: str | None) -> sandbox.PermissionPolicy:
    """The engine's own NATS server must stay reachable under the lock (nodes may reach it too)."""
    if nats_address is None or policy.allow_net == ():
        return policy
    return dataclasses.replace(policy, allow_net=(*(policy.allow_net or ()), nats_address))


def lock_before_import(policy: sandbox.PermissionPolicy, workflow_dir: Path) -> tuple[Callable[..., None], Callable[[], sandbox.LockReport | None]]:
    """THE call site of the permission lock, as `Engine.start`'s `before_import`: after the
    spec and secrets are read, before the first node module is imported (so no line of
    user code runs unconfined) and before any server thread starts (threads started
    earlier escape Landlock). Returns the hook and a getter for its report."""
    applied: list[sandbox.LockReport] = []

    def before_import(spec: Any, secrets: Any) -> None:
        nats = nats_server_address(spec, secrets)
        # The workflow directory is always readable: its nodes are imported after the lock.
        applied.append(sandbox.apply_policy(_policy_with_nats(policy, nats), extra_read=(str(workflow_dir),)))

    return before_import, lambda: applied[0] if applied else None


def make_history(engine: Engine, options: ServeOptions) -> RunHistory | None:
    """The run history `config.history` (memory | nats) and `--history N` (0: off) ask for; ValueError if wrong."""
    if options.history == 0:
        return None
    kind = engine.workflow.config.get("history", "memory")
    if kind == "memory":
        return MemoryHistory(options.history)
    if kind == "nats":
        from engine.serve.history_nats import nats_history_for

        return nats_history_for(engine.spec, engine.secrets, engine.redact)
    raise ValueError(f"config.history: expected memory or nats, got {kind!r}")


class ServingEngine:
    """One engine behind HTTP, gRPC and queue triggers, from start to graceful stop."""

    def __init__(self, engine: Engine, options: ServeOptions) -> None:
        self.engine = engine
        self.options = options
        spec = engine.spec
        self.metrics = EngineMetrics(spec.name)
        self.gate = RunGate(
            engine,
            self.metrics,
            workflow=spec.name,
            version=spec.version,
            max_concurrent_runs=options.max_concurrent_runs,
            history=make_history(engine, options),
            resume_capacity=options.history,
        )
        self.lock: sandbox.LockReport | None = None
        # Raises WebhookKeyError when a signed webhook has no key: no engine starts with that hole.
        self.webhooks = Webhooks.for_spec(self.gate, spec, engine.secrets)
        self.http = HttpFrontend(
            self.gate,
            options=options.http,
            lock_report=self._lock_report,
            loopback_only=is_loopback_host(options.host),
            webhooks=self.webhooks,
            trigger_report=self.trigger_report,
        )
        # Created after the lock: grpc starts threads, and threads started before it escape Landlock.
        self.grpc: GrpcFrontend | None = None
        self.queues = QueueTriggers(self.gate, engine)
        self._runner: web.AppRunner | None = None
        self._watch: asyncio.Task | None = None
        self._undo_logging: Callable[[], None] = lambda: None
        self.http_address = ""
        self.grpc_address = ""

    @classmethod
    async def start(cls, options: ServeOptions) -> "ServingEngine":
        """Spec, lock, nodes, sockets, servers, triggers; raises the engine's load errors and OSError."""
        lock, lock_report = (None, lambda: None)
        if options.policy is not None:
            lock, lock_report = lock_before_import(options.policy, _workflow_dir(options.workflow))
        engine = await Engine.start(
            options.workflow,
            secrets_path=options.secrets_path,
            log_format=options.log_format,
            before_import=lock,
            max_output=options.max_output,
        )
        try:
            serving = cls(engine, options)
        except BaseException:
            await engine.close()
            raise
        serving.lock = lock_report()
        serving._undo_logging = configure_logging(engine.log_sink)
        try:
            await serving._start()
        except BaseException:
            await serving._close_partial()
            await serving.gate.close_history()
            serving._undo_logging()
            raise
        return serving

    async def trigger_report(self) -> dict[str, Any]:
        """`GET /triggers`: every trigger of the workflow as this engine serves it."""
        entries: list[dict[str, Any]] = [*self.webhooks.report(), *await self.queues.report()]
        for trigger in self.engine.spec.triggers:
            if trigger.type == trigger.TYPE_CRON:
                entries.append({"type": "cron", "name": trigger.name or "cron", "schedule": trigger.schedule,
                                "note": "started by the CronJob deploy renders (POST /run?trigger=NAME)"})  # fmt: skip
            elif trigger.type == trigger.TYPE_MANUAL:
                entries.append({"type": "manual", "name": trigger.name or "manual"})
        return {"workflow": self.engine.spec.name, "triggers": entries}

    def _lock_report(self) -> dict[str, Any]:
        return self.lock.to_dict() if self.lock is not None else {"applied": False}

    async def _start(self) -> None:
        options = self.options
        sock = _bind_http(options.host, options.port)
        host, port = sock.getsockname()[:2]
        self.http_address = f"http://{_host_for_url(host)}:{port}"
        if options.grpc_port is not None:
            self.grpc = GrpcFrontend(self.gate, max_message=options.http.max_body)
            grpc_port = self.grpc.bind(options.host, options.grpc_port)
            self.grpc_address = f"{_host_for_url(options.host)}:{grpc_port}"
        self._runner = create_runner(self.http)
        await self._runner.setup()
        await self.gate.open_history()
        await web.SockSite(self._runner, sock).start()
        if self.grpc is not None:
            await self.grpc.start()
        await self.queues.start()
        if self.webhooks.routes:
            log.info(
                "webhooks: %s",
                ", ".join(f"POST {hook['path']} ({hook['signature']})" for hook in self.webhooks.report()),
            )
            if not self.webhooks.dedupe:
                log.warning("webhooks: run history is off (--history 0): repeated deliveries are not recognised and run again")
        if options.watch:
            self._watch = asyncio.get_running_loop().create_task(self.engine.watch())
        log.info(
            "serving %s %s: HTTP %s, gRPC %s; %s",
            self.engine.spec.name,
            self.engine.spec.version,
            self.http_address,
            self.grpc_address or "off",
            self.lock.summary() if self.lock is not None else "permission lock: not applied",
            extra={"fields": {"http": self.http_address, "grpc": self.grpc_address, "permission_lock": self._lock_report()}},
        )

    async def shutdown(self, timeout: float | None = None) -> None:
        """Stops accepting, lets runs in flight finish (bounded), drains NATS, closes everything."""
        timeout = self.options.shutdown_timeout if timeout is None else timeout
        in_flight = self.gate.in_flight
        log.info("shutting down: %d run(s) in flight, waiting up to %gs", in_flight, timeout)
        self.gate.drain()
        if self.grpc is not None:
            await self.grpc.drain()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # Stop NATS deliveries first; messages already delivered still run.
        await self.queues.stop_receiving()
        idle = await self.gate.wait_idle(max(0.0, deadline - loop.time()))
        if not idle:
            cancelled = await self.gate.cancel_all(
                f"the engine shut down before the run finished (--shutdown-timeout {timeout:g}s)"
            )
            log.warning("shutdown deadline passed: cancelled %d run(s) in flight", cancelled)
        await self.queues.close()
        await self.gate.close_history()
        await self._close_partial()
        log.info("stopped")
        self._undo_logging()

    async def _close_partial(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
            self._watch = None
        if self.grpc is not None:
            await self.grpc.stop(grace=1.0)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.engine.close()


def _workflow_dir(workflow: Path) -> Path:
    directory = workflow.absolute()
    return directory.parent if directory.is_file() else directory


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def serve(options: ServeOptions, *, stop: asyncio.Event | None = None) -> int:
    """Serves until SIGTERM/SIGINT (or `stop` is set); returns the exit code.

    A second signal cuts the shutdown short: runs in flight are cancelled.
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = 0
    hurry = asyncio.Event()

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            log.info("received %s", signal.Signals(signum).name)
            stop.set()
        else:
            hurry.set()

    installed = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, on_signal, signum)
            installed.append(signum)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    try:
        serving = await ServingEngine.start(options)
        await stop.wait()
        shutdown = loop.create_task(serving.shutdown())
        hurried = loop.create_task(hurry.wait())
        await asyncio.wait({shutdown, hurried}, return_when=asyncio.FIRST_COMPLETED)
        if not shutdown.done():
            log.warning("second signal: cancelling runs in flight now")
            await serving.gate.cancel_all("the engine was stopped by a second signal before the run finished")
            await shutdown
        hurried.cancel()
        return 0
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


def main(argv: list[str] | None = None) -> int:
    """`python -m engine`: the image's entrypoint."""
    parser = argparse.ArgumentParser(prog="python -m engine", description="Serve one Pipedreamer workflow over HTTP, gRPC and NATS.")
    parser.add_argument("--workflow", default="/app", help="workflow directory or its workflow.yaml (default: /app)")
    add_serve_flags(parser, host="0.0.0.0", watch=False)
    args = parser.parse_args(argv)
    try:
        options = options_from_args(args, args.workflow)
    except ValueError as exc:  # a bad --allow-net entry
        parser.error(str(exc))
    try:
        return asyncio.run(serve(options))
    except KeyboardInterrupt:  # before the signal handlers were installed
        return 130
    except Exception as exc:  # noqa: BLE001 - explained failure, exit 1
        sys.stderr.write(f"error: {exc}\n")
        return 1
