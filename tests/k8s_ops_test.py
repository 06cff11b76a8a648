"""list, status, logs, run, undeploy, cluster check: against a real kube-apiserver.

`logs` reaches a stand-in kubelet (tests/kubelet_stub.py) through the API
server's pods/log; `run` reaches the real engine (`pipedreamer dev`) in a
network namespace through the API server's service proxy. The same two paths
to the workflow's built image under gVisor: tests/k8s_gvisor_test.py.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import time

import pytest
import yaml

from k8s import kinds
from tests.k8s_support import (
    REGISTRY,
    REPO,
    cli,
    deploy,
    engine_pod,
    get_or_none,
    make_workflow,
    publish_endpoint,
    set_pod_running,
)
from tests.netns_host import NetnsHost, can_create_netns, wait_http
from tools.pytest import child_python


def labelled(admin, ns, name):
    selector = f"app.kubernetes.io/name={name},app.kubernetes.io/managed-by=pipedreamer"
    return {
        (kind.kind, o["metadata"]["name"])
        for kind in (kinds.DEPLOYMENT, kinds.SERVICE, kinds.SECRET, kinds.CRONJOB, kinds.NETWORK_POLICY)
        for o in admin.list(kind, ns, selector=selector)
    }


# ------------------------------------------------------------------ list


def test_list_shows_workflows_with_version_and_readiness(kube, admin, ns, tmp_path):
    deploy(kube, ns, make_workflow(tmp_path, "alpha", version="1.2.0", crons=[("c", "0 1 * * *")]))
    deploy(kube, ns, make_workflow(tmp_path, "beta", version="0.3.1"), "--replicas", "2")
    result = cli("list", "-n", ns, "-o", "json", kubeconfig=kube.kubeconfig)
    assert result.code == 0, result.err
    rows = {r["name"]: r for r in result.json()["workflows"]}
    assert set(rows) == {"alpha", "beta"}
    assert rows["alpha"]["version"] == "1.2.0" and rows["alpha"]["desired"] == 1 and rows["alpha"]["cronjobs"] == 1
    assert rows["beta"]["version"] == "0.3.1" and rows["beta"]["desired"] == 2 and rows["beta"]["cronjobs"] == 0
    assert rows["alpha"]["ready"] == 0, "no kubelet: nothing is ready"

    text = cli("list", "-n", ns, kubeconfig=kube.kubeconfig).out
    assert text.splitlines()[0].split() == ["NAME", "VERSION", "READY", "CRON", "IMAGE"]
    assert any(line.split()[:4] == ["beta", "0.3.1", "0/2", "0"] for line in text.splitlines())
    everywhere = cli("list", "-A", kubeconfig=kube.kubeconfig).out
    assert any(line.split()[:2] == [ns, "alpha"] for line in everywhere.splitlines())


def test_list_shows_what_is_left_of_a_workflow_without_its_deployment(kube, admin, ns, tmp_path):
    deploy(kube, ns, make_workflow(tmp_path, "gamma", crons=[("c", "0 1 * * *")], secrets={"token": "t"}))
    deploy(kube, ns, make_workflow(tmp_path, "delta"))
    admin.delete(kinds.DEPLOYMENT, "gamma", ns)  # e.g. `kubectl delete deploy gamma`
    rows = {r["name"]: r for r in cli("list", "-n", ns, "-o", "json", kubeconfig=kube.kubeconfig).json()["workflows"]}
    assert rows["gamma"]["leftovers"] == ["Service", "Secret", "CronJob", "NetworkPolicy"] and rows["gamma"]["cronjobs"] == 1
    assert rows["delta"]["leftovers"] == []
    text = cli("list", "-n", ns, kubeconfig=kube.kubeconfig).out
    assert any(line.split()[:4] == ["gamma", "1.0.0", "no", "deployment"] for line in text.splitlines()), text
    assert "gamma: no Deployment, only Service, Secret, CronJob, NetworkPolicy left; remove them with `pipedreamer undeploy gamma`" in text


def test_list_empty_namespace(kube, ns):
    result = cli("list", "-n", ns, kubeconfig=kube.kubeconfig)
    assert result.code == 0 and f"no workflows deployed in namespace '{ns}'" in result.out


# ---------------------------------------------------------------- status


def test_status_reports_image_runtime_replicas_cronjobs(kube, admin, ns, tmp_path):
    deploy(kube, ns, make_workflow(tmp_path, "stat", crons=[("daily", "0 9 * * *")]))
    brief = cli("status", "stat", "-n", ns, kubeconfig=kube.kubeconfig)
    assert brief.code == 0, brief.err
    assert brief.out.splitlines()[0] == f"stat 1.0.0 in namespace {ns}: not ready"
    assert "replicas: 0/1 ready" in brief.out

    detail = cli("status", "stat", "-n", ns, "--detail", kubeconfig=kube.kubeconfig)
    assert f"image: {REGISTRY}/stat:1.0.0" in detail.out
    assert "runtime class: gvisor" in detail.out
    assert "stat-cron" in detail.out and "0 9 * * *" in detail.out
    data = cli("status", "stat", "-n", ns, "--detail", "-o", "json", kubeconfig=kube.kubeconfig).json()
    assert data["runtime_class"] == "gvisor" and data["desired"] == 1 and data["healthy"] is False
    assert [c["name"] for c in data["cronjobs"]] == ["stat-cron"]


def test_status_detail_shows_who_the_network_policy_admits_and_when_it_is_gone(kube, admin, ns, tmp_path):
    deploy(kube, ns, make_workflow(tmp_path, "fenced"))
    detail = cli("status", "fenced", "-n", ns, "--detail", kubeconfig=kube.kubeconfig)
    assert detail.code == 0, detail.err
    lines = detail.out.splitlines()
    start = lines.index("  network policy: fenced, admits:")
    assert lines[start + 1 : start + 4] == [
        "    pods of this namespace labelled pipedreamer.dev/invoke=fenced on TCP 8080, TCP 9090",
        f"    {kube.advertise_address}/32 on TCP 8080",
        "",
    ]
    data = cli("status", "fenced", "-n", ns, "--detail", "-o", "json", kubeconfig=kube.kubeconfig).json()
    assert data["network_policy"]["name"] == "fenced" and len(data["network_policy"]["admits"]) == 2

    admin.delete(kinds.NETWORK_POLICY, "fenced", ns)  # e.g. `kubectl delete networkpolicy fenced`
    gone = cli("status", "fenced", "-n", ns, "--detail", kubeconfig=kube.kubeconfig)
    assert "  network policy: none: any pod in the cluster can call the engine (redeploy to restore it)" in gone.out
    assert cli("status", "fenced", "-n", ns, "--detail", "-o", "json", kubeconfig=kube.kubeconfig).json()["network_policy"] is None


def test_status_of_a_workflow_that_is_not_deployed(kube, ns):
    result = cli("status", "ghost", "-n", ns, kubeconfig=kube.kubeconfig)
    assert result.code == 1
    assert f"workflow 'ghost' is not deployed in namespace '{ns}'" in result.err


# -------------------------------------------------------------- undeploy


def test_undeploy_removes_everything_labelled_and_nothing_else(kube, admin, ns, tmp_path):
    deploy(kube, ns, make_workflow(tmp_path, "gone", crons=[("a", "0 1 * * *"), ("b", "0 2 * * *")], secrets={"k": "v"}))
    deploy(kube, ns, make_workflow(tmp_path, "stays"))
    admin.create(kinds.SECRET, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hand-made"}, "stringData": {"a": "b"}}, ns)
    assert len(labelled(admin, ns, "gone")) == 6

    result = cli("undeploy", "gone", "-n", ns, "--yes", "-o", "json", kubeconfig=kube.kubeconfig)
    assert result.code == 0, result.err
    assert {(d["kind"], d["name"]) for d in result.json()["deleted"]} == {
        ("Deployment", "gone"), ("Service", "gone"), ("Secret", "gone-secrets"), ("CronJob", "gone-cron-0"), ("CronJob", "gone-cron-1"),
        ("NetworkPolicy", "gone"),
    }
    assert get_or_none(admin, kinds.NETWORK_POLICY, "gone", ns) is None
    assert labelled(admin, ns, "gone") == set()
    assert labelled(admin, ns, "stays") == {("Deployment", "stays"), ("Service", "stays"), ("NetworkPolicy", "stays")}
    assert get_or_none(admin, kinds.SECRET, "hand-made", ns) is not None

    again = cli("undeploy", "gone", "-n", ns, "--yes", kubeconfig=kube.kubeconfig)
    assert again.code == 1 and "nothing to undeploy" in again.err


def test_undeploy_asks_on_a_terminal(kube, admin, ns, tmp_path):
    deploy(kube, ns, make_workflow(tmp_path, "asked"))
    declined = cli("undeploy", "asked", "-n", ns, kubeconfig=kube.kubeconfig, stdin="n\n", tty=True)
    assert declined.code == 1
    assert "deployment/asked" in declined.err and "networkpolicy/asked" in declined.err
    assert "Delete these 3 objects? [y/N]" in declined.err
    assert "nothing was deleted" in declined.err
    assert len(labelled(admin, ns, "asked")) == 3
    accepted = cli("undeploy", "asked", "-n", ns, kubeconfig=kube.kubeconfig, stdin="y\n", tty=True)
    assert accepted.code == 0, accepted.err
    assert labelled(admin, ns, "asked") == set()


def test_undeploy_refuses_without_a_terminal(kube, admin, ns, tmp_path):
    deploy(kube, ns, make_workflow(tmp_path, "kept"))
    result = cli("undeploy", "kept", "-n", ns, kubeconfig=kube.kubeconfig, stdin="y\n", tty=False)
    assert result.code == 1 and "stdin is not a terminal; pass --yes" in result.err
    assert len(labelled(admin, ns, "kept")) == 3


# --------------------------------------------------------- cluster check


def test_cluster_check_passes_and_fix_creates_the_namespace(kube, admin):
    name = f"pd-fix-{int(time.time() * 1000) % 10**8}"
    before = cli("cluster", "check", "-n", name, "-o", "json", kubeconfig=kube.kubeconfig)
    assert before.code == 1
    checks = {c["name"]: c for c in before.json()["checks"]}
    assert checks["api"]["status"] == "ok" and "v1.37" in checks["api"]["message"]
    assert checks["runtimeclass"]["status"] == "ok" and "handler runsc" in checks["runtimeclass"]["message"]
    assert checks["namespace"]["status"] == "failed"
    assert checks["rbac"]["status"] == "ok" and checks["secrets"]["status"] == "ok"
    assert checks["apiserver"]["status"] == "ok"
    assert f"the API server publishes {kube.advertise_address}/32: deploy's NetworkPolicy admits" in checks["apiserver"]["message"]

    fixed = cli("cluster", "check", "--fix", "-n", name, kubeconfig=kube.kubeconfig)
    assert fixed.code == 0, fixed.out + fixed.err
    assert "FIXED" in fixed.out and "all checks passed" in fixed.out
    namespace = admin.get(kinds.NAMESPACE, name)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"

    after = cli("cluster", "check", "-n", name, "-o", "json", kubeconfig=kube.kubeconfig).json()
    assert after["passed"] is True
    assert {c["name"]: c["status"] for c in after["checks"]}["namespace"] == "ok"


# ------------------------------------------------------- forbidden / down


def test_user_without_rights_is_told_what_is_forbidden(kube, admin, ns, tmp_path):
    wf = make_workflow(tmp_path, "denied")
    deploy(kube, ns, wf)
    expectations = {
        ("deploy", str(wf), "--registry", REGISTRY, "--apiserver-cidr", "192.0.2.9"): [
            "patch networkpolicies.networking.k8s.io", "create networkpolicies.networking.k8s.io",
        ],
        ("list",): ["list deployments.apps"],
        ("status", "denied"): ["get deployments.apps"],
        ("logs", "denied"): ["list pods"],
        ("run", "denied"): ["create services/proxy"],
        ("undeploy", "denied", "--yes"): ["list cronjobs.batch"],
    }
    for args, allowed_messages in expectations.items():
        result = cli(*args, "-n", ns, kubeconfig=kube.kubeconfig_noaccess)
        assert result.code == 1, (args, result.out)
        assert "Traceback" not in result.err
        assert "error: forbidden: not allowed to " in result.err, (args, result.err)
        assert f"in namespace '{ns}'" in result.err
        assert any(f"not allowed to {m} " in result.err for m in allowed_messages), (args, result.err)
        assert 'User "noaccess"' in result.err

    check = cli("cluster", "check", "-n", ns, "-o", "json", kubeconfig=kube.kubeconfig_noaccess)
    assert check.code == 1
    checks = {c["name"]: c for c in check.json()["checks"]}
    assert checks["api"]["status"] == "ok"
    assert checks["rbac"]["status"] == "failed"
    assert "35 of 35 denied" in checks["rbac"]["message"] and "create services/proxy (run)" in checks["rbac"]["message"]
    assert "patch networkpolicies.networking.k8s.io (deploy, undeploy)" in checks["rbac"]["message"]
    assert checks["secrets"]["status"] == "failed"
    # Not fatal: deploy works with --apiserver-cidr.
    assert checks["apiserver"]["status"] == "warning"
    assert "not allowed to list endpointslices.discovery.k8s.io in namespace 'default'" in checks["apiserver"]["message"]
    assert checks["apiserver"]["remediation"] == "deploy with --apiserver-cidr CIDR (see docs/security.md)"


def test_unreachable_server_fails_fast_with_a_clear_message(kube, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = yaml.safe_load(pathlib.Path(kube.kubeconfig).read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"
    path = tmp_path / "down.kubeconfig"
    path.write_text(json.dumps(config))
    for args in (["list"], ["status", "x"], ["deploy", str(make_workflow(tmp_path, "down")), "--registry", "r"],
                 ["run", "x"], ["logs", "x"], ["undeploy", "x", "--yes"]):  # fmt: skip
        started = time.monotonic()
        result = cli(*args, kubeconfig=str(path))
        assert time.monotonic() - started < 8, args
        assert result.code == 1, args
        assert f"cannot reach the Kubernetes API server at https://127.0.0.1:{port}: connection refused" in result.err
        assert "Traceback" not in result.err
    check = cli("cluster", "check", "-o", "json", kubeconfig=str(path))
    assert check.code == 1
    assert [c["status"] for c in check.json()["checks"]] == ["failed"] + ["skipped"] * 7


# ------------------------------------------------------------------ logs


def test_logs_of_every_pod_prefixed_through_the_api_server(kube, admin, ns, tmp_path, kubelet):
    wf = make_workflow(tmp_path, "talk")
    deploy(kube, ns, wf, "--replicas", "0")
    for pod in ("talk-aaaa", "talk-bbbb"):
        admin.create(kinds.POD, engine_pod(kube, ns, wf, pod, node=kubelet.node_name), ns)
        kubelet.logs[(ns, pod, "engine")] = [f"{pod} line {i}" for i in range(1, 6)]
    kubelet.follow_more[(ns, "talk-aaaa", "engine")] = ["later 1", "later 2"]

    result = cli("logs", "talk", "-n", ns, "--tail", "2", kubeconfig=kube.kubeconfig)
    assert result.code == 0, result.err
    assert result.out.splitlines() == [
        "[talk-aaaa] talk-aaaa line 4", "[talk-aaaa] talk-aaaa line 5",
        "[talk-bbbb] talk-bbbb line 4", "[talk-bbbb] talk-bbbb line 5",
    ]  # fmt: skip
    assert any("tailLines=2" in r and "/containerLogs/" in r for r in kubelet.requests)

    data = cli("logs", "talk", "-n", ns, "-o", "json", kubeconfig=kube.kubeconfig).json()
    assert [len(p["lines"]) for p in data["pods"]] == [5, 5], "default tail 100 covers all"

    followed = cli("logs", "talk", "-n", ns, "--follow", "--tail", "1", kubeconfig=kube.kubeconfig)
    assert followed.code == 0, followed.err
    lines = followed.out.splitlines()
    assert "[talk-aaaa] later 2" in lines and "[talk-bbbb] talk-bbbb line 5" in lines
    assert lines.index("[talk-aaaa] talk-aaaa line 5") < lines.index("[talk-aaaa] later 1") < lines.index("[talk-aaaa] later 2")


def test_logs_of_a_pod_not_started_yet(kube, admin, ns, tmp_path):
    wf = make_workflow(tmp_path, "early")
    deploy(kube, ns, wf, "--replicas", "0")
    admin.create(kinds.POD, engine_pod(kube, ns, wf, "early-pod"), ns)
    result = cli("logs", "early", "-n", ns, kubeconfig=kube.kubeconfig)
    assert result.code == 0, result.err
    assert result.out.startswith("[early-pod] (no logs: ")


def test_logs_without_pods(kube, ns):
    result = cli("logs", "nothing", "-n", ns, kubeconfig=kube.kubeconfig)
    assert result.code == 1 and "no pods for workflow 'nothing'" in result.err


# ------------------------------------------------------------------- run


@pytest.fixture
def engine_host(tmp_path):
    why = can_create_netns()
    assert not why, why
    host = NetnsHost()
    try:
        host.start(
            [*child_python.cli_command(REPO), "dev", str(REPO / "examples" / "hello"), "--host", host.ip,
             "--port", "8080", "--grpc-port", "9090", "--no-watch"],
            tmp_path / "engine.log",
            env={**os.environ, "PYTHONPATH": child_python.pythonpath(REPO)},
        )  # fmt: skip
        try:
            wait_http(f"http://{host.ip}:8080/readyz")
        except AssertionError:
            sys.stderr.write((tmp_path / "engine.log").read_text())
            raise
        yield host
    finally:
        host.close()


def test_run_goes_through_the_service_proxy_to_the_engine(kube, admin, ns, tmp_path, engine_host):
    hello = REPO / "examples" / "hello"
    deploy(kube, ns, hello, "--replicas", "0")
    no_endpoint = cli("run", "hello", "-n", ns, kubeconfig=kube.kubeconfig)
    assert no_endpoint.code == 1 and "has no ready pod to run it" in no_endpoint.err

    admin.create(kinds.POD, engine_pod(kube, ns, hello, "hello-engine", node="node-1"), ns)
    set_pod_running(admin, ns, "hello-engine", engine_host.ip)
    publish_endpoint(admin, ns, "hello", "hello-engine", engine_host.ip)

    result = cli("run", "hello", "-n", ns, "--input", '{"name": "kubernetes"}', "-o", "json", kubeconfig=kube.kubeconfig)
    assert result.code == 0, result.err
    outcome = result.json()
    assert outcome["status"] == "RUN_STATUS_SUCCEEDED"
    assert outcome["workflow"] == "hello"
    assert outcome["output"] == {"greeting": "HELLO, KUBERNETES!"}

    (tmp_path / "input.json").write_text('{"name": "file"}')
    text = cli("run", "hello", "-n", ns, "--input", f"@{tmp_path / 'input.json'}", kubeconfig=kube.kubeconfig)
    assert text.code == 0, text.err
    assert ": SUCCEEDED in " in text.out.splitlines()[0]
    assert "HELLO, FILE!" in text.out


def test_run_of_a_workflow_that_is_not_deployed(kube, ns):
    result = cli("run", "ghost", "-n", ns, kubeconfig=kube.kubeconfig)
    assert result.code == 1 and "workflow 'ghost' is not deployed" in result.err


# ------------------------------------------------------------- in-cluster


def test_in_cluster_config_from_a_pods_service_account(kube, admin, ns, tmp_path, monkeypatch):
    """No kubeconfig at all: the CLI inside a pod uses its ServiceAccount token, CA and namespace."""
    from kubernetes.config import incluster_config

    import k8s.client as k8s_client

    deploy(kube, ns, make_workflow(tmp_path, "inside"))
    sa = kinds.Kind("ServiceAccount", "v1", "serviceaccounts")
    role = kinds.Kind("Role", "rbac.authorization.k8s.io/v1", "roles")
    binding = kinds.Kind("RoleBinding", "rbac.authorization.k8s.io/v1", "rolebindings")
    admin.create(sa, {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "pd-cli"}}, ns)
    admin.create(role, {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "pd-read"},
                        "rules": [{"apiGroups": ["apps", "batch", "", "networking.k8s.io"], "verbs": ["get", "list"],
                                   "resources": ["deployments", "cronjobs", "services", "secrets", "pods", "events",
                                                 "networkpolicies"]}]},
                 ns)  # fmt: skip
    admin.create(binding, {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "pd-read"},
                           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pd-read"},
                           "subjects": [{"kind": "ServiceAccount", "name": "pd-cli", "namespace": ns}]},
                 ns)  # fmt: skip
    issued = admin.request(
        "POST", f"/api/v1/namespaces/{ns}/serviceaccounts/pd-cli/token", verb="create", resource="serviceaccounts/token",
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 600}},
    )  # fmt: skip
    mount = tmp_path / "serviceaccount"  # what the kubelet mounts at /var/run/secrets/kubernetes.io/serviceaccount
    mount.mkdir()
    (mount / "token").write_text(issued["status"]["token"])
    (mount / "ca.crt").write_bytes(pathlib.Path(kube.ca_file).read_bytes())
    (mount / "namespace").write_text(ns)
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(mount / "token"))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(mount / "ca.crt"))
    monkeypatch.setattr(k8s_client, "IN_CLUSTER_NAMESPACE_FILE", str(mount / "namespace"))
    host, port = kube.server.removeprefix("https://").rsplit(":", 1)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config either

    listed = cli("list", "-o", "json")  # no --kubeconfig, no -n: the pod's namespace
    assert listed.code == 0, listed.err
    assert [w["name"] for w in listed.json()["workflows"]] == ["inside"]
    status = cli("status", "inside")
    assert status.code == 0 and status.out.startswith(f"inside 1.0.0 in namespace {ns}"), status.err
    refused = cli("undeploy", "inside", "--yes")  # the Role only reads
    assert refused.code == 1 and "forbidden" in refused.err and f"system:serviceaccount:{ns}:pd-cli" in refused.err
    assert "Traceback" not in refused.err
