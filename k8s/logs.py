"""Logs of a workflow's engine pods, each line prefixed by its pod; tail or follow."""

from __future__ import annotations

import dataclasses
import math
import threading
from typing import Callable

from k8s.names import ENGINE_CONTAINER, selector_labels
from k8s import kinds
from k8s.client import Cluster, iter_lines
from k8s.errors import ClusterError

DEFAULT_TAIL = 100
NOT_SCHEDULED = "the pod is not on a node yet"


@dataclasses.dataclass(frozen=True)
class PodLog:
    pod: str
    lines: tuple[str, ...]
    # Why there are no lines (container not started yet, pod gone), if so.
    note: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def workflow_pods(cluster: Cluster, name: str, namespace: str | None = None) -> list[str]:
    """Names of the workflow's engine pods; ClusterError when there are none."""
    namespace = namespace or cluster.namespace
    selector = ",".join(f"{k}={v}" for k, v in selector_labels(name).items())
    pods = sorted(p["metadata"]["name"] for p in cluster.list(kinds.POD, namespace, selector=selector))
    if not pods:
        raise ClusterError(
            f"no pods for workflow {name!r} in namespace {namespace!r}; is it deployed? see `pipedreamer list`",
            reason="not-found",
        )
    return pods


def _log_query(tail: int | None, follow: bool) -> list[tuple[str, object]]:
    query: list[tuple[str, object]] = [("container", ENGINE_CONTAINER)]
    if tail is not None and tail >= 0:
        query.append(("tailLines", tail))
    if follow:
        query.append(("follow", "true"))
    return query


def _open_log(cluster: Cluster, pod: str, namespace: str, tail: int | None, follow: bool):
    response = cluster.open(
        "GET",
        kinds.POD.path(namespace, pod, "log"),
        query=_log_query(tail, follow),
        timeout=math.inf if follow else None,
        verb="get",
        resource="pods/log",
        namespace=namespace,
        name=pod,
    )
    # 204: the pod has no node yet, so there is nothing to read.
    if response.status not in (200, 204):
        raw = response.data
        response.release_conn()
        raise cluster.status_error(response.status, raw, verb="get", resource="pods/log", namespace=namespace, name=pod)
    return response


def _note_or_raise(error: ClusterError) -> str:
    # 400: container not started / pod not scheduled; 404: pod gone since the list.
    if error.details.get("status") in (400, 404):
        return error.details.get("server_message") or str(error)
    raise error


def read_logs(cluster: Cluster, name: str, *, tail: int | None = DEFAULT_TAIL, namespace: str | None = None) -> list[PodLog]:
    """The last `tail` lines of every engine pod."""
    namespace = namespace or cluster.namespace
    logs = []
    for pod in workflow_pods(cluster, name, namespace):
        try:
            response = _open_log(cluster, pod, namespace, tail, follow=False)
        except ClusterError as exc:
            logs.append(PodLog(pod, (), _note_or_raise(exc)))
            continue
        try:
            status, text = response.status, response.data.decode("utf-8", errors="replace")
        finally:
            response.release_conn()
        logs.append(PodLog(pod, tuple(text.splitlines()), NOT_SCHEDULED if status == 204 else ""))
    return logs


def follow_logs(
    cluster: Cluster,
    name: str,
    emit: Callable[[str, str], None],
    *,
    tail: int | None = DEFAULT_TAIL,
    namespace: str | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Stream every engine pod's log until all streams end (or `stop` is set); emit(pod, line) per line.

    Pods that start after the call are not picked up, as with `kubectl logs -l … -f`.
    """
    namespace = namespace or cluster.namespace
    stop = stop or threading.Event()
    lock = threading.Lock()
    failures: list[ClusterError] = []

    def locked_emit(pod: str, line: str) -> None:
        with lock:
            emit(pod, line)

    def stream(pod: str) -> None:
        try:
            response = _open_log(cluster, pod, namespace, tail, follow=True)
        except ClusterError as exc:
            try:
                locked_emit(pod, f"(no logs: {_note_or_raise(exc)})")
            except ClusterError as fatal:
                failures.append(fatal)
            return
        if response.status == 204:
            response.release_conn()
            locked_emit(pod, f"(no logs: {NOT_SCHEDULED})")
            return
        try:
            for line in iter_lines(response):
                if stop.is_set():
                    break
                locked_emit(pod, line)
        except Exception as exc:  # noqa: BLE001 - a broken stream ends that pod's output only
            if not stop.is_set():
                locked_emit(pod, f"(log stream ended: {type(exc).__name__})")
        finally:
            response.release_conn()

    threads = [threading.Thread(target=stream, args=(pod,), daemon=True, name=f"logs-{pod}")
               for pod in workflow_pods(cluster, name, namespace)]  # fmt: skip
    for thread in threads:
        thread.start()
    # Short joins keep the main thread responsive to Ctrl-C.
    while any(t.is_alive() for t in threads) and not stop.is_set():
        for thread in threads:
            thread.join(0.2)
    if failures:
        raise failures[0]
