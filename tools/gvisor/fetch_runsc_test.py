"""fetch_runsc's offline parts: the lock, the cache hit (no apt, no network), clear failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.errors import BuildError
from deploy.base.mirror import Mirrors
from tools.gvisor import fetch_runsc as fr

# A mirror that has nothing: any download from it fails.
NOWHERE = Mirrors("file:///nonexistent/debian", "file:///nonexistent/debian-security", "", "--mirror")


def write_lock(path: Path, **entry) -> Path:
    base = {"version": "0.0~20240729.0-4+b7", "filename": "pool/main/g/x/runsc_1_amd64.deb", "sha256": "ab" * 32, "size": 1}
    path.write_text(json.dumps({"architectures": {"amd64": {**base, **entry}}}))
    return path


def test_the_checked_in_lock_pins_both_architectures() -> None:
    for arch in ("amd64", "arm64"):
        entry = fr.read_lock(arch)
        assert entry["filename"].endswith(f"_{arch}.deb") and len(entry["sha256"]) == 64


def test_cache_hit_needs_no_download(tmp_path: Path) -> None:
    lock = write_lock(tmp_path / "lock.json")
    target = fr.cached_path("0.0~20240729.0-4+b7", tmp_path / "cache")
    target.parent.mkdir(parents=True)
    target.write_text("#!/bin/true\n")
    target.chmod(0o755)
    (target.parent / "deb.sha256").write_text("ab" * 32 + "\n")
    assert fr.fetch_runsc("amd64", cache=tmp_path / "cache", lock=lock, mirrors=NOWHERE) == target
    assert target == tmp_path / "cache" / "gvisor" / "0.0~20240729.0-4+b7" / "runsc"


def test_stale_stamp_is_not_a_hit(tmp_path: Path) -> None:
    lock = write_lock(tmp_path / "lock.json")
    target = fr.cached_path("0.0~20240729.0-4+b7", tmp_path / "cache")
    target.parent.mkdir(parents=True)
    target.write_text("old")
    target.chmod(0o755)
    (target.parent / "deb.sha256").write_text("cd" * 32)
    with pytest.raises(BuildError, match=r"(?s)runsc=0.0~20240729.0-4\+b7: pool/main/g/x/runsc_1_amd64.deb: no mirror has it"
                                         r".*file:///nonexistent/debian/pool/main/g/x/runsc_1_amd64.deb"):
        fr.fetch_runsc("amd64", cache=tmp_path / "cache", lock=lock, mirrors=NOWHERE)


def test_bad_locks_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="missing; run python -m tools.gvisor.fetch_runsc --refresh-lock"):
        fr.read_lock("amd64", tmp_path / "absent.json")
    (tmp_path / "empty.json").write_text("{}")
    with pytest.raises(BuildError, match="no usable entry for amd64"):
        fr.read_lock("amd64", tmp_path / "empty.json")


def test_main_reports_failure_with_exit_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(fr, "fetch_runsc", lambda *a, **k: (_ for _ in ()).throw(BuildError("no network")))
    assert fr.main(["--quiet"]) == 1
    assert "fetch_runsc: no network" in capsys.readouterr().err
