"""Push and pull against a real `docker-registry` on loopback, with and without basic auth."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from builder.errors import BuildError
from builder.oci import INDEX_MEDIA_TYPE, Platform, read_base
from builder.registry import Credentials, docker_config_credentials, pull_base, push_image
from tests.registry_server import Registry, crane, docker_config, make_layout


def top_digest(layout: Path) -> str:
    return json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]


@pytest.fixture
def registry(tmp_path: Path):
    server = Registry(tmp_path / "registry")
    yield server
    server.stop()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PIPEDREAMER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))
    return tmp_path / "cache"


def test_push_then_read_back_by_tag(tmp_path: Path, registry: Registry, cache: Path) -> None:
    layout = make_layout(tmp_path / "image")
    result = push_image(layout, f"{registry.host}/flows/hello:1.0.0")
    assert result.digest == top_digest(layout)
    assert result.uploaded == 3 and result.skipped == 0
    response = registry.get_manifest("flows/hello", "1.0.0")
    assert response.status_code == 200
    assert response.headers["Docker-Content-Digest"] == result.digest
    assert response.content == (layout / "blobs" / "sha256" / result.digest[7:]).read_bytes()
    # An independent client agrees: every blob is there and matches its digest.
    crane("validate", "--remote", f"{registry.host}/flows/hello:1.0.0")
    assert crane("manifest", f"{registry.host}/flows/hello:1.0.0").encode() == response.content

    again = push_image(layout, f"{registry.host}/flows/hello:1.0.0")
    assert (again.uploaded, again.skipped, again.digest) == (0, 3, result.digest)


def test_tag_defaults_to_the_layout_ref_name(tmp_path: Path, registry: Registry, cache: Path) -> None:
    layout = make_layout(tmp_path / "image")
    result = push_image(layout, f"{registry.host}/hello")
    assert result.reference == f"{registry.host}/hello:1.0.0"
    assert registry.get_manifest("hello", "1.0.0").headers["Docker-Content-Digest"] == result.digest


def test_multi_platform_index_children_first(tmp_path: Path, registry: Registry, cache: Path) -> None:
    layout = make_layout(tmp_path / "image", platforms=("amd64", "arm64"))
    result = push_image(layout, f"{registry.host}/multi:1.0.0")
    response = registry.get_manifest("multi", "1.0.0")
    assert response.headers["Docker-Content-Digest"] == result.digest == top_digest(layout)
    index = response.json()
    assert index["mediaType"] == INDEX_MEDIA_TYPE
    for child in index["manifests"]:
        assert registry.get_manifest("multi", child["digest"]).status_code == 200
    crane("validate", "--remote", f"{registry.host}/multi:1.0.0")  # the index and every platform's image
    assert crane("digest", f"{registry.host}/multi:1.0.0").strip() == result.digest


def test_cross_repository_mount_for_blobs_pushed_before(tmp_path: Path, registry: Registry, cache: Path) -> None:
    layout = make_layout(tmp_path / "image")
    push_image(layout, f"{registry.host}/team-a/flow:1.0.0")
    second = push_image(layout, f"{registry.host}/team-b/flow:1.0.0")
    assert (second.mounted, second.uploaded) == (3, 0)
    assert registry.get_manifest("team-b/flow", "1.0.0").status_code == 200


def test_pull_base_by_digest_and_refuse_tags(tmp_path: Path, registry: Registry, cache: Path) -> None:
    layout = make_layout(tmp_path / "image", platforms=("amd64", "arm64"))
    pushed = push_image(layout, f"{registry.host}/bases/python:3.13")
    pulled = pull_base(f"{registry.host}/bases/python@{pushed.digest}", cache / "bases",
                       platforms=[Platform("linux", "arm64")])  # fmt: skip
    base = read_base(pulled, Platform("linux", "arm64"))
    assert base.platform.architecture == "arm64"
    with pytest.raises(BuildError, match="is missing"):
        read_base(pulled, Platform("linux", "amd64"))  # only what was asked for was fetched
    both = pull_base(f"{registry.host}/bases/python@{pushed.digest}", cache / "bases",
                     platforms=[Platform("linux", "amd64"), Platform("linux", "arm64")])  # fmt: skip
    assert read_base(both, Platform("linux", "amd64")).platform.architecture == "amd64"
    with pytest.raises(BuildError, match="pin the base by digest"):
        pull_base(f"{registry.host}/bases/python:3.13", cache / "bases")
    with pytest.raises(BuildError, match="manifest not found"):
        pull_base(f"{registry.host}/bases/python@sha256:{'0' * 64}", cache / "bases")


def test_basic_auth_from_docker_config_and_flags(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = Registry(tmp_path / "auth-registry", htpasswd=("alice", "wonderland"))
    try:
        layout = make_layout(tmp_path / "image")
        ref = f"{server.host}/private/flow:1.0.0"
        with pytest.raises(BuildError, match="requires credentials"):
            push_image(layout, ref)
        with pytest.raises(BuildError, match="refused the credentials"):
            push_image(layout, ref, credentials=Credentials("alice", "wrong"))
        assert server.get_manifest("private/flow", "1.0.0", auth=("alice", "wonderland")).status_code == 404

        config_dir = docker_config(tmp_path / "docker", server.host, "alice", "wonderland")
        monkeypatch.setenv("DOCKER_CONFIG", str(config_dir))
        assert docker_config_credentials(server.host) == Credentials("alice", "wonderland")
        result = push_image(layout, ref)
        response = server.get_manifest("private/flow", "1.0.0", auth=("alice", "wonderland"))
        assert response.headers["Docker-Content-Digest"] == result.digest

        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "none"))
        explicit = push_image(layout, ref, credentials=Credentials("alice", "wonderland"))
        assert explicit.skipped == 3
    finally:
        server.stop()


def _kill_when_uploading(registry: Registry, nth: int, then=None):
    seen = {"uploads": 0}

    def progress(message: str) -> None:
        if "uploading" in message:
            seen["uploads"] += 1
            if seen["uploads"] == nth:
                registry.kill()
                if then:
                    then()

    return progress


def test_registry_killed_mid_push_then_back_push_retries_and_completes(tmp_path: Path, registry: Registry, cache: Path) -> None:
    layout = make_layout(tmp_path / "image", layers=3, layer_size=4 * 1024 * 1024)
    restarter = threading.Timer(1.0, registry.start)
    started = time.monotonic()
    result = push_image(layout, f"{registry.host}/flaky:1.0.0",
                        progress=_kill_when_uploading(registry, 2, restarter.start), backoff=0.4, retries=6)  # fmt: skip
    restarter.join()
    assert time.monotonic() - started >= 1.0  # it really waited for the registry
    response = registry.get_manifest("flaky", "1.0.0")
    assert response.headers["Docker-Content-Digest"] == result.digest == top_digest(layout)
    crane("validate", "--remote", f"{registry.host}/flaky:1.0.0")  # no blob left half-written by the retries


def test_registry_killed_mid_push_fails_cleanly_without_a_manifest(tmp_path: Path, registry: Registry, cache: Path) -> None:
    layout = make_layout(tmp_path / "image", layers=3, layer_size=4 * 1024 * 1024)
    with pytest.raises(BuildError, match=r"failed after \d+ attempt"):
        push_image(layout, f"{registry.host}/broken:1.0.0", progress=_kill_when_uploading(registry, 2),
                   backoff=0.05, retries=3)  # fmt: skip
    registry.start()
    assert registry.get_manifest("broken", "1.0.0").status_code == 404


def test_unreachable_registry_and_bad_reference(tmp_path: Path, cache: Path) -> None:
    layout = make_layout(tmp_path / "image", layers=1)
    with pytest.raises(BuildError, match="failed after 2 attempt"):
        push_image(layout, "127.0.0.1:9/x:1", retries=2, backoff=0.01)
    with pytest.raises(BuildError, match="name the registry host"):
        push_image(layout, "just-a-name:1")
