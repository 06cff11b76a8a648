"""`cluster check`: is this cluster ready for pipedreamer, and may we do what the CLI does?

Checks: the API answers (and its version), RuntimeClass `gvisor` (a warning
when missing), the namespace (created with `fix`), RBAC for every verb and
resource the CLI uses (SelfSubjectAccessReview), a real read of Secrets, the
API server addresses deploy's NetworkPolicy admits (a warning when they
cannot be read: deploy then needs --apiserver-cidr), an IngressClass for the
webhooks' Ingress, and what the deployed workflows' triggers need, as their
engines report it (NATS connected, durable queues' streams present, dead
letters waiting).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from k8s.names import DEFAULT_RUNTIME_CLASS, MANAGED_BY
from k8s import kinds
from k8s.apiserver import read_apiserver_cidrs
from k8s.client import Cluster
from k8s.errors import ClusterError

OK = "ok"
WARNING = "warning"
FAILED = "failed"
FIXED = "fixed"
SKIPPED = "skipped"


@dataclasses.dataclass(frozen=True)
class Access:
    """One thing the CLI does: `verb` on `resource` (with `group`, `subresource`) and which command."""

    verb: str
    resource: str
    group: str = ""
    subresource: str = ""
    used_by: str = ""

    def __str__(self) -> str:
        res = self.resource + (f".{self.group}" if self.group else "")
        if self.subresource:
            res += f"/{self.subresource}"
        return f"{self.verb} {res}"


def _crud(resource: str, group: str = "", used_by: str = "deploy, undeploy") -> list[Access]:
    # Server-side apply: get (to report changes), create (first apply), patch (apply), delete.
    return [Access(v, resource, group, "", used_by) for v in ("get", "list", "create", "patch", "delete")]


# Every namespaced request the CLI makes, by the command that makes it.
REQUIRED_ACCESS: tuple[Access, ...] = (
    *_crud("deployments", "apps"),
    *_crud("services"),
    *_crud("secrets"),
    *_crud("cronjobs", "batch"),
    *_crud("networkpolicies", "networking.k8s.io"),
    *_crud("ingresses", "networking.k8s.io", used_by="deploy --ingress-host, undeploy"),
    Access("list", "pods", used_by="status, logs"),
    Access("get", "pods", "", "log", used_by="logs"),
    Access("list", "replicasets", "apps", used_by="status --detail"),
    Access("list", "events", used_by="status --detail"),
    Access("create", "services", "", "proxy", used_by="run"),
)


@dataclasses.dataclass(frozen=True)
class CheckResult:
    name: str
    status: str
    message: str
    remediation: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class PreflightReport:
    server: str
    namespace: str
    checks: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        return all(c.status != FAILED for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "namespace": self.namespace,
            "passed": self.passed,
            "checks": [c.to_dict() for c in self.checks],
        }


def check_api(cluster: Cluster) -> CheckResult:
    version = cluster.server_version()
    return CheckResult("api", OK, f"Kubernetes {version.get('gitVersion', '?')} at {cluster.server}")


def check_runtime_class(cluster: Cluster, name: str = DEFAULT_RUNTIME_CLASS) -> CheckResult:
    remediation = "on each node: sudo bash deploy/gvisor/install.sh; then: kubectl apply -f deploy/gvisor/runtimeclass.yaml"
    try:
        runtime_class = cluster.get(kinds.RUNTIMECLASS, name)
    except ClusterError as exc:
        if exc.reason != "forbidden":
            raise
        return CheckResult(
            "runtimeclass", WARNING, f"cannot read RuntimeClass {name!r} (forbidden); pods may not be sandboxed",
            "ask an admin whether gVisor is installed",
        )  # fmt: skip
    if runtime_class is None:
        return CheckResult(
            "runtimeclass", WARNING, f"RuntimeClass {name!r} not found: pods that request it will not start",
            remediation,
        )  # fmt: skip
    return CheckResult("runtimeclass", OK, f"RuntimeClass {name!r} present (handler {runtime_class.get('handler')})")


def check_namespace(cluster: Cluster, *, fix: bool) -> CheckResult:
    name = cluster.namespace
    try:
        namespace = cluster.get(kinds.NAMESPACE, name)
    except ClusterError as exc:
        if exc.reason != "forbidden":
            raise
        # Namespace-scoped users often cannot read Namespaces; the RBAC check below still tells.
        return CheckResult("namespace", WARNING, f"cannot read namespace {name!r} (forbidden); assuming it exists")
    if namespace is not None:
        phase = namespace.get("status", {}).get("phase", "")
        if phase == "Terminating":
            return CheckResult("namespace", FAILED, f"namespace {name!r} is being deleted", "wait, then rerun with --fix")
        return CheckResult("namespace", OK, f"namespace {name!r} exists")
    if not fix:
        return CheckResult(
            "namespace", FAILED, f"namespace {name!r} does not exist",
            f"pipedreamer cluster check --fix --namespace {name}",
        )  # fmt: skip
    cluster.create(
        kinds.NAMESPACE,
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "labels": {
                    "app.kubernetes.io/managed-by": MANAGED_BY,
                    # Our pods meet the restricted profile; make the namespace insist on it.
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                },
            },
        },
    )
    return CheckResult("namespace", FIXED, f"namespace {name!r} created (Pod Security: restricted)")


def review_access(cluster: Cluster, access: Access, namespace: str) -> tuple[bool, str]:
    """(allowed, reason) from a SelfSubjectAccessReview for `access` in `namespace`."""
    attributes = {"namespace": namespace, "verb": access.verb, "resource": access.resource, "group": access.group}
    if access.subresource:
        attributes["subresource"] = access.subresource
    review = cluster.create(
        kinds.SELF_SUBJECT_ACCESS_REVIEW,
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attributes},
        },
    )
    status = (review or {}).get("status") or {}
    return bool(status.get("allowed")), status.get("reason") or status.get("evaluationError") or ""


def check_rbac(cluster: Cluster) -> CheckResult:
    namespace = cluster.namespace
    missing = []
    for access in REQUIRED_ACCESS:
        allowed, _ = review_access(cluster, access, namespace)
        if not allowed:
            missing.append(access)
    if not missing:
        return CheckResult("rbac", OK, f"allowed all {len(REQUIRED_ACCESS)} verbs the CLI uses in namespace {namespace!r}")
    listed = ", ".join(f"{a} ({a.used_by})" for a in missing)
    return CheckResult(
        "rbac", FAILED, f"{len(missing)} of {len(REQUIRED_ACCESS)} denied in namespace {namespace!r}: {listed}",
        f"grant them with a Role and RoleBinding in {namespace!r}",
    )  # fmt: skip


def check_secrets(cluster: Cluster) -> CheckResult:
    """A real read, not just RBAC: admission webhooks or encryption setups can still refuse."""
    try:
        cluster.list(kinds.SECRET, limit=1)
    except ClusterError as exc:
        if exc.reason in ("forbidden", "not-found", "failed", "server"):
            return CheckResult("secrets", FAILED, f"cannot list secrets in {cluster.namespace!r}: {exc}",
                               "deploy writes each workflow's Secret: grant get/list/create/patch/delete on secrets")  # fmt: skip
        raise
    return CheckResult("secrets", OK, f"secrets readable in namespace {cluster.namespace!r}")


def check_apiserver(cluster: Cluster) -> CheckResult:
    """The addresses deploy writes into the NetworkPolicy for the API server's service proxy."""
    try:
        cidrs = read_apiserver_cidrs(cluster)
    except ClusterError as exc:
        if exc.reason not in ("forbidden", "not-found"):
            raise
        return CheckResult("apiserver", WARNING, str(exc), "deploy with --apiserver-cidr CIDR (see docs/security.md)")
    return CheckResult(
        "apiserver", OK,
        f"the API server publishes {', '.join(cidrs)}: deploy's NetworkPolicy admits its service proxy (run) from there",
    )  # fmt: skip


def check_ingress_class(cluster: Cluster) -> CheckResult:
    """An Ingress (deploy --ingress-host, for webhooks) needs an ingress controller, which brings its IngressClass."""
    remediation = "install an ingress controller (e.g. ingress-nginx) before deploy --ingress-host; see docs/serving.md#webhooks"
    try:
        classes = cluster.list(kinds.INGRESS_CLASS)
    except ClusterError as exc:
        if exc.reason not in ("forbidden", "not-found"):
            raise
        return CheckResult("ingress", WARNING, f"cannot list IngressClasses ({exc.reason})", remediation)
    if not classes:
        return CheckResult(
            "ingress", WARNING, "no IngressClass: an Ingress for webhook paths (deploy --ingress-host) would be served by no one",
            remediation,
        )  # fmt: skip
    default = [c["metadata"]["name"] for c in classes
               if (c["metadata"].get("annotations") or {}).get("ingressclass.kubernetes.io/is-default-class") == "true"]  # fmt: skip
    names = ", ".join(sorted(c["metadata"]["name"] for c in classes))
    return CheckResult(
        "ingress", OK, f"IngressClass {names}" + (f" (default: {', '.join(default)})" if default else " (none is the default: pass --ingress-class)")
    )


def check_triggers(cluster: Cluster) -> CheckResult:
    """Each deployed workflow's triggers as its engine serves them (GET /triggers through the service proxy)."""
    from k8s.listing import list_workflows
    from k8s.status import engine_triggers, trigger_problems

    try:
        workflows = [w for w in list_workflows(cluster) if not w.leftovers]
    except ClusterError as exc:
        if exc.reason != "forbidden":
            raise
        return CheckResult("triggers", WARNING, f"cannot list the deployed workflows: {exc}")
    if not workflows:
        return CheckResult("triggers", OK, f"no workflows deployed in namespace {cluster.namespace!r}")
    problems, counted, silent = [], 0, []
    for workflow in workflows:
        entries, error = engine_triggers(cluster, workflow.name, cluster.namespace, timeout=5)
        if error:
            silent.append(f"{workflow.name} ({error})")
            continue
        counted += len(entries)
        problems += [f"{workflow.name}: {p}" for p in (p for e in entries for p in trigger_problems(e))]
    parts = problems + ([f"not asked: {', '.join(silent)}"] if silent else [])
    if parts:
        return CheckResult(
            "triggers", WARNING, "; ".join(parts),
            "pipedreamer status NAME --detail shows each trigger; dead letters: docs/serving.md#durable-queue-triggers",
        )  # fmt: skip
    return CheckResult("triggers", OK, f"{counted} trigger(s) of {len(workflows)} workflow(s) ready: durable streams present, no dead letters")


def run_preflight(cluster: Cluster, *, fix: bool = False) -> PreflightReport:
    """Every check in order; an unreachable API server fails the first and skips the rest."""
    checks: list[CheckResult] = []
    try:
        checks.append(check_api(cluster))
    except ClusterError as exc:
        checks.append(CheckResult("api", FAILED, str(exc), "check --kubeconfig/--context and that the server is up"))
        for name in ("runtimeclass", "namespace", "rbac", "secrets", "apiserver", "ingress", "triggers"):
            checks.append(CheckResult(name, SKIPPED, "API server not reachable"))
        return PreflightReport(cluster.server, cluster.namespace, tuple(checks))
    for check in (
        check_runtime_class, lambda c: check_namespace(c, fix=fix), check_rbac, check_secrets, check_apiserver,
        check_ingress_class, check_triggers,
    ):  # fmt: skip
        try:
            checks.append(check(cluster))
        except ClusterError as exc:
            checks.append(CheckResult(_check_name(check), FAILED, str(exc)))
    return PreflightReport(cluster.server, cluster.namespace, tuple(checks))


def _check_name(check: Any) -> str:
    name = getattr(check, "__name__", "check")
    return name.removeprefix("check_") if name != "<lambda>" else "namespace"
