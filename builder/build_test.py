"""Tests for builder.build with a synthetic base and a stand-in wheels layer (no network)."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from builder import build as build_module
from builder.build import ENTRYPOINT, BuildError, build_image, image_reference
from builder.layers import LayerEntry, write_layer_cached
from builder.oci import blob_path
from builder.testing import write_fake_base

REPO = Path(__file__).resolve().parent.parent
HELLO = REPO / "examples" / "hello"


@pytest.fixture(autouse=True)
def fake_wheels(monkeypatch: pytest.MonkeyPatch) -> None:
    """A small per-platform site-packages layer instead of pip."""

    def wheels_layer(lock, python_version, platform, *, cache, source_date_epoch, progress=None, **_):
        entries = [LayerEntry(f"opt/pipedreamer/site-packages/fake-{platform.architecture}-{python_version}.py",
                              "file", data=b"x = 1\n")]  # fmt: skip
        return write_layer_cached(entries, Path(cache) / "layers", source_date_epoch=source_date_epoch)

    monkeypatch.setattr(build_module, "wheels_layer", wheels_layer)
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return write_fake_base(tmp_path / "base", ["linux/amd64", "linux/arm64"])


def checkout(dest: Path, *, mtime: int, file_mode: int) -> Path:
    shutil.copytree(HELLO, dest, ignore=shutil.ignore_patterns("__pycache__"))
    for path in dest.rglob("*"):
        if path.is_file():
            path.chmod(file_mode)
        os.utime(path, (mtime, mtime))
    return dest


def layout_manifest(layout: Path) -> tuple[dict, dict]:
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(blob_path(layout, index["manifests"][0]["digest"]).read_text())
    config = json.loads(blob_path(layout, manifest["config"]["digest"]).read_text())
    return manifest, config


def layer_names(layout: Path, digest: str) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob_path(layout, digest).read_bytes()))) as tar:
        return tar.getnames()


def test_two_checkouts_with_different_mtimes_and_umask_give_the_same_digest(tmp_path: Path, base: Path) -> None:
    one = checkout(tmp_path / "a" / "hello", mtime=1_000, file_mode=0o600)
    old = os.umask(0o077)
    try:
        r1 = build_image(one, base, tmp_path / "out1", cache=tmp_path / "cache1")
    finally:
        os.umask(old)
    two = checkout(tmp_path / "b" / "c" / "hello", mtime=1_900_000_000, file_mode=0o664)
    r2 = build_image(two, base, tmp_path / "out2", cache=tmp_path / "cache2")
    assert r1.digest == r2.digest
    assert r1.digest.startswith("sha256:")
    assert (tmp_path / "out1" / "index.json").read_bytes() == (tmp_path / "out2" / "index.json").read_bytes()


def test_changing_one_node_changes_only_the_workflow_layer(tmp_path: Path, base: Path) -> None:
    src = checkout(tmp_path / "hello", mtime=1, file_mode=0o644)
    first = build_image(src, base, tmp_path / "out", cache=tmp_path / "cache")
    before, _ = layout_manifest(tmp_path / "out")
    node = next((src / "nodes").glob("*.py"))
    node.write_text(node.read_text() + "\n# changed\n")
    second = build_image(src, base, tmp_path / "out", cache=tmp_path / "cache")
    after, _ = layout_manifest(tmp_path / "out")
    assert first.digest != second.digest
    changed = [i for i, (a, b) in enumerate(zip(before["layers"], after["layers"])) if a != b]
    assert changed == [len(after["layers"]) - 1]  # the last layer: /app
    assert {r.name: r.cached for r in second.layers} == {"wheels": True, "engine": True, "workflow": False}


def test_image_config_and_annotations(tmp_path: Path, base: Path) -> None:
    result = build_image(HELLO, base, tmp_path / "out", source_date_epoch=1700000000, registry="registry.local:5000/",
                         cache=tmp_path / "cache", revision="a" * 40, source="https://example.com/flows")  # fmt: skip
    manifest, config = layout_manifest(tmp_path / "out")
    assert result.image == "registry.local:5000/hello:1.0.0"
    assert config["created"] == "2023-11-14T22:13:20Z"
    assert config["config"]["User"] == "65534"
    assert config["config"]["Entrypoint"] == list(ENTRYPOINT)
    assert config["config"]["WorkingDir"] == "/app"
    assert "Cmd" not in config["config"]
    env = dict(e.split("=", 1) for e in config["config"]["Env"])
    assert env["PYTHONPATH"] == "/opt/pipedreamer/lib:/opt/pipedreamer/site-packages"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert config["config"]["Labels"]["dev.pipedreamer.python.version"] == "3.13"
    assert manifest["annotations"] == {
        "org.opencontainers.image.title": "hello",
        "org.opencontainers.image.version": "1.0.0",
        "org.opencontainers.image.revision": "a" * 40,
        "org.opencontainers.image.source": "https://example.com/flows",
    }
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert index["manifests"][0]["annotations"] == {"org.opencontainers.image.ref.name": "1.0.0"}
    assert index["manifests"][0]["platform"] == {"architecture": "amd64", "os": "linux"}
    assert result.digest == index["manifests"][0]["digest"]


def test_layers_hold_app_engine_and_nothing_secret(tmp_path: Path, base: Path) -> None:
    src = checkout(tmp_path / "hello", mtime=1, file_mode=0o644)
    (src / ".secrets").mkdir()
    (src / ".secrets" / "github").write_text("token: s3cret")
    (src / ".secrets.yaml").write_text("x: s3cret")
    (src / "nodes" / "__pycache__").mkdir()
    (src / "nodes" / "__pycache__" / "x.pyc").write_bytes(b"x")
    build_image(src, base, tmp_path / "out", cache=tmp_path / "cache")
    manifest, _ = layout_manifest(tmp_path / "out")
    app = layer_names(tmp_path / "out", manifest["layers"][-1]["digest"])
    assert "app/workflow.yaml" in app
    assert not any("secret" in n or "__pycache__" in n or n.startswith("app/tests") or "BUILD" in n for n in app)
    engine = layer_names(tmp_path / "out", manifest["layers"][-2]["digest"])
    assert "opt/pipedreamer/lib/engine/spec.py" in engine
    assert any(n.endswith("workflow_pb2.py") for n in engine)
    assert not any(n.endswith("_test.py") for n in engine)


def test_two_platforms_make_an_index(tmp_path: Path, base: Path) -> None:
    result = build_image(HELLO, base, tmp_path / "out", platforms=["linux/amd64", "linux/arm64"], cache=tmp_path / "c")
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert index["manifests"][0]["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert index["manifests"][0]["digest"] == result.digest
    inner = json.loads(blob_path(tmp_path / "out", result.digest).read_text())
    assert [m["platform"]["architecture"] for m in inner["manifests"]] == ["amd64", "arm64"]
    assert result.platforms == ("linux/amd64", "linux/arm64")
    wheels = [r.digest for r in result.layers if r.name == "wheels"]
    assert len(set(wheels)) == 2


def nothing_left(parent: Path, out_name: str) -> bool:
    return not any(p.name == out_name or p.name.startswith(f".{out_name}.") for p in parent.iterdir())


@pytest.mark.parametrize("problem", ["missing", "no-index", "corrupt", "wrong-platform"])
def test_bad_base_fails_clearly_and_leaves_nothing(tmp_path: Path, problem: str) -> None:
    layout = tmp_path / "base"
    if problem != "missing":
        write_fake_base(layout, ["linux/arm64"] if problem == "wrong-platform" else ["linux/amd64"])
    if problem == "no-index":
        (layout / "index.json").unlink()
    if problem == "corrupt":
        for blob in (layout / "blobs" / "sha256").iterdir():
            if blob.stat().st_size > 300:
                blob.write_bytes(blob.read_bytes()[:-8] + b"garbage!")
    expected = {
        "missing": "no such directory",
        "no-index": "index.json is missing",
        "corrupt": "is corrupt",
        "wrong-platform": r"no image for linux/amd64 \(it has: linux/arm64\)",
    }[problem]
    out_parent = tmp_path / "outs"
    out_parent.mkdir()
    with pytest.raises(BuildError, match=expected):
        build_image(HELLO, layout, out_parent / "out", cache=tmp_path / "cache")
    assert nothing_left(out_parent, "out")


def test_unreadable_workflow_and_bad_spec(tmp_path: Path, base: Path) -> None:
    with pytest.raises(BuildError, match="nowhere: no such workflow directory"):
        build_image(tmp_path / "nowhere", base, tmp_path / "out", cache=tmp_path / "cache")
    src = checkout(tmp_path / "hello", mtime=1, file_mode=0o644)
    (src / "workflow.yaml").write_text("name: Not_Valid\nversion: x\n")
    with pytest.raises(BuildError, match=r"workflow.yaml:1: name:"):
        build_image(src, base, tmp_path / "out", cache=tmp_path / "cache")
    assert nothing_left(tmp_path, "out")


def test_failure_keeps_the_previous_layout_intact(tmp_path: Path, base: Path) -> None:
    out = tmp_path / "out"
    good = build_image(HELLO, base, out, cache=tmp_path / "cache")
    before = (out / "index.json").read_bytes()
    with pytest.raises(BuildError):
        build_image(HELLO, base, out, platforms=["linux/s390x"], cache=tmp_path / "cache")
    with pytest.raises(BuildError):
        build_image(HELLO, tmp_path / "missing-base", out, cache=tmp_path / "cache")
    assert (out / "index.json").read_bytes() == before
    assert good.digest in before.decode()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out")) == []


def test_tagged_registry_base_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="pin the base by digest"):
        build_image(HELLO, "registry.local:5000/base:latest", tmp_path / "out", cache=tmp_path / "cache")


def test_image_reference() -> None:
    assert image_reference("", "hello", "1.0.0") == "hello:1.0.0"
    assert image_reference("localhost:5000/", "hello", "1.0.0") == "localhost:5000/hello:1.0.0"


@pytest.mark.parametrize(
    "origin",
    [
        "git@github.com:org/repo.git",
        "git@github.com:org/repo",
        "github.com:org/repo.git",
        "git@GitHub.com:/org/repo.git/",
        "ssh://git@github.com/org/repo.git",
        "ssh://git@github.com:2222/org/repo",
        "git+ssh://git@github.com/org/repo.git",
        "git://github.com/org/repo.git",
        "https://github.com/org/repo.git",
        "https://github.com/org/repo/",
        "https://github.com:443/org/repo",
        "http://github.com/org/repo.git",
        "https://x-access-token:ghp_s3cretT0ken@github.com/org/repo.git",
        "https://ghp_s3cretT0ken@github.com/org/repo.git?token=ghp_s3cretT0ken#ghp_s3cretT0ken",
        "ssh://ghp_s3cretT0ken:pw@github.com/org/repo.git",
        "ghp_s3cretT0ken@github.com:org/repo.git",
        "  https://github.com/org/repo.git\n",
    ],
)
def test_every_remote_form_gives_one_https_source_without_credentials(origin: str) -> None:
    assert build_module.canonical_source(origin) == "https://github.com/org/repo"


@pytest.mark.parametrize(
    "origin,source",
    [
        ("https://git.example.com:8443/team/flows.git", "https://git.example.com:8443/team/flows"),
        ("git@[2001:db8::1]:team/flows.git", "https://[2001:db8::1]/team/flows"),
        ("ssh://git@[2001:db8::1]:2222/team/flows", "https://[2001:db8::1]/team/flows"),
        ("git@gitlab.example.com:group/sub/flows.git", "https://gitlab.example.com/group/sub/flows"),
    ],
)
def test_ports_ipv6_and_nested_groups(origin: str, source: str) -> None:
    assert build_module.canonical_source(origin) == source


@pytest.mark.parametrize(
    "origin",
    ["", "/srv/git/flows.git", "./flows", "../flows.git", "file:///srv/git/flows.git", "C:/src/flows",
     "ftp://example.com/flows", "https://github.com/", "git@github.com:", "https://github.com:notaport/x"],
)  # fmt: skip
def test_local_and_unusable_origins_give_no_source(origin: str) -> None:
    assert build_module.canonical_source(origin) == ""


def git_checkout(dest: Path, origin: str) -> Path:
    src = checkout(dest / "hello", mtime=1, file_mode=0o644)
    for args in (["init", "-q"], ["remote", "add", "origin", origin]):
        subprocess.run(["git", "-C", str(dest), *args], check=True, capture_output=True)
    return src


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_ssh_and_https_clones_give_the_same_image(tmp_path: Path, base: Path) -> None:
    token = "ghp_s3cretT0kenThatMustNotLeak"
    ssh = git_checkout(tmp_path / "ssh", "git@github.com:org/flows.git")
    https = git_checkout(tmp_path / "https", f"https://x-access-token:{token}@github.com/org/flows.git")
    local = git_checkout(tmp_path / "local", str(tmp_path / "upstream.git"))
    r1 = build_image(ssh, base, tmp_path / "out1", cache=tmp_path / "cache")
    r2 = build_image(https, base, tmp_path / "out2", cache=tmp_path / "cache")
    assert r1.digest == r2.digest
    manifest, config = layout_manifest(tmp_path / "out2")
    assert manifest["annotations"]["org.opencontainers.image.source"] == "https://github.com/org/flows"
    assert config["config"]["Labels"]["org.opencontainers.image.source"] == "https://github.com/org/flows"
    assert not any(token.encode() in p.read_bytes() for p in (tmp_path / "out2").rglob("*") if p.is_file())
    build_image(local, base, tmp_path / "out3", cache=tmp_path / "cache")
    assert "org.opencontainers.image.source" not in layout_manifest(tmp_path / "out3")[0]["annotations"]
