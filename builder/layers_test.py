"""Tests for builder.layers: byte-for-byte determinism and no host leakage."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import pytest

from builder.errors import BuildError
from builder.layers import (
    LayerEntry,
    cached_layer,
    entries_from_dir,
    entries_fingerprint,
    normalise_path,
    resolve_mtime,
    tar_bytes,
    with_parents,
    write_layer,
    write_layer_cached,
)


def make_tree(root: Path, *, mtime: int, file_mode: int, dir_mode: int) -> Path:
    (root / "nodes" / "deep").mkdir(parents=True)
    (root / "workflow.yaml").write_text("name: x\nversion: 1.0.0\n")
    (root / "nodes" / "a.py").write_text("async def run(ctx, input):\n    return 1\n")
    (root / "nodes" / "deep" / "b.py").write_text("B = 2\n")
    (root / "nodes" / "tool.sh").write_text("#!/bin/true\n")
    (root / "nodes" / "__pycache__").mkdir()
    (root / "nodes" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"junk")
    (root / "nodes" / "stale.pyc").write_bytes(b"junk")
    for path in sorted(root.rglob("*"), reverse=True):
        if path.is_dir():
            path.chmod(dir_mode)
        else:
            path.chmod(0o755 if path.suffix == ".sh" else file_mode)
        os.utime(path, (mtime, mtime))
    return root


def members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getmembers()


def test_same_files_in_different_dirs_with_different_mtimes_and_modes_give_same_digest(tmp_path: Path) -> None:
    one = make_tree(tmp_path / "checkout-one", mtime=1_000_000, file_mode=0o600, dir_mode=0o700)
    two = make_tree(tmp_path / "elsewhere" / "checkout-two", mtime=2_000_000_000, file_mode=0o664, dir_mode=0o775)
    old_umask = os.umask(0o077)
    try:
        a = write_layer(entries_from_dir(one, "app"), tmp_path / "a.tar.gz")
    finally:
        os.umask(0o002)
    try:
        b = write_layer(entries_from_dir(two, "app"), tmp_path / "b.tar.gz")
    finally:
        os.umask(old_umask)
    assert a.digest == b.digest
    assert a.diff_id == b.diff_id
    assert (tmp_path / "a.tar.gz").read_bytes() == (tmp_path / "b.tar.gz").read_bytes()


def test_tar_members_are_sorted_owned_by_root_with_fixed_mtime_and_normalised_modes(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "src", mtime=123456, file_mode=0o600, dir_mode=0o700)
    data = tar_bytes(entries_from_dir(tree, "/app/"), source_date_epoch=0)
    infos = members(data)
    names = [i.name for i in infos]
    assert names == ["app", "app/nodes", "app/nodes/a.py", "app/nodes/deep", "app/nodes/deep/b.py",
                     "app/nodes/tool.sh", "app/workflow.yaml"]  # fmt: skip
    for info in infos:
        assert (info.uid, info.gid, info.uname, info.gname, info.mtime) == (0, 0, "", "", 0)
        assert not info.name.startswith("/")
    modes = {i.name: i.mode for i in infos}
    assert modes["app/nodes"] == 0o755
    assert modes["app/nodes/a.py"] == 0o644
    assert modes["app/nodes/tool.sh"] == 0o755
    assert str(tmp_path).encode() not in data


def test_no_bytecode_and_excluded_paths(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "src", mtime=1, file_mode=0o644, dir_mode=0o755)
    (tree / ".secrets").mkdir()
    (tree / ".secrets" / "token").write_text("s3cret")
    names = [e.path for e in entries_from_dir(tree, "app", exclude=lambda rel: rel.startswith("."))]
    assert not any("__pycache__" in n or n.endswith(".pyc") or ".secrets" in n for n in names)


def test_parents_are_emitted_for_deep_entries() -> None:
    infos = members(tar_bytes([LayerEntry("opt/a/b/c.txt", "file", data=b"x")]))
    assert [(i.name, i.isdir()) for i in infos] == [
        ("opt", True), ("opt/a", True), ("opt/a/b", True), ("opt/a/b/c.txt", False)
    ]  # fmt: skip


def test_explicit_mode_and_symlink() -> None:
    infos = {i.name: i for i in members(tar_bytes([
        LayerEntry("tmp", "dir", mode=0o1777),
        LayerEntry("usr/bin/python3", "symlink", link_target="python3.13"),
    ]))}  # fmt: skip
    assert infos["tmp"].mode == 0o1777
    assert infos["usr/bin/python3"].issym() and infos["usr/bin/python3"].linkname == "python3.13"


def test_gzip_header_has_no_timestamp_and_no_file_name(tmp_path: Path) -> None:
    layer = write_layer([LayerEntry("a", "file", data=b"a")], tmp_path / "named-layer.tar.gz")
    head = layer.path.read_bytes()[:10]
    assert head[:3] == b"\x1f\x8b\x08"
    assert head[3] & 0x08 == 0, "FNAME flag set"
    assert head[4:8] == b"\0\0\0\0", "gzip mtime set"
    assert gzip.decompress(layer.path.read_bytes())  # valid


def test_source_date_epoch_from_argument_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    assert resolve_mtime() == 0
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert resolve_mtime() == 1700000000
    assert resolve_mtime(5) == 5
    assert members(tar_bytes([LayerEntry("a", "file", data=b"")]))[0].mtime == 1700000000
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(BuildError, match="SOURCE_DATE_EPOCH"):
        resolve_mtime()


def test_changing_mtime_changes_digest(tmp_path: Path) -> None:
    entries = [LayerEntry("a", "file", data=b"a")]
    assert write_layer(entries, tmp_path / "1", source_date_epoch=0).digest != \
        write_layer(entries, tmp_path / "2", source_date_epoch=1).digest  # fmt: skip


def test_symlink_out_of_tree_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(BuildError, match="points outside"):
        entries_from_dir(src, "app")


def test_symlink_inside_tree_is_kept(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "real.py").write_text("x = 1\n")
    (src / "alias.py").symlink_to("real.py")
    entry = {e.path: e for e in entries_from_dir(src, "app")}["app/alias.py"]
    assert (entry.kind, entry.link_target) == ("symlink", "real.py")


def test_fifo_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    os.mkfifo(src / "pipe")
    with pytest.raises(BuildError, match="pipe: not a regular file"):
        entries_from_dir(src, "app")


def test_unreadable_file_names_the_file_and_leaves_nothing(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    # Root reads anything, so the build runs in a child that drops to nobody;
    # pytest's tmp_path is private to root, so use a world-traversable dir.
    tmp_path = Path(tempfile.mkdtemp(prefix="pipedreamer-unreadable-"))
    tmp_path.chmod(0o777)
    request.addfinalizer(lambda: shutil.rmtree(tmp_path, ignore_errors=True))
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.py").write_text("ok\n")
    (src / "secret.py").write_text("no\n")
    (src / "secret.py").chmod(0o000)
    out = tmp_path / "out"
    out.mkdir()
    for d in (tmp_path, src, out):
        d.chmod(0o777)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        message = b"no error"
        try:
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            write_layer(entries_from_dir(src, "app"), out / "layer.tar.gz")
        except BuildError as err:
            message = str(err).encode()
        except BaseException as err:  # noqa: BLE001 - report anything to the parent
            message = repr(err).encode()
        os.write(write_fd, message)
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        message = pipe.read().decode()
    os.waitpid(pid, 0)
    assert "secret.py: cannot read: Permission denied" in message
    assert list(out.iterdir()) == []


def test_missing_source_leaves_no_partial_file(tmp_path: Path) -> None:
    entries = [LayerEntry("a", "file", data=b"a"), LayerEntry("b", "file", source=tmp_path / "gone")]
    with pytest.raises(BuildError, match="gone: cannot read"):
        write_layer(entries, tmp_path / "out" / "layer.tar.gz")
    assert list((tmp_path / "out").iterdir()) == []


def test_duplicate_entries_are_refused() -> None:
    with pytest.raises(BuildError, match="two layer entries for /a"):
        with_parents([LayerEntry("a", "file", data=b"1"), LayerEntry("a", "file", data=b"2")])


def test_paths_are_normalised_and_cannot_escape() -> None:
    assert normalise_path("/a//b/./c/") == "a/b/c"
    with pytest.raises(ValueError):
        normalise_path("a/../../etc")


def test_cache_reuses_identical_content_and_rejects_corruption(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", mtime=1, file_mode=0o644, dir_mode=0o755)
    cache = tmp_path / "cache"
    first, cached = write_layer_cached(entries_from_dir(src, "app"), cache)
    assert not cached
    again, cached = write_layer_cached(entries_from_dir(src, "app"), cache)
    assert cached and again.digest == first.digest
    os.utime(src / "workflow.yaml", (99, 99))  # mtimes are not content
    assert write_layer_cached(entries_from_dir(src, "app"), cache)[1]
    (src / "nodes" / "a.py").write_text("changed\n")
    changed, cached = write_layer_cached(entries_from_dir(src, "app"), cache)
    assert not cached and changed.digest != first.digest
    # Corrupt the cached blob (same size): the cache must not hand it out.
    key = entries_fingerprint(entries_from_dir(src, "app"))
    blob = cache / f"{key}.tar.gz"
    blob.write_bytes(b"\0" * blob.stat().st_size)
    assert cached_layer(cache, key) is None
    rebuilt, cached = write_layer_cached(entries_from_dir(src, "app"), cache)
    assert not cached and rebuilt.digest == changed.digest


def test_golden_layer_digest_is_the_same_on_every_machine(tmp_path: Path) -> None:
    # Fixed entries must give these exact bytes wherever the tests run (Python
    # 3.11 here, 3.13 under Bazel and in the image; any zlib): a change means
    # every image digest changed, so it must be deliberate.
    import hashlib

    text = b"".join(hashlib.sha256(str(i).encode()).hexdigest().encode() + b" line %d\n" % i for i in range(5000))
    entries = [
        LayerEntry("app/workflow.yaml", "file", data=b"name: golden\nversion: 1.0.0\n"),
        LayerEntry("app/nodes/a.py", "file", data=b"async def run(ctx, input):\n    return input\n"),
        LayerEntry("app/data.txt", "file", data=text),
        LayerEntry("app/bin/tool", "file", data=b"#!/usr/bin/env python3\n", executable=True),
        LayerEntry("app/link", "symlink", link_target="data.txt"),
        LayerEntry("tmp", "dir", mode=0o1777),
    ]
    layer = write_layer(entries, tmp_path / "golden.tar.gz", source_date_epoch=0)
    assert layer.diff_id == "sha256:7423c06f74b6a47aa36e886caa4a681c98c599c36a3f0cf35754590e2a0aaf4c"  # the tar
    assert layer.digest == "sha256:61a2ea9f3171f8989d192e4e4f66eb2984a046654f980d1d5acef794cd4064ee"  # its gzip
    assert gzip.decompress((tmp_path / "golden.tar.gz").read_bytes())[:9] == b"app/\x00\x00\x00\x00\x00"
