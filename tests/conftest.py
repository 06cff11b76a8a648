"""Session-wide fixtures for tests/: one real Kubernetes control plane per test session.

Tests that need a cluster take the `kube` fixture and work in a namespace of
their own, so one etcd + kube-apiserver (+ controller manager) serves them all.
"""

from __future__ import annotations

import pytest

from tests.kube_cluster import KubeCluster


@pytest.fixture(scope="session")
def kube():
    """A running KubeCluster (tests/kube_cluster.py); fails, never skips, when it cannot start."""
    with KubeCluster.start() as cluster:
        yield cluster
