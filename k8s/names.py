"""The names, labels and ports a deployed workflow's objects carry: what `deploy`
renders (builder/manifests.py) and what the cluster operations select by (k8s/)."""

from __future__ import annotations

import re

from proto.pipedreamer.v1 import workflow_pb2

MANAGED_BY = "pipedreamer"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_VERSION = "app.kubernetes.io/version"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_PART_OF = "app.kubernetes.io/part-of"
# Engine pods and cron trigger pods carry the same name label; the component
# keeps the Service from sending traffic to a curl pod.
COMPONENT_ENGINE = "engine"
COMPONENT_CRON = "cron-trigger"
SECRET_CHECKSUM_ANNOTATION = "pipedreamer.dev/secret-checksum"
# A pod labelled `pipedreamer.dev/invoke: NAME` in the workflow's namespace may
# call the engine of workflow NAME (its NetworkPolicy admits it); the
# CronJobs' pods carry it.
INVOKE_LABEL = "pipedreamer.dev/invoke"
TRIGGER_ANNOTATION = "pipedreamer.dev/trigger"

HTTP_PORT = 8080
GRPC_PORT = 9090
ENGINE_CONTAINER = "engine"
DEFAULT_RUNTIME_CLASS = "gvisor"

_LABEL_VALUE_RE = re.compile(r"[^-A-Za-z0-9_.]")


def label_value(text: str) -> str:
    """`text` made a valid label value (≤ 63 chars of [-A-Za-z0-9_.], alphanumeric at both ends)."""
    value = _LABEL_VALUE_RE.sub("_", text)[:63]
    return value.strip("-_.")


def service_url(name: str, namespace: str) -> str:
    return f"http://{name}.{namespace}.svc.cluster.local:{HTTP_PORT}/run"


def workflow_labels(spec: workflow_pb2.WorkflowSpec, component: str | None = None) -> dict[str, str]:
    """The labels every object of a workflow carries (undeploy selects by name + managed-by)."""
    labels = {
        LABEL_NAME: spec.name,
        LABEL_VERSION: label_value(spec.version),
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_PART_OF: MANAGED_BY,
    }
    if component:
        labels[LABEL_COMPONENT] = component
    return labels


def selector_labels(name: str) -> dict[str, str]:
    """The engine pods of one workflow (Deployment and Service selector; immutable once applied)."""
    return {LABEL_NAME: name, LABEL_COMPONENT: COMPONENT_ENGINE}


def invoke_labels(name: str) -> dict[str, str]:
    """The label that lets a pod call workflow `name`'s engine."""
    return {INVOKE_LABEL: name}


def workflow_selector(name: str) -> str:
    """Label selector for every object deploy created for `name`."""
    return f"{LABEL_NAME}={name},{LABEL_MANAGED_BY}={MANAGED_BY}"


def managed_selector() -> str:
    return f"{LABEL_MANAGED_BY}={MANAGED_BY}"
