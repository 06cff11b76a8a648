"""Every workflow pipedreamer deployed: its Deployments, with version and readiness."""

from __future__ import annotations

import dataclasses
from collections import Counter

from builder.manifests import COMPONENT_ENGINE, LABEL_COMPONENT, LABEL_NAME, LABEL_VERSION, managed_selector
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
    return sorted(rows, key=lambda r: (r.namespace, r.name))
