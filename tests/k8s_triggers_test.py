"""Triggers on a cluster, against the real API server: the webhooks' Ingress and the NetworkPolicy rule
for its controller, pruned and undeployed with the rest; then `status --detail` and `cluster check`
reading the triggers of a real engine (`pipedreamer dev` in a network namespace, through the API
server's service proxy) whose durable queue lives in a real nats-server with JetStream."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import sys

import nats
import pytest
import yaml

from k8s import kinds
from k8s.run import proxy_path
from tests.k8s_support import REPO, cli, deploy, engine_pod, make_workflow, publish_endpoint, set_pod_running
from tests.netns_host import NetnsHost, can_create_netns, wait_http
from tests.serve_harness import JetStreamNatsServer
from tools.pytest import child_python

GITHUB_KEY = "cluster-hook-key-77"


def _with_triggers(workflow, triggers, config=None):
    spec = yaml.safe_load((workflow / "workflow.yaml").read_text())
    spec["triggers"] = triggers
    if config:
        spec["config"] = config
    (workflow / "workflow.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return workflow


INGRESS_FLAGS = ("--ingress-host", "hooks.example.com", "--ingress-namespace", "ingress-nginx",
                 "--ingress-pod-label", "app.kubernetes.io/name=ingress-nginx", "--ingress-class", "nginx")  # fmt: skip


def test_the_ingress_exposes_only_webhook_paths_and_goes_with_the_workflow(kube, admin, ns, tmp_path):
    workflow = _with_triggers(
        make_workflow(tmp_path, "hooked", secrets={"webhooks": json.dumps({"github": GITHUB_KEY})}),
        [{"type": "manual"}, {"type": "webhook", "path": "/hooks/github"}],
    )
    result = deploy(kube, ns, workflow, *INGRESS_FLAGS)
    assert "webhooks exposed: http://hooks.example.com/hooks/github" in result.err
    ingress = admin.get(kinds.INGRESS, "hooked", ns)
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert [(p["path"], p["pathType"]) for p in ingress["spec"]["rules"][0]["http"]["paths"]] == [("/hooks/github", "Exact")]
    policy = admin.get(kinds.NETWORK_POLICY, "hooked", ns)
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}}} in policy["spec"]["ingress"][-1]["from"]  # fmt: skip

    detail = cli("status", "hooked", "-n", ns, "--detail", kubeconfig=kube.kubeconfig)
    assert "  ingress: hooked (no address published yet: is an ingress controller running?), class nginx, exposes http://hooks.example.com/hooks/github" in detail.out
    assert "ingress-nginx" in detail.out  # the policy line naming the controller

    # Deployed again without --ingress-host: the Ingress goes, the webhook stays on the Service.
    again = deploy(kube, ns, workflow)
    assert "served on the Service only" in again.err
    assert "ingress/hooked deleted" in again.out
    assert admin.get(kinds.INGRESS, "hooked", ns) is None

    deploy(kube, ns, workflow, *INGRESS_FLAGS)
    gone = cli("undeploy", "hooked", "-n", ns, "--yes", kubeconfig=kube.kubeconfig)
    assert gone.code == 0 and "ingress/hooked deleted" in gone.out
    assert admin.get(kinds.INGRESS, "hooked", ns) is None


def test_cluster_check_asks_for_an_ingress_class_and_ingress_rights(kube, admin, ns):
    check = cli("cluster", "check", "-n", ns, "-o", "json", kubeconfig=kube.kubeconfig).json()
    checks = {c["name"]: c for c in check["checks"]}
    assert "ingresses.networking.k8s.io" not in checks["rbac"]["message"]  # admin may
    klass = {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
             "metadata": {"name": f"pd-test-{ns}", "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
             "spec": {"controller": "example.com/ingress"}}  # fmt: skip
    if checks["ingress"]["status"] == "warning":
        assert "no IngressClass" in checks["ingress"]["message"]
    admin.create(kinds.INGRESS_CLASS, klass)
    try:
        check = cli("cluster", "check", "-n", ns, "-o", "json", kubeconfig=kube.kubeconfig).json()
        ingress = {c["name"]: c for c in check["checks"]}["ingress"]
        assert ingress["status"] == "ok" and f"pd-test-{ns}" in ingress["message"] and "(default: " in ingress["message"]
    finally:
        admin.delete(kinds.INGRESS_CLASS, f"pd-test-{ns}")
    denied = cli("cluster", "check", "-n", ns, "-o", "json", kubeconfig=kube.kubeconfig_noaccess).json()
    rbac = {c["name"]: c for c in denied["checks"]}["rbac"]
    assert "create ingresses.networking.k8s.io (deploy --ingress-host, undeploy)" in rbac["message"]


@pytest.fixture
def queued(tmp_path):
    """An engine in a network namespace with a webhook and a durable queue, its JetStream on the host side of the link."""
    why = can_create_netns()
    assert not why, why
    host = NetnsHost()
    server = JetStreamNatsServer(tmp_path / "jetstream", host=host.host_ip)
    try:
        server.start()
        workflow = _with_triggers(
            make_workflow(tmp_path, "orders", secrets={
                "webhooks": json.dumps({"github": GITHUB_KEY}), "nats": json.dumps({"token": server.token}),
            }),  # fmt: skip
            [{"type": "manual"}, {"type": "webhook", "path": "/hooks/github"},
             {"type": "queue", "subject": "orders.new", "name": "orders", "durable": True}],  # fmt: skip
            config={"nats_url": server.url, "timeout": "2s"},
        )
        host.start(
            [*child_python.cli_command(REPO), "dev", str(workflow), "--host", host.ip, "--port", "8080", "--grpc-port", "9090",
             "--no-watch"],
            tmp_path / "engine.log",
            env={**os.environ, "PYTHONPATH": child_python.pythonpath(REPO)},
        )  # fmt: skip
        try:
            wait_http(f"http://{host.ip}:8080/readyz")
        except AssertionError:
            sys.stderr.write((tmp_path / "engine.log").read_text())
            raise
        yield workflow, host, server
    finally:
        host.close()
        server.close()


def test_status_and_cluster_check_report_the_stream_lag_and_dead_letters(kube, admin, ns, queued):
    workflow, host, server = queued
    deploy(kube, ns, workflow, "--replicas", "0")
    admin.create(kinds.POD, engine_pod(kube, ns, workflow, "orders-engine", node="node-1"), ns)
    set_pod_running(admin, ns, "orders-engine", host.ip)
    publish_endpoint(admin, ns, "orders", "orders-engine", host.ip)

    async def publish() -> None:
        client = await nats.connect(server.url, token=server.token)
        try:
            js = client.jetstream()
            await js.publish("orders.new", b'{"name": "ok"}')
            await js.publish("orders.new", b"[1]")  # greet fails on a list: a dead letter
            for _ in range(200):
                try:
                    if (await js.stream_info("PIPEDREAMER_ORDERS_DLQ")).state.messages == 1:
                        return
                except nats.js.errors.NotFoundError:
                    pass
                await asyncio.sleep(0.05)
            raise AssertionError("no dead letter")
        finally:
            await client.close()

    asyncio.run(publish())

    detail = cli("status", "orders", "-n", ns, "--detail", kubeconfig=kube.kubeconfig)
    assert detail.code == 0, detail.err
    lines = detail.out.splitlines()
    start = lines.index("triggers:")
    rows = {line.split()[0]: line for line in lines[start + 2 : start + 5]}
    assert "POST /hooks/github" in rows["github"] and "signed (github)" in rows["github"]
    assert "orders.new" in rows["orders"]
    assert "durable: stream PIPEDREAMER_ORDERS, 0 waiting, 0 in progress, 1 dead letter (pipedreamer.dlq.orders)" in rows["orders"]

    check = cli("cluster", "check", "-n", ns, "-o", "json", kubeconfig=kube.kubeconfig).json()
    triggers = {c["name"]: c for c in check["checks"]}["triggers"]
    assert triggers["status"] == "warning"
    assert "orders: queue orders: 1 dead letter(s) on pipedreamer.dlq.orders" in triggers["message"]

    # A GitHub-signed delivery through the API server's service proxy reaches the engine as sent
    # (the client sends a dict as json.dumps writes it: those are the bytes signed).
    payload = {"name": "hook"}
    body = json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(GITHUB_KEY.encode(), body, hashlib.sha256).hexdigest()
    response = admin.open("POST", proxy_path("orders", ns, "hooks/github"), body=payload, verb="create", resource="services/proxy",
                          headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature, "X-GitHub-Delivery": "d-9"})  # fmt: skip
    assert response.status == 200, response.data
    assert json.loads(response.data)["output"] == {"greeting": "HELLO, HOOK!"}
    refused = admin.open("POST", proxy_path("orders", ns, "hooks/github"), body=payload, verb="create", resource="services/proxy",
                         headers={"Content-Type": "application/json", "X-Hub-Signature-256": "sha256=" + "0" * 64})  # fmt: skip
    assert refused.status == 401
