"""`pipedreamer deploy` against a real kube-apiserver: apply, no-op, update, prune, conflicts, PSS.

The cluster is tests/kube_cluster.py (etcd + kube-apiserver + controller
manager, no scheduler, no kubelet).
"""

from __future__ import annotations

import base64
import copy
import json
import threading

import pytest
import yaml

from k8s.names import SECRET_CHECKSUM_ANNOTATION
from k8s import kinds
from k8s.client import FIELD_MANAGER
from tests.k8s_support import REGISTRY, cli, grant_user, make_workflow, merge_patch
from tests.kube_cluster import NOACCESS_USER
from tests.support import wait_for


def deploy(kube, ns, directory, *extra):
    """The CLI's result, success or not (k8s_support.deploy asserts success)."""
    return cli("deploy", str(directory), "-n", ns, "--registry", REGISTRY, *extra, kubeconfig=kube.kubeconfig)


def objects_of(admin, ns, name):
    return {
        "deployment": admin.get(kinds.DEPLOYMENT, name, ns),
        "service": admin.get(kinds.SERVICE, name, ns),
        "secret": admin.get(kinds.SECRET, f"{name}-secrets", ns),
        "networkpolicy": admin.get(kinds.NETWORK_POLICY, name, ns),
        "cronjobs": {c["metadata"]["name"]: c for c in admin.list(kinds.CRONJOB, ns)},
    }


def versions(objs):
    """resourceVersions, except the Deployment's, which its controller bumps on status updates:
    for it, the spec generation and the time of pipedreamer's last apply."""
    rvs = {k: objs[k]["metadata"]["resourceVersion"] for k in ("service", "secret", "networkpolicy") if objs[k]}
    rvs.update({n: c["metadata"]["resourceVersion"] for n, c in objs["cronjobs"].items()})
    deployment = objs["deployment"]["metadata"]
    rvs["deployment-generation"] = deployment["generation"]
    rvs["deployment-applied"] = [m["time"] for m in deployment["managedFields"] if m["manager"] == FIELD_MANAGER]
    return rvs


def test_deploy_creates_objects_with_our_fields(kube, admin, ns, tmp_path):
    wf = make_workflow(
        tmp_path, "flow", crons=[("daily", "0 9 * * *"), ("hourly", "0 * * * *")], secrets={"github": '{"token": "ghp_x"}'}
    )
    result = deploy(kube, ns, wf, "-o", "json")
    assert result.code == 0, result.err
    doc = result.json()
    assert doc["changed"] is True
    assert {(o["kind"], o["action"]) for o in doc["objects"]} == {
        ("NetworkPolicy", "created"), ("Secret", "created"), ("Service", "created"), ("Deployment", "created"),
        ("CronJob", "created"),
    }  # fmt: skip

    objs = objects_of(admin, ns, "flow")
    deployment = objs["deployment"]
    labels = deployment["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "pipedreamer"
    assert labels["app.kubernetes.io/name"] == "flow" and labels["app.kubernetes.io/version"] == "1.0.0"
    pod = deployment["spec"]["template"]["spec"]
    assert pod["runtimeClassName"] == "gvisor"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsUser"] == 65534 and pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    container = pod["containers"][0]
    assert container["image"] == f"{REGISTRY}/flow:1.0.0"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    checksum = deployment["spec"]["template"]["metadata"]["annotations"][SECRET_CHECKSUM_ANNOTATION]
    assert len(checksum) == 64
    managers = {(m["manager"], m["operation"]) for m in deployment["metadata"]["managedFields"]}
    assert (FIELD_MANAGER, "Apply") in managers

    ports = {p["name"]: p for p in objs["service"]["spec"]["ports"]}
    assert ports["http"]["port"] == 8080 and ports["grpc"]["port"] == 9090
    assert ports["grpc"]["appProtocol"] == "grpc"

    secret = objs["secret"]
    assert secret["type"] == "Opaque"
    assert base64.b64decode(secret["data"]["github"]).decode() == '{"token": "ghp_x"}'

    assert set(objs["cronjobs"]) == {"flow-cron-0", "flow-cron-1"}
    job = objs["cronjobs"]["flow-cron-1"]
    assert job["spec"]["concurrencyPolicy"] == "Forbid"
    args = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert json.loads(args[args.index("--data") + 1]) == {"trigger": "hourly"}
    assert args[-1] == f"http://flow.{ns}.svc.cluster.local:8080/run?trigger=hourly"


def test_second_deploy_is_a_noop(kube, admin, ns, tmp_path):
    wf = make_workflow(tmp_path, "same", crons=[("daily", "0 9 * * *")], secrets={"api": "k"})
    assert deploy(kube, ns, wf).code == 0
    before = versions(objects_of(admin, ns, "same"))
    again = deploy(kube, ns, wf)
    assert again.code == 0, again.err
    assert "no changes" in again.out
    assert again.out.count(" unchanged") == 5
    assert versions(objects_of(admin, ns, "same")) == before


def test_changed_spec_updates_prunes_cronjobs_and_secret_keys(kube, admin, ns, tmp_path):
    wf = make_workflow(tmp_path, "evolve", crons=[("a", "0 1 * * *"), ("b", "0 2 * * *")], secrets={"one": "1", "two": "2"})
    assert deploy(kube, ns, wf).code == 0
    first = objects_of(admin, ns, "evolve")
    old_checksum = first["deployment"]["spec"]["template"]["metadata"]["annotations"][SECRET_CHECKSUM_ANNOTATION]

    wf = make_workflow(tmp_path, "evolve", version="1.1.0", crons=[("a", "30 1 * * *")], secrets={"one": "uno"})
    result = deploy(kube, ns, wf, "-o", "json")
    assert result.code == 0, result.err
    actions = {(o["kind"], o["name"]): o["action"] for o in result.json()["objects"]}
    assert actions[("Deployment", "evolve")] == "configured"
    assert actions[("CronJob", "evolve-cron")] == "created"
    assert actions[("CronJob", "evolve-cron-0")] == "deleted"
    assert actions[("CronJob", "evolve-cron-1")] == "deleted"

    now = objects_of(admin, ns, "evolve")
    container = now["deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"{REGISTRY}/evolve:1.1.0"
    assert now["deployment"]["metadata"]["labels"]["app.kubernetes.io/version"] == "1.1.0"
    assert set(now["cronjobs"]) == {"evolve-cron"}
    assert now["cronjobs"]["evolve-cron"]["spec"]["schedule"] == "30 1 * * *"
    assert set(now["secret"]["data"]) == {"one"}, "a key removed from .secrets/ leaves the Secret"
    assert base64.b64decode(now["secret"]["data"]["one"]).decode() == "uno"
    new_checksum = now["deployment"]["spec"]["template"]["metadata"]["annotations"][SECRET_CHECKSUM_ANNOTATION]
    assert new_checksum != old_checksum, "a changed secret changes the pod template: pods roll"


def test_prune_leaves_other_workflows_cronjobs(kube, admin, ns, tmp_path):
    assert deploy(kube, ns, make_workflow(tmp_path, "keep", crons=[("k", "0 1 * * *")])).code == 0
    assert deploy(kube, ns, make_workflow(tmp_path, "keep-two", crons=[("k", "0 1 * * *")])).code == 0
    assert deploy(kube, ns, make_workflow(tmp_path, "keep-two")).code == 0
    names = {c["metadata"]["name"] for c in admin.list(kinds.CRONJOB, ns)}
    assert names == {"keep-cron"}


def test_conflicting_field_owner_is_reported(kube, admin, ns, tmp_path):
    wf = make_workflow(tmp_path, "owned")
    assert deploy(kube, ns, wf).code == 0
    merge_patch(admin, kinds.DEPLOYMENT, "owned", ns, {"spec": {"replicas": 3}}, manager="kubectl-edit")

    result = deploy(kube, ns, wf)
    assert result.code == 1
    assert "Traceback" not in result.err
    assert "conflict applying Deployment 'owned'" in result.err
    assert ".spec.replicas: owned by 'kubectl-edit'" in result.err
    assert "--force-conflicts" in result.err
    assert admin.get(kinds.DEPLOYMENT, "owned", ns)["spec"]["replicas"] == 3

    forced = deploy(kube, ns, wf, "--force-conflicts")
    assert forced.code == 0, forced.err
    assert admin.get(kinds.DEPLOYMENT, "owned", ns)["spec"]["replicas"] == 1


def test_missing_namespace_is_explained(kube, tmp_path):
    result = deploy(kube, "no-such-namespace", make_workflow(tmp_path, "lost"))
    assert result.code == 1
    assert "namespace 'no-such-namespace' does not exist" in result.err
    assert "cluster check --fix" in result.err


def pod_from_template(template: dict, name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {**copy.deepcopy(template["metadata"]), "name": name},
            "spec": copy.deepcopy(template["spec"])}  # fmt: skip


def test_restricted_pod_security_admits_our_pods(kube, admin, ns, tmp_path):
    namespace = admin.get(kinds.NAMESPACE, ns)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    wf = make_workflow(tmp_path, "strict", crons=[("daily", "0 9 * * *")])
    dry = cli("deploy", str(wf), "--dry-run", "-n", ns, "--registry", REGISTRY)
    assert dry.code == 0, dry.err
    docs = {d["kind"]: d for d in yaml.safe_load_all(dry.out)}

    engine = pod_from_template(docs["Deployment"]["spec"]["template"], "strict-engine")
    created = admin.create(kinds.POD, engine, ns)
    assert created["spec"]["runtimeClassName"] == "gvisor"
    cron = pod_from_template(docs["CronJob"]["spec"]["jobTemplate"]["spec"]["template"], "strict-cron")
    admin.create(kinds.POD, cron, ns)

    # The same namespace refuses a pod that drops one of our settings: enforcement is on.
    weaker = pod_from_template(docs["Deployment"]["spec"]["template"], "strict-weaker")
    del weaker["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"]
    with pytest.raises(Exception) as info:
        admin.create(kinds.POD, weaker, ns)
    assert "violates PodSecurity \"restricted:latest\"" in str(info.value)
    assert "allowPrivilegeEscalation" in str(info.value)


def test_wait_times_out_naming_the_stuck_pod(kube, admin, ns, tmp_path):
    result = deploy(kube, ns, make_workflow(tmp_path, "stuck"), "--wait", "--timeout", "4s")
    assert result.code == 1
    assert "rollout of deployment 'stuck' not finished within 4s" in result.err
    assert "rollout: 0 of 1 updated, 0 of 1 available" in result.err
    assert "pod stuck-" in result.err and "not scheduled" in result.err


def test_wait_follows_the_rollout_to_ready(kube, admin, ns, tmp_path):
    """A stand-in kubelet (this test) binds the pod and marks it ready; the real controllers do the rest."""
    wf = make_workflow(tmp_path, "rolls")
    outcome = {}
    runner = threading.Thread(
        target=lambda: outcome.setdefault("result", deploy(kube, ns, wf, "--wait", "--timeout", "60s", "-o", "json"))
    )
    runner.start()
    selector = "app.kubernetes.io/name=rolls,app.kubernetes.io/component=engine"
    pod = wait_for("the ReplicaSet's pod", lambda: (admin.list(kinds.POD, ns, selector=selector) or [None])[0])
    name = pod["metadata"]["name"]
    admin.create(
        kinds.POD,
        {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name}, "target": {"apiVersion": "v1", "kind": "Node", "name": "node-1"}},
        ns,
        subresource="binding",
    )
    now = "2026-01-01T00:00:00Z"
    status = {
        "phase": "Running",
        "podIP": "10.1.0.5",
        "podIPs": [{"ip": "10.1.0.5"}],
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
            {"type": "Ready", "status": "True", "lastTransitionTime": now},
        ],
        "containerStatuses": [
            {"name": "engine", "ready": True, "restartCount": 0, "image": "x", "imageID": "",
             "started": True, "state": {"running": {"startedAt": now}}}  # fmt: skip
        ],
    }
    admin.request(
        "PATCH",
        kinds.POD.path(ns, name, "status"),
        query=[("fieldManager", "fake-kubelet")],
        body={"status": status},
        content_type="application/merge-patch+json",
        verb="patch",
        resource="pods/status",
    )
    runner.join(70)
    result = outcome["result"]
    assert result.code == 0, result.err
    assert result.json()["rollout"] == {"done": True, "desired": 1, "available": 1, "updated": 1}

    status_result = cli("status", "rolls", "-n", ns, "--detail", "-o", "json", kubeconfig=kube.kubeconfig)
    assert status_result.code == 0, status_result.err
    detail = status_result.json()
    assert detail["healthy"] is True
    assert detail["ready"] == 1 and detail["desired"] == 1
    assert detail["pods"][0]["name"] == name and detail["pods"][0]["ready"] is True
    assert detail["pods"][0]["node"] == "node-1"


def test_wait_explains_pods_that_cannot_be_created(kube, admin, ns, tmp_path):
    result = deploy(kube, ns, make_workflow(tmp_path, "norc"), "--runtime-class", "missing-rc", "--wait", "--timeout", "8s")
    assert result.code == 1
    assert "pods cannot be created" in result.err
    assert 'RuntimeClass "missing-rc" not found' in result.err


# ----------------------------------------------------------- network policy


def published_apiserver_addresses(admin):
    """What the API server's own endpoint reconciler wrote for default/kubernetes."""
    slices = admin.list(kinds.ENDPOINT_SLICE, "default", selector="kubernetes.io/service-name=kubernetes")
    return {a for s in slices for e in s.get("endpoints") or [] for a in e.get("addresses") or []}


def labelled(admin, ns, name):
    selector = f"app.kubernetes.io/name={name},app.kubernetes.io/managed-by=pipedreamer"
    return {
        (kind.kind, o["metadata"]["name"])
        for kind in (kinds.NETWORK_POLICY, kinds.SECRET, kinds.SERVICE, kinds.DEPLOYMENT, kinds.CRONJOB)
        for o in admin.list(kind, ns, selector=selector)
    }


def test_network_policy_admits_the_api_server_address_the_cluster_publishes(kube, admin, ns, tmp_path):
    assert kube.advertise_address, "this machine has no non-loopback IPv4 address for the API server to publish"
    assert published_apiserver_addresses(admin) == {kube.advertise_address}
    wf = make_workflow(tmp_path, "guarded", crons=[("daily", "0 9 * * *")])
    result = deploy(kube, ns, wf)
    assert result.code == 0, result.err
    assert "networkpolicy/guarded created" in result.out
    assert (
        f"NetworkPolicy 'guarded' admits the API server's service proxy from {kube.advertise_address}/32 "
        "(the EndpointSlices of Service default/kubernetes)"
    ) in result.err

    policy = admin.get(kinds.NETWORK_POLICY, "guarded", ns)  # stored: the API server validated and admitted it
    assert (FIELD_MANAGER, "Apply") in {(m["manager"], m["operation"]) for m in policy["metadata"]["managedFields"]}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    pods_rule, proxy_rule = policy["spec"]["ingress"]
    assert pods_rule["from"] == [{"podSelector": {"matchLabels": {"pipedreamer.dev/invoke": "guarded"}}}]
    assert [p["port"] for p in pods_rule["ports"]] == [8080, 9090]
    assert proxy_rule == {"from": [{"ipBlock": {"cidr": f"{kube.advertise_address}/32"}}],
                          "ports": [{"protocol": "TCP", "port": 8080}]}  # fmt: skip

    # The policy's selectors against the pod templates the API server now holds.
    selector = policy["spec"]["podSelector"]["matchLabels"]
    engine = admin.get(kinds.DEPLOYMENT, "guarded", ns)["spec"]["template"]["metadata"]["labels"]
    cron = admin.get(kinds.CRONJOB, "guarded-cron", ns)["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= engine.items() and not selector.items() <= cron.items()
    assert cron["pipedreamer.dev/invoke"] == "guarded", "the cron job's pods are callers the policy admits"

    # Admission is real: the same object with a broken CIDR is refused.
    broken = copy.deepcopy({k: policy[k] for k in ("apiVersion", "kind", "spec")})
    broken["metadata"] = {"name": "guarded-broken", "namespace": ns}
    broken["spec"]["ingress"][1]["from"][0]["ipBlock"]["cidr"] = "192.0.2.1/33"
    with pytest.raises(Exception) as refused:
        admin.create(kinds.NETWORK_POLICY, broken, ns)
    assert "is invalid" in str(refused.value) and "ipBlock.cidr" in str(refused.value)


def test_apiserver_cidr_flag_replaces_the_published_addresses(kube, admin, ns, tmp_path):
    wf = make_workflow(tmp_path, "konnectivity")
    result = deploy(kube, ns, wf, "--apiserver-cidr", "10.244.0.0/16", "--apiserver-cidr", "192.0.2.99", "-o", "json")
    assert result.code == 0, result.err
    assert result.json()["apiserver_cidrs"] == ["10.244.0.0/16", "192.0.2.99/32"]
    proxy_rule = admin.get(kinds.NETWORK_POLICY, "konnectivity", ns)["spec"]["ingress"][1]
    assert [peer["ipBlock"]["cidr"] for peer in proxy_rule["from"]] == ["10.244.0.0/16", "192.0.2.99/32"]

    back = deploy(kube, ns, wf, "-o", "json")
    assert back.code == 0, back.err
    assert {(o["kind"], o["action"]) for o in back.json()["objects"]} >= {("NetworkPolicy", "configured")}
    proxy_rule = admin.get(kinds.NETWORK_POLICY, "konnectivity", ns)["spec"]["ingress"][1]
    assert [peer["ipBlock"]["cidr"] for peer in proxy_rule["from"]] == [f"{kube.advertise_address}/32"]


# What a namespace-scoped deployer gets from a cluster admin: everything deploy
# does in its own namespace, nothing in `default`.
DEPLOYER_RULES = [
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "create", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["services", "secrets"], "verbs": ["get", "list", "create", "patch", "delete"]},
    {"apiGroups": ["batch"], "resources": ["cronjobs"], "verbs": ["get", "list", "create", "patch", "delete"]},
    {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["get", "list", "create", "patch", "delete"]},
]


def test_namespace_scoped_user_is_told_to_pass_apiserver_cidr_and_nothing_is_applied(kube, admin, ns, tmp_path):
    grant_user(admin, ns, NOACCESS_USER, DEPLOYER_RULES)
    wf = make_workflow(tmp_path, "scoped", secrets={"k": "v"})
    refused = cli("deploy", str(wf), "-n", ns, "--registry", REGISTRY, kubeconfig=kube.kubeconfig_noaccess)
    assert refused.code == 1
    assert "Traceback" not in refused.err
    assert "cannot read the API server's addresses for the workflow's NetworkPolicy" in refused.err
    assert "not allowed to list endpointslices.discovery.k8s.io in namespace 'default'" in refused.err
    assert "Pass --apiserver-cidr CIDR" in refused.err
    assert "kubectl get endpointslices -n default -l kubernetes.io/service-name=kubernetes" in refused.err
    assert labelled(admin, ns, "scoped") == set(), "nothing is applied without the policy's addresses"

    ok = cli("deploy", str(wf), "-n", ns, "--registry", REGISTRY, "--apiserver-cidr", "192.0.2.50",
             kubeconfig=kube.kubeconfig_noaccess)  # fmt: skip
    assert ok.code == 0, ok.err
    assert labelled(admin, ns, "scoped") == {
        ("NetworkPolicy", "scoped"), ("Secret", "scoped-secrets"), ("Service", "scoped"), ("Deployment", "scoped")
    }


def test_a_refused_object_leaves_nothing_half_applied(kube, admin, ns, tmp_path):
    without_cronjobs = [rule for rule in DEPLOYER_RULES if rule["apiGroups"] != ["batch"]]
    grant_user(admin, ns, NOACCESS_USER, without_cronjobs)
    wf = make_workflow(tmp_path, "partial", crons=[("daily", "0 9 * * *")], secrets={"k": "v"})
    result = cli("deploy", str(wf), "-n", ns, "--registry", REGISTRY, "--apiserver-cidr", "192.0.2.50",
                 kubeconfig=kube.kubeconfig_noaccess)  # fmt: skip
    assert result.code == 1
    assert "not allowed to patch cronjobs.batch" in result.err, result.err
    assert labelled(admin, ns, "partial") == set(), "the dry run of every object comes before the first apply"

    again = deploy(kube, ns, wf)  # an admin may: the same objects, all of them
    assert again.code == 0, again.err
    assert ("CronJob", "partial-cron") in labelled(admin, ns, "partial")
