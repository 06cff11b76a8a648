"""gVisor's `runsc`, taken from Debian 13's `runsc` package (a static binary), cached.

    python -m tools.gvisor.fetch_runsc                 # prints the path of runsc
    python -m tools.gvisor.fetch_runsc --refresh-lock  # re-pin runsc.lock.json to trixie's current version

The version, pool path and sha256 of the `.deb` are pinned in `runsc.lock.json`
beside this file. The first call downloads it by its pool path from the Debian
mirror `deploy/base/mirror.py` chooses (the machine's apt sources unless
--mirror or $PIPEDREAMER_DEBIAN_MIRROR), checks the sha256, extracts
`usr/bin/runsc` with `dpkg-deb -x` and moves it into place atomically:

    ${PIPEDREAMER_CACHE:-$HOME/.cache/pipedreamer}/gvisor/<version>/runsc

Later calls find it there and touch no network. Exit 1 with the reason on failure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from builder.errors import BuildError
from builder.wheels import cache_root
from deploy.base import mirror
from deploy.base.apt_archive import ARCHITECTURES, SUITE, PrivateApt

PACKAGE = "runsc"
HERE = Path(__file__).resolve().parent
LOCK = HERE / "runsc.lock.json"
_MACHINES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def host_architecture() -> str:
    machine = platform.machine().lower()
    if machine not in _MACHINES:
        raise BuildError(f"runsc: no Debian architecture for this machine ({machine}); supported: {', '.join(ARCHITECTURES)}")
    return _MACHINES[machine]


def read_lock(arch: str, lock: Path = LOCK) -> dict:
    try:
        data = json.loads(lock.read_text())
        entry = data["architectures"][arch]
        for key in ("version", "filename", "sha256", "size"):
            entry[key]  # presence check
    except FileNotFoundError:
        raise BuildError(f"{lock}: missing; run python -m tools.gvisor.fetch_runsc --refresh-lock") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise BuildError(f"{lock}: no usable entry for {arch} ({exc!r}); run --refresh-lock") from None
    return entry


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_path(version: str, cache: Path | None = None) -> Path:
    return (cache or cache_root()) / "gvisor" / version / "runsc"


def fetch_runsc(
    arch: str | None = None,
    *,
    cache: Path | None = None,
    lock: Path = LOCK,
    say=lambda _m: None,
    mirrors: mirror.Mirrors | None = None,
) -> Path:
    """The path of the pinned runsc binary, downloading and extracting it on first use
    (from `mirrors`, default `mirror.resolve_mirrors()`)."""
    arch = arch or host_architecture()
    entry = read_lock(arch, lock)
    root = (cache or cache_root()) / "gvisor"
    target = cached_path(entry["version"], cache)
    stamp = target.parent / "deb.sha256"
    if target.is_file() and os.access(target, os.X_OK) and stamp.is_file() and stamp.read_text().strip() == entry["sha256"]:
        return target

    debs = root / "debs" / arch
    debs.mkdir(parents=True, exist_ok=True)
    deb = debs / Path(entry["filename"]).name
    if deb.exists() and _sha256(deb) != entry["sha256"]:
        deb.unlink()
    if not deb.exists():
        try:
            chosen = mirrors or mirror.resolve_mirrors()
            say(f"runsc {entry['version']} ({arch}): downloading from {chosen.main} (mirror from {chosen.origin})")
            mirror.fetch_pool_file(chosen, entry["filename"], entry["sha256"], deb)
        except mirror.MirrorError as err:
            raise BuildError(f"runsc={entry['version']}: {err}") from None
    actual = _sha256(deb)
    if actual != entry["sha256"]:
        deb.unlink()
        raise BuildError(f"{deb.name}: sha256 mismatch: {lock.name} says {entry['sha256']}, the file has {actual}")

    if shutil.which("dpkg-deb") is None:
        raise BuildError("dpkg-deb is not installed (apt-get install -y dpkg)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".extract-", dir=target.parent) as tmp:
        result = subprocess.run(["dpkg-deb", "-x", str(deb), tmp], capture_output=True, text=True)
        if result.returncode != 0:
            raise BuildError(f"dpkg-deb -x {deb.name} failed: {result.stderr.strip()}")
        extracted = Path(tmp) / "usr" / "bin" / "runsc"
        if not extracted.is_file():
            raise BuildError(f"{deb.name} holds no usr/bin/runsc")
        extracted.chmod(0o755)
        os.replace(extracted, target)  # same file system: atomic
    stamp.write_text(entry["sha256"] + "\n")
    return target


def refresh_lock(
    architectures: list[str], mirrors: mirror.Mirrors, *, cache: Path | None = None, lock: Path = LOCK
) -> dict:
    """Pins trixie's current runsc (version, file, sha256, size) for each architecture."""
    root = (cache or cache_root()) / "gvisor"
    data: dict = {"suite": SUITE, "package": PACKAGE, "architectures": {}}
    if lock.exists():
        data = json.loads(lock.read_text())
        data.setdefault("architectures", {})
    for arch in architectures:
        apt = PrivateApt(root / "apt", arch, mirrors)
        apt.update()
        versions = dict(apt.resolve([PACKAGE]))
        if PACKAGE not in versions:
            raise BuildError(f"{SUITE} ({arch}) has no {PACKAGE} package")
        info = apt.show(PACKAGE, versions[PACKAGE])
        data["architectures"][arch] = {
            "version": info.version,
            "filename": info.filename,
            "sha256": info.sha256,
            "size": info.size,
        }
    lock.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fetch_runsc", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=ARCHITECTURES, default=None, help="default: this machine's")
    parser.add_argument("--refresh-lock", action="store_true", help=f"re-pin {LOCK.name} to {SUITE}'s current runsc")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    mirror.add_arguments(parser)
    args = parser.parse_args(argv)
    say = (lambda _m: None) if args.quiet else (lambda m: print(m, file=sys.stderr))
    try:
        mirrors = None
        if args.mirror or args.security_mirror or args.snapshot or args.refresh_lock:
            mirrors = mirror.resolve_mirrors(args.mirror, args.security_mirror, args.snapshot)
        if args.refresh_lock:
            data = refresh_lock([args.arch] if args.arch else list(ARCHITECTURES), mirrors)
            for arch, entry in sorted(data["architectures"].items()):
                say(f"{arch}: runsc {entry['version']} sha256 {entry['sha256']}")
        print(fetch_runsc(args.arch, say=say, mirrors=mirrors))
    except (BuildError, mirror.MirrorError) as err:
        print(f"fetch_runsc: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
