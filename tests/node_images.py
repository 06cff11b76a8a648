"""The two images a test node needs besides the workflow's own, built here (there is no internet to pull them):

* ``pause``: the pod sandbox's process, compiled from Kubernetes' own
  ``build/pause/linux/pause.c`` (from the pinned k8s.io/kubernetes module in
  Go's module cache) with ``gcc -static``, alone in a layer;
* ``curl``: what the CronJobs run (``DEFAULT_CURL_IMAGE`` is curlimages/curl on
  Docker Hub): our distroless base plus Debian 13's ``curl`` and the libraries
  it needs that the base lacks, pinned with their sha256 in ``curl.lock.json``
  beside this file and unpacked the way ``deploy/base/assemble.py`` unpacks the
  base's packages.

    python -m tests.node_images --refresh-lock   # re-pin curl.lock.json to trixie's current packages

Both are written as OCI layouts and pushed with the builder's own push.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from builder.layers import LayerEntry, write_layer
from builder.oci import (
    MANIFEST_MEDIA_TYPE,
    LayoutWriter,
    canonical_json,
    descriptor,
    image_manifest,
    parse_platform,
    read_base,
)
from builder.registry import push_image
from builder.wheels import cache_root
from deploy.base import mirror
from deploy.base.assemble import LOCK as BASE_LOCK, deb_data_tar, fetch_debs, lock_snapshot, package_entries, read_lock
from deploy.base.refresh_lock import resolve_lock

HERE = Path(__file__).resolve().parent
CURL_LOCK = HERE / "curl.lock.json"
PAUSE_VERSION = "3.10"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def kubernetes_module_dir() -> Path:
    """The pinned k8s.io/kubernetes module's source in Go's module cache (tools/kube/build.sh downloaded it)."""
    gomod = Path(__file__).resolve().parent.parent / "tools" / "kube" / "kubernetes"
    # `go mod download` fetches it when the module cache lost it since the build, and prints where it is.
    out = subprocess.run(["go", "mod", "download", "-json", "k8s.io/kubernetes"], cwd=gomod,
                         capture_output=True, text=True)  # fmt: skip
    try:
        return Path(json.loads(out.stdout)["Dir"])
    except (ValueError, KeyError):
        raise RuntimeError(f"cannot find the k8s.io/kubernetes module: {out.stderr.strip() or out.stdout.strip()}") from None


def _write_image(out: Path, layers: list, config: dict, tag: str) -> Path:
    with LayoutWriter(out) as writer:
        descs = []
        for layer, path in layers:
            writer.add_file(path, layer.digest)
            descs.append(descriptor(layer.media_type, layer.digest, layer.size))
        config_blob = canonical_json(config)
        writer.add_bytes(config_blob)
        manifest = image_manifest(config_blob, descs, {"org.opencontainers.image.ref.name": tag})
        top = writer.add_json(manifest, MANIFEST_MEDIA_TYPE, annotations={"org.opencontainers.image.ref.name": tag})
        writer.commit([top])
    return out


def pause_layout(out: Path) -> Path:
    """An image whose only file is a static /pause built from Kubernetes' pause.c."""
    source = kubernetes_module_dir() / "build" / "pause" / "linux" / "pause.c"
    work = Path(tempfile.mkdtemp(prefix="pause-", dir=out.parent))
    try:
        binary = work / "pause"
        cc = subprocess.run(["gcc", "-Os", "-static", "-Wall", "-Werror", f"-DVERSION=v{PAUSE_VERSION}",
                             "-o", str(binary), str(source)], capture_output=True, text=True)  # fmt: skip
        if cc.returncode != 0:
            raise RuntimeError(f"gcc -static {source} failed (libc6-dev gives libc.a): {cc.stderr.strip()}")
        subprocess.run(["strip", str(binary)], check=False)
        layer = write_layer([LayerEntry("pause", "file", source=binary, executable=True)], work / "layer.tgz")
        config = {
            "architecture": "amd64", "os": "linux",
            "config": {"Entrypoint": ["/pause"], "User": "65535:65535", "Env": [PATH_ENV]},
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
        }  # fmt: skip
        return _write_image(out, [(layer, layer.path)], config, PAUSE_VERSION)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def curl_layout(base: Path, out: Path, cache: Path | None = None) -> Path:
    """Our distroless base plus Debian 13's curl (curl.lock.json), entrypoint curl."""
    arch = "amd64"
    debs = read_lock(CURL_LOCK, arch)
    files = fetch_debs(debs, arch, cache or cache_root(), lambda m: None, mirror.resolve_mirrors,
                       lock_snapshot(CURL_LOCK))  # fmt: skip
    entries: dict[str, LayerEntry] = {}
    for deb in debs:
        for entry, _data in package_entries(deb.name, deb_data_tar(files[deb.name]), arch):
            entries[entry.path] = entry
    base_image = read_base(base, parse_platform(f"linux/{arch}"))
    work = Path(tempfile.mkdtemp(prefix="curl-", dir=out.parent))
    try:
        layer = write_layer(entries.values(), work / "layer.tgz")
        config = json.loads(json.dumps(base_image.config))
        config["config"] = {**config.get("config", {}), "Entrypoint": ["curl"], "Cmd": ["--version"],
                            "User": "65534:65534", "Env": [PATH_ENV]}  # fmt: skip
        config["rootfs"] = {"type": "layers", "diff_ids": [*base_image.diff_ids, layer.diff_id]}
        config.pop("history", None)
        layers = [(_Existing(d), base_image.blob_path(d["digest"])) for d in base_image.layers] + [(layer, layer.path)]
        return _write_image(out, layers, config, "trixie")
    finally:
        shutil.rmtree(work, ignore_errors=True)


class _Existing:
    """A base layer as `_write_image` wants it: digest, media type and size of its descriptor."""

    def __init__(self, desc: dict) -> None:
        self.digest, self.media_type, self.size = desc["digest"], desc["mediaType"], desc["size"]


def push(layout: Path, reference: str) -> str:
    """Push the layout's image as `reference`; returns `reference` pinned by digest (`repo@sha256:…`)."""
    result = push_image(layout, reference)
    return f"{reference.rsplit(':', 1)[0]}@{result.digest}"


def refresh_lock(lock: Path = CURL_LOCK) -> dict:
    """Pin curl and the packages it needs that the base (deploy/base/lock.json) does not have."""
    resolved = resolve_lock(["curl"], ["amd64"], cache_root() / "apt", mirror.resolve_mirrors())
    base = json.loads(BASE_LOCK.read_text())["architectures"]["amd64"]
    packages = resolved["architectures"]["amd64"]
    resolved["architectures"]["amd64"] = {
        name: info for name, info in packages.items() if base.get(name, {}).get("version") != info["version"]
    }
    lock.write_text(json.dumps(resolved, indent=2, sort_keys=False) + "\n")
    return resolved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--refresh-lock", action="store_true", help="re-pin curl.lock.json")
    args = parser.parse_args(argv)
    if args.refresh_lock:
        lock = refresh_lock()
        print(f"{CURL_LOCK}: {len(lock['architectures']['amd64'])} packages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
