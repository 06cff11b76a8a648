"""Test support: small synthetic base images written as OCI layouts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from builder.layers import LayerEntry, write_layer
from builder.oci import (
    MANIFEST_MEDIA_TYPE,
    PYTHON_VERSION_LABEL,
    LayoutWriter,
    canonical_json,
    descriptor,
    image_manifest,
    parse_platform,
)


def write_fake_base(
    out: Path,
    platforms: Sequence[str] = ("linux/amd64",),
    *,
    python_version: str | None = "3.13",
    python_dir: str | None = None,
) -> Path:
    """A one-layer base per platform: `/etc/passwd`, `/tmp`, and optionally a python dir
    (`usr/lib/python3.N/os.py`) and the `dev.pipedreamer.python.version` label."""
    out = Path(out)
    scratch = out.parent / f".{out.name}.layers"
    manifests = []
    with LayoutWriter(out) as writer:
        for text in platforms:
            platform = parse_platform(text)
            entries = [
                LayerEntry("etc/passwd", "file", data=b"root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"),
                LayerEntry("tmp", "dir", mode=0o1777),
                LayerEntry("etc/arch", "file", data=platform.architecture.encode()),
            ]
            if python_dir:
                entries.append(LayerEntry(f"usr/lib/python{python_dir}/os.py", "file", data=b"# os\n"))
            layer = write_layer(entries, scratch / f"{platform.architecture}.tar.gz")
            writer.add_file(layer.path, layer.digest)
            labels = {PYTHON_VERSION_LABEL: python_version} if python_version else {}
            config = {
                "architecture": platform.architecture,
                "os": platform.os,
                "created": "1970-01-01T00:00:00Z",
                "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/usr/bin/python3"], "Labels": labels},
                "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
                "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "fake base"}],
            }
            config_blob = canonical_json(config)
            writer.add_bytes(config_blob)
            manifest = image_manifest(config_blob, [descriptor(layer.media_type, layer.digest, layer.size)], {})
            manifests.append(writer.add_json(manifest, MANIFEST_MEDIA_TYPE, platform=platform.to_json()))
        writer.commit(manifests)
    for leftover in scratch.glob("*"):
        leftover.unlink()
    scratch.rmdir()
    return out
