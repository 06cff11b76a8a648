"""Session-wide fixtures for tests/: one real Kubernetes control plane per test session.

Tests that need a cluster take the `kube` fixture and work in a namespace of
their own, so one etcd + kube-apiserver (+ controller manager) serves them all.
"""

from __future__ import annotations

import os

import pytest

from k8s import kinds
from tests.k8s_support import admin_cluster, ensure_runtime_class, new_namespace
from tests.kubelet_stub import KubeletStub
from tests.kube_cluster import KubeCluster

# bazel_layers_test.py compares the layer tars `bazel test` hands it as data; outside
# Bazel there are none, and .ci/run makes the same comparison with
# tools/bazel/same_layers.sh. Not collected rather than skipped.
collect_ignore = [] if "TEST_SRCDIR" in os.environ else ["bazel_layers_test.py"]


@pytest.fixture(scope="session")
def kube():
    """A running KubeCluster (tests/kube_cluster.py); fails, never skips, when it cannot start."""
    with KubeCluster.start() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def admin(kube):
    """Our own client as cluster admin, with RuntimeClass gvisor in place (pods naming it need it)."""
    cluster = admin_cluster(kube)
    ensure_runtime_class(cluster)
    yield cluster
    cluster.close()


@pytest.fixture
def ns(admin):
    """A fresh namespace enforcing the restricted Pod Security Standard."""
    return new_namespace(admin)


@pytest.fixture
def kubelet(admin, tmp_path):
    """A Node whose kubelet is a KubeletStub: pods/log requests reach it through the API server."""
    stub = KubeletStub(tmp_path)
    node = f"stub-node-{stub.port}"
    admin.create(kinds.Kind("Node", "v1", "nodes", namespaced=False), stub.node(node))
    admin.request("PATCH", f"/api/v1/nodes/{node}/status", body=stub.node_status(),
                  content_type="application/merge-patch+json", verb="patch", resource="nodes/status")  # fmt: skip
    stub.node_name = node
    yield stub
    stub.close()
    admin.delete(kinds.Kind("Node", "v1", "nodes", namespaced=False), node)
