"""The distroless base from deploy/base: assembled for real from the locked Debian 13 packages."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from builder.errors import BuildError
from builder.oci import Platform, base_python_version, blob_path, read_base
from deploy.base.assemble import LOCK, assemble
from tests.image_support import real_base, require, run_in_runc, shared_cache


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return real_base(tmp_path_factory)


def layer_members(layout: Path) -> dict[str, tarfile.TarInfo]:
    image = read_base(layout, Platform("linux", "amd64"))
    data = gzip.decompress(blob_path(layout, image.layers[0]["digest"]).read_bytes())
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_base_has_python_and_no_shell(base: Path) -> None:
    members = layer_members(base)
    assert members["usr/bin/python3.13"].isfile()
    assert members["usr/bin/python3"].linkname == "python3.13"
    assert members["bin"].linkname == "usr/bin"
    assert "usr/bin/sh" not in members and "bin/sh" not in members
    assert not any(name.endswith(("/bash", "/dash", "/apt", "/dpkg", "/perl")) for name in members)
    assert "usr/lib/python3.13/ssl.py" in members
    assert "etc/ssl/certs/ca-certificates.crt" in members
    assert "usr/share/zoneinfo/Europe/Paris" in members
    assert "etc/ld.so.cache" in members
    assert not any(name.startswith(("usr/share/man/", "var/lib/dpkg/")) for name in members)
    assert members["tmp"].mode == 0o1777
    assert all(m.uid == 0 and m.gid == 0 and m.mtime == 0 for m in members.values())
    image = read_base(base, Platform("linux", "amd64"))
    assert base_python_version(image) == "3.13"
    assert image.config["config"]["Labels"]["dev.pipedreamer.python.version"] == "3.13"


def test_base_runs_python_as_nobody_under_runc(base: Path, tmp_path: Path) -> None:
    require("umoci", "runc")
    script = (
        "import ssl, json, sqlite3, lzma, bz2, uuid, zoneinfo, ctypes.util, os, pwd;"
        "print(json.dumps({'ok': 1, 'uid': os.getuid(), 'user': pwd.getpwuid(os.getuid()).pw_name,"
        "'certs': ssl.create_default_context().cert_store_stats()['x509_ca'],"
        "'seccomp': ctypes.util.find_library('seccomp'), 'sh': os.path.exists('/bin/sh'),"
        "'tz': str(zoneinfo.ZoneInfo('Europe/Paris'))}))"
    )
    result = run_in_runc(base, "3.13", tmp_path, ["/usr/bin/python3", "-c", script])
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report == {"ok": 1, "uid": 65534, "user": "nobody", "certs": report["certs"],
                      "seccomp": "libseccomp.so.2", "sh": False, "tz": "Europe/Paris"}  # fmt: skip
    assert report["certs"] > 100
    no_shell = run_in_runc(base, "3.13", tmp_path, ["/bin/sh", "-c", "true"])
    assert no_shell.returncode != 0


def test_assembly_is_reproducible(base: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    again = assemble(tmp_path / "again", cache=shared_cache(tmp_path_factory))
    assert again == json.loads((base / "index.json").read_text())["manifests"][0]["digest"]


def test_a_deb_that_does_not_match_the_lock_is_refused(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    lock = json.loads(LOCK.read_text())
    lock["architectures"]["amd64"]["netbase"]["sha256"] = "0" * 64
    (tmp_path / "lock.json").write_text(json.dumps(lock))
    cache = tmp_path / "cache"
    # Reuse the session's downloads so only the tampered package is fetched again.
    shutil.copytree(shared_cache(tmp_path_factory) / "base", cache / "base", symlinks=True)
    with pytest.raises(BuildError, match=r"(?s)netbase=6.5: .*/netbase_6.5_all.deb: sha256 [0-9a-f]{64}, the lock says 0{64}"):
        assemble(tmp_path / "out", lock=tmp_path / "lock.json", cache=cache)
    assert not (tmp_path / "out").exists()
    assert not any(p.name.startswith(".out.") for p in tmp_path.iterdir())


def test_the_base_is_pushed_once_and_builds_pull_it_by_digest(base: Path, tmp_path: Path, capsys,
                                                              tmp_path_factory: pytest.TempPathFactory) -> None:  # fmt: skip
    from builder.build import build_image
    from deploy.base.assemble import main as assemble_main
    from tests.registry_server import Registry

    registry = Registry(tmp_path / "registry")
    try:
        code = assemble_main(["--out", str(tmp_path / "pushed"), "--cache", str(shared_cache(tmp_path_factory)),
                              "--push", f"{registry.host}/pipedreamer/python-base:3.13"])  # fmt: skip
        out = capsys.readouterr()
        assert code == 0, out.err
        result = json.loads(out.out)
        local_digest = json.loads((base / "index.json").read_text())["manifests"][0]["digest"]
        assert result["digest"] == local_digest
        assert result["pushed"] == f"{registry.host}/pipedreamer/python-base@{local_digest}"
        by_tag = registry.get_manifest("pipedreamer/python-base", "3.13")
        assert by_tag.status_code == 200 and by_tag.headers["Docker-Content-Digest"] == local_digest

        # A workflow built on the pushed base, pinned by digest, is the image built on the local layout.
        cache = shared_cache(tmp_path_factory)
        hello = Path(__file__).resolve().parent.parent / "examples" / "hello"
        remote = build_image(hello, result["pushed"], tmp_path / "on-remote", cache=cache)
        local = build_image(hello, base, tmp_path / "on-local", cache=cache)
        assert remote.digest == local.digest
    finally:
        registry.stop()


def test_a_bad_push_reference_fails_before_assembling(tmp_path: Path, capsys) -> None:
    from deploy.base.assemble import main as assemble_main

    assert assemble_main(["--out", str(tmp_path / "never"), "--push", "no-registry-host"]) == 1
    assert "expected host[:port]/repository" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()
