"""Trigger a deployed workflow, and read its runs, through the API server's service proxy.

POST /api/v1/namespaces/{ns}/services/{name}:8080/proxy/run: the API server
picks a ready endpoint of the Service and forwards the request. No pod is
scheduled and no image pulled; RBAC decides who may (`create services/proxy`).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping, Sequence

from engine.serve.client import Answer, HttpEngine, Transport
from k8s.names import HTTP_PORT
from k8s import kinds
from k8s.client import Cluster
from k8s.errors import ClusterError


@dataclasses.dataclass(frozen=True)
class RunOutcome:
    """The engine's answer: HTTP status and the ExecutionResult (its proto3 JSON mapping)."""

    http_status: int
    result: dict[str, Any]

    @property
    def succeeded(self) -> bool:
        return self.http_status == 200 and self.result.get("status") == "RUN_STATUS_SUCCEEDED"


def proxy_path(name: str, namespace: str, path: str = "run") -> str:
    return kinds.SERVICE.path(namespace, f"{name}:{HTTP_PORT}", f"proxy/{path}")


def proxy_transport(cluster: Cluster, name: str, namespace: str) -> Transport:
    """Requests to workflow `name`'s engine through the API server's service proxy, errors explained."""

    def send(method: str, path: str, query: Sequence[tuple[str, str]], body: Any, headers: Mapping[str, str], timeout: float) -> Answer:
        try:
            response = cluster.open(
                method,
                proxy_path(name, namespace, path),
                query=list(query),
                body=body,
                headers=headers,
                timeout=timeout,
                verb="create" if method == "POST" else "get",
                resource="services/proxy",
                namespace=namespace,
                name=name,
            )
        except ClusterError as exc:
            if exc.reason == "timeout":
                raise _no_result(name, timeout) from None
            raise
        try:
            raw = response.data
        except Exception:  # noqa: BLE001 - a read timeout can also strike while the body arrives
            raise _no_result(name, timeout) from None
        finally:
            response.release_conn()
        doc = _json(raw)
        if isinstance(doc, dict) and doc.get("kind") == "Status" and doc.get("apiVersion") == "v1":
            raise _proxy_error(cluster, name, namespace, response.status, raw, doc)
        return Answer(response.status, raw, dict(response.headers or {}))

    return send


def engine_client(cluster: Cluster, name: str, namespace: str | None = None) -> HttpEngine:
    """The run API of deployed workflow `name`, through the API server's service proxy."""
    namespace = namespace or cluster.namespace
    return HttpEngine(proxy_transport(cluster, name, namespace), f"workflow {name!r}")


def run_workflow(
    cluster: Cluster, name: str, payload: Any, *, timeout: float = 30.0, namespace: str | None = None
) -> RunOutcome:
    """POST `payload` as the run's input; wait at most `timeout` s for the ExecutionResult."""
    namespace = namespace or cluster.namespace
    transport = proxy_transport(cluster, name, namespace)
    answer = transport("POST", "run", (), payload, {}, timeout)
    doc = _json(answer.body)
    if isinstance(doc, dict) and ("runId" in doc or "status" in doc and "workflow" in doc):
        return RunOutcome(answer.status, doc)
    text = answer.body.decode("utf-8", errors="replace").strip()
    message = doc.get("error") if isinstance(doc, dict) and "error" in doc else text[:500]
    raise ClusterError(
        f"workflow {name!r} answered HTTP {answer.status} without a run result: {message or '(empty body)'}",
        reason="failed",
        http_status=answer.status,
    )


def _no_result(name: str, timeout: float) -> ClusterError:
    return ClusterError(
        f"no result from workflow {name!r} within {timeout:g}s; the run may still be going on "
        f"(see `pipedreamer logs {name}`), or pass a longer --timeout",
        reason="timeout",
    )


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _proxy_error(cluster: Cluster, name: str, namespace: str, status: int, raw: bytes, doc: dict) -> ClusterError:
    message = doc.get("message", "")
    if status == 404 and (doc.get("details") or {}).get("kind") == "services":
        return ClusterError(
            f"workflow {name!r} is not deployed in namespace {namespace!r} (no Service {name!r}); see `pipedreamer list`",
            reason="not-found",
        )
    if status == 503 and "no endpoints available" in message:
        return ClusterError(
            f"workflow {name!r} has no ready pod to run it (Service {name!r} has no ready endpoints); "
            f"see `pipedreamer status {name} --detail`",
            reason="unavailable",
        )
    if status in (502, 503) and "error trying to reach service" in message:
        return ClusterError(
            f"the API server could not reach workflow {name!r}'s pod: {message}", reason="unavailable"
        )
    return cluster.status_error(status, raw, verb="create", resource="services/proxy", namespace=namespace, name=name)
