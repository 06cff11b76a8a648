"""Deploy a workflow directory: spec → compiled DAG → secrets → manifests (pure) → server-side
apply (all dry-run first) → optional rollout wait. What `pipedreamer deploy` and Bazel's
`:deploy` target call; the CLI only parses flags and prints."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

from builder.manifests import DEFAULT_CURL_IMAGE, ManifestOptions, image_reference, render_manifests
from builder.secrets_manifest import SecretData, load_secret_data
from engine.compiler import compile_dag
from engine.spec import load_spec
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


@dataclasses.dataclass(frozen=True)
class DeployPlan:
    """A workflow read, compiled and ready to render: no cluster touched yet."""

    spec: workflow_pb2.WorkflowSpec
    image: str
    secrets: SecretData | None
    options: DeployOptions

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
    """Reads and checks the workflow and its secrets; raises SpecError, CompileError, SecretsError."""
    spec = load_spec(directory).spec
    compile_dag(spec)
    image = image_reference(
        spec, image=options.image, registry=options.registry, cluster_registry=options.cluster_registry
    )
    return DeployPlan(spec, image, load_secret_data(directory), options)


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
