"""Deploy a workflow directory: spec → compiled DAG → secrets → manifests (pure) → server-side
apply (all dry-run first) → optional rollout wait. What `pipedreamer deploy` and Bazel's
`:deploy` target call; the CLI only parses flags and prints."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

from builder.manifests import DEFAULT_CURL_IMAGE, IngressOptions, ManifestOptions, image_reference, render_manifests, webhook_paths
from builder.secrets_manifest import SecretData, load_secret_data
from engine.compiler import compile_dag
from engine.errors import Problem
from engine.secrets import secrets_from_files
from engine.serve.signatures import NONE, key_problems, webhook_triggers
from engine.spec import SpecError, load_spec
from k8s.apiserver import WHERE as APISERVER_WHERE
from k8s.apiserver import read_apiserver_cidrs
from k8s.apply import AppliedObject, RolloutState, deploy_objects, wait_for_rollout
from k8s.client import Cluster
from k8s.names import DEFAULT_RUNTIME_CLASS
from proto.pipedreamer.v1 import workflow_pb2


@dataclasses.dataclass(frozen=True)
class DeployOptions:
    """What `deploy`'s flags choose; the defaults are the CLI's."""

    image: str | None = None  # a full reference; else {cluster_registry or registry}/{name}:{tag}
    registry: str | None = None
    cluster_registry: str | None = None
    replicas: int = 1
    runtime_class: str | None = DEFAULT_RUNTIME_CLASS
    curl_image: str = DEFAULT_CURL_IMAGE
    # Where the API server's service proxy connects from; empty: read from the cluster when applying.
    apiserver_cidrs: tuple[str, ...] = ()
    # The webhook paths' Ingress (--ingress-host …); None: not exposed outside the cluster.
    ingress: IngressOptions | None = None


@dataclasses.dataclass(frozen=True)
class DeployPlan:
    """A workflow read, compiled and ready to render: no cluster touched yet."""

    spec: workflow_pb2.WorkflowSpec
    image: str
    secrets: SecretData | None
    options: DeployOptions
    # What the deployer should know before applying (webhooks not exposed, keys not checked …).
    notes: tuple[str, ...] = ()

    def render(self, namespace: str, apiserver_cidrs: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        """The manifests, as plain dicts (pure)."""
        options = self.options
        manifest_options = ManifestOptions(
            namespace=namespace,
            image=self.image,
            replicas=options.replicas,
            runtime_class=options.runtime_class or None,
            curl_image=options.curl_image,
            apiserver_cidrs=options.apiserver_cidrs if apiserver_cidrs is None else apiserver_cidrs,
            ingress=options.ingress,
        )
        return render_manifests(self.spec, manifest_options, self.secrets.data if self.secrets else None)


@dataclasses.dataclass(frozen=True)
class DeployOutcome:
    namespace: str
    applied: tuple[AppliedObject, ...]
    apiserver_cidrs: tuple[str, ...]
    apiserver_cidrs_from: str  # "--apiserver-cidr" or where the cluster publishes them
    rollout: RolloutState | None

    @property
    def changed(self) -> bool:
        return any(a.action != "unchanged" for a in self.applied)


def plan_deploy(directory: str | Path, options: DeployOptions = DeployOptions()) -> DeployPlan:
    """Reads and checks the workflow and its secrets; raises SpecError, CompileError, SecretsError.

    A signed webhook whose key is missing from the secrets deploy would apply is a SpecError;
    with no secrets here (the Secret in the cluster stays as it is) it is a note.
    """
    loaded = load_spec(directory)
    spec = loaded.spec
    compile_dag(spec)
    image = image_reference(
        spec, image=options.image, registry=options.registry, cluster_registry=options.cluster_registry
    )
    secrets = load_secret_data(directory)
    notes = _webhook_notes(spec, loaded.file, secrets, options)
    return DeployPlan(spec, image, secrets, options, tuple(notes))


def _webhook_notes(
    spec: workflow_pb2.WorkflowSpec, file: str, secrets: SecretData | None, options: DeployOptions
) -> list[str]:
    hooks = webhook_triggers(spec)
    if options.ingress is not None and not hooks:
        raise SpecError([Problem(file, None, "triggers", "--ingress-host exposes webhook paths, and this workflow has no webhook trigger")])
    notes = []
    if any(t.signature != NONE for t in hooks):
        # Read from the Secret deploy applies, as the engine will read it from the volume.
        problems = key_problems(spec, secrets_from_files(secrets.data) if secrets is not None else {}, file)
        if problems and secrets is not None:
            raise SpecError(problems)
        if problems:
            names = ", ".join(f"secrets.webhooks.{t.name}" for t in hooks if t.signature != NONE)
            notes.append(
                f"no .secrets/ or .secrets.yaml here: the Secret already in the cluster must hold {names}, "
                "or the engine refuses to start"
            )
    if hooks and options.ingress is None:
        notes.append(
            f"webhook paths {', '.join(webhook_paths(spec))} are served on the Service only: pass --ingress-host "
            "and --ingress-namespace to expose them through an Ingress"
        )
    for hook in hooks:
        if hook.signature == NONE and options.ingress is not None:
            notes.append(f"webhook {hook.name} ({hook.path}) takes unsigned calls and the Ingress exposes it to anyone who can reach {options.ingress.host}")
    return notes


def deploy_workflow(
    cluster: Cluster,
    plan: DeployPlan,
    *,
    force: bool = False,
    wait: bool = False,
    timeout: float = 300.0,
    on_progress: Callable[[str], None] = lambda text: None,
) -> DeployOutcome:
    """Applies the plan's objects in the cluster's namespace; nothing is applied when any is refused.

    The API server's addresses (for the NetworkPolicy) are read before anything
    is applied, unless the plan names them. With `wait`, returns once the
    rollout is complete (ClusterError on timeout, naming what holds it up).
    """
    given = plan.options.apiserver_cidrs
    cidrs = given or read_apiserver_cidrs(cluster)
    applied = deploy_objects(cluster, plan.spec.name, plan.render(cluster.namespace, cidrs), force=force)
    rollout = wait_for_rollout(cluster, plan.spec.name, timeout, on_progress=on_progress) if wait else None
    return DeployOutcome(
        namespace=cluster.namespace,
        applied=tuple(applied),
        apiserver_cidrs=cidrs,
        apiserver_cidrs_from="--apiserver-cidr" if given else APISERVER_WHERE,
        rollout=rollout,
    )
