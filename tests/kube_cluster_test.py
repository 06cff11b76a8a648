"""The loopback control plane of tests/kube_cluster.py behaves like a real cluster.

Needs the binaries from tools/kube/build.sh; without them these tests fail
with the build command in the message (they never skip).
"""

from __future__ import annotations

import json
import re
import uuid

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.kube_cluster import REPO_ROOT, KubeCluster, KubeClusterError
from tests.support import wait_for

RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


@pytest.fixture(scope="session")
def kube():
    with KubeCluster.start() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def admin(kube):
    return config.new_client_from_config(config_file=kube.kubeconfig)


@pytest.fixture(scope="session")
def noaccess(kube):
    return config.new_client_from_config(config_file=kube.kubeconfig_noaccess)


def default_sa_exists(core, ns):
    try:
        core.read_namespaced_service_account("default", ns)
        return True
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise


@pytest.fixture
def restricted_ns(admin):
    core = client.CoreV1Api(admin)
    name = f"restricted-{uuid.uuid4().hex[:8]}"
    core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=RESTRICTED))
    )
    # kube-controller-manager's serviceaccount controller creates it; the
    # ServiceAccount admission plugin refuses Pods until it exists.
    wait_for(f"ServiceAccount {name}/default", lambda: default_sa_exists(core, name))
    yield name
    core.delete_namespace(name)


def message(exc):
    return json.loads(exc.body)["message"]


def pod(name, secure, privileged=False):
    container = client.V1Container(name="app", image="registry.invalid/app:1.0.0")
    pod_sc = None
    if secure:
        pod_sc = client.V1PodSecurityContext(
            run_as_non_root=True,
            run_as_user=65534,
            run_as_group=65534,
            seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"),
        )
        container.security_context = client.V1SecurityContext(
            allow_privilege_escalation=False,
            read_only_root_filesystem=True,
            capabilities=client.V1Capabilities(drop=["ALL"]),
        )
    elif privileged:
        container.security_context = client.V1SecurityContext(privileged=True)
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(
            containers=[container],
            security_context=pod_sc,
            automount_service_account_token=False,
        ),
    )


def pinned_kubernetes_version():
    gomod = REPO_ROOT / "tools" / "kube" / "kubernetes" / "go.mod"
    versions = re.findall(r"^\s*k8s\.io/kubernetes (v\S+)", gomod.read_text(), re.M)
    assert len(versions) == 1, versions
    return versions[0]


def test_serves_the_pinned_release(kube, admin):
    kube.assert_running()
    info = client.VersionApi(admin).get_code()
    assert info.git_version == pinned_kubernetes_version()
    assert (info.major, info.minor) == ("1", info.git_version.split(".")[1])


@pytest.mark.parametrize(
    "privileged, why",
    [(False, "runAsNonRoot != true"), (True, 'privileged (container "app" must not set')],
)
def test_restricted_namespace_rejects_a_violating_pod(admin, restricted_ns, privileged, why):
    core = client.CoreV1Api(admin)
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod(restricted_ns, pod("bad", secure=False, privileged=privileged))
    assert err.value.status == 403, err.value.body
    assert 'violates PodSecurity "restricted:latest"' in message(err.value)
    assert why in message(err.value)
    names = [p.metadata.name for p in core.list_namespaced_pod(restricted_ns).items]
    assert names == []


def test_restricted_namespace_admits_a_compliant_pod(admin, restricted_ns):
    core = client.CoreV1Api(admin)
    created = core.create_namespaced_pod(restricted_ns, pod("good", secure=True))
    assert created.metadata.uid
    read = core.read_namespaced_pod("good", restricted_ns)
    assert read.spec.security_context.run_as_non_root is True
    assert read.spec.containers[0].security_context.capabilities.drop == ["ALL"]
    assert read.spec.service_account_name == "default"


def test_user_without_rights_is_forbidden(noaccess, restricted_ns):
    core = client.CoreV1Api(noaccess)
    for call in (
        lambda: core.list_namespaced_pod(restricted_ns),
        lambda: core.list_namespace(),
        lambda: core.create_namespaced_pod(restricted_ns, pod("sneaky", secure=True)),
    ):
        with pytest.raises(ApiException) as err:
            call()
        assert err.value.status == 403, err.value.body
        assert 'is forbidden: User "noaccess" cannot' in message(err.value)


def test_user_without_rights_can_review_its_own_access(noaccess, restricted_ns):
    review = client.AuthorizationV1Api(noaccess).create_self_subject_access_review(
        client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(
                resource_attributes=client.V1ResourceAttributes(
                    namespace=restricted_ns, verb="create", group="apps", resource="deployments"
                )
            )
        )
    )
    assert review.status.allowed is False


def test_bearer_tokens_authenticate(kube):
    cfg = client.Configuration()
    cfg.host = kube.server
    cfg.ssl_ca_cert = kube.ca_file
    cfg.api_key = {"authorization": f"Bearer {kube.admin_token}"}
    with client.ApiClient(cfg) as api:
        assert client.CoreV1Api(api).read_namespace("default").metadata.name == "default"


def test_deleting_a_namespace_finishes(admin):
    core = client.CoreV1Api(admin)
    name = f"doomed-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    wait_for(f"ServiceAccount {name}/default", lambda: default_sa_exists(core, name))
    core.create_namespaced_config_map(
        name, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="x"), data={"a": "b"})
    )
    core.delete_namespace(name)

    def gone():
        try:
            core.read_namespace(name)
            return False
        except ApiException as exc:
            return exc.status == 404

    wait_for(f"namespace {name} to be deleted", gone)


def test_missing_binary_is_an_error_naming_the_build(monkeypatch, tmp_path):
    monkeypatch.setenv("PIPEDREAMER_ETCD", str(tmp_path / "no-etcd"))
    with pytest.raises(KubeClusterError, match=r"etcd not found .*tools/kube/build\.sh"):
        KubeCluster.start()


def test_a_server_that_does_not_start_is_an_error_with_its_log():
    with pytest.raises(KubeClusterError) as err:
        KubeCluster.start(extra_apiserver_args=["--no-such-flag"], timeout=60)
    text = str(err.value)
    assert "kube-apiserver has exited with status" in text
    assert "unknown flag: --no-such-flag" in text
