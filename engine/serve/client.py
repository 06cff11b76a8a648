"""A client of a serving engine's run API, over HTTP (directly, or through any transport such as
the Kubernetes API server's service proxy) or gRPC: run, submit, get, list and watch runs.

Results and events come back as their proto3 JSON mapping (what the CLI prints).
Over HTTP, watching a run polls `GET /runs/{id}` and reports each node as it
finishes (the proxy carries no gRPC); over gRPC it is the `Watch` stream, which
also reports node starts.
"""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence

from engine.errors import PipedreamerError

POLL_INTERVAL = 0.5


class EngineError(PipedreamerError):
    """The engine refused or could not answer; the message says what it said."""

    def __init__(self, message: str, *, status: int = 0, reason: str = "failed") -> None:
        super().__init__(message, status=status, reason=reason)
        self.status = status
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)


# (method, path, query, JSON body or None, headers, timeout) → the engine's answer.
Transport = Callable[[str, str, Sequence[tuple[str, str]], Any, Mapping[str, str], float], Answer]


@dataclasses.dataclass(frozen=True)
class RunRequest:
    input: Any = None  # None: no input given (a resume then feeds the resumed run's own, when kept)
    trigger: str = ""
    idempotency_key: str = ""
    resume_from: str = ""


class EngineClient(Protocol):
    def run(self, request: RunRequest, timeout: float) -> dict[str, Any]: ...

    def submit(self, request: RunRequest, timeout: float) -> str: ...

    def get_run(self, run_id: str, timeout: float) -> dict[str, Any]: ...

    def list_runs(self, *, limit: int, status: str = "", trigger: str | None = None, timeout: float) -> list[dict[str, Any]]: ...

    def watch(self, run_id: str, timeout: float) -> Iterator[dict[str, Any]]:
        """Events as `{"runId", "nodeStarted"|"nodeFinished"|"finished": …}`; the last is `finished`."""
        ...


def _decode(answer: Answer, what: str) -> Any:
    try:
        return json.loads(answer.body) if answer.body else None
    except ValueError:
        text = answer.body.decode("utf-8", errors="replace").strip()[:500]
        raise EngineError(f"{what}: HTTP {answer.status} without JSON: {text or '(empty body)'}", status=answer.status) from None


def _is_result(doc: Any) -> bool:
    return isinstance(doc, dict) and ("runId" in doc or "status" in doc and "workflow" in doc)


class HttpEngine:
    """The HTTP API (`/run`, `/runs`) through `transport`; `where` names the engine in errors."""

    def __init__(self, transport: Transport, where: str) -> None:
        self.transport = transport
        self.where = where

    def _call(self, method: str, path: str, *, query: Sequence[tuple[str, str]] = (), body: Any = None,
              headers: Mapping[str, str] | None = None, timeout: float) -> tuple[Answer, Any]:  # fmt: skip
        answer = self.transport(method, path, query, body, headers or {}, timeout)
        return answer, _decode(answer, f"{self.where} {method} {path}")

    def _fail(self, answer: Answer, doc: Any, what: str) -> EngineError:
        message = doc.get("error") if isinstance(doc, dict) and "error" in doc else json.dumps(doc)
        reason = "not-found" if answer.status == 404 else "failed"
        return EngineError(f"{self.where}: {what}: {message} (HTTP {answer.status})", status=answer.status, reason=reason)

    @staticmethod
    def _run_args(request: RunRequest) -> tuple[list[tuple[str, str]], dict[str, str]]:
        query = []
        if request.trigger:
            query.append(("trigger", request.trigger))
        if request.resume_from:
            query.append(("resume", request.resume_from))
        headers = {"Idempotency-Key": request.idempotency_key} if request.idempotency_key else {}
        return query, headers

    def run(self, request: RunRequest, timeout: float) -> dict[str, Any]:
        query, headers = self._run_args(request)
        answer, doc = self._call("POST", "run", query=query, body=request.input, headers=headers, timeout=timeout)
        if _is_result(doc):
            return doc
        raise self._fail(answer, doc, "run")

    def submit(self, request: RunRequest, timeout: float) -> str:
        query, headers = self._run_args(request)
        headers["Prefer"] = "respond-async"
        answer, doc = self._call("POST", "run", query=query, body=request.input, headers=headers, timeout=timeout)
        if answer.status == 202 and isinstance(doc, dict) and doc.get("runId"):
            return str(doc["runId"])
        raise self._fail(answer, doc, "submit")

    def get_run(self, run_id: str, timeout: float) -> dict[str, Any]:
        answer, doc = self._call("GET", f"runs/{urllib.parse.quote(run_id, safe='')}", timeout=timeout)
        if answer.status == 200 and _is_result(doc):
            return doc
        raise self._fail(answer, doc, f"run {run_id}")

    def list_runs(self, *, limit: int, status: str = "", trigger: str | None = None, timeout: float) -> list[dict[str, Any]]:
        query = [("limit", str(limit))]
        if status:
            query.append(("status", status))
        if trigger is not None:
            query.append(("trigger", trigger))
        answer, doc = self._call("GET", "runs", query=query, timeout=timeout)
        if answer.status == 200 and isinstance(doc, dict) and isinstance(doc.get("runs"), list):
            return doc["runs"]
        raise self._fail(answer, doc, "runs")

    def triggers(self, timeout: float) -> list[dict[str, Any]]:
        """`GET /triggers`: each trigger as the engine serves it (queues with their JetStream state)."""
        answer, doc = self._call("GET", "triggers", timeout=timeout)
        if answer.status == 200 and isinstance(doc, dict) and isinstance(doc.get("triggers"), list):
            return doc["triggers"]
        raise self._fail(answer, doc, "triggers")

    def watch(self, run_id: str, timeout: float) -> Iterator[dict[str, Any]]:
        """Polls the run's record; a node event each time one more node has finished."""
        deadline = time.monotonic() + timeout
        seen: set[str] = set()
        while True:
            result = self.get_run(run_id, timeout=max(1.0, deadline - time.monotonic()))
            running = result.get("status") == "RUN_STATUS_RUNNING"
            nodes = result.get("nodes") or {}
            for node_id, node in sorted(nodes.items(), key=lambda item: item[1].get("startedAt", "")):
                if node_id not in seen and (running or "startedAt" in node):
                    seen.add(node_id)
                    yield {"runId": run_id, "nodeFinished": {"nodeId": node_id, "result": node}}
            if not running:
                yield {"runId": run_id, "finished": result}
                return
            if time.monotonic() > deadline:
                raise EngineError(f"{self.where}: run {run_id} still running after {timeout:g}s", reason="timeout")
            time.sleep(POLL_INTERVAL)


def urllib_transport(base_url: str) -> Transport:
    """Requests to an engine's own HTTP address (`http://host:port`, a dev server or a port-forward)."""
    base = base_url.rstrip("/") + "/"

    def send(method: str, path: str, query: Sequence[tuple[str, str]], body: Any, headers: Mapping[str, str], timeout: float) -> Answer:
        url = base + path + ("?" + urllib.parse.urlencode(list(query)) if query else "")
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json", **headers})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return Answer(response.status, response.read(), dict(response.headers))
        except urllib.error.HTTPError as exc:
            return Answer(exc.code, exc.read(), dict(exc.headers or {}))
        except TimeoutError:
            raise EngineError(f"{base_url}: no answer within {timeout:g}s", reason="timeout") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, TimeoutError):
                raise EngineError(f"{base_url}: no answer within {timeout:g}s", reason="timeout") from None
            raise EngineError(f"cannot reach the engine at {base_url}: {reason}", reason="unavailable") from None

    return send


class GrpcEngine:
    """The gRPC API (`pipedreamer.v1.WorkflowService`) at `host:port`."""

    def __init__(self, target: str) -> None:
        import grpc

        from proto.pipedreamer.v1 import execution_pb2_grpc

        self.target = target
        self.channel = grpc.insecure_channel(target)
        self.stub = execution_pb2_grpc.WorkflowServiceStub(self.channel)

    def _request(self, request: RunRequest) -> Any:
        from engine.values import to_value
        from proto.pipedreamer.v1 import execution_pb2

        message = execution_pb2.RunRequest(
            trigger=request.trigger, idempotency_key=request.idempotency_key, resume_from=request.resume_from
        )
        if request.input is not None:
            message.input.CopyFrom(to_value(request.input))
        return message

    def _call(self, method: Callable, message: Any, timeout: float, what: str) -> Any:
        import grpc

        try:
            return method(message, timeout=timeout)
        except grpc.RpcError as exc:
            raise self._error(exc, what, timeout) from None

    def _error(self, exc: Any, what: str, timeout: float) -> EngineError:
        import grpc

        code = exc.code()
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return EngineError(f"grpc://{self.target}: {what}: no answer within {timeout:g}s", reason="timeout")
        if code == grpc.StatusCode.UNAVAILABLE and "connect" in (exc.details() or "").lower():
            return EngineError(f"cannot reach the engine at grpc://{self.target}: {exc.details()}", reason="unavailable")
        reason = "not-found" if code == grpc.StatusCode.NOT_FOUND else "failed"
        return EngineError(f"grpc://{self.target}: {what}: {exc.details()} ({code.name})", reason=reason)

    def run(self, request: RunRequest, timeout: float) -> dict[str, Any]:
        from engine.values import result_to_dict

        return result_to_dict(self._call(self.stub.Run, self._request(request), timeout, "run"))

    def submit(self, request: RunRequest, timeout: float) -> str:
        return self._call(self.stub.Submit, self._request(request), timeout, "submit").run_id

    def get_run(self, run_id: str, timeout: float) -> dict[str, Any]:
        from engine.values import result_to_dict
        from proto.pipedreamer.v1 import execution_pb2

        return result_to_dict(self._call(self.stub.GetRun, execution_pb2.GetRunRequest(run_id=run_id), timeout, f"run {run_id}"))

    def list_runs(self, *, limit: int, status: str = "", trigger: str | None = None, timeout: float) -> list[dict[str, Any]]:
        from engine.values import result_to_dict, run_status
        from proto.pipedreamer.v1 import execution_pb2

        request = execution_pb2.ListRunsRequest(limit=limit, status=run_status(status) if status else 0, trigger=trigger or "")
        return [result_to_dict(r) for r in self._call(self.stub.ListRuns, request, timeout, "runs").runs]

    def watch(self, run_id: str, timeout: float) -> Iterator[dict[str, Any]]:
        import grpc
        from google.protobuf import json_format

        from engine.values import result_to_dict
        from proto.pipedreamer.v1 import execution_pb2

        try:
            for event in self.stub.Watch(execution_pb2.WatchRequest(run_id=run_id), timeout=timeout):
                if event.WhichOneof("event") == "finished":
                    yield {"runId": event.run_id, "finished": result_to_dict(event.finished)}
                else:
                    yield json_format.MessageToDict(event)
        except grpc.RpcError as exc:
            raise self._error(exc, f"watch {run_id}", timeout) from None

    def close(self) -> None:
        self.channel.close()


def connect_endpoint(url: str) -> EngineClient:
    """`http://host:port` (the HTTP API) or `grpc://host:port` (gRPC); ValueError naming --endpoint otherwise."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme in ("http", "https") and parsed.netloc:
        return HttpEngine(urllib_transport(url), url.rstrip("/"))
    if parsed.scheme == "grpc" and parsed.netloc:
        return GrpcEngine(parsed.netloc)
    raise ValueError(
        f"--endpoint {url!r}: expected an engine's HTTP address (http://127.0.0.1:8080) or its gRPC one (grpc://127.0.0.1:9090)"
    )
