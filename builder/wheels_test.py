"""Tests for builder.wheels that need no network: reading the lock, tags, cache keys.

What the runtime lock holds is tools/locks/locks_test.py's; that an image's
wheels layer is exactly that lock, tests/image_wheels_test.py's.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from builder.errors import BuildError
from builder.oci import Platform
from builder.wheels import (
    RUNTIME_LOCK,
    cache_key,
    parse_lock,
    pip_platform_tags,
    render_requirements,
    runtime_lock_text,
    scrub_site_packages,
)

AMD64 = Platform("linux", "amd64")
ARM64 = Platform("linux", "arm64")


def test_the_runtime_lock_parses_with_hashes() -> None:
    options, requirements = parse_lock(RUNTIME_LOCK)
    names = {r.name for r in requirements}
    assert {"grpcio", "protobuf", "aiohttp", "pyyaml", "nats-py"} <= names
    assert all(r.hashes and all(h.startswith("sha256:") for h in r.hashes) for r in requirements)
    assert all(r.line > 0 for r in requirements)


def test_lock_without_hashes_names_file_and_line(tmp_path: Path) -> None:
    lock = tmp_path / "runtime.txt"
    lock.write_text(
        "aiohttp==3.0.0 \\\n    --hash=sha256:" + "a" * 64 + "\n"
        "    # via -r requirements/runtime.in\n"
        "pyyaml==6.0\n"
        "grpcio==1.0 \\\n    # comment only\n"
    )
    with pytest.raises(BuildError) as err:
        parse_lock(lock)
    assert f"{lock}:4: pyyaml==6.0 has no --hash" in str(err.value)
    assert f"{lock}:5: grpcio==1.0 has no --hash" in str(err.value)


def test_unpinned_requirement_and_unreadable_lock(tmp_path: Path) -> None:
    lock = tmp_path / "lock.txt"
    lock.write_text("aiohttp>=3\n")
    with pytest.raises(BuildError, match=r"lock.txt:1: not a pinned requirement"):
        parse_lock(lock)
    with pytest.raises(BuildError, match="cannot read the dependency lock"):
        parse_lock(tmp_path / "missing.txt")


def test_render_requirements_round_trips(tmp_path: Path) -> None:
    options, requirements = parse_lock(RUNTIME_LOCK)
    text = render_requirements(options, requirements)
    (tmp_path / "r.txt").write_text(text)
    _, again = parse_lock(tmp_path / "r.txt")
    assert [(r.name, r.version, r.hashes) for r in again] == [(r.name, r.version, r.hashes) for r in requirements]
    assert runtime_lock_text() == text


def test_index_settings_of_a_lock_are_not_passed_on(tmp_path: Path) -> None:
    # Where pip finds wheels is the installing machine's business (its pip config),
    # never a path from the machine that made the lock.
    lock = tmp_path / "lock.txt"
    lock.write_text("--find-links /opt/wheels\n--index-url https://mirror.example/simple\n--only-binary :all:\n"
                    "aiohttp==3.0.0 --hash=sha256:" + "a" * 64 + "\n")  # fmt: skip
    text = runtime_lock_text(lock)
    assert text == "--only-binary :all:\naiohttp==3.0.0 --hash=sha256:" + "a" * 64 + "\n"


def test_platform_tags() -> None:
    amd = pip_platform_tags(AMD64, (2, 36))
    assert amd[0] == "manylinux_2_36_x86_64"
    assert {"manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_28_x86_64", "manylinux1_x86_64"} <= set(amd)
    assert "manylinux_2_39_x86_64" not in amd
    arm = pip_platform_tags(ARM64)
    assert all(t.endswith("_aarch64") for t in arm)
    assert "manylinux2014_aarch64" in arm
    with pytest.raises(BuildError):
        pip_platform_tags(Platform("linux", "s390x"))


def test_cache_key_depends_on_every_input() -> None:
    base = cache_key("a==1", "3.13", AMD64, (2, 36))
    assert re.fullmatch(r"[0-9a-f]{32}", base)
    assert base == cache_key("a==1", "3.13", AMD64, (2, 36))
    assert len({base, cache_key("a==2", "3.13", AMD64, (2, 36)), cache_key("a==1", "3.12", AMD64, (2, 36)),
                cache_key("a==1", "3.13", ARM64, (2, 36)), cache_key("a==1", "3.13", AMD64, (2, 41))}) == 5  # fmt: skip


def test_scrub_removes_host_specific_files(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "bin").mkdir(parents=True)
    (site / "bin" / "tool").write_text("#!/home/me/.venv/bin/python\n")
    (site / "pkg" / "__pycache__").mkdir(parents=True)
    (site / "pkg" / "__pycache__" / "m.cpython-313.pyc").write_bytes(b"x")
    info = site / "pkg-1.0.dist-info"
    info.mkdir()
    (info / "REQUESTED").write_text("")
    (info / "RECORD").write_text(
        "pkg/__init__.py,sha256=x,1\n../../bin/tool,sha256=y,2\npkg/__pycache__/m.pyc,,\npkg-1.0.dist-info/REQUESTED,,\n"
    )
    scrub_site_packages(site)
    assert not (site / "bin").exists() and not (site / "pkg" / "__pycache__").exists()
    assert not (info / "REQUESTED").exists()
    assert (info / "RECORD").read_text() == "pkg/__init__.py,sha256=x,1\n"
