"""deploy/ and the rendered manifests: kube-score clean, admitted by a real API server, install.sh sound."""

from __future__ import annotations

import copy
import json
import os
import pathlib
import shutil
import subprocess
import textwrap

import pytest
import yaml

from k8s import kinds
from tests.k8s_support import REPO, cli, new_namespace
from tests.kube_cluster import find_binary

SETTINGS = yaml.safe_load((REPO / ".kube-score.yaml").read_text())
DEPLOY_YAML = sorted(
    p for p in (REPO / "deploy").rglob("*.yaml") if p.name != "kustomization.yaml" and "base" not in p.parts
)
INSTALL = REPO / "deploy" / "gvisor" / "install.sh"


def kube_score(files, target):
    """(exit code, findings .kube-score.yaml does not accept, accepted findings seen, output)."""
    argv = [str(find_binary("kube-score")), "score", "--output-format", "ci"]
    for test in SETTINGS.get("optional", []):
        argv += ["--enable-optional-test", test]
    for test in SETTINGS["targets"][target]["ignore"]:
        argv += ["--ignore-test", test]
    proc = subprocess.run(argv + [str(f) for f in files], capture_output=True, text=True, timeout=120)
    findings = [line for line in proc.stdout.splitlines() if line.startswith(("[CRITICAL]", "[WARNING]"))]
    accepted = SETTINGS["targets"][target].get("accept", {})

    def accepts(line, key):
        kind, text = key.split(": ", 1)
        return line.endswith(f" {kind}: {text}")

    seen = {key for key in accepted if any(accepts(line, key) for line in findings)}
    left = [line for line in findings if not any(accepts(line, key) for key in accepted)]
    return proc.returncode, left, seen, proc.stdout + proc.stderr


def test_every_exclusion_is_explained():
    for target in SETTINGS["targets"].values():
        for test, reason in {**target["ignore"], **target.get("accept", {})}.items():
            assert isinstance(reason, str) and len(reason) > 40, test


@pytest.mark.parametrize("extra", [[], ["--replicas", "2"], ["--runtime-class", ""]])
def test_rendered_manifests_have_no_kube_score_findings(tmp_path, extra):
    workflow = tmp_path / "github-digest"
    shutil.copytree(REPO / "examples" / "github-digest", workflow)
    (workflow / ".secrets.yaml").write_text("github: {token: t}\n")
    result = cli("deploy", str(workflow), "--dry-run", "--registry", "localhost:30500", "-n", "team", *extra)
    assert result.code == 0, result.err
    manifests = tmp_path / "manifests.yaml"
    manifests.write_text(result.out)
    code, findings, accepted, output = kube_score([manifests], "workflow")
    assert findings == [], output
    # The NetworkPolicy checks run: the policy targets a pod, the engine pods'
    # only finding is the egress half we leave to --allow-net, the cron pod's
    # that it has no policy (it serves nothing).
    assert accepted == set(SETTINGS["targets"]["workflow"]["accept"]), output
    assert "[OK] github-digest/team networking.k8s.io/v1/NetworkPolicy" in output, output
    assert code == 1, "kube-score exits 1 for the cron pod's accepted CRITICAL, and for nothing else"


def test_deploy_assets_have_no_kube_score_findings():
    code, findings, _, output = kube_score(DEPLOY_YAML, "deploy")
    assert findings == [], output
    assert code == 0, output


def test_kustomization_lists_every_zot_manifest():
    kustomization = yaml.safe_load((REPO / "deploy" / "zot" / "kustomization.yaml").read_text())
    files = {p.name for p in (REPO / "deploy" / "zot").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_zot_lets_anyone_pull_and_only_htpasswd_users_push():
    config = json.loads(yaml.safe_load((REPO / "deploy" / "zot" / "configmap.yaml").read_text())["data"]["config.json"])
    http = config["http"]
    everything = http["accessControl"]["repositories"]["**"]
    assert everything["anonymousPolicy"] == ["read"]  # containerd on the nodes pulls without credentials
    assert "create" in everything["defaultPolicy"] and "delete" not in everything["defaultPolicy"]
    htpasswd = pathlib.PurePosixPath(http["auth"]["htpasswd"]["path"])
    spec = yaml.safe_load((REPO / "deploy" / "zot" / "deployment.yaml").read_text())["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in spec["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    secret_mounts = [m for name, m in mounts.items() if "secret" in volumes[name]]
    assert any(htpasswd.parent == pathlib.PurePosixPath(m["mountPath"]) and m["readOnly"] for m in secret_mounts)


# --------------------------------------------------- admitted by the API server


def test_runtimeclass_manifest_is_what_the_cli_checks(kube, admin):
    runtime_class = admin.get(kinds.RUNTIMECLASS, "gvisor")
    assert runtime_class["handler"] == "runsc"


def test_zot_manifests_apply_and_its_pod_passes_restricted(kube, admin):
    docs = {}
    for path in sorted((REPO / "deploy" / "zot").glob("*.yaml")):
        if path.name != "kustomization.yaml":
            doc = yaml.safe_load(path.read_text())
            docs[doc["kind"]] = doc
    admin.apply(kinds.NAMESPACE, docs["Namespace"], force=True)
    for kind in ("ConfigMap", "PersistentVolumeClaim", "Service", "Deployment"):
        k = kinds.BY_KIND.get(kind) or kinds.Kind(kind, "v1", kind.lower() + "s")
        admin.apply(k, docs[kind], force=True)
    template = docs["Deployment"]["spec"]["template"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {**copy.deepcopy(template["metadata"]), "name": "zot-check"},
           "spec": copy.deepcopy(template["spec"])}  # fmt: skip
    created = admin.create(kinds.POD, pod, "zot")
    assert created["spec"]["securityContext"]["runAsUser"] == 65534


def test_gvisor_test_pod_passes_restricted(kube, admin):
    ns = new_namespace(admin)
    pod = yaml.safe_load((REPO / "deploy" / "gvisor" / "test-pod.yaml").read_text())
    created = admin.create(kinds.POD, pod, ns)
    assert created["spec"]["runtimeClassName"] == "gvisor"


# ---------------------------------------------------------------- install.sh


def test_install_script_parses_and_is_shellcheck_clean():
    subprocess.run(["bash", "-n", str(INSTALL)], check=True)
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is not installed (apt-get install -y shellcheck)"
    proc = subprocess.run([shellcheck, "-x", str(INSTALL)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


@pytest.fixture
def node(tmp_path):
    """A fake k0s node: offline gVisor binaries, a containerd that reports its version, temp dirs."""
    release = tmp_path / "release"
    release.mkdir()
    for name in ("runsc", "containerd-shim-runsc-v1"):
        binary = release / name
        binary.write_text(f"#!/bin/sh\necho '{name} version release-20250106.0'\n")
        binary.chmod(0o755)
        digest = subprocess.run(["sha512sum", str(binary)], capture_output=True, text=True, check=True).stdout.split()[0]
        (release / f"{name}.sha512").write_text(f"{digest}  {name}\n")
    containerd = tmp_path / "containerd"
    containerd.write_text("#!/bin/sh\necho 'containerd github.com/containerd/containerd/v2 v2.1.4 abc'\n")
    containerd.chmod(0o755)
    env = dict(os.environ)
    env.update(
        GVISOR_BIN_DIR=str(release),
        INSTALL_DIR=str(tmp_path / "bin"),
        K0S_CONTAINERD_D=str(tmp_path / "containerd.d"),
        CONTAINERD=str(containerd),
    )
    return tmp_path, env


def run_install(env):
    return subprocess.run(["bash", str(INSTALL)], env=env, capture_output=True, text=True, timeout=60)


def test_install_is_idempotent(node):
    root, env = node
    first = run_install(env)
    assert first.returncode == 0, first.stderr
    dropin = root / "containerd.d" / "gvisor.toml"
    text = dropin.read_text()
    assert 'version = 3' in text and '[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runsc]' in text
    assert 'runtime_type = "io.containerd.runsc.v1"' in text
    assert os.access(root / "bin" / "runsc", os.X_OK)
    stamps = {p: p.stat().st_mtime_ns for p in (dropin, root / "bin" / "runsc", root / "bin" / "containerd-shim-runsc-v1")}

    second = run_install(env)
    assert second.returncode == 0, second.stderr
    assert "is up to date" in second.stderr and "wrote" not in second.stderr and "installed" not in second.stderr
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_install_writes_v2_config_for_containerd_1(node):
    root, env = node
    (root / "containerd").write_text("#!/bin/sh\necho 'containerd github.com/containerd/containerd v1.7.27 abc'\n")
    assert run_install(env).returncode == 0
    text = (root / "containerd.d" / "gvisor.toml").read_text()
    assert "version = 2" in text and '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc]' in text


def test_install_for_any_containerd_drop_in_directory_with_a_shim_config(node):
    root, env = node
    config = root / "runsc.toml"
    config.write_text('binary_name = "/opt/runsc"\n')
    env.update(CONTAINERD_CONFIG_D=str(root / "conf.d"), RUNSC_CONFIG=str(config))
    result = run_install(env)
    assert result.returncode == 0, result.stderr
    assert not (root / "containerd.d").exists()
    text = (root / "conf.d" / "gvisor.toml").read_text()
    assert '[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runsc.options]' in text
    assert 'TypeUrl = "io.containerd.runsc.v1.options"' in text and f'ConfigPath = "{config}"' in text
    env["RUNSC_CONFIG"] = str(root / "missing.toml")
    refused = run_install(env)
    assert refused.returncode == 1 and "missing.toml does not exist" in refused.stderr


def test_install_refuses_a_binary_that_does_not_match_its_hash(node):
    root, env = node
    (root / "release" / "runsc").write_text("#!/bin/sh\necho tampered\n")
    result = run_install(env)
    assert result.returncode == 1
    assert "runsc does not match its sha512; refusing to install it" in result.stderr
    assert not (root / "bin" / "runsc").exists()


def test_install_docs_match_the_runtimeclass():
    text = INSTALL.read_text()
    runtime_class = yaml.safe_load((REPO / "deploy" / "gvisor" / "runtimeclass.yaml").read_text())
    assert runtime_class["metadata"]["name"] == "gvisor" and runtime_class["handler"] == "runsc"
    assert "containerd.runtimes.runsc]" in text
    assert textwrap.dedent("kubectl apply -f deploy/gvisor/runtimeclass.yaml") in text
