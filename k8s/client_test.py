"""Config loading and error translation, without a server."""

from __future__ import annotations

import json
import socket
import time

import pytest
import urllib3

from k8s import kinds
from k8s.client import Cluster, _describe_transport, connect, resolve_namespace
from k8s.errors import ClusterError


def kubeconfig(tmp_path, server="https://127.0.0.1:1", namespace=None, contexts=("one",)):
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [
            {"name": name, "context": {"cluster": "c", "user": "u", **({"namespace": namespace} if namespace else {})}}
            for name in contexts
        ],
        "current-context": contexts[0],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))
    return str(path)


def status_body(**fields):
    return json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", **fields}).encode()


@pytest.fixture
def cluster(tmp_path):
    return connect(kubeconfig(tmp_path), namespace="ns")


def test_kind_paths():
    assert kinds.DEPLOYMENT.path("ns", "wf") == "/apis/apps/v1/namespaces/ns/deployments/wf"
    assert kinds.SERVICE.path("ns", "wf:8080", "proxy/run") == "/api/v1/namespaces/ns/services/wf%3A8080/proxy/run"
    assert kinds.NAMESPACE.path(None, "ns") == "/api/v1/namespaces/ns"
    assert kinds.RUNTIMECLASS.resource == "runtimeclasses.node.k8s.io"
    assert kinds.SECRET.resource == "secrets"
    with pytest.raises(ValueError):
        kinds.POD.path(None)


def test_namespace_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    path = kubeconfig(tmp_path, namespace="team", contexts=("one", "two"))
    assert resolve_namespace(path) == "team"
    assert resolve_namespace(path, namespace="flag") == "flag"
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    assert resolve_namespace() == "default", "a dry run needs no kubeconfig"
    with pytest.raises(ClusterError, match="--context 'x' given but no kubeconfig"):
        resolve_namespace(context="x")
    with pytest.raises(ClusterError, match="not found .from \\$KUBECONFIG"):
        connect()
    monkeypatch.delenv("KUBECONFIG")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_namespace() == "default"


def test_unknown_context_lists_the_available_ones(tmp_path):
    with pytest.raises(ClusterError, match=r"context 'nope' not found .*available: one, two"):
        connect(kubeconfig(tmp_path, contexts=("one", "two")), context="nope")


def test_missing_kubeconfig_flag(tmp_path):
    with pytest.raises(ClusterError, match="from --kubeconfig"):
        connect(str(tmp_path / "nothing"))


def test_no_config_at_all(tmp_path, monkeypatch):
    for var in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ClusterError, match="no Kubernetes config"):
        connect()


def test_context_namespace_is_the_default(tmp_path):
    assert connect(kubeconfig(tmp_path, namespace="team")).namespace == "team"
    assert connect(kubeconfig(tmp_path, namespace="team"), namespace="x").namespace == "x"


def test_forbidden_names_verb_resource_namespace(cluster):
    body = status_body(
        message='deployments.apps "wf" is forbidden: User "bob" cannot patch resource "deployments" in API group "apps" in the namespace "ns"',
        reason="Forbidden",
        code=403,
        details={"name": "wf", "group": "apps", "kind": "deployments"},
    )
    error = cluster.status_error(403, body, verb="patch", resource="deployments.apps", namespace="ns", name="wf")
    assert error.reason == "forbidden"
    text = str(error)
    assert text.startswith("forbidden: not allowed to patch deployments.apps in namespace 'ns'")
    assert 'User "bob"' in text


def test_forbidden_uses_the_verb_the_server_checked(cluster):
    body = status_body(message='User "bob" cannot create resource "deployments" in API group "apps" in the namespace "ns"')
    error = cluster.status_error(403, body, verb="patch", resource="deployments.apps", namespace="ns")
    assert "not allowed to create deployments.apps" in str(error)


def test_missing_namespace_suggests_fix(cluster):
    body = status_body(message='namespaces "ns" not found', reason="NotFound", code=404, details={"name": "ns", "kind": "namespaces"})
    error = cluster.status_error(404, body, verb="patch", resource="services", namespace="ns", name="wf")
    assert "namespace 'ns' does not exist" in str(error) and "cluster check --fix" in str(error)


def test_other_statuses(cluster):
    assert cluster.status_error(401, b"", verb="get", resource="pods").reason == "unauthorized"
    invalid = status_body(message="bad", details={"causes": [{"field": "spec.replicas", "message": "must be >= 0"}]})
    error = cluster.status_error(422, invalid, verb="patch", resource="deployments.apps", name="wf")
    assert error.reason == "invalid" and "spec.replicas: must be >= 0" in str(error)
    assert cluster.status_error(503, b"upstream down", verb="get", resource="pods").reason == "server"
    assert "upstream down" in str(cluster.status_error(503, b"upstream down", verb="get", resource="pods"))


def test_describe_transport_errors():
    refused = urllib3.exceptions.MaxRetryError(
        None, "/", urllib3.exceptions.NewConnectionError(None, "Failed to establish a new connection: [Errno 111] Connection refused")
    )
    assert _describe_transport(refused, 10) == "connection refused"
    timeout = urllib3.exceptions.MaxRetryError(None, "/", urllib3.exceptions.ReadTimeoutError(None, "/", "read timed out"))
    assert _describe_transport(timeout, 7) == "no answer within 7s"
    connect_timeout = urllib3.exceptions.MaxRetryError(None, "/", urllib3.exceptions.ConnectTimeoutError("x"))
    assert _describe_transport(connect_timeout, 10).startswith("no connection within")


def test_refused_connection_fails_fast(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cluster = connect(kubeconfig(tmp_path, server=f"https://127.0.0.1:{port}"), namespace="ns")
    started = time.monotonic()
    with pytest.raises(ClusterError) as info:
        cluster.list(kinds.DEPLOYMENT)
    assert time.monotonic() - started < 5
    assert info.value.reason == "unreachable"
    assert f"cannot reach the Kubernetes API server at https://127.0.0.1:{port}: connection refused" in str(info.value)


@pytest.fixture
def silent_port():
    """A loopback port that accepts connections and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def test_silent_server_times_out_within_the_request_timeout(tmp_path, silent_port):
    cluster = connect(kubeconfig(tmp_path, server=f"https://127.0.0.1:{silent_port}"), namespace="ns", request_timeout=1.5)
    started = time.monotonic()
    with pytest.raises(ClusterError) as info:
        cluster.get(kinds.DEPLOYMENT, "wf")
    elapsed = time.monotonic() - started
    assert elapsed < 8, elapsed
    assert info.value.reason in ("timeout", "unreachable")


def test_silent_tls_endpoint_is_not_mistaken_for_a_slow_answer(tmp_path, silent_port):
    # Accepts the connection, never answers the TLS handshake: urllib3 calls
    # that a read timeout; `run --timeout 60s` must not say the run took too long.
    cluster = connect(kubeconfig(tmp_path, server=f"https://127.0.0.1:{silent_port}"), namespace="ns", request_timeout=60)
    with pytest.raises(ClusterError) as info:
        cluster.open("POST", "/api/v1/namespaces/ns/services/wf:8080/proxy/run", body={}, timeout=60)
    assert info.value.reason == "unreachable"
    assert "no TLS handshake or answer within 5s of connecting" in str(info.value)
    assert "within 60s" not in str(info.value)


def test_cluster_is_a_context_manager(cluster):
    assert isinstance(cluster, Cluster)
    with cluster as same:
        assert same is cluster
