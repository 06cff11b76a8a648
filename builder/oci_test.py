"""Tests for builder.oci: reading and validating bases, configs, atomic layouts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.errors import BuildError
from builder.layers import Layer, LayerEntry, write_layer
from builder.oci import (
    ImageSettings,
    LayoutWriter,
    Platform,
    base_python_version,
    blob_path,
    created_timestamp,
    image_config,
    parse_platform,
    read_base,
    read_index,
)
from builder.testing import write_fake_base

AMD64 = Platform("linux", "amd64")
ARM64 = Platform("linux", "arm64")


def test_read_base_selects_the_platform(tmp_path: Path) -> None:
    layout = write_fake_base(tmp_path / "base", ["linux/amd64", "linux/arm64"])
    amd = read_base(layout, AMD64)
    arm = read_base(layout, Platform("linux", "arm64", "v8"))
    assert amd.platform == AMD64 and arm.platform == ARM64
    assert amd.layers[0]["digest"] != arm.layers[0]["digest"]
    assert amd.diff_ids and len(amd.diff_ids) == len(amd.layers)


def test_wrong_platform_names_what_the_base_has(tmp_path: Path) -> None:
    layout = write_fake_base(tmp_path / "base", ["linux/amd64"])
    with pytest.raises(BuildError, match=r"no image for linux/arm64 \(it has: linux/amd64\)"):
        read_base(layout, ARM64)


def test_missing_layout_and_missing_index(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="no such directory"):
        read_base(tmp_path / "nope", AMD64)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BuildError, match=r"index.json is missing"):
        read_base(tmp_path / "empty", AMD64)
    (tmp_path / "empty" / "index.json").write_text("{not json")
    with pytest.raises(BuildError, match="index.json is unreadable"):
        read_index(tmp_path / "empty")


def test_corrupt_and_missing_blobs_are_detected(tmp_path: Path) -> None:
    layout = write_fake_base(tmp_path / "base")
    base = read_base(layout, AMD64)
    layer_file = blob_path(layout, base.layers[0]["digest"])
    data = bytearray(layer_file.read_bytes())
    data[-1] ^= 0xFF
    layer_file.write_bytes(bytes(data))
    with pytest.raises(BuildError, match="is corrupt"):
        read_base(layout, AMD64)
    layer_file.unlink()
    with pytest.raises(BuildError, match="is missing"):
        read_base(layout, AMD64)
    config_file = blob_path(layout, base.config_digest)
    config_file.write_text("{}")
    with pytest.raises(BuildError, match=f"blob {base.config_digest} is corrupt"):
        read_base(layout, AMD64)


def test_python_version_from_label_then_layers_then_default(tmp_path: Path) -> None:
    labelled = read_base(write_fake_base(tmp_path / "a", python_version="3.12"), AMD64)
    assert base_python_version(labelled) == "3.12"
    from_dir = read_base(write_fake_base(tmp_path / "b", python_version=None, python_dir="3.11"), AMD64)
    assert base_python_version(from_dir) == "3.11"
    bare = read_base(write_fake_base(tmp_path / "c", python_version=None), AMD64)
    assert base_python_version(bare) == "3.13"
    assert base_python_version(bare, "3.12") == "3.12"


def settings() -> ImageSettings:
    return ImageSettings(
        entrypoint=("/usr/bin/python3", "-m", "engine"),
        env={"PYTHONPATH": "/opt/lib", "PYTHONDONTWRITEBYTECODE": "1"},
        working_dir="/app",
        user="65534",
        labels={"dev.pipedreamer.workflow": "hello"},
        annotations={},
        created=created_timestamp(0),
        exposed_ports=("8080/tcp",),
    )


def test_image_config_keeps_base_env_drops_cmd_and_appends_layers() -> None:
    base = {
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/bin", "PYTHONPATH=/old"], "Cmd": ["python3"], "Labels": {"base": "yes"}},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "a" * 64]},
        "history": [{"created_by": "base"}],
    }  # fmt: skip
    layer = Layer(Path("x"), "sha256:" + "b" * 64, "sha256:" + "c" * 64, 1)
    config = image_config(base, [layer], settings(), ["workflow"])
    assert config["created"] == "1970-01-01T00:00:00Z"
    assert config["config"]["User"] == "65534"
    assert config["config"]["WorkingDir"] == "/app"
    assert "Cmd" not in config["config"]
    assert config["config"]["Env"] == ["PATH=/usr/bin", "PYTHONPATH=/opt/lib", "PYTHONDONTWRITEBYTECODE=1"]
    assert config["config"]["Labels"] == {"base": "yes", "dev.pipedreamer.workflow": "hello"}
    assert config["config"]["ExposedPorts"] == {"8080/tcp": {}}
    assert config["rootfs"]["diff_ids"] == ["sha256:" + "a" * 64, "sha256:" + "c" * 64]
    assert [h["created_by"] for h in config["history"]] == ["base", "pipedreamer build: workflow"]


def test_created_timestamp() -> None:
    assert created_timestamp(0) == "1970-01-01T00:00:00Z"
    assert created_timestamp(1700000000) == "2023-11-14T22:13:20Z"


def test_parse_platform() -> None:
    assert parse_platform("linux/arm64/v8") == Platform("linux", "arm64", "v8")
    for bad in ("linux", "windows/amd64", "linux/s390x", "linux//v8"):
        with pytest.raises(BuildError, match="--platform"):
            parse_platform(bad)


def test_layout_writer_is_atomic_and_replaces_only_layouts(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with LayoutWriter(out) as writer:
            writer.add_bytes(b"half")
            raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []

    with LayoutWriter(out) as writer:
        writer.commit([writer.add_json({"a": 1}, "application/json")])
    first = json.loads((out / "index.json").read_text())
    with LayoutWriter(out) as writer:
        writer.commit([writer.add_json({"a": 2}, "application/json")])
    second = json.loads((out / "index.json").read_text())
    assert first != second
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert json.loads((out / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}

    home = tmp_path / "precious"
    home.mkdir()
    (home / "notes.txt").write_text("keep me")
    with pytest.raises(BuildError, match="not an OCI layout; refusing"):
        LayoutWriter(home)
    assert (home / "notes.txt").read_text() == "keep me"


def test_layout_writer_hard_links_or_copies_blobs(tmp_path: Path) -> None:
    layer = write_layer([LayerEntry("a", "file", data=b"a")], tmp_path / "layer.tar.gz")
    with LayoutWriter(tmp_path / "out") as writer:
        writer.add_file(layer.path, layer.digest)
        writer.commit([])
    assert blob_path(tmp_path / "out", layer.digest).read_bytes() == layer.path.read_bytes()
