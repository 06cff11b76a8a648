"""Refresh deploy/base/lock.json: resolve packages.txt against trixie and pin versions + sha256.

    python -m deploy.base.refresh_lock [--arch amd64 --arch arm64] [--mirror URL]

Uses a private apt state (see apt_archive.py) on the mirror mirror.py chooses
(the machine's apt sources unless --mirror or $PIPEDREAMER_DEBIAN_MIRROR); the
system's apt is untouched. The lock records no host: packages, versions, pool
paths, sha256 sums and the snapshot time that still holds them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from builder.errors import BuildError
from builder.wheels import cache_root
from deploy.base import mirror
from deploy.base.apt_archive import ARCHITECTURES, SUITE, PrivateApt

HERE = Path(__file__).resolve().parent
PACKAGES = HERE / "packages.txt"
LOCK = HERE / "lock.json"

# In the closure apt computes, but not in a distroless image. We never run
# maintainer scripts, so what only serves them goes; so does anything that
# would bring a shell or an interpreter other than Python.
EXCLUDED: Mapping[str, str] = {
    "debconf": "tzdata's configuration questions (Perl); maintainer scripts are not run",
    "perl-base": "debconf's interpreter",
    "openssl": "the openssl CLI; ca-certificates' postinst uses it, our bundle is built in Python",
    "readline-common": "only /etc/inputrc and docs for interactive shells",
    "dpkg": "package manager",
    "apt": "package manager",
    "bash": "shell",
    "dash": "shell",
    "coreutils": "shell utilities",
    "sensible-utils": "shell scripts",
    "debianutils": "shell scripts",
}


def read_packages(path: Path = PACKAGES) -> list[str]:
    names = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        if " " in name or name in EXCLUDED:
            raise BuildError(f"{path}:{number}: {name!r} is not a package name this base can use")
        names.append(name)
    return names


def snapshot_timestamp(now: float | None = None) -> str:
    """snapshot.debian.org's name for `now` (UTC): its archive at that moment holds every
    version the lock names, after the live pool has dropped them."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))


def resolve_lock(roots: Sequence[str], architectures: Sequence[str], state_dir: Path, mirrors: mirror.Mirrors) -> dict:
    lock: dict = {
        "suite": SUITE,
        "snapshot": snapshot_timestamp(),
        "roots": list(roots),
        "architectures": {},
    }
    for arch in architectures:
        apt = PrivateApt(state_dir, arch, mirrors)
        apt.update()
        packages = {}
        for name, version in apt.resolve(roots):
            if name in EXCLUDED:
                continue
            info = apt.show(name, version)
            packages[name] = {
                "version": info.version,
                "architecture": info.architecture,
                "filename": info.filename,
                "sha256": info.sha256,
                "size": info.size,
            }
        lock["architectures"][arch] = dict(sorted(packages.items()))
    return lock


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", action="append", choices=ARCHITECTURES, help="default: all")
    parser.add_argument("--lock", type=Path, default=LOCK)
    parser.add_argument("--packages", type=Path, default=PACKAGES)
    parser.add_argument("--state-dir", type=Path, default=None, help="private apt state (default: the cache)")
    mirror.add_arguments(parser)
    args = parser.parse_args(argv)
    state_dir = args.state_dir or cache_root() / "apt"
    try:
        mirrors = mirror.resolve_mirrors(args.mirror, args.security_mirror, args.snapshot)
        lock = resolve_lock(read_packages(args.packages), args.arch or list(ARCHITECTURES), state_dir, mirrors)
    except (BuildError, mirror.MirrorError) as err:
        print(f"refresh_lock: {err}", file=sys.stderr)
        return 1
    args.lock.write_text(json.dumps(lock, indent=2, sort_keys=False) + "\n")
    for arch, packages in lock["architectures"].items():
        print(f"{arch}: {len(packages)} packages, {sum(p['size'] for p in packages.values())} bytes of .deb")
    return 0


if __name__ == "__main__":
    sys.exit(main())
