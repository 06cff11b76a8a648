"""The third-party layer: locked wheels for the image's interpreter and platform.

pip installs the runtime lock, `requirements/runtime.txt`, whole (hashes
required, binary wheels only, no dependency resolution: the lock already is the
closure) for the target Python version and manylinux platform into a cache
keyed by what went in; the layer is made from that directory at
`/opt/pipedreamer/site-packages`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from builder.errors import BuildError
from builder.layers import Layer, LayerEntry, cached_layer, entries_from_dir, write_layer_cached
from builder.oci import Platform

SITE_PACKAGES = "/opt/pipedreamer/site-packages"

# The image's lock: the closure of what engine/ and proto/ import, and nothing
# else (tools/locks/lock.sh makes it; requirements/README.md). The CLI's and the
# tests' locks (requirements/cli.txt, dev.txt) add to it and never reach an image.
RUNTIME_LOCK = Path(__file__).resolve().parent.parent / "requirements" / "runtime.txt"

# The lowest glibc our bases have (Debian 12: 2.36; Debian 13: 2.41). Wheels
# needing a newer glibc are not offered to pip.
DEFAULT_GLIBC = (2, 36)

_ARCH = {"amd64": "x86_64", "arm64": "aarch64"}
_REQ_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")
_HASH_RE = re.compile(r"--hash=(sha256:[0-9a-f]{64})")


@dataclasses.dataclass(frozen=True)
class LockedRequirement:
    name: str  # normalised: lowercase, runs of -_. → -
    version: str
    hashes: tuple[str, ...]
    text: str  # the requirement's lines as written in the lock
    line: int


def normalise_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_lock(path: Path) -> tuple[list[str], list[LockedRequirement]]:
    """(option lines, requirements) of a pip-compile lock; every requirement must carry a hash."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise BuildError(f"{path}: cannot read the dependency lock: {err.strerror}") from None
    # Join continuation lines, remembering where each logical line started.
    logical: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped.strip())
        joined = " ".join(p for p in pending if p)
        pending = []
        if joined:
            logical.append((start, joined))
    options: list[str] = []
    requirements: list[LockedRequirement] = []
    missing: list[str] = []
    for number, line in logical:
        if line.startswith("-"):
            options.append(line)
            continue
        match = _REQ_RE.match(line)
        if not match:
            raise BuildError(f"{path}:{number}: not a pinned requirement (name==version): {line[:80]!r}")
        hashes = tuple(_HASH_RE.findall(line))
        name = normalise_name(match.group(1))
        if not hashes:
            missing.append(f"{path}:{number}: {name}=={match.group(2)} has no --hash")
        requirements.append(LockedRequirement(name, match.group(2), hashes, line, number))
    if missing:
        raise BuildError(
            "the dependency lock must pin every wheel by hash (pip-compile --generate-hashes):\n  "
            + "\n  ".join(missing)
        )
    return options, requirements


def render_requirements(options: Sequence[str], requirements: Sequence[LockedRequirement]) -> str:
    """A requirements file pip accepts: options, then one `name==version --hash=…` per line."""
    lines = [o for o in options if not o.startswith(("--find-links", "-f ", "--index-url", "-i ", "--extra-index-url"))]
    lines += [f"{r.name}=={r.version} " + " ".join(f"--hash={h}" for h in r.hashes) for r in requirements]
    return "\n".join(lines) + "\n"


def runtime_lock_text(lock: Path = RUNTIME_LOCK) -> str:
    """The runtime lock as the requirements file the image's wheels are installed from (for the Dockerfile)."""
    options, requirements = parse_lock(lock)
    return render_requirements(options, requirements)


def pip_platform_tags(platform: Platform, glibc: tuple[int, int] = DEFAULT_GLIBC) -> list[str]:
    """The manylinux tags a wheel for `platform` may carry, newest glibc first."""
    arch = _ARCH.get(platform.architecture)
    if platform.os != "linux" or arch is None:
        raise BuildError(f"--platform {platform}: no wheels for it (supported: linux/amd64, linux/arm64)")
    tags = [f"manylinux_{glibc[0]}_{minor}_{arch}" for minor in range(glibc[1], 16, -1)]
    tags.append(f"manylinux2014_{arch}")
    if arch == "x86_64":
        tags += [f"manylinux_2_12_{arch}", f"manylinux2010_{arch}", f"manylinux_2_5_{arch}", f"manylinux1_{arch}"]
    return tags


def cache_root() -> Path:
    """`$PIPEDREAMER_CACHE`, else `~/.cache/pipedreamer`."""
    configured = os.environ.get("PIPEDREAMER_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "pipedreamer"


def cache_key(requirements_text: str, python_version: str, platform: Platform, glibc: tuple[int, int]) -> str:
    material = f"wheels-v1\n{python_version}\n{platform}\nglibc {glibc}\n{SITE_PACKAGES}\n{requirements_text}"
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def install_wheels(
    lock: Path,
    python_version: str,
    platform: Platform,
    *,
    cache: Path | None = None,
    glibc: tuple[int, int] = DEFAULT_GLIBC,
    progress: Callable[[str], None] | None = None,
) -> tuple[Path, str]:
    """Install every wheel of `lock` (the runtime lock; once per key) and return (site-packages dir, cache key)."""
    options, requirements = parse_lock(lock)
    text = render_requirements(options, requirements)
    key = cache_key(text, python_version, platform, glibc)
    root = (cache or cache_root()) / "wheels"
    target = root / key
    if (target / "site-packages").is_dir():
        return target / "site-packages", key
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
    try:
        req_file = work / "requirements.txt"
        req_file.write_text(text)
        site = work / "site-packages"
        command = [
            sys.executable, "-m", "pip", "install",
            "--require-hashes", "--no-deps", "--only-binary=:all:",
            "--python-version", python_version, "--implementation", "cp",
            *[arg for tag in pip_platform_tags(platform, glibc) for arg in ("--platform", tag)],
            "--target", str(site), "--no-compile", "--no-warn-script-location",
            "--disable-pip-version-check", "--no-input", "--quiet",
            "-r", str(req_file),
        ]  # fmt: skip
        if progress:
            progress(f"installing {len(requirements)} locked wheels for Python {python_version} {platform}")
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        if result.returncode != 0:
            tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-12:])
            raise BuildError(
                f"{lock}: pip could not install the locked wheels for Python {python_version} {platform}:\n{tail}"
            )
        scrub_site_packages(site)
        try:
            os.replace(work, target)
        except OSError:
            if not (target / "site-packages").is_dir():  # lost a race to a concurrent build: fine
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target / "site-packages", key


def scrub_site_packages(site: Path) -> None:
    """Remove what carries the build host: console scripts (their shebang is the host's
    Python) and their RECORD lines, byte-code, and pip's INSTALLER/REQUESTED markers."""
    shutil.rmtree(site / "bin", ignore_errors=True)
    for pycache in list(site.rglob("__pycache__")):
        shutil.rmtree(pycache, ignore_errors=True)
    for dist_info in site.glob("*.dist-info"):
        for marker in ("REQUESTED", "direct_url.json"):
            (dist_info / marker).unlink(missing_ok=True)
        record = dist_info / "RECORD"
        if record.exists():
            lines = record.read_text().splitlines(keepends=True)
            kept = [
                line for line in lines
                if not line.startswith(("../", "bin/")) and "__pycache__" not in line
                and not line.startswith((f"{dist_info.name}/REQUESTED", f"{dist_info.name}/direct_url.json"))
            ]  # fmt: skip
            record.write_text("".join(kept))


def wheels_layer(
    lock: Path,
    python_version: str,
    platform: Platform,
    *,
    cache: Path | None = None,
    source_date_epoch: int = 0,
    glibc: tuple[int, int] = DEFAULT_GLIBC,
    progress: Callable[[str], None] | None = None,
) -> tuple[Layer, bool]:
    """The site-packages layer and whether it came from the cache untouched."""
    cache = cache or cache_root()
    options, requirements = parse_lock(lock)
    text = render_requirements(options, requirements)
    key = cache_key(text, python_version, platform, glibc)
    layer_key = f"wheels-{key}-{source_date_epoch}"
    layer = cached_layer(cache / "layers", layer_key)
    if layer is not None:
        return layer, True
    site, _ = install_wheels(lock, python_version, platform, cache=cache, glibc=glibc, progress=progress)
    return write_layer_cached(site_packages_entries(site), cache / "layers", key=layer_key, source_date_epoch=source_date_epoch)


def site_packages_entries(site: Path) -> list[LayerEntry]:
    """The wheels layer's entries: an installed site-packages directory at SITE_PACKAGES."""
    return entries_from_dir(Path(site), SITE_PACKAGES)
