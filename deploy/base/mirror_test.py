"""Which Debian mirror deploy/base uses: flags, then the environment, then the machine's apt sources."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy.base import mirror
from deploy.base.mirror import DEFAULT_SNAPSHOT, MirrorError, Mirrors, resolve_mirrors

DEBIAN_SOURCES = """\
Types: deb
# a comment inside the stanza
URIs: https://mirror.corp.example/debian/
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb deb-src
URIs: https://mirror.corp.example/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


def machine(tmp_path: Path, *, os_id: str = "debian", files: dict[str, str] | None = None) -> tuple[Path, Path]:
    """An /etc/apt and /etc/os-release of a machine, under tmp_path."""
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    for name, text in (files or {}).items():
        (etc / name).write_text(text)
    release = tmp_path / "os-release"
    release.write_text(f'PRETTY_NAME="x"\nID={os_id}\nVERSION_CODENAME=bookworm\n')
    return etc, release


def test_deb822_sources_of_a_debian_machine(tmp_path: Path) -> None:
    etc, release = machine(tmp_path, files={"sources.list.d/debian.sources": DEBIAN_SOURCES})
    chosen = resolve_mirrors(environ={}, apt_etc=etc, release=release)
    assert chosen == Mirrors(
        main="https://mirror.corp.example/debian",
        security="https://mirror.corp.example/debian-security",
        snapshot=DEFAULT_SNAPSHOT,
        origin=f"{etc}/sources.list.d/debian.sources:1",
    )


def test_one_line_sources_and_third_party_repositories_are_told_apart(tmp_path: Path) -> None:
    etc, release = machine(tmp_path, files={
        "sources.list": "# deb http://commented.example/debian bookworm main\n"
                        "deb-src http://src.example/debian bookworm main\n"
                        "deb cdrom:[Debian 12]/ bookworm main\n"
                        "deb [arch=amd64 signed-by=/k.gpg] https://download.docker.com/linux/debian bookworm stable\n"
                        "deb http://apt.postgresql.org/pub/repos/apt bookworm-pgdg main\n"
                        "deb https://deb.nodesource.com/node_20.x nodistro main\n"
                        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://ftp.example/debian/ bookworm main\n"
                        "deb http://ftp.example/debian-security bookworm-security main\n",
        "sources.list.d/other.sources": "Types: deb\nURIs: http://later.example/debian\nSuites: bookworm\nComponents: main\n",
        "sources.list.d/off.sources": "Enabled: no\nTypes: deb\nURIs: http://off.example/debian\nSuites: bookworm\nComponents: main\n",
    })  # fmt: skip
    chosen = resolve_mirrors(environ={}, apt_etc=etc, release=release)
    assert (chosen.main, chosen.security) == ("http://ftp.example/debian", "http://ftp.example/debian-security")
    assert chosen.origin == f"{etc}/sources.list:7"


def test_without_a_security_source_the_sibling_archive_is_used(tmp_path: Path) -> None:
    etc, release = machine(tmp_path, files={"sources.list": "deb http://ftp.example/debian stable main\n"})
    chosen = resolve_mirrors(environ={}, apt_etc=etc, release=release)
    assert (chosen.main, chosen.security) == ("http://ftp.example/debian", "http://ftp.example/debian-security")


def test_environment_beats_apt_and_flags_beat_the_environment(tmp_path: Path) -> None:
    etc, release = machine(tmp_path, files={"sources.list.d/debian.sources": DEBIAN_SOURCES})
    env = {mirror.ENV_MIRROR: "http://env.example/debian", mirror.ENV_SNAPSHOT: "off"}
    from_env = resolve_mirrors(environ=env, apt_etc=etc, release=release)
    assert from_env == Mirrors("http://env.example/debian", "http://env.example/debian-security", "", "$PIPEDREAMER_DEBIAN_MIRROR")
    env[mirror.ENV_SECURITY_MIRROR] = "http://security.env.example/x/"
    assert resolve_mirrors(environ=env, apt_etc=etc, release=release).security == "http://security.env.example/x"
    from_flag = resolve_mirrors("file:///srv/debian", None, "http://snap.example/archive/", environ=env, apt_etc=etc, release=release)
    assert from_flag == Mirrors("file:///srv/debian", "http://security.env.example/x", "http://snap.example/archive", "--mirror")


def test_no_usable_source_says_what_to_do(tmp_path: Path) -> None:
    etc, release = machine(tmp_path, os_id="ubuntu", files={"sources.list": "deb http://archive.ubuntu.com/ubuntu noble main\n"})
    with pytest.raises(MirrorError, match=r"not Debian \(ID=ubuntu in .*os-release\).*give --mirror URL or set PIPEDREAMER_DEBIAN_MIRROR"):
        resolve_mirrors(environ={}, apt_etc=etc, release=release)
    etc, release = machine(tmp_path / "empty")
    with pytest.raises(MirrorError, match="no Debian mirror in the apt sources .*give --mirror URL or set PIPEDREAMER_DEBIAN_MIRROR"):
        resolve_mirrors(environ={}, apt_etc=etc, release=release)
    with pytest.raises(MirrorError, match=r"--mirror: 'ftp://x/debian' is not a mirror URL \(expected http://, https:// or file://\)"):
        resolve_mirrors("ftp://x/debian", environ={})


def test_urls_of_a_pool_file() -> None:
    chosen = Mirrors("https://m.example/debian", "https://s.example/sec", "https://snap.example/archive", "--mirror")
    assert chosen.urls("pool/main/z/zlib/zlib1g_1_amd64.deb", "20260101T000000Z") == [
        "https://m.example/debian/pool/main/z/zlib/zlib1g_1_amd64.deb",
        "https://snap.example/archive/debian/20260101T000000Z/pool/main/z/zlib/zlib1g_1_amd64.deb",
    ]
    assert chosen.urls("pool/updates/main/o/openssl/libssl3_1_amd64.deb") == [
        "https://s.example/sec/pool/updates/main/o/openssl/libssl3_1_amd64.deb",
    ]


def test_the_script_prints_json_for_bazel(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(mirror.ENV_SNAPSHOT, raising=False)
    monkeypatch.delenv(mirror.ENV_SECURITY_MIRROR, raising=False)
    assert mirror.main(["--json", "--mirror", "http://m.example/debian"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "main": "http://m.example/debian", "security": "http://m.example/debian-security",
        "snapshot": DEFAULT_SNAPSHOT, "origin": "--mirror",
    }  # fmt: skip
    assert mirror.main(["--json", "--mirror", "m.example"]) == 1
    assert "mirror: --mirror: 'm.example' is not a mirror URL" in capsys.readouterr().err


def test_no_host_is_written_in_the_locks() -> None:
    repo = Path(__file__).resolve().parent.parent.parent
    for lock in (repo / "deploy" / "base" / "lock.json", repo / "tools" / "gvisor" / "runsc.lock.json"):
        text = lock.read_text()
        assert "://" not in text and "debian.org" not in text, lock
