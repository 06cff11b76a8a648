"""Runs through the cluster: a cron-shaped call (what the deployed CronJob's curl sends) through the
real API server's service proxy to a real engine (`pipedreamer dev` in a network namespace), then
`pipedreamer runs` and `status --detail` finding it; async and watched runs through the proxy."""

from __future__ import annotations

import os
import json
import sys
import urllib.parse

import pytest

from k8s import kinds
from k8s.run import proxy_path
from tests.k8s_support import REPO, cli, deploy, engine_pod, make_workflow, publish_endpoint, set_pod_running
from tests.netns_host import NetnsHost, can_create_netns, wait_http
from tools.pytest import child_python


@pytest.fixture
def nightly(tmp_path):
    """examples/hello with a cron trigger `nightly`, served by a real engine in a network namespace."""
    workflow = make_workflow(tmp_path, "hello", crons=[("nightly", "0 3 * * *")])
    why = can_create_netns()
    assert not why, why
    host = NetnsHost()
    try:
        host.start(
            [*child_python.cli_command(REPO), "dev", str(workflow), "--host", host.ip, "--port", "8080", "--grpc-port", "9090",
             "--no-watch"],
            tmp_path / "engine.log",
            env={**os.environ, "PYTHONPATH": child_python.pythonpath(REPO)},
        )
        try:
            wait_http(f"http://{host.ip}:8080/readyz")
        except AssertionError:
            sys.stderr.write((tmp_path / "engine.log").read_text())
            raise
        yield workflow, host
    finally:
        host.close()


def test_a_cron_run_is_recorded_with_its_trigger_and_found_through_the_cluster(kube, admin, ns, nightly):
    workflow, host = nightly
    deploy(kube, ns, workflow, "--replicas", "0")
    admin.create(kinds.POD, engine_pod(kube, ns, workflow, "hello-engine", node="node-1"), ns)
    set_pod_running(admin, ns, "hello-engine", host.ip)
    publish_endpoint(admin, ns, "hello", "hello-engine", host.ip)

    # Exactly what the deployed CronJob's curl posts, sent through the API server's service proxy.
    job = admin.get(kinds.CRONJOB, "hello-cron", ns)
    args = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    url = urllib.parse.urlsplit(args[-1])
    assert url.path == "/run"
    response = admin.open("POST", proxy_path("hello", ns, "run"), query=urllib.parse.parse_qsl(url.query),
                          body=json.loads(args[args.index("--data") + 1]), verb="create", resource="services/proxy")  # fmt: skip
    cron_run = json.loads(response.data)
    assert response.status == 200 and cron_run["trigger"] == "nightly"

    manual = cli("run", "hello", "-n", ns, "--input", '{"name": "ada"}', "-o", "json", kubeconfig=kube.kubeconfig)
    assert manual.code == 0, manual.err

    table = cli("runs", "hello", "-n", ns, kubeconfig=kube.kubeconfig)
    assert table.code == 0, table.err
    rows = [line.split() for line in table.out.splitlines()[1:]]
    assert [row[:3] for row in rows] == [
        [manual.json()["runId"], "SUCCEEDED", "-"],
        [cron_run["runId"], "SUCCEEDED", "nightly"],
    ]
    only_cron = cli("runs", "hello", "-n", ns, "--trigger", "nightly", "-o", "json", kubeconfig=kube.kubeconfig)
    assert [r["runId"] for r in only_cron.json()["runs"]] == [cron_run["runId"]]
    one = cli("runs", "hello", cron_run["runId"], "-n", ns, "-o", "json", kubeconfig=kube.kubeconfig)
    assert one.code == 0, one.err
    assert one.json() == cron_run  # the record is the result the cron job got

    detail = cli("status", "hello", "-n", ns, "--detail", kubeconfig=kube.kubeconfig)
    assert detail.code == 0, detail.err
    lines = detail.out.splitlines()
    start = lines.index("last run of each trigger:")
    assert lines[start + 1].split() == ["TRIGGER", "RUN", "ID", "STATUS", "STARTED", "FAILING", "NODE"]
    last = {line.split()[0]: line.split() for line in lines[start + 2 : start + 4]}
    assert last["nightly"][1:3] == [cron_run["runId"], "SUCCEEDED"]
    assert last["-"][1:3] == [manual.json()["runId"], "SUCCEEDED"]

    # Async and watched through the proxy (which carries no gRPC: --watch polls the run's record).
    submitted = cli("run", "hello", "-n", ns, "--async", "-o", "json", kubeconfig=kube.kubeconfig)
    assert submitted.code == 0, submitted.err
    watched = cli("run", "hello", "-n", ns, "--watch", "--input", '{"name": "watch"}', kubeconfig=kube.kubeconfig)
    assert watched.code == 0, watched.err
    assert "  greet: SUCCEEDED in " in watched.out and "  shout: SUCCEEDED in " in watched.out and "HELLO, WATCH!" in watched.out
    missing = cli("runs", "hello", "nope", "-n", ns, kubeconfig=kube.kubeconfig)
    assert missing.code == 1 and "no run 'nope'" in missing.err
