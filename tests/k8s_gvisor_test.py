"""`pipedreamer run` and `logs` on a cluster, all the way to the workflow's own image under gVisor.

The test cluster has a real API server but no kubelet, so the test plays the
kubelet's part with real pieces: it builds examples/hello's image, runs it
under `runsc` shaped like the pod (tests/runsc_support.py) in a network
namespace of its own, creates the Pod from our Deployment's template with
that image's digest, marks it running at the namespace's address and
publishes it in the Service's EndpointSlice. Then:

* `pipedreamer run` goes CLI → API server service proxy → the engine inside gVisor;
* `pipedreamer logs` goes CLI → API server pods/log → the stand-in kubelet,
  which answers with the sandboxed engine's real output.

tests/k8s_node_test.py does the same (and more) on a real node; this test
stays as the quick one on the shared cluster, which keeps no kubelet.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.build import build_image
from k8s import kinds
from tests.image_support import real_base, shared_cache
from tests.k8s_support import HELLO, REGISTRY, cli, deploy, engine_pod, publish_endpoint, set_pod_running
from tests.runsc_support import RunscContainer, fresh_netns, image_tag, runsc_binary


@pytest.fixture
def sandboxed_hello(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory):
    """examples/hello's image running under runsc; yields (container, image digest)."""
    runsc = runsc_binary()
    layout = tmp_path / "image"
    built = build_image(HELLO, real_base(tmp_path_factory), layout, cache=shared_cache(tmp_path_factory))
    with fresh_netns() as netns:
        container = RunscContainer(runsc, layout, image_tag(layout), tmp_path, netns)
        try:
            container.start()
            yield container, built.digest
        finally:
            container.close()


def test_run_and_logs_reach_the_image_under_gvisor(kube, admin, ns, kubelet, sandboxed_hello):
    container, digest = sandboxed_hello
    image = f"{REGISTRY}/hello@{digest}"
    deploy(kube, ns, HELLO, "--replicas", "0", "--image", image)
    pod = engine_pod(kube, ns, HELLO, "hello-gvisor", node=kubelet.node_name, deploy_flags=("--image", image))
    assert pod["spec"]["runtimeClassName"] == "gvisor"
    assert pod["spec"]["containers"][0]["image"] == image  # the pod runs exactly the image under runsc
    admin.create(kinds.POD, pod, ns)
    set_pod_running(admin, ns, "hello-gvisor", container.netns.ip)
    publish_endpoint(admin, ns, "hello", "hello-gvisor", container.netns.ip)
    kubelet.logs[(ns, "hello-gvisor", "engine")] = lambda: container.output().splitlines()

    result = cli("run", "hello", "-n", ns, "--input", '{"name": "gvisor"}', "-o", "json", kubeconfig=kube.kubeconfig)
    assert result.code == 0, f"{result.err}\n{container.diagnostics()}"
    outcome = result.json()
    assert outcome["status"] == "RUN_STATUS_SUCCEEDED", outcome
    assert outcome["output"] == {"greeting": "HELLO, GVISOR!"}
    run_id = outcome["runId"]

    logs = cli("logs", "hello", "-n", ns, "--tail", "50", kubeconfig=kube.kubeconfig)
    assert logs.code == 0, logs.err
    lines = logs.out.splitlines()
    assert lines and all(line.startswith("[hello-gvisor] ") for line in lines), logs.out
    greeting = [line for line in lines if "greeting gvisor" in line]
    assert greeting and run_id in greeting[0], logs.out  # the node's ctx.log line of this very run
    assert any("permission lock: " in line for line in lines), logs.out  # the engine's startup report
    assert container.stop() == 0, container.diagnostics()
