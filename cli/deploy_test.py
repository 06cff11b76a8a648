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
