"""Tests for builder.wheels that need no network: the lock, exclusions, tags, cache keys."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement

from builder.errors import BuildError
from builder.oci import Platform
from builder.wheels import (
    RUNTIME_EXCLUDED,
    cache_key,
    normalise_name,
    parse_lock,
    pip_platform_tags,
    render_requirements,
    runtime_lock_text,
    runtime_requirements,
    scrub_site_packages,
)

REPO = Path(__file__).resolve().parent.parent
LOCK = REPO / "requirements_lock.txt"
AMD64 = Platform("linux", "amd64")
ARM64 = Platform("linux", "arm64")
TARGET_ENV = {"python_version": "3.13", "python_full_version": "3.13.5", "sys_platform": "linux",
              "platform_system": "Linux", "implementation_name": "cpython", "os_name": "posix",
              "platform_machine": "x86_64", "platform_python_implementation": "CPython", "extra": ""}  # fmt: skip


def test_the_repository_lock_parses_with_hashes() -> None:
    options, requirements = parse_lock(LOCK)
    names = {r.name for r in requirements}
    assert {"grpcio", "protobuf", "aiohttp", "pyyaml", "nats-py"} <= names
    assert all(r.hashes and all(h.startswith("sha256:") for h in r.hashes) for r in requirements)
    assert all(r.line > 0 for r in requirements)


def test_lock_without_hashes_names_file_and_line(tmp_path: Path) -> None:
    lock = tmp_path / "requirements_lock.txt"
    lock.write_text(
        "aiohttp==3.0.0 \\\n    --hash=sha256:" + "a" * 64 + "\n"
        "    # via -r requirements.in\n"
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


def test_runtime_requirements_drop_test_build_and_cluster_only_packages() -> None:
    _, requirements = parse_lock(LOCK)
    kept = {r.name for r in runtime_requirements(requirements)}
    assert not kept & {"pytest", "hypothesis", "grpcio-tools", "setuptools", "kubernetes", "pygments"}
    assert {"grpcio", "grpcio-health-checking", "grpcio-reflection", "protobuf", "aiohttp", "yarl", "pyyaml", "croniter",
            "python-dateutil", "tzdata", "nats-py", "prometheus-client", "pyseccomp", "absl-py",
            "typing-extensions"} <= kept  # fmt: skip


def test_every_excluded_name_is_in_the_lock() -> None:
    _, requirements = parse_lock(LOCK)
    names = {r.name for r in requirements}
    assert set(RUNTIME_EXCLUDED) <= names, set(RUNTIME_EXCLUDED) - names


def test_no_kept_package_depends_on_an_excluded_one() -> None:
    """The exclusion list is a claim about the dependency graph; check it on the venv's metadata."""
    _, requirements = parse_lock(LOCK)
    kept = {r.name for r in runtime_requirements(requirements)}
    problems = []
    for name in sorted(kept):
        dist = importlib.metadata.distribution(name)
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker and not req.marker.evaluate(TARGET_ENV):
                continue
            dep = normalise_name(req.name)
            if dep not in kept:
                problems.append(f"{name} needs {dep}")
    assert problems == []


def _third_party_imports(package_dir: Path) -> set[str]:
    found = set()
    for path in package_dir.rglob("*.py"):
        if path.name.endswith("_test.py") or "__pycache__" in path.parts:
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"engine", "proto", "__future__"}


def test_engine_and_proto_imports_are_all_in_the_image() -> None:
    """What engine/ and proto/ import must come from a kept distribution."""
    _, requirements = parse_lock(LOCK)
    kept = {r.name for r in runtime_requirements(requirements)}
    owners = importlib.metadata.packages_distributions()
    missing = []
    for package in ("engine", "proto"):
        for module in sorted(_third_party_imports(REPO / package)):
            dists = {normalise_name(d) for d in owners.get(module, [])}
            if not dists & kept:
                missing.append(f"{package} imports {module} from {sorted(dists) or 'nowhere'}")
    assert missing == []


def test_render_requirements_round_trips(tmp_path: Path) -> None:
    options, requirements = parse_lock(LOCK)
    text = render_requirements(options, runtime_requirements(requirements))
    (tmp_path / "r.txt").write_text(text)
    _, again = parse_lock(tmp_path / "r.txt")
    assert [(r.name, r.version, r.hashes) for r in again] == [
        (r.name, r.version, r.hashes) for r in runtime_requirements(requirements)
    ]
    assert "--find-links" not in text  # index settings come from the environment, not the lock
    assert runtime_lock_text(LOCK) == text


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


def test_marker_environment_is_the_image_not_the_host() -> None:
    assert Marker('python_version >= "3.13"').evaluate(TARGET_ENV)
