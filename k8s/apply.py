"""Deploy: server-side apply of a workflow's objects (all dry-run first), pruning of stale CronJobs and
Ingresses, rollout wait."""

from __future__ import annotations

import base64
import dataclasses
import re
import time
from typing import Callable, Iterable, Mapping

from k8s.names import LABEL_NAME, selector_labels, workflow_selector
from k8s import kinds
from k8s.client import FIELD_MANAGER, Cluster
from k8s.errors import ClusterError

_CONFLICT_MANAGER_RE = re.compile(r'conflict with "([^"]+)"(?: with subresource "([^"]+)")?')


@dataclasses.dataclass(frozen=True)
class AppliedObject:
    kind: str
    name: str
    namespace: str
    # created | configured | unchanged | deleted
    action: str
    resource_version: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class FieldConflict:
    field: str
    manager: str
    detail: str


def for_apply(obj: Mapping) -> dict:
    """The object as sent: a Secret's stringData as data.

    stringData is write-only: the server folds it into data, so a field
    manager can never own its entries and a key removed from `.secrets/` would
    linger. Applying `data` makes pipedreamer the owner of each key.
    """
    if obj.get("kind") != "Secret" or "stringData" not in obj:
        return dict(obj)
    sent = {k: v for k, v in obj.items() if k != "stringData"}
    sent["data"] = {key: base64.b64encode(value.encode("utf-8")).decode("ascii") for key, value in obj["stringData"].items()}
    return sent


def conflicts_of(error: ClusterError) -> list[FieldConflict]:
    """The fields another manager owns, from a 409 answer to an apply."""
    found = []
    for cause in error.details.get("causes") or []:
        if cause.get("reason") != "FieldManagerConflict":
            continue
        message = cause.get("message", "")
        match = _CONFLICT_MANAGER_RE.search(message)
        manager = match.group(1) if match else "another field manager"
        if match and match.group(2):
            manager += f" (subresource {match.group(2)})"
        found.append(FieldConflict(cause.get("field", "?"), manager, message))
    return found


def apply_object(cluster: Cluster, obj: Mapping, *, force: bool = False) -> AppliedObject:
    """Apply one object; report whether it was created, changed or already as wanted."""
    kind = kinds.kind_of(obj)
    name = obj["metadata"]["name"]
    namespace = obj["metadata"].get("namespace") or cluster.namespace
    before = cluster.get(kind, name, namespace)
    after = _apply(cluster, obj, force=force)
    rv = (after or {}).get("metadata", {}).get("resourceVersion", "")
    if before is None:
        action = "created"
    elif before.get("metadata", {}).get("resourceVersion") == rv:
        action = "unchanged"
    else:
        action = "configured"
    return AppliedObject(kind.kind, name, namespace, action, rv)


def check_objects(cluster: Cluster, objects: Iterable[Mapping], *, force: bool = False) -> None:
    """Server-side dry run of every object: each is validated, authorized and admitted, nothing is stored.

    Run before the first real apply, it keeps a refusal of a later object
    (RBAC, validation, a field conflict) from leaving the earlier ones applied.
    """
    for obj in objects:
        _apply(cluster, obj, force=force, dry_run=True)


def _apply(cluster: Cluster, obj: Mapping, *, force: bool, dry_run: bool = False) -> dict:
    """One server-side apply; a field conflict becomes an error naming the fields and their owners."""
    kind = kinds.kind_of(obj)
    name = obj["metadata"]["name"]
    namespace = obj["metadata"].get("namespace") or cluster.namespace
    try:
        return cluster.apply(kind, for_apply(obj), force=force, dry_run=dry_run)
    except ClusterError as exc:
        if exc.reason != "conflict":
            raise
        conflicts = conflicts_of(exc)
        if not conflicts:
            raise
        lines = "\n".join(f"  {c.field}: owned by {c.manager!r}" for c in conflicts)
        raise ClusterError(
            f"conflict applying {kind.kind} {name!r} in namespace {namespace!r}: "
            f"fields that {FIELD_MANAGER!r} sets are owned by another field manager:\n{lines}\n"
            "Someone changed them outside pipedreamer (kubectl edit/scale, another tool). "
            "Re-run with --force-conflicts to take them over, or remove that change.",
            reason="conflict",
            kind=kind.kind,
            name=name,
            namespace=namespace,
            conflicts=[dataclasses.asdict(c) for c in conflicts],
        ) from None


def prune_cronjobs(cluster: Cluster, workflow: str, keep: Iterable[str], namespace: str | None = None) -> list[AppliedObject]:
    """Delete this workflow's CronJobs whose trigger is gone from the spec."""
    return _prune(cluster, kinds.CRONJOB, workflow, keep, namespace)


def prune_ingresses(cluster: Cluster, workflow: str, keep: Iterable[str], namespace: str | None = None) -> list[AppliedObject]:
    """Delete this workflow's Ingress when deploy no longer renders one (no --ingress-host, no webhooks).

    A deployer who may not list Ingresses cannot have had deploy create one: nothing to prune then.
    """
    try:
        return _prune(cluster, kinds.INGRESS, workflow, keep, namespace)
    except ClusterError as exc:
        if exc.reason == "forbidden":
            return []
        raise


def _prune(cluster: Cluster, kind: kinds.Kind, workflow: str, keep: Iterable[str], namespace: str | None) -> list[AppliedObject]:
    namespace = namespace or cluster.namespace
    wanted = set(keep)
    removed = []
    for obj in cluster.list(kind, namespace, selector=workflow_selector(workflow)):
        name = obj["metadata"]["name"]
        if name in wanted or obj["metadata"].get("labels", {}).get(LABEL_NAME) != workflow:
            continue
        if cluster.delete(kind, name, namespace):
            removed.append(AppliedObject(kind.kind, name, namespace, "deleted"))
    return removed


def deploy_objects(
    cluster: Cluster,
    workflow: str,
    objects: Iterable[Mapping],
    *,
    force: bool = False,
    on_object: Callable[[AppliedObject], None] | None = None,
) -> list[AppliedObject]:
    """Dry-run every object, then apply them in order, then delete the workflow's CronJobs not among them.

    A refusal during the dry run changes nothing in the cluster.
    """
    objects = list(objects)
    check_objects(cluster, objects, force=force)
    results = []
    for obj in objects:
        result = apply_object(cluster, obj, force=force)
        results.append(result)
        if on_object:
            on_object(result)
    cron_names = [o["metadata"]["name"] for o in objects if o.get("kind") == "CronJob"]
    ingress_names = [o["metadata"]["name"] for o in objects if o.get("kind") == "Ingress"]
    namespace = objects[0]["metadata"].get("namespace") if objects else None
    pruned = prune_cronjobs(cluster, workflow, cron_names, namespace)
    if not ingress_names:
        pruned += prune_ingresses(cluster, workflow, ingress_names, namespace)
    for result in pruned:
        results.append(result)
        if on_object:
            on_object(result)
    return results


# ------------------------------------------------------------------ rollout


@dataclasses.dataclass(frozen=True)
class RolloutState:
    desired: int
    updated: int
    ready: int
    available: int
    total: int
    observed: bool
    failed_reason: str = ""
    # Why the ReplicaSet cannot create pods (quota, admission, missing RuntimeClass), if it cannot.
    replica_failure: str = ""

    @property
    def done(self) -> bool:
        return (
            self.observed
            and self.updated == self.desired
            and self.total == self.updated
            and self.available == self.desired
        )

    def describe(self) -> str:
        old = self.total - self.updated
        text = f"{self.updated} of {self.desired} updated, {self.available} of {self.desired} available"
        if old > 0:
            text += f", {old} old pending termination"
        return text


def rollout_state(deployment: Mapping) -> RolloutState:
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    generation = deployment.get("metadata", {}).get("generation", 0)
    failed = replica_failure = ""
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
            failed = condition.get("message") or "progress deadline exceeded"
        if condition.get("type") == "ReplicaFailure" and condition.get("status") == "True":
            replica_failure = condition.get("message") or condition.get("reason") or "pods cannot be created"
    return RolloutState(
        desired=spec.get("replicas", 1),
        updated=status.get("updatedReplicas", 0),
        ready=status.get("readyReplicas", 0),
        available=status.get("availableReplicas", 0),
        total=status.get("replicas", 0),
        observed=status.get("observedGeneration", 0) >= generation,
        failed_reason=failed,
        replica_failure=replica_failure,
    )


def pod_problems(cluster: Cluster, name: str, namespace: str | None = None) -> list[str]:
    """Why the workflow's pods are not ready, one line per pod."""
    selector = ",".join(f"{k}={v}" for k, v in selector_labels(name).items())
    problems = []
    for pod in cluster.list(kinds.POD, namespace, selector=selector):
        reason = pod_not_ready_reason(pod)
        if reason:
            problems.append(f"pod {pod['metadata']['name']}: {reason}")
    return problems


def pod_not_ready_reason(pod: Mapping) -> str:
    """'' for a ready pod, else the most telling reason it is not."""
    status = pod.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    if conditions.get("Ready", {}).get("status") == "True":
        return ""
    phase = status.get("phase", "Unknown")
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        waiting = state.get("waiting")
        if waiting:
            return f"{phase}, container {container.get('name')} waiting: {waiting.get('reason', '')} {waiting.get('message', '')}".strip()
        terminated = state.get("terminated")
        if terminated:
            return f"{phase}, container {container.get('name')} terminated: {terminated.get('reason', '')} (exit {terminated.get('exitCode')})"
    scheduled = conditions.get("PodScheduled")
    if scheduled and scheduled.get("status") == "False":
        return f"{phase}, not scheduled: {scheduled.get('message') or scheduled.get('reason') or 'no node'}"
    if not pod.get("spec", {}).get("nodeName"):
        return f"{phase}, not scheduled yet (is a scheduler running, and are there nodes?)"
    return f"{phase}, not ready"


def wait_for_rollout(
    cluster: Cluster,
    name: str,
    timeout: float,
    *,
    namespace: str | None = None,
    on_progress: Callable[[str], None] | None = None,
    poll: float = 1.0,
) -> RolloutState:
    """Poll the Deployment until every replica runs the new template, or raise after `timeout` s."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        deployment = cluster.get(kinds.DEPLOYMENT, name, namespace)
        if deployment is None:
            raise ClusterError(f"deployment {name!r} disappeared during the rollout", reason="not-found")
        state = rollout_state(deployment)
        text = state.describe()
        if on_progress and text != last:
            on_progress(text)
            last = text
        if state.done:
            return state
        if state.failed_reason or time.monotonic() >= deadline:
            problems = pod_problems(cluster, name, namespace)
            if state.replica_failure:
                problems.insert(0, f"pods cannot be created: {state.replica_failure}")
            why = state.failed_reason or f"not finished within {timeout:g}s"
            raise ClusterError(
                f"rollout of deployment {name!r} {why}: {text}"
                + "".join(f"\n  {p}" for p in problems)
                + f"\nsee `pipedreamer status {name} --detail`",
                reason="timeout",
                state=dataclasses.asdict(state),
                pods=problems,
            )
        time.sleep(poll)
