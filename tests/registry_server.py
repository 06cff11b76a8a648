"""Test support: a real `docker-registry` (Debian package) on a free loopback port."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import requests

from builder.layers import LayerEntry, write_layer
from builder.oci import (
    INDEX_MEDIA_TYPE,
    MANIFEST_MEDIA_TYPE,
    LayoutWriter,
    canonical_json,
    descriptor,
    image_index,
    image_manifest,
)
from tests.kube_cluster import cache_dir
from tests.support import free_port

BINARY = "docker-registry"
# crane (github.com/google/go-containerregistry, built by tools/kube/build.sh): an
# independent client to check what our push left in a registry. Located when this
# module is imported, before a test points PIPEDREAMER_CACHE elsewhere.
CRANE = Path(os.environ.get("PIPEDREAMER_CRANE") or cache_dir() / "bin" / "crane")


def crane(*args: str) -> str:
    """`crane ARGS --insecure` (plain HTTP to the test registry); its stdout, or the test fails with its stderr."""
    import pytest

    if not os.access(CRANE, os.X_OK):
        pytest.fail(f"crane not found at {CRANE}; build it with: bash tools/kube/build.sh crane")
    proc = subprocess.run([str(CRANE), *args, "--insecure"], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        pytest.fail(f"crane {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


class Registry:
    """A registry process; `restart()` keeps its port and storage."""

    def __init__(self, workdir: Path, *, htpasswd: tuple[str, str] | None = None, token_auth: dict | None = None,
                 listen: str = "127.0.0.1") -> None:  # fmt: skip
        """``listen="0.0.0.0"``: also reachable from a test node's network namespace (tests/kube_node.py);
        ``host`` stays the loopback address."""
        if shutil.which(BINARY) is None:
            raise RuntimeError(f"{BINARY} is not installed: apt-get install -y docker-registry")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.config = self.workdir / "config.yml"
        auth = ""
        if htpasswd:
            user, password = htpasswd
            if shutil.which("htpasswd") is None:
                raise RuntimeError("htpasswd is not installed: apt-get install -y apache2-utils")
            subprocess.run(["htpasswd", "-Bbc", str(self.workdir / "htpasswd"), user, password], check=True,
                           capture_output=True)  # fmt: skip
            auth = f"auth:\n  htpasswd:\n    realm: pipedreamer-test\n    path: {self.workdir / 'htpasswd'}\n"
        if token_auth:
            auth = "auth:\n  token:\n" + "".join(f"    {k}: {v}\n" for k, v in token_auth.items())
        self.config.write_text(
            "version: 0.1\n"
            "log:\n  level: error\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.workdir / 'storage'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {listen}:{self.port}\n" + auth
        )
        self.process: subprocess.Popen | None = None
        self.log = self.workdir / "registry.log"
        self.start()

    def start(self) -> None:
        log = open(self.log, "ab")
        self.process = subprocess.Popen([BINARY, "serve", str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{BINARY} exited with {self.process.returncode}: {self.log.read_text()[-2000:]}")
            try:
                response = requests.get(f"http://{self.host}/v2/", timeout=1)
                if response.status_code in (200, 401):
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{BINARY} did not answer on {self.host} within 20 s: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def restart(self) -> None:
        self.kill()
        self.start()

    def get_manifest(self, repo: str, reference: str, auth: tuple[str, str] | None = None) -> requests.Response:
        accept = ",".join([
            "application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
        ])  # fmt: skip
        return requests.get(f"http://{self.host}/v2/{repo}/manifests/{reference}", headers={"Accept": accept},
                            auth=auth, timeout=10)  # fmt: skip


def docker_config(path: Path, host: str, user: str, password: str) -> Path:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"auths": {host: {"auth": token}}}))
    return path


def make_layout(out: Path, *, layers: int = 2, layer_size: int = 64 * 1024, platforms=("amd64",), seed: int = 0) -> Path:
    """An image layout whose layers hold random (incompressible) bytes."""
    scratch = out.parent / f"{out.name}-layers"
    manifests = []
    with LayoutWriter(out) as writer:
        for arch in platforms:
            descs, diff_ids = [], []
            for i in range(layers):
                rnd = (f"{seed}-{arch}-{i}".encode() * 16)[:64] + os.urandom(layer_size)
                layer = write_layer([LayerEntry(f"data/{arch}-{i}.bin", "file", data=rnd)], scratch / f"{arch}-{i}.tgz")
                writer.add_file(layer.path, layer.digest)
                descs.append(descriptor(layer.media_type, layer.digest, layer.size))
                diff_ids.append(layer.diff_id)
            config = canonical_json({"architecture": arch, "os": "linux", "config": {},
                                     "rootfs": {"type": "layers", "diff_ids": diff_ids}})  # fmt: skip
            writer.add_bytes(config)
            manifest = image_manifest(config, descs, {"org.opencontainers.image.title": "t"})
            manifests.append(writer.add_json(manifest, MANIFEST_MEDIA_TYPE, platform={"os": "linux", "architecture": arch}))
        if len(manifests) == 1:
            top = {**manifests[0], "annotations": {"org.opencontainers.image.ref.name": "1.0.0"}}
        else:
            top = writer.add_json(image_index(manifests), INDEX_MEDIA_TYPE,
                                  annotations={"org.opencontainers.image.ref.name": "1.0.0"})  # fmt: skip
        writer.commit([top])
    return out
