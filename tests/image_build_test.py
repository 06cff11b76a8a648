"""`build_image` for real: locked wheels from pip, the assembled Debian 13 base, runc.

Prints the figures the issue asks for (run with -s to see them): digests of the
same example built twice, cold and warm build times, image size against the base.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from builder.build import build_image
from builder.errors import BuildError
from builder.oci import blob_path
from tests.image_support import REPO, real_base, run_in_runc, shared_cache

EXAMPLE = REPO / "examples" / "github-digest"
MB = 1024 * 1024


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return real_base(tmp_path_factory)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_cache(tmp_path_factory)


def checkout(root: Path, *, mtime: int, mode: int) -> Path:
    """A copy of the parts of the repository an image is built from, at `root`."""
    for part in ("engine", "proto", "examples/github-digest"):
        shutil.copytree(REPO / part, root / part, ignore=shutil.ignore_patterns("__pycache__"))
    for path in root.rglob("*"):
        if path.is_file():
            path.chmod(mode)
        os.utime(path, (mtime, mtime))
    return root


def test_same_digest_from_two_checkouts_warm_rebuild_and_size(tmp_path: Path, base: Path, cache: Path) -> None:
    root_one = checkout(tmp_path / "one", mtime=1_000_000, mode=0o600)
    root_two = checkout(tmp_path / "elsewhere" / "two", mtime=1_800_000_000, mode=0o664)
    one = root_one / "examples" / "github-digest"

    started = time.monotonic()
    old = os.umask(0o077)
    try:
        cold = build_image(one, base, tmp_path / "out-one", cache=cache, engine_root=root_one)
    finally:
        os.umask(old)
    cold_seconds = time.monotonic() - started
    # A second machine: its own empty cache, another path, other mtimes and umask.
    other = build_image(root_two / "examples" / "github-digest", base, tmp_path / "out-two",
                        cache=tmp_path / "other-cache", engine_root=root_two)  # fmt: skip
    assert [(r.name, r.digest) for r in other.layers] == [(r.name, r.digest) for r in cold.layers]
    assert other.digest == cold.digest

    node = one / "nodes" / "summarize.py"
    node.write_text(node.read_text() + "\n# a one-line change\n")
    started = time.monotonic()
    warm = build_image(one, base, tmp_path / "out-one", cache=cache, engine_root=root_one)
    warm_seconds = time.monotonic() - started
    assert warm.digest != cold.digest
    rebuilt = [r.name for r in warm.layers if not r.cached]
    assert rebuilt == ["workflow"]  # speed itself is measured by `python -m bench image`
    growth = warm.image_size - warm.base_size
    assert growth < 40 * MB
    print(f"\n[image figures] digest twice: {cold.digest} / {other.digest}")
    print(f"[image figures] cold build {cold_seconds:.1f} s (pip + layers), warm rebuild {warm_seconds:.2f} s "
          f"(rebuilt: {rebuilt})")  # fmt: skip
    print(f"[image figures] base {warm.base_size / MB:.1f} MB, image {warm.image_size / MB:.1f} MB "
          f"(+{growth / MB:.1f} MB compressed)")  # fmt: skip


def test_wheels_layer_holds_cp313_wheels_and_nothing_from_the_host(tmp_path: Path, base: Path, cache: Path) -> None:
    import gzip
    import io
    import tarfile

    result = build_image(EXAMPLE, base, tmp_path / "out", cache=cache)
    wheels = next(r for r in result.layers if r.name == "wheels")
    data = gzip.decompress(blob_path(tmp_path / "out", wheels.digest).read_bytes())
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
    site = "opt/pipedreamer/site-packages/"
    assert any(n.startswith(site + "grpc/_cython/cygrpc.cpython-313-x86_64-linux-gnu") for n in names)
    assert any(n.startswith(site + "yaml/") for n in names)
    assert not any(n.startswith((site + "kubernetes/", site + "_pytest/", site + "bin/", site + "grpc_tools/"))
                   for n in names)  # fmt: skip
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    # Host paths: the checkout, the cache, the build interpreter's virtualenv (wheels'
    # own build paths are theirs; a system interpreter's prefix, /usr, is no host path).
    venv = [sys.prefix] if sys.prefix != sys.base_prefix else []
    for host_path in (str(REPO), str(cache), *venv, str(Path.home() / ".cache")):
        assert host_path.encode() not in data, host_path


def test_image_imports_its_dependencies_on_the_base_under_runc(tmp_path: Path, base: Path, cache: Path) -> None:
    build_image(EXAMPLE, base, tmp_path / "out", cache=cache)
    config = json.loads((tmp_path / "out" / "index.json").read_text())
    tag = config["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
    script = (
        "import grpc, yaml, aiohttp, google.protobuf, nats, prometheus_client, pyseccomp, json, os;"
        "from engine.spec import load_spec;"
        "spec = load_spec('/app/workflow.yaml').spec;"
        "print(json.dumps({'name': spec.name, 'uid': os.getuid(), 'cwd': os.getcwd(), 'grpc': grpc.__version__}))"
    )
    result = run_in_runc(tmp_path / "out", tag, tmp_path, ["/usr/bin/python3", "-c", script])
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["name"] == "github-digest" and report["uid"] == 65534 and report["cwd"] == "/app"


def test_two_platforms(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, cache: Path) -> None:
    both = real_base(tmp_path_factory, ("amd64", "arm64"))
    result = build_image(EXAMPLE, both, tmp_path / "out", platforms=["linux/amd64", "linux/arm64"], cache=cache)
    index = json.loads(blob_path(tmp_path / "out", result.digest).read_text())
    assert [m["platform"]["architecture"] for m in index["manifests"]] == ["amd64", "arm64"]
    wheels = {r.platform: r.digest for r in result.layers if r.name == "wheels"}
    assert len(set(wheels.values())) == 2


def test_disk_full_leaves_nothing(tmp_path: Path, base: Path, cache: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(small)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a small tmpfs to fill (needs root): {mounted.stderr.strip()}")
    try:
        with pytest.raises(BuildError, match=r"--oci-layout .*No space left on device"):
            build_image(EXAMPLE, base, small / "out", cache=cache)
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_base_pinned_by_digest_in_a_registry(tmp_path: Path, base: Path, cache: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from builder.registry import push_image
    from tests.registry_server import Registry

    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))
    registry = Registry(tmp_path / "registry")
    try:
        pushed = push_image(base, f"{registry.host}/bases/python:3.13", cache_dir=tmp_path / "push-cache")
        pinned = f"{registry.host}/bases/python@{pushed.digest}"
        from_registry = build_image(EXAMPLE, pinned, tmp_path / "a", cache=cache, registry=registry.host)
        from_layout = build_image(EXAMPLE, base, tmp_path / "b", cache=cache, registry=registry.host)
        assert from_registry.digest == from_layout.digest
        with pytest.raises(BuildError, match="pin the base by digest"):
            build_image(EXAMPLE, f"{registry.host}/bases/python:3.13", tmp_path / "c", cache=cache)
        # The image goes back to the same registry: the base's blobs are mounted, not uploaded.
        result = push_image(tmp_path / "a", from_registry.image, cache_dir=cache)
        assert result.digest == from_registry.digest and result.mounted >= 1
    finally:
        registry.stop()
