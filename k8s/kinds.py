"""The Kubernetes kinds the CLI touches, and how their REST paths are built."""

from __future__ import annotations

import dataclasses
from urllib.parse import quote


@dataclasses.dataclass(frozen=True)
class Kind:
    kind: str
    api_version: str
    plural: str
    namespaced: bool = True

    @property
    def group(self) -> str:
        return self.api_version.split("/")[0] if "/" in self.api_version else ""

    @property
    def resource(self) -> str:
        """`deployments.apps`, `secrets`: as RBAC and error messages name it."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        base = f"/api/{self.api_version}" if not self.group else f"/apis/{self.api_version}"
        if self.namespaced:
            if not namespace:
                raise ValueError(f"{self.kind} is namespaced: a namespace is needed")
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{quote(name, safe='')}"
        if subresource:
            base += f"/{subresource}"
        return base


DEPLOYMENT = Kind("Deployment", "apps/v1", "deployments")
REPLICASET = Kind("ReplicaSet", "apps/v1", "replicasets")
SERVICE = Kind("Service", "v1", "services")
SECRET = Kind("Secret", "v1", "secrets")
POD = Kind("Pod", "v1", "pods")
EVENT = Kind("Event", "v1", "events")
NAMESPACE = Kind("Namespace", "v1", "namespaces", namespaced=False)
CRONJOB = Kind("CronJob", "batch/v1", "cronjobs")
JOB = Kind("Job", "batch/v1", "jobs")
RUNTIMECLASS = Kind("RuntimeClass", "node.k8s.io/v1", "runtimeclasses", namespaced=False)
NETWORK_POLICY = Kind("NetworkPolicy", "networking.k8s.io/v1", "networkpolicies")
ENDPOINT_SLICE = Kind("EndpointSlice", "discovery.k8s.io/v1", "endpointslices")
INGRESS = Kind("Ingress", "networking.k8s.io/v1", "ingresses")
INGRESS_CLASS = Kind("IngressClass", "networking.k8s.io/v1", "ingressclasses", namespaced=False)
SELF_SUBJECT_ACCESS_REVIEW = Kind(
    "SelfSubjectAccessReview", "authorization.k8s.io/v1", "selfsubjectaccessreviews", namespaced=False
)

BY_KIND = {
    k.kind: k
    for k in (
        DEPLOYMENT, REPLICASET, SERVICE, SECRET, POD, EVENT, NAMESPACE, CRONJOB, JOB, RUNTIMECLASS, NETWORK_POLICY,
        ENDPOINT_SLICE, INGRESS, INGRESS_CLASS,
    )
}  # fmt: skip


def kind_of(obj: dict) -> Kind:
    """The Kind of a rendered manifest."""
    try:
        return BY_KIND[obj["kind"]]
    except KeyError:
        raise ValueError(f"unsupported kind {obj.get('kind')!r}") from None
