"""The base's Debian packages come from whatever mirror the user has, served here by a real HTTP server.

A Debian mirror is a plain file tree (`debian/pool/...`, `debian-security/pool/updates/...`),
so a local HTTP file server holding that layout is one. The packages are
synthetic .debs, except in the first test, where the real locked packages
(downloaded once through the machine's own apt sources) are served and the
base assembled from them must be the very same image.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from builder.errors import BuildError
from builder.layers import file_digest
from deploy.base import mirror
from deploy.base.assemble import LOCK, LockedDeb, fetch_debs, read_lock
from deploy.base.testing import make_deb, make_tar
from tests.image_support import REPO, real_base, shared_cache
from tools.pytest import child_python

SNAPSHOT_TIME = "20260101T000000Z"


class MirrorServer:
    """A ThreadingHTTPServer serving `root` on a free loopback port; `requests` lists the paths asked for."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str] = []
        requests = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:
                requests.append(self.path)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def server(tmp_path: Path):
    (tmp_path / "www").mkdir()
    served = MirrorServer(tmp_path / "www")
    yield served
    served.close()


def publish(root: Path, archive: str, deb: LockedDeb, source: Path) -> None:
    target = root / archive / deb.filename
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(source.read_bytes())


def synthetic(tmp_path: Path, name: str, filename: str) -> tuple[LockedDeb, Path]:
    path = make_deb(tmp_path / f"{name}.deb", make_tar([(f"./usr/share/{name}/data", "file", name)]))
    return LockedDeb(name, "1", "amd64", filename, file_digest(path)[7:], path.stat().st_size), path


def unused_port_url() -> str:
    """A loopback URL where nothing listens (a mirror the machine's apt sources name, but unreachable here)."""
    probe = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    port = probe.server_address[1]
    probe.server_close()
    return f"http://127.0.0.1:{port}"


def apt_machine(tmp_path: Path, main: str, security: str) -> tuple[Path, Path]:
    etc = tmp_path / "etc-apt"
    (etc / "sources.list.d").mkdir(parents=True)
    (etc / "sources.list.d" / "debian.sources").write_text(
        f"Types: deb\nURIs: {main}\nSuites: trixie trixie-updates\nComponents: main\n\n"
        f"Types: deb\nURIs: {security}\nSuites: trixie-security\nComponents: main\n"
    )
    release = tmp_path / "os-release"
    release.write_text("ID=debian\nVERSION_CODENAME=trixie\n")
    return etc, release


def test_the_base_assembles_from_a_mirror_given_by_flag_and_is_the_same_image(tmp_path_factory, tmp_path, server):
    # The locked packages, downloaded once through this machine's apt sources, published as a mirror.
    reference = real_base(tmp_path_factory)
    downloaded = shared_cache(tmp_path_factory) / "base" / "debs" / "amd64"
    locked = read_lock(LOCK, "amd64")
    for deb in locked:
        archive = "debian-security" if deb.filename.startswith("pool/updates/") else "debian"
        publish(server.root, archive, deb, downloaded / deb.local_name)

    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPEDREAMER_DEBIAN_")}
    result = subprocess.run(
        [sys.executable, "-m", "deploy.base.assemble", "--out", str(tmp_path / "base"), "--arch", "amd64",
         "--cache", str(tmp_path / "fresh-cache"), "--mirror", f"{server.url}/debian", "--snapshot", "off"],
        cwd=REPO, env={**env, "PYTHONPATH": child_python.pythonpath(REPO)}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    expected = json.loads((reference / "index.json").read_text())["manifests"][0]["digest"]
    assert json.loads(result.stdout)["digest"] == expected
    served = sorted(p.split("/", 2)[2] for p in server.requests)
    assert served == sorted(deb.filename for deb in locked)  # every package from the mirror, once
    assert f"from {server.url}/debian (mirror from --mirror)" in result.stderr


def test_the_machine_apt_sources_name_the_mirror(tmp_path, server):
    main, main_file = synthetic(tmp_path, "one", "pool/main/o/one/one_1_amd64.deb")
    update, update_file = synthetic(tmp_path, "two", "pool/updates/main/t/two/two_1_amd64.deb")
    publish(server.root, "mirror/debian", main, main_file)
    publish(server.root, "mirror/debian-sec", update, update_file)
    etc, release = apt_machine(tmp_path, f"{server.url}/mirror/debian", f"{server.url}/mirror/debian-sec")

    chosen = mirror.resolve_mirrors(environ={}, apt_etc=etc, release=release)
    paths = fetch_debs([main, update], "amd64", tmp_path / "cache", lambda _m: None, chosen)
    assert paths["one"].read_bytes() == main_file.read_bytes()
    assert paths["two"].read_bytes() == update_file.read_bytes()
    assert sorted(server.requests) == [f"/mirror/debian-sec/{update.filename}", f"/mirror/debian/{main.filename}"]


def test_the_environment_overrides_the_apt_sources(tmp_path, server):
    deb, path = synthetic(tmp_path, "one", "pool/main/o/one/one_1_amd64.deb")
    publish(server.root, "corp/debian", deb, path)
    dead = unused_port_url()
    etc, release = apt_machine(tmp_path, f"{dead}/debian", f"{dead}/debian-security")

    with pytest.raises(BuildError, match=rf"(?s)one=1: pool/main/o/one/one_1_amd64.deb: no mirror has it .*{dead}/debian/pool.*Connection refused"):
        fetch_debs([deb], "amd64", tmp_path / "cache", lambda _m: None,
                   mirror.resolve_mirrors(environ={}, apt_etc=etc, release=release))  # fmt: skip
    chosen = mirror.resolve_mirrors(environ={mirror.ENV_MIRROR: f"{server.url}/corp/debian"}, apt_etc=etc, release=release)
    assert fetch_debs([deb], "amd64", tmp_path / "cache", lambda _m: None, chosen)["one"].read_bytes() == path.read_bytes()


def test_a_version_gone_from_the_mirror_comes_from_the_snapshot_service(tmp_path, server):
    deb, path = synthetic(tmp_path, "old", "pool/main/o/old/old_1_amd64.deb")
    publish(server.root, f"snapshot/debian/{SNAPSHOT_TIME}", deb, path)
    (server.root / "debian").mkdir()
    no_snapshot = mirror.Mirrors(f"{server.url}/debian", f"{server.url}/debian-security", "", "--mirror")
    with pytest.raises(BuildError) as info:
        fetch_debs([deb], "amd64", tmp_path / "cache", lambda _m: None, no_snapshot, SNAPSHOT_TIME)
    assert f"{server.url}/debian/{deb.filename}: HTTP 404 File not found" in str(info.value)
    assert "--mirror URL or $PIPEDREAMER_DEBIAN_MIRROR" in str(info.value)

    with_snapshot = mirror.Mirrors(no_snapshot.main, no_snapshot.security, f"{server.url}/snapshot", "--mirror")
    fetched = fetch_debs([deb], "amd64", tmp_path / "cache", lambda _m: None, with_snapshot, SNAPSHOT_TIME)
    assert fetched["old"].read_bytes() == path.read_bytes()
    assert server.requests[-1] == f"/snapshot/debian/{SNAPSHOT_TIME}/{deb.filename}"


def test_files_that_do_not_match_the_lock_are_refused_and_a_tampered_cache_is_not_trusted(tmp_path, server):
    deb, path = synthetic(tmp_path, "one", "pool/main/o/one/one_1_amd64.deb")
    chosen = mirror.Mirrors(f"{server.url}/debian", f"{server.url}/debian-security", "", "--mirror")
    cache = tmp_path / "cache"
    cached = cache / "debs" / "amd64" / deb.local_name
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"tampered")
    (server.root / "debian" / deb.filename).parent.mkdir(parents=True)
    (server.root / "debian" / deb.filename).write_bytes(b"not what the lock pins")
    with pytest.raises(BuildError, match=f"sha256 [0-9a-f]{{64}}, the lock says {deb.sha256}"):
        fetch_debs([deb], "amd64", cache, lambda _m: None, chosen)
    assert not cached.exists() and not [p for p in cached.parent.iterdir()]  # nothing half-written is left

    publish(server.root, "debian", deb, path)
    assert fetch_debs([deb], "amd64", cache, lambda _m: None, chosen)["one"].read_bytes() == path.read_bytes()
    server.requests.clear()
    fetch_debs([deb], "amd64", cache, lambda _m: None, chosen)
    assert server.requests == []  # a good cached file is used as it is
