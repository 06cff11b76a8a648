"""Tests for deploy.base.assemble on synthetic .deb files (no network, no dpkg)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.errors import BuildError
from deploy.base.assemble import (
    LockedDeb,
    check_distroless,
    deb_data_tar,
    generated_entries,
    is_dropped,
    merged_path,
    package_entries,
    read_lock,
)
from deploy.base.refresh_lock import EXCLUDED, read_packages
from deploy.base.testing import make_deb, make_tar

HERE = Path(__file__).resolve().parent


def test_deb_data_is_read_without_dpkg(tmp_path: Path) -> None:
    data = make_tar([("./usr/", "dir", ""), ("./usr/bin/tool", "file", "x")])
    assert deb_data_tar(make_deb(tmp_path / "p.deb", data)) == data
    (tmp_path / "bad.deb").write_bytes(b"not an archive")
    with pytest.raises(BuildError, match="not a Debian package"):
        deb_data_tar(tmp_path / "bad.deb")


def test_usr_merge_and_filters() -> None:
    assert merged_path("lib/x86_64-linux-gnu/libc.so.6", "amd64") == "usr/lib/x86_64-linux-gnu/libc.so.6"
    assert merged_path("lib64/ld-linux-x86-64.so.2", "amd64") == "usr/lib64/ld-linux-x86-64.so.2"
    assert merged_path("etc/passwd", "amd64") == "etc/passwd"
    assert is_dropped("libc6", "usr/share/man/man1/x.1.gz")
    assert is_dropped("libc6", "usr/share/doc/libc6/changelog.Debian.gz")
    assert not is_dropped("libc6", "usr/share/doc/libc6/copyright")
    assert is_dropped("libc-bin", "usr/bin/ldd")  # a bash script
    assert not is_dropped("libc-bin", "usr/sbin/ldconfig")
    assert not is_dropped("libc-bin", "usr/sbin")
    assert is_dropped("ca-certificates", "usr/sbin/update-ca-certificates")
    assert not is_dropped("libpython3.13-stdlib", "usr/lib/python3.13/json/__init__.py")


def test_package_entries_copy_hard_links_and_keep_symlinks() -> None:
    data = make_tar([
        ("./lib/", "dir", ""), ("./lib/x86_64-linux-gnu/", "dir", ""),
        ("./lib/x86_64-linux-gnu/libz.so.1.3", "file", "ELF"),
        ("./lib/x86_64-linux-gnu/libz.so.1", "sym", "libz.so.1.3"),
        ("./usr/bin/tool", "file", "tool"), ("./usr/bin/tool-alias", "hard", "./usr/bin/tool"),
        ("./usr/share/doc/zlib1g/copyright", "file", "MIT-ish"), ("./usr/share/doc/zlib1g/NEWS", "file", "n"),
    ])  # fmt: skip
    entries = {e.path: e for e, _ in package_entries("zlib1g", data, "amd64")}
    assert entries["usr/lib/x86_64-linux-gnu/libz.so.1"].link_target == "libz.so.1.3"
    assert entries["usr/bin/tool-alias"].data == b"tool" and entries["usr/bin/tool-alias"].executable
    assert "usr/share/doc/zlib1g/copyright" in entries
    assert "usr/share/doc/zlib1g/NEWS" not in entries


def test_generated_files_and_no_shell_check() -> None:
    entries = generated_entries("amd64", b"CERT\n")
    paths = {e.path: e for e in entries}
    assert b"nobody:x:65534:65534" in paths["etc/passwd"].data
    assert paths["tmp"].mode == 0o1777
    assert paths["usr/bin/python3"].link_target == "python3.13"
    assert paths["bin"].link_target == "usr/bin" and paths["lib64"].link_target == "usr/lib64"
    assert "lib64" not in {e.path for e in generated_entries("arm64", b"")}
    with pytest.raises(BuildError, match="lacks /usr/bin/python3.13"):
        check_distroless(entries, "amd64")
    from builder.layers import LayerEntry

    python = LayerEntry("usr/bin/python3.13", "file", data=b"ELF")
    check_distroless([*entries, python], "amd64")
    with pytest.raises(BuildError, match="contain a shell: /bin/sh"):
        check_distroless([*entries, python, LayerEntry("usr/bin/sh", "symlink", link_target="dash")], "amd64")


def test_committed_lock_and_package_list_agree() -> None:
    roots = read_packages()
    lock = json.loads((HERE / "lock.json").read_text())
    assert lock["roots"] == roots
    for arch in ("amd64", "arm64"):
        debs = read_lock(HERE / "lock.json", arch)
        names = {d.name for d in debs}
        assert set(roots) <= names
        assert not names & set(EXCLUDED)
        assert {"libc6", "libssl3t64", "zlib1g", "libffi8", "libexpat1", "libstdc++6", "libseccomp2"} <= names
        assert all(len(d.sha256) == 64 and d.filename.startswith("pool/") for d in debs)


def test_lock_errors(tmp_path: Path) -> None:
    lock = tmp_path / "lock.json"
    lock.write_text(json.dumps({"architectures": {"amd64": {"zlib1g": {"version": "1", "architecture": "amd64",
                                                                         "filename": "f", "size": 1}}}}))  # fmt: skip
    with pytest.raises(BuildError, match="amd64/zlib1g has no sha256"):
        read_lock(lock, "amd64")
    with pytest.raises(BuildError, match="no packages locked for arm64"):
        read_lock(lock, "arm64")


def test_epoch_in_file_name() -> None:
    assert LockedDeb("zlib1g", "1:1.3", "amd64", "", "", 0).local_name == "zlib1g_1%3a1.3_amd64.deb"


def _locked(tmp_path: Path, names: list[str]) -> tuple[Path, list[Path]]:
    """A lock for amd64 over synthetic .debs named <name>.deb (one data file each)."""
    from builder.layers import file_digest

    files, packages = [], {}
    for name in names:
        deb = make_deb(tmp_path / f"{name}.deb", make_tar([(f"./usr/share/{name}/data", "file", name)]))
        files.append(deb)
        packages[name] = {"version": "1", "architecture": "amd64", "filename": f"pool/main/x/{name}_1_amd64.deb",
                          "sha256": file_digest(deb)[7:], "size": deb.stat().st_size}  # fmt: skip
    lock = tmp_path / "lock.json"
    lock.write_text(json.dumps({"architectures": {"amd64": packages}}))
    return lock, files


def test_local_debs_are_matched_by_sha256_not_by_name(tmp_path: Path) -> None:
    from deploy.base.assemble import local_debs

    lock, (one, two) = _locked(tmp_path, ["one", "two"])
    renamed = one.rename(tmp_path / "whatever-bazel-called-it.deb")
    assert local_debs(read_lock(lock, "amd64"), [two, renamed], "amd64") == {"one": renamed, "two": two}
    with pytest.raises(BuildError, match=r"no file has the locked sha256 of these amd64 packages: one=1 \(one_1_amd64.deb\)"):
        local_debs(read_lock(lock, "amd64"), [two], "amd64")


def test_assemble_from_local_debs_writes_nothing_outside_out_and_refuses_strays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from builder.layers import LayerEntry
    from deploy.base import assemble as assemble_module

    (tmp_path / "in").mkdir()
    lock, files = _locked(tmp_path / "in", ["one", "two"])
    monkeypatch.setattr(assemble_module, "base_entries", lambda debs, arch: [LayerEntry(f"usr/share/{n}", "dir") for n in debs])
    monkeypatch.setattr(assemble_module, "check_distroless", lambda entries, arch: None)
    monkeypatch.setenv("PIPEDREAMER_CACHE", str(tmp_path / "must-stay-unused"))
    stray = tmp_path / "in" / "stray.deb"
    stray.write_bytes(b"not locked")
    with pytest.raises(BuildError, match="--deb .*stray.deb: not a locked package of amd64"):
        assemble_module.assemble(tmp_path / "bad", lock=lock, deb_files=[*files, stray])
    assert not (tmp_path / "bad").exists()
    digest = assemble_module.assemble(tmp_path / "out", lock=lock, deb_files=files, source_date_epoch=0)
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == digest
    assert index["manifests"][0]["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert not (tmp_path / "must-stay-unused").exists()
    assert assemble_module.assemble(tmp_path / "again", lock=lock, deb_files=list(reversed(files)), source_date_epoch=0) == digest
