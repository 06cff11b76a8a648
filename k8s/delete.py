"""Undeploy: find and delete everything deploy created for a workflow, by label."""

from __future__ import annotations

import dataclasses

from k8s.names import workflow_selector
from k8s import kinds
from k8s.client import Cluster
from k8s.errors import ClusterError

# Dependents first: nothing triggers or routes to a Deployment that is already gone.
# The NetworkPolicy last: it guards the engine pods until their Deployment is gone.
KINDS_IN_DELETE_ORDER = (
    kinds.CRONJOB, kinds.INGRESS, kinds.SERVICE, kinds.DEPLOYMENT, kinds.SECRET, kinds.NETWORK_POLICY,
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class ObjectRef:
    kind: str
    name: str
    namespace: str

    def __str__(self) -> str:
        return f"{self.kind.lower()}/{self.name}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def find_workflow_objects(cluster: Cluster, name: str, namespace: str | None = None) -> list[ObjectRef]:
    """The workflow's Deployment, Service, Secret, CronJobs, Ingress and NetworkPolicy (labelled name + managed-by)."""
    namespace = namespace or cluster.namespace
    found = []
    for kind in KINDS_IN_DELETE_ORDER:
        try:
            listed = cluster.list(kind, namespace, selector=workflow_selector(name))
        except ClusterError as exc:
            # Ingresses are the one kind a user who never exposed webhooks may not be allowed to see.
            if kind is kinds.INGRESS and exc.reason == "forbidden":
                continue
            raise
        for obj in listed:
            found.append(ObjectRef(kind.kind, obj["metadata"]["name"], namespace))
    return found


def delete_objects(cluster: Cluster, objects: list[ObjectRef]) -> list[ObjectRef]:
    """Delete each object (pods, ReplicaSets and Jobs follow by garbage collection); returns those deleted."""
    deleted = []
    for ref in objects:
        if cluster.delete(kinds.BY_KIND[ref.kind], ref.name, ref.namespace):
            deleted.append(ref)
    return deleted


def require_objects(objects: list[ObjectRef], name: str, namespace: str) -> None:
    if not objects:
        raise ClusterError(
            f"nothing to undeploy: no objects labelled {workflow_selector(name)} in namespace {namespace!r}",
            reason="not-found",
        )
