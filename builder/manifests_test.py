"""Manifests are pure: security contexts, probes, RuntimeClass, labels, volumes, CronJobs, YAML."""

from __future__ import annotations

import json
import re

import yaml

from builder.manifests import DEFAULT_CURL_IMAGE, IngressOptions, ManifestOptions, render_ingress, render_network_policy, cronjob_names, image_reference, redact_secrets, render_cronjobs, render_deployment, render_manifests, render_service, to_yaml
from k8s.names import SECRET_CHECKSUM_ANNOTATION, label_value
from builder.secrets_manifest import REDACTED
from engine.spec import parse_spec

BASE = """
name: digest
version: "1.0"
nodes:
  a: {path: nodes/a.py}
"""


def spec_with(triggers: str = "", version: str = '"1.0"'):
    text = BASE.replace('"1.0"', version) + (f"triggers:\n{triggers}" if triggers else "")
    return parse_spec(text).spec


ONE_CRON = "  - type: cron\n    name: daily\n    schedule: '0 9 * * *'\n"
TWO_CRON = ONE_CRON + "  - type: manual\n  - type: cron\n    schedule: '*/5 * * * *'\n"
OPTIONS = ManifestOptions(namespace="team", image="reg.example/digest:1.0.0")


def by_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def engine_container(deployment):
    return deployment["spec"]["template"]["spec"]["containers"][0]


# ------------------------------------------------------------------ image


def test_image_reference_prefers_cluster_registry():
    spec = spec_with()
    assert image_reference(spec, registry="ext:5000/") == "ext:5000/digest:1.0.0"
    assert image_reference(spec, registry="ext:5000", cluster_registry="zot.zot:5000") == "zot.zot:5000/digest:1.0.0"
    assert image_reference(spec, image="x/y@sha256:" + "a" * 64, registry="ext") == "x/y@sha256:" + "a" * 64


def test_image_reference_defaults_to_the_in_cluster_zot():
    assert image_reference(spec_with()) == "localhost:30500/digest:1.0.0"
    assert image_reference(spec_with(), registry="  ") == "localhost:30500/digest:1.0.0"


def test_build_metadata_is_valid_as_tag_and_label():
    spec = spec_with(version='"1.2.3-rc.1+build.7"')
    assert image_reference(spec, registry="r") == "r/digest:1.2.3-rc.1_build.7"
    assert re.fullmatch(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?", label_value(spec.version))
    assert len(label_value("1." + "9" * 100)) <= 63


# -------------------------------------------------------------- deployment


def test_deployment_pod_security():
    pod = render_deployment(spec_with(), OPTIONS)["spec"]["template"]["spec"]
    assert pod["runtimeClassName"] == "gvisor"
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65534,
        "runAsGroup": 65534,
        "fsGroup": 65534,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert "hostNetwork" not in pod and "hostPID" not in pod and "hostIPC" not in pod


def test_deployment_container_security():
    container = engine_container(render_deployment(spec_with(), OPTIONS))
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65534
    assert sc["privileged"] is False
    assert "env" not in container and "envFrom" not in container, "secrets are never environment variables"


def test_runtime_class_can_be_left_out():
    options = ManifestOptions(namespace="n", image="i:1", runtime_class=None)
    assert "runtimeClassName" not in render_deployment(spec_with(), options)["spec"]["template"]["spec"]


def test_deployment_probes_ports_resources():
    deployment = render_deployment(spec_with(), OPTIONS)
    assert deployment["spec"]["replicas"] == 1
    container = engine_container(deployment)
    assert container["image"] == "reg.example/digest:1.0.0"
    assert {(p["name"], p["containerPort"]) for p in container["ports"]} == {("http", 8080), ("grpc", 9090)}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory", "ephemeral-storage"}


def test_deployment_volumes_secret_and_tmp():
    deployment = render_deployment(spec_with(), OPTIONS)
    pod = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["secrets"]["secret"]["secretName"] == "digest-secrets"
    assert volumes["secrets"]["secret"]["optional"] is True
    assert volumes["tmp"]["emptyDir"]["sizeLimit"] == "64Mi"
    mounts = {m["name"]: m for m in engine_container(deployment)["volumeMounts"]}
    assert mounts["secrets"] == {"name": "secrets", "mountPath": "/app/secrets", "readOnly": True}
    assert mounts["tmp"]["mountPath"] == "/tmp"


def test_labels_and_selector():
    deployment = render_deployment(spec_with(version='"2.1"'), OPTIONS)
    labels = deployment["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "digest"
    assert labels["app.kubernetes.io/version"] == "2.1.0"
    assert labels["app.kubernetes.io/managed-by"] == "pipedreamer"
    selector = deployment["spec"]["selector"]["matchLabels"]
    template_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= template_labels.items()
    assert "app.kubernetes.io/version" not in selector, "the selector is immutable; versions change"


def test_service_ports_and_selector():
    service = render_service(spec_with(), OPTIONS)
    assert service["metadata"]["name"] == "digest"
    assert service["spec"]["type"] == "ClusterIP"
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert ports["http"]["port"] == 8080 and ports["http"]["targetPort"] == "http"
    assert ports["grpc"]["port"] == 9090 and ports["grpc"]["appProtocol"] == "grpc"
    deployment = render_deployment(spec_with(), OPTIONS)
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


# ----------------------------------------------------------------- secrets


def test_secret_checksum_annotation_rolls_pods_when_secrets_change():
    spec = spec_with()

    def checksum(secrets):
        deployment = by_kind(render_manifests(spec, OPTIONS, secrets), "Deployment")[0]
        return deployment["spec"]["template"]["metadata"].get("annotations", {}).get(SECRET_CHECKSUM_ANNOTATION)

    first = checksum({"github": '{"token":"a"}'})
    assert first and re.fullmatch(r"[0-9a-f]{64}", first)
    assert checksum({"github": '{"token":"a"}'}) == first
    assert checksum({"github": '{"token":"b"}'}) != first
    assert checksum(None) is None


def test_manifests_order_and_secret_only_when_given():
    spec = spec_with(ONE_CRON)
    kinds = [o["kind"] for o in render_manifests(spec, OPTIONS, {"k": "v"})]
    assert kinds == ["NetworkPolicy", "Secret", "Service", "Deployment", "CronJob"], "the policy before any pod"
    kinds = [o["kind"] for o in render_manifests(spec, OPTIONS, None)]
    assert kinds == ["NetworkPolicy", "Service", "Deployment", "CronJob"]
    for obj in render_manifests(spec, OPTIONS, {"k": "v"}):
        assert obj["metadata"]["namespace"] == "team"
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "pipedreamer"
        assert obj["metadata"]["labels"]["app.kubernetes.io/name"] == "digest"


def test_dry_run_yaml_redacts_secret_values():
    objects = render_manifests(spec_with(), OPTIONS, {"github": "ghp_supersecret"})
    text = to_yaml(redact_secrets(objects))
    assert "ghp_supersecret" not in text
    assert REDACTED in text
    shown = to_yaml(objects)
    assert "ghp_supersecret" in shown
    assert by_kind(objects, "Secret")[0]["stringData"]["github"] == "ghp_supersecret", "redaction copies"


# ----------------------------------------------------------------- cronjobs


def test_cronjob_naming():
    assert cronjob_names(spec_with()) == []
    assert cronjob_names(spec_with(ONE_CRON)) == ["digest-cron"]
    assert cronjob_names(spec_with(TWO_CRON)) == ["digest-cron-0", "digest-cron-1"]


def test_cronjob_fields():
    (job,) = render_cronjobs(spec_with(ONE_CRON), OPTIONS)
    assert job["metadata"]["name"] == "digest-cron"
    assert job["spec"]["schedule"] == "0 9 * * *"
    assert job["spec"]["concurrencyPolicy"] == "Forbid"
    assert job["spec"]["successfulJobsHistoryLimit"] == 3
    assert job["spec"]["failedJobsHistoryLimit"] == 3
    labels = job["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "digest"
    assert labels["app.kubernetes.io/managed-by"] == "pipedreamer"
    pod = job["spec"]["jobTemplate"]["spec"]["template"]
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "cron-trigger"


def test_cron_timezone_is_the_cronjobs_time_zone():
    (job,) = render_cronjobs(spec_with(ONE_CRON), OPTIONS)
    assert "timeZone" not in job["spec"]
    (job,) = render_cronjobs(spec_with(ONE_CRON + "    timezone: Europe/Paris\n"), OPTIONS)
    assert (job["spec"]["schedule"], job["spec"]["timeZone"]) == ("0 9 * * *", "Europe/Paris")


def test_cronjob_posts_trigger_name_to_service():
    jobs = render_cronjobs(spec_with(TWO_CRON), OPTIONS)
    bodies, urls = [], []
    for job in jobs:
        container = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == DEFAULT_CURL_IMAGE
        args = container["args"]
        bodies.append(json.loads(args[args.index("--data") + 1]))
        urls.append(args[-1])
        assert args[args.index("--request") + 1] == "POST"
    assert bodies == [{"trigger": "daily"}, {"trigger": "cron"}]
    # ?trigger= is what the engine records as the run's trigger (the body is the run's input).
    assert urls == [
        "http://digest.team.svc.cluster.local:8080/run?trigger=daily",
        "http://digest.team.svc.cluster.local:8080/run?trigger=cron",
    ]


def test_cronjob_container_hardened_like_the_deployment():
    (job,) = render_cronjobs(spec_with(ONE_CRON), ManifestOptions(namespace="n", image="i:1", curl_image="curl:pinned"))
    pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65534, "numeric: the curl image names its user"
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod["containers"][0]
    assert container["image"] == "curl:pinned"
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert set(container["resources"]["limits"]) == {"cpu", "memory", "ephemeral-storage"}
    assert pod["runtimeClassName"] == "gvisor", "the trigger pod is sandboxed like the engine"
    (plain,) = render_cronjobs(spec_with(ONE_CRON), ManifestOptions(namespace="n", image="i:1", runtime_class=None))
    assert "runtimeClassName" not in plain["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def test_engine_selector_does_not_match_cron_pods():
    spec = spec_with(ONE_CRON)
    selector = render_service(spec, OPTIONS)["spec"]["selector"]
    (job,) = render_cronjobs(spec, OPTIONS)
    cron_labels = job["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert not selector.items() <= cron_labels.items()


def test_default_curl_image_is_pinned_by_digest():
    assert re.fullmatch(r"curlimages/curl:[0-9.]+@sha256:[0-9a-f]{64}", DEFAULT_CURL_IMAGE)


# ----------------------------------------------------------- network policy


def matches(selector: dict, labels: dict) -> bool:
    """How the API server reads a matchLabels selector."""
    return selector["matchLabels"].items() <= labels.items()


def pod_labels(spec, options=OPTIONS):
    objects = render_manifests(spec, options)
    engine = by_kind(objects, "Deployment")[0]["spec"]["template"]["metadata"]["labels"]
    crons = [j["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"] for j in by_kind(objects, "CronJob")]
    return engine, crons


def test_network_policy_isolates_only_this_workflows_engine_pods():
    spec = spec_with(TWO_CRON)
    policy = render_network_policy(spec, OPTIONS)
    assert policy["apiVersion"] == "networking.k8s.io/v1"
    assert policy["metadata"]["name"] == "digest" and policy["metadata"]["namespace"] == "team"
    assert policy["spec"]["policyTypes"] == ["Ingress"], "egress is the permission lock's (--allow-net)"
    assert "egress" not in policy["spec"]
    engine, crons = pod_labels(spec)
    assert matches(policy["spec"]["podSelector"], engine)
    assert not any(matches(policy["spec"]["podSelector"], labels) for labels in crons)
    other_engine, _ = pod_labels(parse_spec(BASE.replace("name: digest", "name: digest-two")).spec)
    assert not matches(policy["spec"]["podSelector"], other_engine)


def test_network_policy_admits_invoke_labelled_pods_and_the_cron_jobs_on_both_ports():
    spec = spec_with(TWO_CRON)
    (pods_rule,) = render_network_policy(spec, OPTIONS)["spec"]["ingress"]
    (peer,) = pods_rule["from"]
    assert set(peer) == {"podSelector"}, "no namespaceSelector: only pods of the workflow's own namespace"
    assert peer["podSelector"] == {"matchLabels": {"pipedreamer.dev/invoke": "digest"}}
    assert pods_rule["ports"] == [{"protocol": "TCP", "port": 8080}, {"protocol": "TCP", "port": 9090}]
    engine, crons = pod_labels(spec)
    assert len(crons) == 2 and all(matches(peer["podSelector"], labels) for labels in crons)
    assert not matches(peer["podSelector"], engine), "an engine replica is no caller"
    _, other_crons = pod_labels(parse_spec(BASE.replace("name: digest", "name: other") + f"triggers:\n{ONE_CRON}").spec)
    assert not matches(peer["podSelector"], other_crons[0]), "another workflow's cron job may not call this one"


def test_network_policy_admits_the_api_server_proxy_on_http_only():
    options = ManifestOptions(namespace="team", image="i:1", apiserver_cidrs=("192.0.2.10/32", "2001:db8::10/128"))
    rules = render_network_policy(spec_with(), options)["spec"]["ingress"]
    assert rules[1] == {
        "from": [{"ipBlock": {"cidr": "192.0.2.10/32"}}, {"ipBlock": {"cidr": "2001:db8::10/128"}}],
        "ports": [{"protocol": "TCP", "port": 8080}],
    }


def test_network_policy_without_api_server_addresses_admits_no_one_else():
    rules = render_network_policy(spec_with(), OPTIONS)["spec"]["ingress"]
    assert len(rules) == 1 and "ipBlock" not in json.dumps(rules)
    for options in (OPTIONS, ManifestOptions(namespace="n", image="i:1", apiserver_cidrs=("10.0.0.1/32",))):
        for rule in render_network_policy(spec_with(), options)["spec"]["ingress"]:
            # A rule without `from` (or with an empty one) admits every source.
            assert rule["from"] and all(peer for peer in rule["from"]), rule


# ------------------------------------------------------------ webhooks


HOOKS = "  - {type: webhook, path: /hooks/github}\n  - {type: webhook, path: /hooks/pay, name: pay, signature: standard}\n"
CONTROLLER = IngressOptions(host="hooks.example.com", controller_namespace="ingress-nginx", ingress_class="nginx", tls_secret="hooks-tls")


def test_the_ingress_exposes_the_webhook_paths_only():
    options = ManifestOptions(namespace="team", image="i:1", ingress=CONTROLLER)
    objects = render_manifests(spec_with(HOOKS + ONE_CRON), options)
    assert [o["kind"] for o in objects][-1] == "Ingress", "exposed last, once the engine behind it is applied"
    ingress = render_ingress(spec_with(HOOKS), options)
    assert ingress["metadata"] == {"name": "digest", "namespace": "team", "labels": objects[0]["metadata"]["labels"]}
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"hosts": ["hooks.example.com"], "secretName": "hooks-tls"}]
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "hooks.example.com"
    backend = {"service": {"name": "digest", "port": {"name": "http"}}}
    assert rule["http"]["paths"] == [
        {"path": "/hooks/github", "pathType": "Exact", "backend": backend},
        {"path": "/hooks/pay", "pathType": "Exact", "backend": backend},
    ]
    text = json.dumps(ingress)
    assert "/run" not in text and "/metrics" not in text and "Prefix" not in text


def test_no_ingress_without_a_host_or_without_webhooks():
    assert render_ingress(spec_with(HOOKS), OPTIONS) is None
    assert render_ingress(spec_with(ONE_CRON), ManifestOptions(namespace="team", image="i:1", ingress=CONTROLLER)) is None
    assert "Ingress" not in [o["kind"] for o in render_manifests(spec_with(HOOKS), OPTIONS)]


def test_network_policy_admits_the_ingress_controller_on_http_when_webhooks_are_exposed():
    labelled = IngressOptions(host="h.example", controller_namespace="ingress-nginx",
                              controller_labels=(("app.kubernetes.io/name", "ingress-nginx"),))  # fmt: skip
    rules = render_network_policy(spec_with(HOOKS), ManifestOptions(namespace="team", image="i:1", ingress=labelled))["spec"]["ingress"]
    assert rules[-1] == {
        "from": [{
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}},
        }],
        "ports": [{"protocol": "TCP", "port": 8080}],
    }  # fmt: skip
    every_pod = render_network_policy(spec_with(HOOKS), ManifestOptions(namespace="team", image="i:1", ingress=CONTROLLER))
    assert every_pod["spec"]["ingress"][-1]["from"][0]["podSelector"] == {}
    # Without an Ingress, nobody new is admitted.
    assert len(render_network_policy(spec_with(HOOKS), OPTIONS)["spec"]["ingress"]) == 1


# --------------------------------------------------------------------- yaml


def test_yaml_round_trips_as_multi_document():
    objects = render_manifests(spec_with(TWO_CRON), OPTIONS, {"a": "line1\nline2"})
    text = to_yaml(objects)
    assert text.startswith("---\n")
    assert list(yaml.safe_load_all(text)) == objects
    assert "schedule: \"0 9 * * *\"" in text


def test_rendering_is_deterministic():
    spec = spec_with(TWO_CRON)
    assert to_yaml(render_manifests(spec, OPTIONS, {"a": "1"})) == to_yaml(render_manifests(spec, OPTIONS, {"a": "1"}))
