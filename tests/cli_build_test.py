"""`pipedreamer build` end to end: real wheels, a real registry, clear failures."""

from __future__ import annotations

import gzip
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile

import pytest
import yaml

from builder.testing import write_fake_base
from tests.registry_server import Registry
from tools.pytest import child_python

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "hello"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    # One wheel cache for the module: the first build pays for pip, later ones reuse it.
    cache = tmp_path_factory.mktemp("cache")
    return dict(
        os.environ,
        PYTHONPATH=child_python.pythonpath(ROOT),
        PIPEDREAMER_CACHE=str(cache),
        DOCKER_CONFIG=str(cache / "no-docker-config"),
    )


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return write_fake_base(tmp_path_factory.mktemp("base") / "layout")


def cli(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], cwd=ROOT, env=env, input=stdin, capture_output=True, text=True, timeout=600
    )


def test_build_twice_gives_one_digest_and_one_json_document(tmp_path, env, base):
    first = cli(env, "build", str(EXAMPLE), "--base", str(base), "--oci-layout", str(tmp_path / "a"), "-o", "json")
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert doc["image"] == "hello:1.0.0" and doc["digest"].startswith("sha256:")
    index = json.loads((tmp_path / "a" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == doc["digest"]
    second = cli(env, "build", str(EXAMPLE), "--base", str(base), "--oci-layout", str(tmp_path / "b"), "-o", "json")
    assert json.loads(second.stdout)["digest"] == doc["digest"]


def test_build_and_push_with_basic_auth(tmp_path, env, base):
    registry = Registry(tmp_path / "registry", htpasswd=("ci", "s3cret-pass"))
    try:
        result = cli(
            env, "build", str(EXAMPLE), "--base", str(base), "--push", "--registry", f"{registry.host}/flows",
            "--username", "ci", "--password-stdin", "-o", "json", stdin="s3cret-pass\n",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        doc = json.loads(result.stdout)
        assert doc["image"] == f"{registry.host}/flows/hello:1.0.0"
        response = registry.get_manifest("flows/hello", "1.0.0", auth=("ci", "s3cret-pass"))
        assert response.status_code == 200
        assert response.headers["Docker-Content-Digest"] == doc["digest"]
        assert "s3cret-pass" not in result.stdout + result.stderr

        refused = cli(
            env, "build", str(EXAMPLE), "--base", str(base), "--push", "--registry", f"{registry.host}/flows",
            "--username", "ci", "--password-stdin", stdin="wrong\n",
        )  # fmt: skip
        assert refused.returncode == 1 and "Traceback" not in refused.stderr
        assert "401" in refused.stderr or "unauthorized" in refused.stderr.lower()
        assert "wrong" not in refused.stderr
    finally:
        registry.stop()


def test_a_version_with_build_metadata_is_pushed_and_deployed_under_one_tag(tmp_path, env, base):
    # `+` is not allowed in an OCI tag: build, push and deploy all say `_` instead.
    project = tmp_path / "hello"
    shutil.copytree(EXAMPLE, project)
    spec = project / "workflow.yaml"
    spec.write_text(spec.read_text().replace('version: "1.0"', 'version: "1.2.3-rc.1+build.7"'))
    registry = Registry(tmp_path / "registry")
    try:
        pushed = cli(env, "build", str(project), "--base", str(base), "--push", "--registry", f"{registry.host}/flows",
                     "--oci-layout", str(tmp_path / "layout"), "-o", "json")  # fmt: skip
        assert pushed.returncode == 0, pushed.stderr
        doc = json.loads(pushed.stdout)
        image = f"{registry.host}/flows/hello:1.2.3-rc.1_build.7"
        assert doc["image"] == doc["pushed"] == image
        response = registry.get_manifest("flows/hello", "1.2.3-rc.1_build.7")
        assert response.status_code == 200, response.text
        assert response.headers["Docker-Content-Digest"] == doc["digest"]
        index = json.loads((tmp_path / "layout" / "index.json").read_text())
        assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "1.2.3-rc.1_build.7"

        deployed = cli(env, "deploy", str(project), "--dry-run", "--registry", f"{registry.host}/flows")
        assert deployed.returncode == 0, deployed.stderr
        (deployment,) = [d for d in yaml.safe_load_all(deployed.stdout) if d and d["kind"] == "Deployment"]
        assert [c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]] == [image]
        assert deployment["metadata"]["labels"]["app.kubernetes.io/version"] == "1.2.3-rc.1_build.7"
    finally:
        registry.stop()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--oci-layout", "OUT"], "--base is required"),
        (["--base", "BASE"], "nothing to do"),
        (["--base", "BASE", "--push"], "--push needs --registry"),
        (["--base", "BASE", "--oci-layout", "OUT", "--username", "u"], "--username needs --password-stdin"),
        (["--base", "MISSING", "--oci-layout", "OUT"], "MISSING"),
        (["--base", "BASE", "--oci-layout", "OUT", "--platform", "linux/s390x"], "s390x"),
    ],
)
def test_bad_flags_fail_clearly_and_leave_nothing(tmp_path, env, base, args, message):
    out = tmp_path / "out"
    args = [a.replace("OUT", str(out)).replace("MISSING", str(tmp_path / "missing")).replace("BASE", str(base)) for a in args]
    message = message.replace("MISSING", str(tmp_path / "missing"))
    result = cli(env, "build", str(EXAMPLE), *args)
    assert result.returncode == 1, result.stdout
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


def test_dockerfile_is_written_for_docker_users(tmp_path, env):
    project = tmp_path / "hello"
    shutil.copytree(EXAMPLE, project)
    result = cli(env, "build", str(project), "--dockerfile")
    assert result.returncode == 0, result.stderr
    text = (project / "Dockerfile.pipedreamer").read_text()
    assert "USER 65534" in text and "/app" in text


def test_secrets_files_at_any_depth_never_reach_the_image(tmp_path, env, base):
    project = tmp_path / "hello"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__", ".secrets*"))
    secret = "sk_live_NeverInTheImage42"
    planted = [".secrets.yaml", ".env", "nodes/.env", "nodes/.secrets.yaml", "nodes/.secrets/stripe",
               "nodes/lib/.secrets/github", "prod.secrets.yaml", "nodes/staging.secrets.yaml", "secrets/stripe"]  # fmt: skip
    for rel in planted:
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_text(f"stripe:\n  api_key: {secret}\n")
    result = cli(env, "build", str(project), "--base", str(base), "--oci-layout", str(tmp_path / "out"), "-o", "json")
    assert result.returncode == 0, result.stderr
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    manifest = json.loads(blob(tmp_path / "out", index["manifests"][0]["digest"]).read_bytes())
    with tarfile.open(blob(tmp_path / "out", manifest["layers"][-1]["digest"])) as layer:
        names = layer.getnames()
    assert "app/workflow.yaml" in names and "app/nodes/greet.py" in names
    in_app = [n.removeprefix("app/") for n in names if n.startswith("app/")]
    assert not [n for n in in_app if "secrets" in n or any(part.startswith(".") for part in n.split("/"))], in_app
    for entry in manifest["layers"]:
        data = gzip.decompress(blob(tmp_path / "out", entry["digest"]).read_bytes())
        assert secret.encode() not in data, f"a secret reached layer {entry['digest']}"


def blob(layout: pathlib.Path, digest: str) -> pathlib.Path:
    return layout / "blobs" / "sha256" / digest.split(":", 1)[1]
