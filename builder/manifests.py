"""Kubernetes manifests for a workflow: pure functions of the spec, the image and options.

NetworkPolicy + Deployment + Service + Secret `{name}-secrets` + one CronJob
per cron trigger (+ an Ingress for the webhook paths when an ingress host is
given), hardened for the `restricted` Pod Security Standard and gVisor,
rendered as plain dicts (what server-side apply sends) and as multi-document
YAML.
"""

from __future__ import annotations

import dataclasses
import json
import urllib.parse
from typing import Any, Iterable, Mapping

import yaml

from builder import reference
from builder.secrets_manifest import redact_secret, render_secret, secret_checksum, secret_name
from k8s.names import (
    COMPONENT_CRON,
    COMPONENT_ENGINE,
    DEFAULT_RUNTIME_CLASS,
    ENGINE_CONTAINER,
    GRPC_PORT,
    HTTP_PORT,
    SECRET_CHECKSUM_ANNOTATION,
    TRIGGER_ANNOTATION,
    invoke_labels,
    selector_labels,
    service_url,
    workflow_labels,
)
from proto.pipedreamer.v1 import workflow_pb2

SECRETS_MOUNT = "/app/secrets"
NOBODY = 65534
# curlimages/curl names its user (curl_user, uid 100), so Kubernetes cannot
# check runAsNonRoot without a number; curl needs no files of its own, so it
# runs as nobody like the engine.
CURL_UID = NOBODY
CURL_GID = NOBODY
# Digest of the multi-arch index of curlimages/curl:8.11.1.
DEFAULT_CURL_IMAGE = (
    "curlimages/curl:8.11.1@sha256:c1fe1679c34d9784c1b0d1e5f62ac0a79fca01fb6377cdd33e90473c6f9f9a69"
)
# How long one cron-triggered run may take before curl gives up.
DEFAULT_CRON_TIMEOUT_SECONDS = 600



@dataclasses.dataclass(frozen=True)
class Resources:
    """Requests and limits for one container (Kubernetes quantity strings)."""

    cpu_request: str
    memory_request: str
    ephemeral_request: str
    cpu_limit: str
    memory_limit: str
    ephemeral_limit: str

    def render(self) -> dict:
        return {
            "requests": {
                "cpu": self.cpu_request,
                "memory": self.memory_request,
                "ephemeral-storage": self.ephemeral_request,
            },
            "limits": {
                "cpu": self.cpu_limit,
                "memory": self.memory_limit,
                "ephemeral-storage": self.ephemeral_limit,
            },
        }


ENGINE_RESOURCES = Resources("100m", "128Mi", "64Mi", "1", "512Mi", "256Mi")
CURL_RESOURCES = Resources("10m", "16Mi", "8Mi", "100m", "32Mi", "16Mi")


@dataclasses.dataclass(frozen=True)
class ManifestOptions:
    """Everything besides the spec that shapes the manifests."""

    namespace: str
    image: str
    replicas: int = 1
    # None or "" leaves runtimeClassName out (clusters without gVisor).
    runtime_class: str | None = DEFAULT_RUNTIME_CLASS
    curl_image: str = DEFAULT_CURL_IMAGE
    resources: Resources = ENGINE_RESOURCES
    cron_resources: Resources = CURL_RESOURCES
    tmp_size: str = "64Mi"
    cron_timeout_seconds: int = DEFAULT_CRON_TIMEOUT_SECONDS
    # CIDRs the API server's service proxy (`pipedreamer run`) connects from;
    # empty leaves that rule out of the NetworkPolicy (the proxy is refused).
    apiserver_cidrs: tuple[str, ...] = ()
    # The webhook triggers' Ingress: rendered when a host is given. The NetworkPolicy
    # then admits the ingress controller's pods (its namespace, narrowed by pod labels).
    ingress: IngressOptions | None = None


@dataclasses.dataclass(frozen=True)
class IngressOptions:
    """Where the webhook paths are exposed, and who the ingress controller is."""

    host: str
    # The namespace the ingress controller's pods run in (what the NetworkPolicy admits).
    controller_namespace: str
    # Labels that pick the controller's pods in that namespace; empty: every pod there.
    controller_labels: tuple[tuple[str, str], ...] = ()
    ingress_class: str = ""
    tls_secret: str = ""


# --------------------------------------------------------------------- names


# deploy/zot's NodePort: every node's containerd pulls from localhost:30500
# (plain HTTP is allowed for localhost), so it is the registry a cluster set up
# with deploy/ has without further flags.
DEFAULT_CLUSTER_REGISTRY = "localhost:30500"


def image_reference(
    spec: workflow_pb2.WorkflowSpec,
    *,
    image: str | None = None,
    registry: str | None = None,
    cluster_registry: str | None = None,
) -> str:
    """`--image` as given, else `{--cluster-registry or --registry}/{name}:{version}`;
    with neither, the in-cluster Zot of deploy/zot (DEFAULT_CLUSTER_REGISTRY)."""
    if image:
        return image
    prefix = (cluster_registry or registry or "").strip().rstrip("/") or DEFAULT_CLUSTER_REGISTRY
    return reference.image_reference(prefix, spec.name, spec.version)


def cronjob_names(spec: workflow_pb2.WorkflowSpec) -> list[str]:
    """`{wf}-cron` for one cron trigger, `{wf}-cron-0`, `{wf}-cron-1`, … for several."""
    count = len(cron_triggers(spec))
    if count == 1:
        return [f"{spec.name}-cron"]
    return [f"{spec.name}-cron-{i}" for i in range(count)]


def cron_triggers(spec: workflow_pb2.WorkflowSpec) -> list[workflow_pb2.Trigger]:
    return [t for t in spec.triggers if t.type == workflow_pb2.Trigger.TYPE_CRON]


# ---------------------------------------------------------- security context


def _pod_security_context(uid: int, gid: int, fs_group: int | None) -> dict:
    context: dict[str, Any] = {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": gid,
    }
    if fs_group is not None:
        context["fsGroup"] = fs_group
    context["seccompProfile"] = {"type": "RuntimeDefault"}
    return context


def _container_security_context(uid: int, gid: int) -> dict:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": gid,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _probe(path: str, period: int, failures: int) -> dict:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


# ----------------------------------------------------------------- renderers


def render_pod_template(
    spec: workflow_pb2.WorkflowSpec, options: ManifestOptions, checksum: str | None = None
) -> dict:
    """The engine pod: non-root, read-only root, no capabilities, gVisor, secrets as files."""
    annotations = {SECRET_CHECKSUM_ANNOTATION: checksum} if checksum else {}
    metadata: dict[str, Any] = {"labels": {**workflow_labels(spec, COMPONENT_ENGINE)}}
    if annotations:
        metadata["annotations"] = annotations
    pod_spec: dict[str, Any] = {}
    if options.runtime_class:
        pod_spec["runtimeClassName"] = options.runtime_class
    if options.replicas > 1:
        # Spread replicas over nodes when the cluster has room (soft: never blocks scheduling).
        pod_spec["affinity"] = {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "labelSelector": {"matchLabels": selector_labels(spec.name)},
                            "topologyKey": "kubernetes.io/hostname",
                        },
                    }
                ]
            }
        }
    pod_spec.update(
        {
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": _pod_security_context(NOBODY, NOBODY, NOBODY),
            "terminationGracePeriodSeconds": 30,
            "containers": [
                {
                    "name": ENGINE_CONTAINER,
                    "image": options.image,
                    # Tags can be pushed again; every new pod asks the registry (a cheap HEAD).
                    "imagePullPolicy": "Always",
                    "ports": [
                        {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
                        {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
                    ],
                    # gVisor and a cold Python start can take a while; the
                    # startup probe keeps liveness from killing a slow start.
                    "startupProbe": _probe("/healthz", period=2, failures=30),
                    "livenessProbe": _probe("/healthz", period=10, failures=3),
                    "readinessProbe": _probe("/readyz", period=5, failures=3),
                    "resources": options.resources.render(),
                    "securityContext": _container_security_context(NOBODY, NOBODY),
                    "volumeMounts": [
                        {"name": "secrets", "mountPath": SECRETS_MOUNT, "readOnly": True},
                        {"name": "tmp", "mountPath": "/tmp"},
                    ],
                }
            ],
            "volumes": [
                {
                    "name": "secrets",
                    "secret": {
                        "secretName": secret_name(spec.name),
                        "optional": True,
                        # Owner root, group fsGroup (65534): readable by the engine only.
                        "defaultMode": 0o440,
                    },
                },
                {"name": "tmp", "emptyDir": {"sizeLimit": options.tmp_size}},
            ],
        }
    )
    return {"metadata": metadata, "spec": pod_spec}


def render_deployment(
    spec: workflow_pb2.WorkflowSpec, options: ManifestOptions, checksum: str | None = None
) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": spec.name,
            "namespace": options.namespace,
            "labels": workflow_labels(spec, COMPONENT_ENGINE),
        },
        "spec": {
            "replicas": options.replicas,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector_labels(spec.name)},
            # Never below the desired count: a single replica keeps serving during a rollout.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": render_pod_template(spec, options, checksum),
        },
    }


def render_service(spec: workflow_pb2.WorkflowSpec, options: ManifestOptions) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": spec.name,
            "namespace": options.namespace,
            "labels": workflow_labels(spec, COMPONENT_ENGINE),
        },
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(spec.name),
            "ports": [
                {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"},
                {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"},
            ],
        },
    }


def trigger_body(trigger: workflow_pb2.Trigger) -> str:
    """What a cron job posts to /run: `{"trigger": name}` (`"cron"` for an unnamed trigger)."""
    return json.dumps({"trigger": trigger.name or "cron"})


def trigger_url(spec: workflow_pb2.WorkflowSpec, trigger: workflow_pb2.Trigger, namespace: str) -> str:
    """Where a cron job posts: /run with `?trigger=NAME`, so the run's record names its trigger."""
    return f"{service_url(spec.name, namespace)}?trigger={urllib.parse.quote(trigger.name or 'cron', safe='')}"


def render_cronjobs(spec: workflow_pb2.WorkflowSpec, options: ManifestOptions) -> list[dict]:
    """One CronJob per cron trigger, each a hardened curl pod posting to the workflow's Service."""
    labels = workflow_labels(spec, COMPONENT_CRON)
    jobs = []
    for name, trigger in zip(cronjob_names(spec), cron_triggers(spec)):
        annotations = {TRIGGER_ANNOTATION: trigger.name or "cron"}
        container = {
            "name": "trigger",
            "image": options.curl_image,
            # With a digest, Always only asks the registry whether it still has it;
            # air-gapped clusters pass --curl-image from their own mirror.
            "imagePullPolicy": "Always",
            "command": ["curl"],
            "args": [
                "--silent",
                "--show-error",
                "--fail-with-body",
                "--max-time",
                str(options.cron_timeout_seconds),
                "--request",
                "POST",
                "--header",
                "Content-Type: application/json",
                "--data",
                trigger_body(trigger),
                trigger_url(spec, trigger, options.namespace),
            ],
            "resources": options.cron_resources.render(),
            "securityContext": _container_security_context(CURL_UID, CURL_GID),
        }
        pod = {
            # The invoke label is what the workflow's NetworkPolicy admits.
            "metadata": {"labels": {**labels, **invoke_labels(spec.name)}, "annotations": dict(annotations)},
            "spec": {
                # A failed run is not retried by Kubernetes: /run is not idempotent,
                # and the engine already retries nodes. The next schedule runs again.
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "securityContext": _pod_security_context(CURL_UID, CURL_GID, None),
                "containers": [container],
            },
        }
        if options.runtime_class:
            # The trigger pod runs under the same sandbox as the engine: one
            # RuntimeClass per workflow to reason about.
            pod["spec"]["runtimeClassName"] = options.runtime_class
        schedule = {"schedule": trigger.schedule, **({"timeZone": trigger.timezone} if trigger.timezone else {})}
        jobs.append(
            {
                "apiVersion": "batch/v1",
                "kind": "CronJob",
                "metadata": {
                    "name": name,
                    "namespace": options.namespace,
                    "labels": dict(labels),
                    "annotations": dict(annotations),
                },
                "spec": {
                    **schedule,
                    "concurrencyPolicy": "Forbid",
                    "startingDeadlineSeconds": 300,
                    "successfulJobsHistoryLimit": 3,
                    "failedJobsHistoryLimit": 3,
                    "jobTemplate": {
                        "metadata": {"labels": dict(labels), "annotations": dict(annotations)},
                        "spec": {
                            "backoffLimit": 0,
                            "activeDeadlineSeconds": options.cron_timeout_seconds + 60,
                            "template": pod,
                        },
                    },
                },
            }
        )
    return jobs


def webhook_paths(spec: workflow_pb2.WorkflowSpec) -> list[str]:
    return [t.path for t in spec.triggers if t.type == workflow_pb2.Trigger.TYPE_WEBHOOK]


def render_ingress(spec: workflow_pb2.WorkflowSpec, options: ManifestOptions) -> dict | None:
    """The webhook paths, and only they (never /run, /runs or /metrics), on the ingress host; None without one."""
    ingress = options.ingress
    paths = webhook_paths(spec)
    if ingress is None or not paths:
        return None
    backend = {"service": {"name": spec.name, "port": {"name": "http"}}}
    ingress_spec: dict[str, Any] = {}
    if ingress.ingress_class:
        ingress_spec["ingressClassName"] = ingress.ingress_class
    if ingress.tls_secret:
        ingress_spec["tls"] = [{"hosts": [ingress.host], "secretName": ingress.tls_secret}]
    ingress_spec["rules"] = [
        {"host": ingress.host, "http": {"paths": [{"path": path, "pathType": "Exact", "backend": backend} for path in paths]}}
    ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": spec.name, "namespace": options.namespace, "labels": workflow_labels(spec, COMPONENT_ENGINE)},
        "spec": ingress_spec,
    }


def render_network_policy(spec: workflow_pb2.WorkflowSpec, options: ManifestOptions) -> dict:
    """Ingress to the workflow's engine pods only from its callers.

    Pods of the namespace labelled `pipedreamer.dev/invoke: NAME` (the
    CronJobs' among them) on HTTP and gRPC, and the API server's service proxy
    (`options.apiserver_cidrs`) on HTTP, the only port it proxies to. With an
    Ingress for webhooks, the ingress controller's pods on HTTP (the Ingress
    routes the webhook paths only; the policy cannot tell paths apart). Egress is
    left alone: the permission lock's --allow-net governs it. Policies add up,
    so other callers (Prometheus on /metrics) get a policy of their own.
    """
    http = {"protocol": "TCP", "port": HTTP_PORT}
    grpc = {"protocol": "TCP", "port": GRPC_PORT}
    ingress: list[dict] = [{"from": [{"podSelector": {"matchLabels": invoke_labels(spec.name)}}], "ports": [http, grpc]}]
    if options.apiserver_cidrs:
        ingress.append({"from": [{"ipBlock": {"cidr": cidr}} for cidr in options.apiserver_cidrs], "ports": [dict(http)]})
    controller = options.ingress
    if controller is not None and webhook_paths(spec):
        peer = {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": controller.controller_namespace}},
            "podSelector": {"matchLabels": dict(controller.controller_labels)} if controller.controller_labels else {},
        }
        ingress.append({"from": [peer], "ports": [dict(http)]})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": spec.name,
            "namespace": options.namespace,
            "labels": workflow_labels(spec, COMPONENT_ENGINE),
        },
        "spec": {
            "podSelector": {"matchLabels": selector_labels(spec.name)},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }


def render_manifests(
    spec: workflow_pb2.WorkflowSpec,
    options: ManifestOptions,
    secrets: Mapping[str, str] | None = None,
) -> list[dict]:
    """Every object of a deployment, in apply order: NetworkPolicy, Secret, Service, Deployment, CronJobs,
    Ingress.

    The policy comes first so that no engine pod ever runs without it; the
    Ingress last, so nothing is exposed before the engine behind it exists.
    """
    objects: list[dict] = [render_network_policy(spec, options)]
    checksum = None
    if secrets:
        objects.append(render_secret(spec.name, options.namespace, workflow_labels(spec, COMPONENT_ENGINE), secrets))
        checksum = secret_checksum(secrets, namespace=options.namespace, name=spec.name)
    objects.append(render_service(spec, options))
    objects.append(render_deployment(spec, options, checksum))
    objects.extend(render_cronjobs(spec, options))
    ingress = render_ingress(spec, options)
    if ingress is not None:
        objects.append(ingress)
    return objects


# ------------------------------------------------------------------- output


def redact_secrets(objects: Iterable[Mapping]) -> list[dict]:
    """Copies of `objects` with every Secret value replaced by `<redacted>`."""
    return [redact_secret(obj) if obj.get("kind") == "Secret" else json.loads(json.dumps(obj)) for obj in objects]


class _ManifestDumper(yaml.SafeDumper):
    """Block style; multi-line strings as literal blocks."""


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    # Literal blocks for multi-line text; cron schedules quoted, as people write them.
    style = "|" if "\n" in value else ('"' if "*" in value else None)
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ManifestDumper.add_representer(str, _str_representer)


def to_yaml(objects: Iterable[Mapping]) -> str:
    """Multi-document YAML, one `---` separated document per object, keys in render order."""
    docs = [
        yaml.dump(dict(obj), Dumper=_ManifestDumper, sort_keys=False, default_flow_style=False, width=120)
        for obj in objects
    ]
    return "---\n" + "---\n".join(docs)
