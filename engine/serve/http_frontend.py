"""The HTTP face of a serving engine (aiohttp): /run, /runs, /healthz, /readyz, /metrics, /triggers,
and `POST <path>` of each webhook trigger (verified and run by engine/serve/webhooks.py).

Status codes: 200 a run that succeeded, 500 one that failed (the body is still
the `ExecutionResult`), 400 bad JSON, 408 a body that arrives too slowly, 413 a
body over the limit, 429 too many runs in flight, 503 draining.

Callers: a request carrying an `Origin` other than the engine's own, or
`Sec-Fetch-Site: cross-site|same-site`, is refused with 403: a web page cannot
start runs (or read `/metrics`) through a visitor's browser. An engine bound to
loopback also refuses a `Host` that is not a loopback name or address (DNS
rebinding), except on signed webhook paths, which tunnels reach under their own
Host and whose signature proves the caller. Plain clients (curl, the CLI,
Kubernetes probes, webhook senders) send neither.

Input: any JSON value is accepted and handed to the root nodes as it is
(objects, but also lists, strings, numbers, null); an empty body or a GET
means `{}`. `NaN`/`Infinity` are rejected: they are not JSON and a result
could not carry them.

Runs: `Prefer: respond-async` answers 202 `{"runId"}` with `Location:
/runs/{id}` at once (the run goes on without the caller); `Idempotency-Key`
answers a repeat with the first run's result; `?resume=RUN_ID` re-runs what
that run did not finish. `GET /runs` lists recorded runs newest first, `GET
/runs/{id}` answers one (RUNNING while it goes on).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import logging
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from aiohttp import web

from engine.serve.admission import AtCapacity, Draining, RunConflict, RunGate, RunNotFound
from engine.serve.history import DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT, HistoryError, HistoryOff
from engine.values import parse_input, result_to_dict, result_to_json, run_status
from engine.serve.options import HttpOptions
from proto.pipedreamer.v1 import execution_pb2

if TYPE_CHECKING:
    from engine.serve.webhooks import Webhooks

log = logging.getLogger("pipedreamer.server")

_JSON = "application/json"
_STATUS_CODES = {
    execution_pb2.RUN_STATUS_SUCCEEDED: 200,
    execution_pb2.RUN_STATUS_FAILED: 500,
    # Only the shutdown deadline cancels a run: the server is going away.
    execution_pb2.RUN_STATUS_CANCELLED: 503,
}
MAX_IDEMPOTENCY_KEY = 255
_NO_QUERY: dict[str, str] = {}  # most /run requests have no query string: nothing to parse


class _BodyError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _error(status: int, message: str, *, close: bool = False, headers: dict[str, str] | None = None) -> web.Response:
    response = web.Response(status=status, text=json.dumps({"error": message}), content_type=_JSON, headers=headers)
    if close:
        # The client may still be sending a body we will not read.
        response.force_close()
    return response


class HttpFrontend:
    """Route handlers over a `RunGate`; `create_app` wires them into an aiohttp app."""

    def __init__(
        self,
        gate: RunGate,
        *,
        options: HttpOptions = HttpOptions(),  # noqa: B008 - a frozen dataclass, shared safely
        lock_report: Callable[[], dict[str, Any]] | None = None,
        loopback_only: bool = False,
        webhooks: Webhooks | None = None,
        trigger_report: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    ) -> None:
        self.gate = gate
        self.options = options
        self.loopback_only = loopback_only
        self.lock_report = lock_report or (lambda: {"applied": False})
        self.webhooks = webhooks
        self.trigger_report = trigger_report
        self.started = time.monotonic()

    async def run(self, request: web.Request) -> web.StreamResponse:
        gate = self.gate
        if gate.draining:
            gate.metrics.rejected(Draining.reason)
            return _error(503, str(Draining()), close=True)
        try:
            body = await self._read_body(request) if request.method == "POST" else b""
        except _BodyError as exc:
            gate.metrics.rejected("bad_body")
            return _error(exc.status, str(exc), close=True)
        try:
            payload = parse_input(body)
        except ValueError as exc:
            gate.metrics.rejected("bad_json")
            return _error(400, f"invalid JSON body: {exc}")
        query = request.query if request.query_string else _NO_QUERY
        trigger = query.get("trigger", "")
        key = request.headers.get("Idempotency-Key", "")
        if len(key) > MAX_IDEMPOTENCY_KEY:
            return _error(400, f"Idempotency-Key is {len(key)} characters long; at most {MAX_IDEMPOTENCY_KEY} are accepted")
        resume_from = query.get("resume", "")
        options = {"trigger": trigger, "idempotency_key": key, "resume_from": resume_from, "input_given": bool(body.strip())}
        try:
            if _wants_async(request):
                run_id = await gate.submit(payload, **options)
                return web.json_response(
                    {"runId": run_id},
                    status=202,
                    headers={"Location": f"/runs/{run_id}", "Preference-Applied": "respond-async"},
                )
            finished = await gate.run_finished(payload, **options, text=True)
        except AtCapacity as exc:
            return _error(429, str(exc), headers={"Retry-After": "1"})
        except Draining as exc:
            return _error(503, str(exc), close=True)
        except HistoryOff as exc:
            return _error(400, f"{exc}; Idempotency-Key, ?resume and Prefer: respond-async need it")
        except RunNotFound as exc:
            return _error(404, f"?resume={resume_from}: {exc}")
        except (RunConflict, HistoryError) as exc:
            return _error(409 if isinstance(exc, RunConflict) else 503, str(exc))
        except Exception as exc:  # noqa: BLE001 - a bug in the engine must not kill the connection
            return _error(500, gate.internal_error(exc))
        return web.Response(status=_STATUS_CODES.get(finished.status, 500), body=finished.json(), content_type=_JSON)

    async def webhook(self, request: web.Request) -> web.StreamResponse:
        """`POST <path>` of a webhook trigger: the body read as /run reads it, then verified and run."""
        webhooks = self.webhooks
        assert webhooks is not None
        if self.gate.draining:
            self.gate.metrics.rejected(Draining.reason)
            return _error(503, str(Draining()), close=True)
        try:
            body = await self._read_body(request)
        except _BodyError as exc:
            self.gate.metrics.rejected("bad_body")
            return _error(exc.status, str(exc), close=True)
        answer = await webhooks.deliver(request.match_info.route.resource.canonical, body, request.headers, request.content_type)
        return web.Response(status=answer.status, body=answer.body, content_type=_JSON, headers=answer.headers)

    async def triggers(self, request: web.Request) -> web.Response:
        """`GET /triggers`: each trigger and what it needs (webhook keys, NATS, JetStream stream, lag, dead letters)."""
        report = await self.trigger_report() if self.trigger_report is not None else {"triggers": []}
        return web.json_response(report)

    async def list_runs(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            limit = _limit(query.get("limit"))
        except ValueError as exc:
            return _error(400, str(exc))
        try:
            status = run_status(query["status"]) if query.get("status") else 0
        except ValueError as exc:
            return _error(400, f"status: {exc}")
        trigger = query.get("trigger")
        try:
            runs = await self.gate.list_runs(limit=limit, status=status, trigger=trigger)
        except HistoryOff as exc:
            return _error(404, str(exc))
        except HistoryError as exc:
            return _error(503, str(exc))
        return web.Response(text=json.dumps({"runs": [result_to_dict(r) for r in runs]}, ensure_ascii=False), content_type=_JSON)

    async def get_run(self, request: web.Request) -> web.Response:
        try:
            result = await self.gate.get_run(request.match_info["run_id"])
        except (HistoryOff, RunNotFound) as exc:
            return _error(404, str(exc))
        except HistoryError as exc:
            return _error(503, str(exc))
        return web.Response(body=result_to_json(result).encode(), content_type=_JSON)

    async def _read_body(self, request: web.Request) -> bytes:
        limit = self.options.max_body
        declared = request.content_length
        if declared is not None and declared > limit:
            raise _BodyError(413, f"request body is {declared} bytes; the limit is {limit} bytes (--max-body)")
        content = request.content
        if content.is_eof():
            # The whole body came with the request (a small one, the usual case): nothing to wait for.
            body = content.read_nowait()
            if len(body) > limit:
                raise _BodyError(413, f"request body exceeds the limit of {limit} bytes (--max-body)")
            return body
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.options.body_timeout):
                # Chunked bodies declare no length: count as they stream in.
                async for chunk in request.content.iter_any():
                    size += len(chunk)
                    if size > limit:
                        raise _BodyError(413, f"request body exceeds the limit of {limit} bytes (--max-body)")
                    chunks.append(chunk)
        except TimeoutError:
            raise _BodyError(408, f"request body not received within {self.options.body_timeout:g} s") from None
        return b"".join(chunks)

    async def healthz(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = {"status": "ok"}
        if "verbose" in request.query:
            engine = self.gate.engine
            body.update(
                workflow=engine.spec.name,
                version=engine.spec.version,
                nodes=list(engine.dag.order),
                in_flight=self.gate.in_flight,
                draining=self.gate.draining,
                max_concurrent_runs=self.gate.max_concurrent_runs,
                uptime_seconds=round(time.monotonic() - self.started, 3),
                permission_lock=self.lock_report(),
            )
        return web.json_response(body)

    async def readyz(self, request: web.Request) -> web.Response:
        if self.gate.draining:
            return web.json_response({"status": "draining"}, status=503)
        return web.json_response({"status": "ready"})

    async def metrics(self, request: web.Request) -> web.Response:
        response = web.Response(body=self.gate.metrics.render())
        response.headers["Content-Type"] = self.gate.metrics.content_type
        return response


def _wants_async(request: web.Request) -> bool:
    """`Prefer: respond-async` (RFC 7240), among other preferences or not."""
    headers = request.headers
    if "Prefer" not in headers:
        return False
    prefer = headers.getall("Prefer")
    return any(token.split(";")[0].strip().lower() == "respond-async" for value in prefer for token in value.split(","))


def _limit(text: str | None) -> int:
    if text is None or text == "":
        return DEFAULT_LIST_LIMIT
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise ValueError(f"limit: expected a whole number from 1 to {MAX_LIST_LIMIT}, got {text!r}")
    return limit


@functools.lru_cache(maxsize=256)  # asked per request with the same few Host names
def is_loopback_host(host: str) -> bool:
    """`localhost`, `*.localhost`, 127.0.0.0/8 or ::1 (a bind address or a Host header's name)."""
    name = host.strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def refuse_caller(request: web.Request, loopback_only: bool) -> str | None:
    """Why a request must not reach the engine (a browser on another site, DNS rebinding), or None."""
    headers = request.headers
    origin = headers.get("Origin")
    if origin is not None and origin != (own := f"{request.scheme}://{request.host}"):
        return f"cross-origin request refused: Origin {origin} is not this engine ({own})"
    site = headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return f"cross-site request refused (Sec-Fetch-Site: {site})"
    if loopback_only and "Host" in request.headers:
        name = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
        if not is_loopback_host(name):
            return f"Host {request.host} refused: this engine listens on loopback only and answers loopback names"
    return None


def _guarded(handler: Callable[[web.Request], Awaitable[web.StreamResponse]], loopback_only: bool) -> Callable:
    """`handler` behind the caller checks, as every route is (a wrapper per route rather than a
    middleware: aiohttp runs middlewares through two more layers of calls on every request):

    * refuses browsers on other sites everywhere, and with `loopback_only` a Host that is not a
      loopback name (DNS rebinding; off on signed webhook paths, which a tunnel reaches under its
      own Host and whose signature proves the caller);
    * answers an HTTP error a handler raises as `{"error": …}` like every other answer."""

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        reason = refuse_caller(request, loopback_only)
        if reason is not None:
            log.warning("%s %s: %s", request.method, request.path, reason)
            return _error(403, reason)
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return _error(exc.status, exc.reason, headers={k: v for k, v in exc.headers.items() if k == "Allow"})

    return guarded


async def _unrouted(request: web.Request) -> web.Response:
    """Every path and method no route takes (the last route): 405 with `Allow` when the path has
    routes for other methods, else 404, as `{"error": …}`."""
    allowed: set[str] = set()
    this = request.match_info.route.resource
    for resource in request.app.router.resources():
        if resource is not this:
            allowed |= (await resource.resolve(request))[1]
    if allowed:
        return _error(405, "Method Not Allowed", headers={"Allow": ",".join(sorted(allowed))})
    return _error(404, "Not Found")


def create_app(frontend: HttpFrontend) -> web.Application:
    # The body limit is enforced while streaming in HttpFrontend._read_body.
    webhooks = frontend.webhooks
    loopback = frontend.loopback_only
    app = web.Application(client_max_size=frontend.options.max_body)
    router = app.router

    def route(method: str, path: str, handler: Callable, *, signed: bool = False) -> None:
        router.add_route(method, path, _guarded(handler, loopback and not signed))

    route("POST", "/run", frontend.run)
    route("GET", "/run", frontend.run)
    for path, handler in (
        ("/runs", frontend.list_runs),
        ("/runs/{run_id}", frontend.get_run),
        ("/healthz", frontend.healthz),
        ("/readyz", frontend.readyz),
        ("/metrics", frontend.metrics),
        ("/triggers", frontend.triggers),
    ):
        route("GET", path, handler)
        route("HEAD", path, handler)
    for path in webhooks.paths if webhooks is not None else ():
        route("POST", path, frontend.webhook, signed=path in webhooks.signed_paths)
    route("*", "/{path:.*}", _unrouted)
    return app


def create_runner(frontend: HttpFrontend, *, shutdown_timeout: float = 2.0) -> web.AppRunner:
    """An AppRunner with the slow-client limits applied (no access log: it costs req/s)."""
    return web.AppRunner(
        create_app(frontend),
        access_log=None,
        keepalive_timeout=frontend.options.idle_timeout,
        # After a refused body (413/408) read and drop the rest for at most
        # this long, so the client sees our answer instead of a reset.
        lingering_time=1.0,
        shutdown_timeout=shutdown_timeout,
        handle_signals=False,
        # A caller that hangs up cancels its run: nobody is left to receive the result.
        handler_cancellation=True,
    )
