"""`deploy --dry-run`: prints the manifests, redacts secrets, touches no cluster."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from cli.main import main

EXAMPLE = "examples/github-digest"


@pytest.fixture
def workflow(tmp_path):
    target = tmp_path / "github-digest"
    shutil.copytree(EXAMPLE, target)
    (target / ".secrets.yaml").write_text("github:\n  token: ghp_topsecret\n")
    return target


@pytest.fixture(autouse=True)
def no_cluster(monkeypatch, tmp_path):
    # A kubeconfig pointing nowhere: dry-run must not notice.
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent-kubeconfig"))


def test_dry_run_prints_yaml_with_redacted_secrets(workflow, capsys):
    assert main(["deploy", str(workflow), "--dry-run", "--registry", "localhost:5000", "-n", "team"]) == 0
    out = capsys.readouterr().out
    docs = list(yaml.safe_load_all(out))
    assert [d["kind"] for d in docs] == ["NetworkPolicy", "Secret", "Service", "Deployment", "CronJob"]
    assert "ghp_topsecret" not in out
    assert docs[1]["stringData"] == {"github": "<redacted>"}
    assert docs[3]["spec"]["template"]["spec"]["containers"][0]["image"] == "localhost:5000/github-digest:1.0.0"
    assert all(d["metadata"]["namespace"] == "team" for d in docs)


def test_show_secrets(workflow, capsys):
    assert main(["deploy", str(workflow), "--dry-run", "--registry", "r", "--show-secrets"]) == 0
    secret = next(d for d in yaml.safe_load_all(capsys.readouterr().out) if d["kind"] == "Secret")
    assert json.loads(secret["stringData"]["github"]) == {"token": "ghp_topsecret"}


def test_cluster_registry_wins_and_json_is_one_document(workflow, capsys):
    code = main(["deploy", str(workflow), "--dry-run", "--registry", "ext:5000", "--cluster-registry", "localhost:30500", "-o", "json"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["image"] == "localhost:30500/github-digest:1.0.0"
    assert doc["namespace"] == "default"
    assert "ghp_topsecret" not in json.dumps(doc)


def test_without_a_registry_the_in_cluster_zot_is_named(workflow, capsys):
    assert main(["deploy", str(workflow), "--dry-run"]) == 0
    captured = capsys.readouterr()
    deployment = next(d for d in yaml.safe_load_all(captured.out) if d["kind"] == "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "localhost:30500/github-digest:1.0.0"
    assert "note: no --cluster-registry, --registry or --image" in captured.err and "deploy/zot" in captured.err


def test_show_secrets_needs_dry_run(workflow, capsys):
    assert main(["deploy", str(workflow), "--show-secrets", "--registry", "r"]) == 1
    assert "--show-secrets only applies to --dry-run" in capsys.readouterr().err


def test_invalid_workflow_is_reported(tmp_path, capsys):
    (tmp_path / "workflow.yaml").write_text("name: Bad_Name\n")
    assert main(["deploy", str(tmp_path), "--dry-run", "--registry", "r"]) == 1
    assert "workflow.yaml" in capsys.readouterr().err


def test_bad_secrets_file_names_the_file(workflow, capsys):
    (workflow / ".secrets.yaml").write_text("- not\n- a map\n")
    assert main(["deploy", str(workflow), "--dry-run", "--registry", "r"]) == 1
    assert ".secrets.yaml: expected a mapping" in capsys.readouterr().err


def policy_of(out):
    return next(d for d in yaml.safe_load_all(out) if d["kind"] == "NetworkPolicy")


def test_dry_run_policy_without_api_server_addresses_says_when_they_are_read(workflow, capsys):
    assert main(["deploy", str(workflow), "--dry-run", "--registry", "r", "-n", "team"]) == 0
    captured = capsys.readouterr()
    policy = policy_of(captured.out)
    assert policy["metadata"] == {
        "name": "github-digest",
        "namespace": "team",
        "labels": {
            "app.kubernetes.io/name": "github-digest",
            "app.kubernetes.io/version": "1.0.0",
            "app.kubernetes.io/managed-by": "pipedreamer",
            "app.kubernetes.io/part-of": "pipedreamer",
            "app.kubernetes.io/component": "engine",
        },
    }
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"pipedreamer.dev/invoke": "github-digest"}}}]
    assert "ipBlock" not in captured.out
    note = "the NetworkPolicy shown has no rule for the API server's service proxy"
    assert note in captured.err and "EndpointSlices of Service default/kubernetes when it applies" in captured.err
    assert note not in captured.out, "the note is no part of the YAML"


def test_dry_run_policy_with_api_server_cidrs(workflow, capsys):
    args = ["deploy", str(workflow), "--dry-run", "--registry", "r", "-o", "json",
            "--apiserver-cidr", "192.0.2.10", "--apiserver-cidr", "10.20.0.0/16",
            "--apiserver-cidr", "2001:DB8::10", "--apiserver-cidr", "192.0.2.10/32"]  # fmt: skip
    assert main(args) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["apiserver_cidrs"] == ["192.0.2.10/32", "10.20.0.0/16", "2001:db8::10/128"]
    policy = next(m for m in doc["manifests"] if m["kind"] == "NetworkPolicy")
    assert policy["spec"]["ingress"][1] == {
        "from": [{"ipBlock": {"cidr": c}} for c in ("192.0.2.10/32", "10.20.0.0/16", "2001:db8::10/128")],
        "ports": [{"protocol": "TCP", "port": 8080}],
    }
    assert captured.err == ""


@pytest.mark.parametrize(
    "value, says",
    [
        ("10.0.0.1/24", "host bits are set; write the network (10.0.0.0/24) or the single address (10.0.0.1/32)"),
        ("apiserver.example.com", "not a CIDR"),
        ("10.0.0.0/33", "not a CIDR"),
        ("10.0.0.1,10.0.0.2", "not a CIDR"),
    ],
)
def test_malformed_apiserver_cidr_is_refused_naming_the_flag(workflow, capsys, value, says):
    assert main(["deploy", str(workflow), "--dry-run", "--registry", "r", "--apiserver-cidr", value]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"error: --apiserver-cidr {value!r}: {says}" in captured.err
    assert "expects an IPv4 or IPv6 CIDR such as 192.0.2.10/32 or 2001:db8::/64 (repeat the flag for several)" in captured.err


@pytest.fixture
def hooks(tmp_path):
    target = tmp_path / "hooks"
    shutil.copytree("examples/hello", target)
    spec = yaml.safe_load((target / "workflow.yaml").read_text())
    spec["triggers"] = [{"type": "webhook", "path": "/hooks/github"}]
    (target / "workflow.yaml").write_text(yaml.safe_dump(spec))
    return target


def test_dry_run_with_ingress_host_renders_the_ingress_and_the_controller_rule(hooks, capsys):
    (hooks / ".secrets.yaml").write_text("webhooks:\n  github: gh-key-123\n")
    argv = ["deploy", str(hooks), "--dry-run", "-n", "team", "--ingress-host", "hooks.example.com",
            "--ingress-namespace", "ingress-nginx", "--ingress-pod-label", "app.kubernetes.io/name=ingress-nginx"]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    docs = list(yaml.safe_load_all(captured.out))
    assert [d["kind"] for d in docs][-1] == "Ingress"
    assert [p["path"] for p in docs[-1]["spec"]["rules"][0]["http"]["paths"]] == ["/hooks/github"]
    assert docs[0]["spec"]["ingress"][-1]["from"][0]["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}
    assert "gh-key-123" not in captured.out


def test_webhook_keys_and_ingress_flags_are_checked_before_anything_renders(hooks, capsys):
    (hooks / ".secrets.yaml").write_text("other:\n  token: x\n")
    assert main(["deploy", str(hooks), "--dry-run"]) == 1
    assert "webhook 'github' (/hooks/github, signature github) has no key: set secrets.webhooks.github" in capsys.readouterr().err
    (hooks / ".secrets.yaml").unlink()
    # No secrets here: the Secret already in the cluster may hold the key; said, not refused.
    assert main(["deploy", str(hooks), "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert "the Secret already in the cluster must hold secrets.webhooks.github, or the engine refuses to start" in err
    assert "webhook paths /hooks/github are served on the Service only: pass --ingress-host" in err
    assert main(["deploy", str(hooks), "--dry-run", "--ingress-host", "h.example"]) == 1
    assert "--ingress-host needs --ingress-namespace" in capsys.readouterr().err
    assert main(["deploy", str(hooks), "--dry-run", "--ingress-namespace", "x"]) == 1
    assert "--ingress-namespace only applies with --ingress-host" in capsys.readouterr().err
    plain = shutil.copytree("examples/hello", hooks.parent / "hello")  # a copy: Bazel's runfiles are symlinks
    assert main(["deploy", str(plain), "--dry-run", "--ingress-host", "h.example", "--ingress-namespace", "x"]) == 1
    assert "--ingress-host exposes webhook paths, and this workflow has no webhook trigger" in capsys.readouterr().err
