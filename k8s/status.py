"""How a deployed workflow is doing: replicas, image, runtime class, pods, CronJobs, NetworkPolicy, Ingress,
events, and (from the engine) its triggers: webhook keys, NATS, the durable queues' stream, lag and dead letters."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from k8s.names import ENGINE_CONTAINER, LABEL_VERSION, selector_labels, workflow_selector
from k8s import kinds
from k8s.apply import pod_not_ready_reason, rollout_state
from k8s.client import Cluster
from k8s.errors import ClusterError

RECENT_EVENTS = 10
# Runs read from the engine's history to find each trigger's last one.
RECENT_RUNS = 200


@dataclasses.dataclass(frozen=True)
class PodInfo:
    name: str
    phase: str
    ready: bool
    restarts: int
    node: str
    reason: str


@dataclasses.dataclass(frozen=True)
class EventInfo:
    time: str
    type: str
    object: str
    reason: str
    message: str
    count: int


@dataclasses.dataclass(frozen=True)
class CronInfo:
    name: str
    schedule: str
    suspended: bool
    last_schedule: str
    active: int


@dataclasses.dataclass(frozen=True)
class PolicyInfo:
    """The workflow's NetworkPolicy as it is in the cluster: who may reach the engine pods."""

    name: str
    # One line per peer of each ingress rule, e.g. "pods labelled pipedreamer.dev/invoke=flow on TCP 8080, 9090".
    admits: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class IngressInfo:
    """The workflow's Ingress (webhook paths) as it is in the cluster."""

    name: str
    host: str
    paths: tuple[str, ...]
    ingress_class: str
    tls: bool
    # Where the controller publishes it (status.loadBalancer), or "".
    address: str


def trigger_source(entry: Mapping[str, Any]) -> str:
    """Where a trigger listens: `POST /hooks/x`, a subject, a schedule."""
    kind = entry.get("type")
    if kind == "webhook":
        return f"POST {entry.get('path', '?')}"
    if kind == "queue":
        return str(entry.get("subject", "?"))
    if kind == "cron":
        return str(entry.get("schedule", "?"))
    return "POST /run"


def trigger_state(entry: Mapping[str, Any]) -> str:
    """One line on how a trigger (an entry of the engine's GET /triggers) is doing."""
    kind = entry.get("type")
    if kind == "webhook":
        scheme = entry.get("signature", "github")
        return "unsigned: anyone who reaches it can run the workflow" if scheme == "none" else f"signed ({scheme})"
    if kind != "queue":
        return "CronJob" if kind == "cron" else "-"
    if entry.get("error") and not entry.get("durable"):
        return f"error: {entry['error']}"
    if not entry.get("durable"):
        return f"core NATS, queue group {entry.get('queue_group', '?')}: " + ("connected" if entry.get("connected") else "not connected")
    js = entry.get("jetstream") or {}
    if entry.get("error"):
        return f"durable: error: {entry['error']}"
    if not js.get("stream_exists"):
        return f"durable: stream {js.get('stream', '?')} missing" + (f": {js['error']}" if js.get("error") else "")
    dead = js.get("dead_letters")
    dead_text = "dead letters not kept (no stream of ours)" if dead is None else f"{dead} dead letter{'s' if dead != 1 else ''}"
    text = (
        f"durable: stream {js['stream']}, {js.get('pending', '?')} waiting, {js.get('in_progress', '?')} in progress, "
        f"{dead_text} ({js.get('dead_letter_subject', '?')})"
    )
    return text + (f"; error: {js['error']}" if js.get("error") else "")


def trigger_problems(entry: Mapping[str, Any]) -> list[str]:
    """What needs someone's attention about a trigger (for `cluster check`)."""
    problems = []
    name = entry.get("name", "?")
    if entry.get("type") == "webhook" and entry.get("signature") == "none":
        problems.append(f"webhook {name} takes unsigned calls")
    if entry.get("type") != "queue":
        return problems
    js = entry.get("jetstream") or {}
    if entry.get("error"):
        problems.append(f"queue {name}: {entry['error']}")
    elif entry.get("durable") and not js.get("stream_exists"):
        problems.append(f"queue {name}: stream {js.get('stream', '?')} missing" + (f" ({js['error']})" if js.get("error") else ""))
    elif entry.get("durable") and js.get("dead_letters"):
        problems.append(f"queue {name}: {js['dead_letters']} dead letter(s) on {js.get('dead_letter_subject')}")
    elif not entry.get("durable") and not entry.get("connected"):
        problems.append(f"queue {name}: not connected to NATS")
    return problems


@dataclasses.dataclass(frozen=True)
class WorkflowStatus:
    name: str
    namespace: str
    version: str
    image: str
    runtime_class: str
    desired: int
    ready: int
    updated: int
    available: int
    conditions: tuple[str, ...]
    pods: tuple[PodInfo, ...] = ()
    cronjobs: tuple[CronInfo, ...] = ()
    events: tuple[EventInfo, ...] = ()
    # With detail: None when the workflow has no NetworkPolicy (any pod may reach the engine).
    network_policy: PolicyInfo | None = None
    # With detail: the last run of each trigger (run summaries, newest first), from the engine's history.
    last_runs: tuple[dict[str, Any], ...] = ()
    # Why the runs could not be read (no ready engine, history off …), or "".
    runs_error: str = ""
    # With detail: the Ingress exposing the webhook paths, None without one.
    ingress: IngressInfo | None = None
    # With detail: the engine's GET /triggers entries (one replica's view), and why they could not be read.
    triggers: tuple[dict[str, Any], ...] = ()
    triggers_error: str = ""

    @property
    def healthy(self) -> bool:
        return self.desired > 0 and self.available >= self.desired and self.ready >= self.desired

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["healthy"] = self.healthy
        return data


def _selector(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in labels.items())


def get_status(cluster: Cluster, name: str, *, detail: bool = False, namespace: str | None = None) -> WorkflowStatus:
    """The workflow's Deployment summary; with `detail`, its pods, CronJobs and recent events."""
    namespace = namespace or cluster.namespace
    deployment = cluster.get(kinds.DEPLOYMENT, name, namespace)
    if deployment is None:
        raise ClusterError(
            f"workflow {name!r} is not deployed in namespace {namespace!r} (no Deployment {name!r}); "
            "see `pipedreamer list`",
            reason="not-found",
        )
    state = rollout_state(deployment)
    pod_spec = deployment.get("spec", {}).get("template", {}).get("spec", {})
    containers = pod_spec.get("containers") or [{}]
    engine = next((c for c in containers if c.get("name") == ENGINE_CONTAINER), containers[0])
    conditions = tuple(
        f"{c.get('type')}={c.get('status')}" + (f" ({c.get('reason')})" if c.get("reason") else "")
        for c in deployment.get("status", {}).get("conditions") or []
    )
    status = WorkflowStatus(
        name=name,
        namespace=namespace,
        version=deployment.get("metadata", {}).get("labels", {}).get(LABEL_VERSION, ""),
        image=engine.get("image", ""),
        runtime_class=pod_spec.get("runtimeClassName", ""),
        desired=state.desired,
        ready=state.ready,
        updated=state.updated,
        available=state.available,
        conditions=conditions,
    )
    if not detail:
        return status
    pods = cluster.list(kinds.POD, namespace, selector=_selector(selector_labels(name)))
    cronjobs = cluster.list(kinds.CRONJOB, namespace, selector=workflow_selector(name))
    replicasets = cluster.list(kinds.REPLICASET, namespace, selector=_selector(selector_labels(name)))
    policy = cluster.get(kinds.NETWORK_POLICY, name, namespace)
    related = {("Deployment", name), ("Service", name), ("NetworkPolicy", name), ("Ingress", name)}
    related |= {("Pod", p["metadata"]["name"]) for p in pods}
    related |= {("ReplicaSet", r["metadata"]["name"]) for r in replicasets}
    related |= {("CronJob", c["metadata"]["name"]) for c in cronjobs}
    events = [
        e
        for e in cluster.list(kinds.EVENT, namespace)
        if (e.get("involvedObject", {}).get("kind"), e.get("involvedObject", {}).get("name")) in related
    ]
    events.sort(key=_event_time)
    last_runs, runs_error = _last_runs(cluster, name, namespace)
    triggers, triggers_error = engine_triggers(cluster, name, namespace)
    return dataclasses.replace(
        status,
        pods=tuple(_pod_info(p) for p in sorted(pods, key=lambda p: p["metadata"]["name"])),
        cronjobs=tuple(_cron_info(c) for c in sorted(cronjobs, key=lambda c: c["metadata"]["name"])),
        events=tuple(_event_info(e) for e in events[-RECENT_EVENTS:]),
        network_policy=_policy_info(policy) if policy else None,
        last_runs=last_runs,
        runs_error=runs_error,
        ingress=_ingress_info(cluster, name, namespace),
        triggers=triggers,
        triggers_error=triggers_error,
    )


def engine_triggers(cluster: Cluster, name: str, namespace: str, timeout: float = 10) -> tuple[tuple[dict[str, Any], ...], str]:
    """The engine's GET /triggers through the service proxy (one replica answers for the shared stream)."""
    from engine.serve.client import EngineError
    from k8s.run import engine_client

    try:
        return tuple(engine_client(cluster, name, namespace).triggers(timeout=timeout)), ""
    except (EngineError, ClusterError) as exc:
        return (), str(exc)


def _ingress_info(cluster: Cluster, name: str, namespace: str) -> IngressInfo | None:
    try:
        ingress = cluster.get(kinds.INGRESS, name, namespace)
    except ClusterError as exc:
        if exc.reason == "forbidden":
            return None
        raise
    if ingress is None:
        return None
    spec = ingress.get("spec") or {}
    rules = spec.get("rules") or [{}]
    paths = tuple(p.get("path", "") for rule in rules for p in (rule.get("http") or {}).get("paths") or [])
    balancer = ((ingress.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    address = ", ".join(b.get("hostname") or b.get("ip") or "" for b in balancer)
    return IngressInfo(name, rules[0].get("host", "*"), paths, spec.get("ingressClassName", ""), bool(spec.get("tls")), address)


def _last_runs(cluster: Cluster, name: str, namespace: str) -> tuple[tuple[dict[str, Any], ...], str]:
    """The newest run of each trigger, as the engine's history has them (through the service proxy)."""
    from engine.serve.client import EngineError
    from k8s.run import engine_client

    try:
        runs = engine_client(cluster, name, namespace).list_runs(limit=RECENT_RUNS, timeout=10)
    except (EngineError, ClusterError) as exc:
        return (), str(exc)
    last: dict[str, dict[str, Any]] = {}
    for run in runs:
        last.setdefault(run.get("trigger", ""), run)
    return tuple(last.values()), ""


def _policy_info(policy: Mapping) -> PolicyInfo:
    admits = []
    for rule in policy.get("spec", {}).get("ingress") or []:
        ports = ", ".join(f"{p.get('protocol', 'TCP')} {p.get('port', 'any port')}" for p in rule.get("ports") or [])
        on = f" on {ports}" if ports else " on every port"
        for peer in rule.get("from") or [{}]:
            admits.append(_describe_peer(peer) + on)
    return PolicyInfo(policy["metadata"]["name"], tuple(admits))


def _describe_peer(peer: Mapping) -> str:
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        return block.get("cidr", "?") + (f" except {', '.join(block['except'])}" if block.get("except") else "")
    pods = peer.get("podSelector")
    namespaces = peer.get("namespaceSelector")
    if namespaces is None:
        return f"pods of this namespace {_labelled(pods)}" if pods is not None else "anyone"
    where = f"in namespaces {_labelled(namespaces)}"
    return f"pods {_labelled(pods)} {where}" if pods is not None else f"every pod {where}"


def _labelled(selector: Mapping) -> str:
    terms = [f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items()]
    terms += [f"{e.get('key')} {e.get('operator')} {','.join(e.get('values') or [])}".strip()
              for e in selector.get("matchExpressions") or []]  # fmt: skip
    return f"labelled {', '.join(terms)}" if terms else "of any label"


def _pod_info(pod: Mapping) -> PodInfo:
    status = pod.get("status") or {}
    restarts = sum(c.get("restartCount", 0) for c in status.get("containerStatuses") or [])
    reason = pod_not_ready_reason(pod)
    return PodInfo(
        name=pod["metadata"]["name"],
        phase=status.get("phase", "Unknown"),
        ready=not reason,
        restarts=restarts,
        node=pod.get("spec", {}).get("nodeName", ""),
        reason=reason,
    )


def _cron_info(job: Mapping) -> CronInfo:
    spec = job.get("spec") or {}
    status = job.get("status") or {}
    return CronInfo(
        name=job["metadata"]["name"],
        schedule=spec.get("schedule", ""),
        suspended=bool(spec.get("suspend")),
        last_schedule=status.get("lastScheduleTime", ""),
        active=len(status.get("active") or []),
    )


def _event_time(event: Mapping) -> str:
    return (
        event.get("lastTimestamp")
        or event.get("eventTime")
        or event.get("firstTimestamp")
        or event.get("metadata", {}).get("creationTimestamp")
        or ""
    )


def _event_info(event: Mapping) -> EventInfo:
    involved = event.get("involvedObject") or {}
    return EventInfo(
        time=_event_time(event),
        type=event.get("type", ""),
        object=f"{involved.get('kind', '').lower()}/{involved.get('name', '')}",
        reason=event.get("reason", ""),
        message=(event.get("message") or "").strip(),
        count=event.get("count") or 1,
    )
