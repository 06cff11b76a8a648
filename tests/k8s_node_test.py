"""A workflow's whole life on a real node, through our CLI only.

The cluster (tests/kube_cluster.py, with a scheduler) gets one real node
(tests/kube_node.py: kubelet, containerd, runc, gVisor set up by
deploy/gvisor/install.sh, CNI bridge, kube-proxy, CoreDNS). Then:

  build --push (registry on loopback; crane checks what arrived)
  → deploy --wait (ready replicas as the kubelet reports them)
  → run through the API server's service proxy → the engine under gVisor
  → logs, and logs --follow (the container's real output, from the kubelet)
  → a changed secret, deploy again: the checksum annotation rolls the pods
  → the CronJob's one-minute schedule fires; its curl pod reaches the engine
    by its cluster DNS name and the run is in the job's log
  → undeploy --yes leaves nothing behind, on the API server nor on the node.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from k8s import kinds
from k8s.client import connect
from tests import node_images
from tests.image_support import real_base, shared_cache
from tests.k8s_support import REPO, cli, ensure_runtime_class, new_namespace
from tests.kube_cluster import KubeCluster
from tests.kube_node import KubeNode, node_cluster_options
from tests.registry_server import Registry, crane

NAME = "node-flow"
GREET = '''
import hashlib


async def run(ctx, input):
    name = (input or {}).get("name", "world")
    ctx.log.info(f"greeting {name}")
    token = ctx.secrets.get("greeting", {}).get("token", "")
    # A digest, not the secret: the engine redacts secret values from results.
    return {"greeting": f"Hello, {name}!", "secret": hashlib.sha256(token.encode()).hexdigest()[:12]}
'''
PROBE = '''
import os


async def run(ctx, input):
    with open("/proc/self/status") as f:
        status = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
    with open("/proc/self/mounts") as f:
        mounts = {line.split()[1]: line.split()[3] for line in f.read().splitlines()}
    return {"kernel": os.uname().release, "uid": os.getuid(), "gid": os.getgid(),
            "cap_eff": status["CapEff"].strip(), "no_new_privs": status["NoNewPrivs"].strip(),
            "root": mounts.get("/", ""), "tmp": mounts.get("/tmp", "")}
'''


def write_workflow(parent: Path, token: str) -> Path:
    flow = parent / NAME
    (flow / "nodes").mkdir(parents=True)
    (flow / "nodes" / "greet.py").write_text(GREET)
    (flow / "nodes" / "probe.py").write_text(PROBE)
    (flow / "workflow.yaml").write_text(textwrap.dedent(f"""\
        name: {NAME}
        version: "1.0"
        triggers:
          - type: manual
          - type: cron
            name: tick
            schedule: "* * * * *"
        nodes:
          greet:
            path: nodes/greet.py
          probe:
            path: nodes/probe.py
        edges: []
    """))
    set_secret(flow, token)
    return flow


def set_secret(flow: Path, token: str) -> None:
    (flow / ".secrets").mkdir(exist_ok=True)
    (flow / ".secrets" / "greeting").write_text(json.dumps({"token": token}))


def digest_of(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:12]


@pytest.fixture(scope="module")
def node_env(tmp_path_factory):
    """(cluster, node, registry) — a cluster with one real node, and the registry its containerd pulls from."""
    work = tmp_path_factory.mktemp("node")
    started = time.monotonic()
    registry = Registry(work / "registry", listen="0.0.0.0")
    cluster = KubeCluster.start(**node_cluster_options())
    node = None
    try:
        pause = node_images.push(node_images.pause_layout(work / "pause"), f"localhost:{registry.port}/pause:3.10")
        node = KubeNode.start(cluster, work / "node", registry_port=registry.port, sandbox_image=pause)
        print(f"\nnode {node.name} Ready in {time.monotonic() - started:.0f}s (netns {node.netns}, pods {node.pod_cidr})")
        yield cluster, node, registry
    finally:
        if node is not None:
            node.stop()
        cluster.stop()
        registry.stop()


def wait_for(what: str, check, timeout: float, diagnostics=lambda: "") -> object:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(1)
    pytest.fail(f"{what}: not within {timeout:g}s (last: {last})\n{diagnostics()}")


# The CronJob alone may take a minute to fire; the node's start is in the budget too.
@pytest.mark.timeout(600)
def test_workflow_life_on_a_real_node(node_env, tmp_path, tmp_path_factory):
    cluster, node, registry = node_env
    kubeconfig = cluster.kubeconfig
    admin = connect(kubeconfig, namespace="default")
    timings: dict[str, float] = {}

    # gVisor on the node as a user sets it up: install.sh (run twice by the
    # node: the second run changes nothing), then the RuntimeClass.
    assert "wrote" in node.install_log and "installed" in node.install_log, node.install_log
    assert "wrote" not in node.reinstall_log and "is up to date" in node.reinstall_log, node.reinstall_log
    ensure_runtime_class(admin)
    ns = new_namespace(admin)  # enforces the restricted Pod Security Standard
    flow = write_workflow(tmp_path, "first-token")

    # build --push to the registry on loopback; crane checks what arrived.
    push_registry = f"localhost:{registry.port}"
    started = time.monotonic()
    base = real_base(tmp_path_factory)
    built = cli("build", str(flow), "--base", str(base), "--push", "--registry", push_registry, "-o", "json")
    assert built.code == 0, built.err
    pushed = built.json()
    timings["build --push"] = time.monotonic() - started
    image = f"{push_registry}/{NAME}:1.0.0"
    crane("validate", "--remote", image)
    manifest = crane("manifest", image)
    assert "sha256:" + hashlib.sha256(manifest.encode()).hexdigest() == pushed["digest"], (manifest, pushed)
    assert crane("digest", image).strip() == pushed["digest"]

    curl_image = node_images.push(node_images.curl_layout(base, tmp_path / "curl", shared_cache(tmp_path_factory)),
                                  f"{push_registry}/curl:trixie")  # fmt: skip
    crane("validate", "--remote", curl_image)

    # deploy --wait: the real kubelet reports the replica ready.
    started = time.monotonic()
    deployed = cli("deploy", str(flow), "-n", ns, "--registry", push_registry, "--curl-image", curl_image,
                   "--wait", "--timeout", "120s", kubeconfig=kubeconfig)  # fmt: skip
    timings["deploy --wait"] = time.monotonic() - started
    assert deployed.code == 0, f"{deployed.err}\n{node.diagnostics()}"
    deployment = admin.get(kinds.DEPLOYMENT, NAME, ns)
    assert deployment["status"].get("readyReplicas") == 1, deployment["status"]
    (pod,) = running_pods(admin, ns)
    assert pod["spec"]["nodeName"] == node.name and pod["spec"]["runtimeClassName"] == "gvisor"
    assert pod["status"]["containerStatuses"][0]["imageID"].endswith(pushed["digest"]), pod["status"]
    first_pod = pod["metadata"]["name"]

    status = cli("status", NAME, "-n", ns, "-o", "json", kubeconfig=kubeconfig)
    assert status.code == 0, status.err

    # run: CLI → API server service proxy → the engine in the pod, under gVisor.
    started = time.monotonic()
    ran = cli("run", NAME, "-n", ns, "--input", '{"name": "node"}', "-o", "json", kubeconfig=kubeconfig)
    timings["run"] = time.monotonic() - started
    assert ran.code == 0, f"{ran.err}\n{node.diagnostics()}"
    result = ran.json()
    assert result["status"] == "RUN_STATUS_SUCCEEDED", result
    assert result["output"]["greet"] == {"greeting": "Hello, node!", "secret": digest_of("first-token")}
    seen = result["output"]["probe"]

    assert seen["kernel"] != platform.release(), f"the engine saw the host's kernel {platform.release()}: not gVisor"
    assert (seen["uid"], seen["gid"]) == (65534, 65534) and int(seen["cap_eff"], 16) == 0, seen
    assert seen["no_new_privs"] == "1" and "ro" in seen["root"].split(","), seen
    print(f"\nkernel inside the pod: {seen['kernel']} (host {platform.release()})")

    health = proxy_get(admin, ns, "/healthz?verbose")
    layers = {name: layer["active"] for name, layer in health["permission_lock"]["layers"].items()}
    assert layers["seccomp"] and layers["audit_hook"], health
    assert not layers["landlock"], health  # gVisor has no Landlock; the engine says so
    runsc_state = node.runsc_containers()
    assert runsc_state, f"runsc knows no container on the node\n{node.diagnostics()}"

    # logs: the container's real output, as the kubelet serves it.
    logs = cli("logs", NAME, "-n", ns, "--tail", "100", kubeconfig=kubeconfig)
    assert logs.code == 0, logs.err
    assert any("greeting node" in line and result["runId"] in line for line in logs.out.splitlines()), logs.out
    assert "permission lock: " in logs.out, logs.out

    # logs --follow: a run started while following shows up.
    follow = subprocess.Popen([str(REPO / "pipedreamer"), "logs", NAME, "-n", ns, "--follow", "--tail", "1",
                               "--kubeconfig", kubeconfig], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(follow.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        time.sleep(3)  # the follow request reaches the kubelet
        again = cli("run", NAME, "-n", ns, "--input", '{"name": "follower"}', "-o", "json", kubeconfig=kubeconfig)
        assert again.code == 0, again.err
        wait_for("logs --follow shows the new run", lambda: any("greeting follower" in line for line in lines), 30,
                 lambda: "".join(lines) + follow.stderr.read() if follow.poll() is not None else "".join(lines))
    finally:
        follow.terminate()
        follow.wait(10)

    # A changed secret: deploy again, and the checksum annotation rolls the pod.
    set_secret(flow, "second-token")
    started = time.monotonic()
    redeployed = cli("deploy", str(flow), "-n", ns, "--registry", push_registry, "--curl-image", curl_image,
                     "--wait", "--timeout", "120s", kubeconfig=kubeconfig)  # fmt: skip
    timings["rollout"] = time.monotonic() - started
    assert redeployed.code == 0, f"{redeployed.err}\n{node.diagnostics()}"
    wait_for("the old pod is gone", lambda: [p["metadata"]["name"] for p in running_pods(admin, ns)] != [first_pod]
             and len(running_pods(admin, ns)) == 1, 120)  # fmt: skip
    ran = cli("run", NAME, "-n", ns, "--input", '{"name": "again"}', "-o", "json", kubeconfig=kubeconfig)
    assert ran.code == 0, ran.err
    assert ran.json()["output"]["greet"]["secret"] == digest_of("second-token"), ran.out

    # The CronJob fires on its one-minute schedule; its curl pod reaches the engine
    # by name (CoreDNS, then kube-proxy's ClusterIP) and prints the result.
    started = time.monotonic()
    job = wait_for("a CronJob run succeeded", lambda: succeeded_job(admin, ns), 150,
                   lambda: json.dumps([j.get("status") for j in admin.list(kinds.JOB, ns)]) + node.diagnostics())
    timings["cron (from the test's start of waiting)"] = time.monotonic() - started
    (job_pod,) = [p for p in admin.list(kinds.POD, ns) if p["metadata"]["labels"].get("job-name") == job]
    assert job_pod["spec"]["runtimeClassName"] == "gvisor"
    outcome = admin.request("GET", kinds.POD.path(ns, job_pod["metadata"]["name"], "log"), verb="get",
                            resource="pods/log")  # fmt: skip
    outcome = json.loads(outcome) if isinstance(outcome, str) else outcome
    # curl printed the engine's answer to the CronJob's POST of {"trigger": "tick"}.
    assert outcome["status"] == "RUN_STATUS_SUCCEEDED", outcome
    assert outcome["output"]["greet"]["greeting"] == "Hello, world!", outcome

    # undeploy --yes leaves nothing behind.
    undeployed = cli("undeploy", NAME, "-n", ns, "--yes", kubeconfig=kubeconfig)
    assert undeployed.code == 0, undeployed.err
    wait_for("every pod of the workflow is gone", lambda: not admin.list(kinds.POD, ns), 120)
    for kind in (kinds.DEPLOYMENT, kinds.SERVICE, kinds.SECRET, kinds.CRONJOB, kinds.JOB, kinds.NETWORK_POLICY):
        left = [o["metadata"]["name"] for o in admin.list(kind, ns) if not o["metadata"]["name"].startswith("default")]
        assert not left, f"{kind.kind} left: {left}"
    wait_for("the node runs no container of the workflow", lambda: not node.runsc_containers(), 60, node.diagnostics)
    print("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))


def running_pods(admin, ns) -> list[dict]:
    return [p for p in admin.list(kinds.POD, ns)
            if p["metadata"]["labels"].get("app.kubernetes.io/name") == NAME
            and p["metadata"]["labels"].get("job-name") is None
            and p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]  # fmt: skip


def succeeded_job(admin, ns) -> str:
    for job in admin.list(kinds.JOB, ns):
        if job.get("status", {}).get("succeeded"):
            return job["metadata"]["name"]
    return ""


def proxy_get(admin, ns, path: str) -> dict:
    body = admin.request("GET", f"/api/v1/namespaces/{ns}/services/{NAME}:8080/proxy{path}", verb="get",
                         resource="services/proxy")  # fmt: skip
    return json.loads(body) if isinstance(body, str) else body


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-s"]))
