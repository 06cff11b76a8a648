"""What a node sees as `ctx`: `fetch` (auth-injecting HTTP), `log`, `config`, `secrets`, `node_id`, `run_id`."""

from __future__ import annotations

import datetime
import json
import sys
from typing import Any, Awaitable, Callable, Mapping, Protocol, TextIO

import aiohttp
from aiohttp import ClientHandlerType, ClientMiddlewareType, ClientRequest, ClientResponse
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from engine.secrets import Redactor

LEVELS = {"debug": 10, "info": 20, "warn": 30, "error": 40}
LOG_FORMATS = ("text", "json")


class LogSink:
    """Writes node and engine log lines (text or JSON, secrets redacted) to one stream."""

    def __init__(
        self,
        fmt: str = "text",
        stream: TextIO | None = None,
        level: str = "info",
        redactor: Redactor | None = None,
    ):
        if fmt not in LOG_FORMATS:
            raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
        self.format = fmt
        self.stream = stream
        self.threshold = LEVELS[level]
        self.redactor = redactor or Redactor()

    def enabled(self, level: str) -> bool:
        return LEVELS[level] >= self.threshold

    def write(self, level: str, node_id: str, run_id: str, message: str, fields: Mapping[str, Any] | None = None) -> None:
        if LEVELS[level] < self.threshold:
            return
        stream = self.stream or sys.stderr
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        message = self.redactor.text(message)
        # Fields are redacted as values, before JSON escapes what a secret is made of (`"`, `\`, non-ASCII, newlines).
        extra = self.redactor.value(_plain_fields(fields)) if fields else {}
        if self.format == "json":
            record: dict[str, Any] = {"time": now, "level": level, "node": node_id, "run_id": run_id, "message": message}
            record.update({k: v for k, v in extra.items() if k not in record})
            stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            suffix = f" run_id={run_id}" if run_id else ""
            suffix += "".join(f" {k}={json.dumps(v)}" for k, v in extra.items())
            # Every line carries the node and run, so multi-line messages still grep.
            lines = message.splitlines() or [""]
            stream.write("".join(f"{now} {level.upper():<5} [{node_id}] {line}{suffix}\n" for line in lines))
        stream.flush()


def _plain_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Log fields as JSON-like values: anything JSON cannot hold becomes its str()."""
    return json.loads(json.dumps(dict(fields), default=str))


class NodeLogger:
    """`ctx.log`: debug/info/warn/error, each line prefixed with the node id and tagged with the run id."""

    __slots__ = ("_sink", "node_id", "run_id")

    def __init__(self, sink: LogSink, node_id: str, run_id: str):
        self._sink = sink
        self.node_id = node_id
        self.run_id = run_id

    def _log(self, level: str, message: object, args: tuple, fields: dict[str, Any]) -> None:
        text = " ".join(str(part) for part in (message, *args))
        self._sink.write(level, self.node_id, self.run_id, text, fields)

    def debug(self, message: object, *args: object, **fields: Any) -> None:
        self._log("debug", message, args, fields)

    def info(self, message: object, *args: object, **fields: Any) -> None:
        self._log("info", message, args, fields)

    def warn(self, message: object, *args: object, **fields: Any) -> None:
        self._log("warn", message, args, fields)

    warning = warn

    def error(self, message: object, *args: object, **fields: Any) -> None:
        self._log("error", message, args, fields)


class Response:
    """A fetched response, body already read: `.status`, `.ok`, `.headers`, async `.json()`, `.text()`, `.read()`."""

    __slots__ = ("status", "reason", "headers", "url", "_body", "_encoding")

    def __init__(
        self,
        status: int,
        body: bytes,
        headers: Mapping[str, str] | None = None,
        url: str = "",
        reason: str = "",
        encoding: str | None = None,
    ):
        self.status = status
        self.reason = reason
        self.headers = CIMultiDictProxy(CIMultiDict(headers or {}))
        self.url = url
        self._body = body
        self._encoding = encoding or "utf-8"

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    async def read(self) -> bytes:
        return self._body

    async def text(self) -> str:
        return self._body.decode(self._encoding, errors="replace")

    async def json(self) -> Any:
        return json.loads(self._body.decode(self._encoding)) if self._body else None

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.url}>"


class Fetcher(Protocol):
    """Answers `ctx.fetch`; the engine's goes over HTTP, the fixture runner's answers from the fixture."""

    async def fetch(self, service: str, path: str, **kwargs: Any) -> Response: ...


def service_url(service: str, path: str, config: Mapping[str, Any]) -> str:
    """`https://api.{service}.com{path}`, or `config.services.<service>.base_url` + path."""
    if not path.startswith("/") and path:
        path = "/" + path
    services = config.get("services")
    entry = services.get(service) if isinstance(services, Mapping) else None
    base = entry.get("base_url") if isinstance(entry, Mapping) else None
    if isinstance(base, str) and base:
        return base.rstrip("/") + path
    return f"https://api.{service}.com{path}"


def auth_headers(service: str, secrets: Mapping[str, Any]) -> dict[str, str]:
    """`Authorization: Bearer` from `secrets[service].token`, else `X-API-Key` from `.api_key`."""
    entry = secrets.get(service)
    if not isinstance(entry, Mapping):
        return {}
    if entry.get("token"):
        return {"Authorization": f"Bearer {entry['token']}"}
    if entry.get("api_key"):
        return {"X-API-Key": str(entry["api_key"])}
    return {}


class HttpFetcher:
    """`ctx.fetch` over one aiohttp session shared by the whole engine."""

    def __init__(
        self,
        session: Callable[[], aiohttp.ClientSession],
        config: Mapping[str, Any],
        secrets: Mapping[str, Any],
    ):
        self._session = session
        self._config = config
        self._secrets = secrets

    async def fetch(self, service: str, path: str, **kwargs: Any) -> Response:
        url = service_url(service, path, self._config)
        method = str(kwargs.pop("method", "GET")).upper()
        if "body" in kwargs:  # fetch()-style spelling
            kwargs["data"] = kwargs.pop("body")
        headers = CIMultiDict(kwargs.pop("headers", None) or {})
        # The node's own headers win over the injected credentials.
        credentials = {k: v for k, v in auth_headers(service, self._secrets).items() if k not in headers}
        if credentials:
            kwargs["middlewares"] = (*kwargs.get("middlewares", ()), _credentials_for(URL(url), credentials))
        async with self._session().request(method, url, headers=headers, **kwargs) as response:
            body = await response.read()
            return Response(
                response.status,
                body,
                response.headers,
                str(response.url),
                response.reason or "",
                response.get_encoding() if body else None,
            )


def _origin(url: URL) -> tuple[str, str | None, int | None]:
    return url.scheme, url.host, url.port  # port: the scheme's default when none is written


def _credentials_for(service: URL, credentials: Mapping[str, str]) -> ClientMiddlewareType:
    """Adds `credentials` to each request aiohttp sends, redirects included, only while it goes to `service`'s origin.

    aiohttp drops `Authorization` on a cross-origin redirect but keeps every
    other header it was given (an `X-API-Key`), so the credentials are never
    given to it: each hop gets them only if it is on the service's origin
    (scheme, host and port, as browsers define it).
    """
    origin = _origin(service)

    async def add_credentials(request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        if _origin(request.url) == origin:
            request.headers.update(credentials)
        return await handler(request)

    return add_credentials


class RunScope:
    """What every node of one run shares: run id, config, secrets, fetcher, log sink."""

    __slots__ = ("run_id", "config", "secrets", "fetcher", "sink")

    def __init__(self, run_id: str, config: Mapping[str, Any], secrets: Mapping[str, Any], fetcher: Fetcher, sink: LogSink):
        self.run_id = run_id
        self.config = config
        self.secrets = secrets
        self.fetcher = fetcher
        self.sink = sink


class Context:
    """The `ctx` passed to `run(ctx, input)`: one per node call, two slots to fill, so cheap to make."""

    __slots__ = ("node_id", "_scope", "_log")

    def __init__(self, node_id: str, scope: RunScope):
        self.node_id = node_id
        self._scope = scope
        self._log: NodeLogger | None = None

    @property
    def run_id(self) -> str:
        return self._scope.run_id

    @property
    def config(self) -> Mapping[str, Any]:
        return self._scope.config

    @property
    def secrets(self) -> Mapping[str, Any]:
        return self._scope.secrets

    @property
    def log(self) -> NodeLogger:
        if self._log is None:
            self._log = NodeLogger(self._scope.sink, self.node_id, self._scope.run_id)
        return self._log

    def fetch(self, service: str, path: str, **kwargs: Any) -> Awaitable[Response]:
        """GET (or `method=`) `path` on `service`, with the service's credentials injected."""
        return self._scope.fetcher.fetch(service, path, **kwargs)

    def __repr__(self) -> str:
        return f"<Context node={self.node_id} run={self.run_id}>"
