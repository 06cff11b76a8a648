"""Helpers for the k8s_*_test.py integration tests: the CLI in-process, namespaces, workflows."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import pathlib
import shutil
import sys
import uuid
from typing import Any

import yaml

from cli.main import main
from k8s import kinds
from k8s.client import MERGE_PATCH, Cluster, connect
from k8s.errors import ClusterError

REPO = pathlib.Path(__file__).resolve().parent.parent
HELLO = REPO / "examples" / "hello"
# The registry the test deployments name; nothing pulls from it (there is no kubelet).
REGISTRY = "localhost:30500"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


@dataclasses.dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        import json

        return json.loads(self.out)


class _Stdin(io.StringIO):
    def __init__(self, text: str, tty: bool):
        super().__init__(text)
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def cli(*args: str, kubeconfig: str | None = None, stdin: str = "", tty: bool = False) -> CliResult:
    """Run `pipedreamer ARGS` in this process; returns exit code, stdout and stderr."""
    argv = list(args) + (["--kubeconfig", kubeconfig] if kubeconfig else [])
    out, err = io.StringIO(), io.StringIO()
    saved_stdin = sys.stdin
    sys.stdin = _Stdin(stdin, tty)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse usage errors
                code = int(exc.code or 0)
    finally:
        sys.stdin = saved_stdin
    return CliResult(code, out.getvalue(), err.getvalue())


def admin_cluster(kube) -> Cluster:
    return connect(kube.kubeconfig, namespace="default")


def new_namespace(admin: Cluster, *, restricted: bool = True, prefix: str = "pd") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    labels = dict(RESTRICTED) if restricted else {}
    admin.create(kinds.NAMESPACE, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
    return name


def ensure_runtime_class(admin: Cluster) -> dict:
    """RuntimeClass gvisor from deploy/gvisor/runtimeclass.yaml (pods naming it are refused without it)."""
    manifest = yaml.safe_load((REPO / "deploy" / "gvisor" / "runtimeclass.yaml").read_text())
    return admin.apply(kinds.RUNTIMECLASS, manifest, force=True)


def make_workflow(
    parent: pathlib.Path,
    name: str,
    *,
    version: str = "1.0.0",
    crons: list[tuple[str, str]] = (),
    secrets: dict[str, str] | None = None,
) -> pathlib.Path:
    """A copy of examples/hello named `name`, with cron triggers (name, schedule) and `.secrets/` files."""
    target = parent / name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(HELLO, target, ignore=shutil.ignore_patterns("BUILD.bazel", "__pycache__"))
    spec = yaml.safe_load((target / "workflow.yaml").read_text())
    spec["name"] = name
    spec["version"] = version
    spec["triggers"] = [{"type": "manual"}] + [{"type": "cron", "name": n, "schedule": s} for n, s in crons]
    (target / "workflow.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    if secrets:
        (target / ".secrets").mkdir()
        for key, value in secrets.items():
            (target / ".secrets" / key).write_text(value + "\n")
    return target


ROLE = kinds.Kind("Role", "rbac.authorization.k8s.io/v1", "roles")
ROLE_BINDING = kinds.Kind("RoleBinding", "rbac.authorization.k8s.io/v1", "rolebindings")


def grant_user(admin: Cluster, namespace: str, user: str, rules: list[dict], name: str = "pd-grant") -> None:
    """A Role with `rules` in `namespace`, bound to the (certificate) user `user`: real RBAC, nothing else."""
    admin.create(ROLE, {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": name},
                        "rules": rules}, namespace)  # fmt: skip
    admin.create(
        ROLE_BINDING,
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": name},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]},
        namespace,
    )  # fmt: skip


def merge_patch(admin: Cluster, kind: kinds.Kind, name: str, namespace: str, patch: dict, manager: str) -> dict:
    """An Update by another field manager (as `kubectl edit` or `kubectl scale` would do)."""
    return admin.request(
        "PATCH",
        kind.path(namespace, name),
        query=[("fieldManager", manager)],
        body=patch,
        content_type=MERGE_PATCH,
        verb="patch",
        resource=kind.resource,
    )


def get_or_none(admin: Cluster, kind: kinds.Kind, name: str, namespace: str) -> dict | None:
    try:
        return admin.get(kind, name, namespace)
    except ClusterError:
        return None


def deploy(kube, ns, directory, *extra) -> CliResult:
    """`pipedreamer deploy DIR -n NS --registry REGISTRY EXTRA…`, which must succeed."""
    result = cli("deploy", str(directory), "-n", ns, "--registry", REGISTRY, *extra, kubeconfig=kube.kubeconfig)
    assert result.code == 0, result.err
    return result


def engine_pod(kube, ns, workflow_dir, pod_name, node=None, deploy_flags=()) -> dict:
    """A Pod made from the Deployment's own pod template (as the ReplicaSet controller would)."""
    dry = cli("deploy", str(workflow_dir), "--dry-run", "-n", ns, "--registry", REGISTRY, *deploy_flags)
    template = next(d for d in yaml.safe_load_all(dry.out) if d["kind"] == "Deployment")["spec"]["template"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {**copy.deepcopy(template["metadata"]), "name": pod_name},
           "spec": copy.deepcopy(template["spec"])}  # fmt: skip
    if node:
        pod["spec"]["nodeName"] = node
    return pod


def set_pod_running(admin, ns, name, ip):
    now = "2026-01-01T00:00:00Z"
    status = {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}],
        "containerStatuses": [{"name": "engine", "ready": True, "restartCount": 0, "image": "x", "imageID": "",
                               "state": {"running": {"startedAt": now}}}],  # fmt: skip
    }
    admin.request(
        "PATCH", kinds.POD.path(ns, name, "status"), body={"status": status},
        content_type="application/merge-patch+json", verb="patch", resource="pods/status",
    )  # fmt: skip


def publish_endpoint(admin, ns, service, pod, ip):
    admin.create(
        kinds.Kind("EndpointSlice", "discovery.k8s.io/v1", "endpointslices"),
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": f"{service}-test", "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "grpc", "port": 9090, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True},
                           "targetRef": {"kind": "Pod", "name": pod, "namespace": ns}}],  # fmt: skip
        },
        ns,
    )
