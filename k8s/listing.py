"""Every workflow pipedreamer deployed: its Deployments, with version and readiness,
and what is left of workflows whose Deployment is gone (a Service, Secret,
CronJob or NetworkPolicy still labelled managed-by=pipedreamer)."""

from __future__ import annotations

import dataclasses
from collections import Counter

from k8s.names import COMPONENT_ENGINE, LABEL_COMPONENT, LABEL_NAME, LABEL_VERSION, managed_selector
from k8s import kinds
from k8s.apply import rollout_state
from k8s.client import Cluster


@dataclasses.dataclass(frozen=True)
class WorkflowSummary:
    name: str
    namespace: str
    version: str
    ready: int
    desired: int
    image: str
    cronjobs: int
    created: str
    # Kinds still in the cluster when the Deployment is gone ("" for a whole workflow).
    leftovers: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def list_workflows(cluster: Cluster, *, all_namespaces: bool = False) -> list[WorkflowSummary]:
    """Deployments labelled managed-by=pipedreamer, sorted by namespace and name."""
    selector = f"{managed_selector()},{LABEL_COMPONENT}={COMPONENT_ENGINE}"
    deployments = cluster.list(kinds.DEPLOYMENT, selector=selector, all_namespaces=all_namespaces)
    crons = Counter(
        (c["metadata"].get("namespace"), c["metadata"].get("labels", {}).get(LABEL_NAME))
        for c in cluster.list(kinds.CRONJOB, selector=managed_selector(), all_namespaces=all_namespaces)
    )
    rows = []
    seen = set()
    for deployment in deployments:
        meta = deployment["metadata"]
        state = rollout_state(deployment)
        containers = deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or [{}]
        name = meta.get("labels", {}).get(LABEL_NAME, meta["name"])
        rows.append(
            WorkflowSummary(
                name=meta["name"],
                namespace=meta.get("namespace", ""),
                version=meta.get("labels", {}).get(LABEL_VERSION, ""),
                ready=state.ready,
                desired=state.desired,
                image=containers[0].get("image", ""),
                cronjobs=crons.get((meta.get("namespace"), name), 0),
                created=meta.get("creationTimestamp", ""),
            )
        )
        seen.add((meta.get("namespace", ""), name))
    rows.extend(_leftovers(cluster, seen, crons, all_namespaces))
    return sorted(rows, key=lambda r: (r.namespace, r.name))


def _leftovers(cluster: Cluster, seen: set, crons: Counter, all_namespaces: bool) -> list[WorkflowSummary]:
    """Workflows with labelled objects but no Deployment (a half-finished undeploy, a manual delete)."""
    found: dict[tuple[str, str], dict] = {}
    for kind in (kinds.SERVICE, kinds.SECRET, kinds.CRONJOB, kinds.NETWORK_POLICY):
        for obj in cluster.list(kind, selector=managed_selector(), all_namespaces=all_namespaces):
            meta = obj["metadata"]
            labels = meta.get("labels", {})
            key = (meta.get("namespace", ""), labels.get(LABEL_NAME, meta["name"]))
            if key in seen:
                continue
            entry = found.setdefault(key, {"kinds": [], "version": labels.get(LABEL_VERSION, ""), "created": ""})
            if kind.kind not in entry["kinds"]:
                entry["kinds"].append(kind.kind)
            created = meta.get("creationTimestamp", "")
            entry["created"] = min(filter(None, (entry["created"], created)), default="")
    return [
        WorkflowSummary(name=name, namespace=namespace, version=entry["version"], ready=0, desired=0, image="",
                        cronjobs=crons.get((namespace, name), 0), created=entry["created"],
                        leftovers=tuple(entry["kinds"]))  # fmt: skip
        for (namespace, name), entry in found.items()
    ]
