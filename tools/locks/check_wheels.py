"""Installs a runtime lock as `pipedreamer build` does, for every Python and platform images use.

    python tools/locks/check_wheels.py requirements/runtime.txt

tools/locks/lock.sh runs it after locking: pip-compile resolves on the locking
machine only (Python 3.11, its platform), while images take the runtime wheels
for the base's Python (3.11-3.13) on linux/amd64 or linux/arm64. Each
combination goes through `builder.wheels.install_wheels` (hashes required,
binary wheels only, the builder's manylinux tags) into a scratch cache, so a
locked release without a wheel for one of them, or a wheel whose hash the lock
lacks, fails here. Needs PyPI; exit 1 names what failed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from builder.errors import BuildError
from builder.oci import parse_platform
from builder.wheels import install_wheels, parse_lock

PYTHON_VERSIONS = ("3.11", "3.12", "3.13")
PLATFORMS = ("linux/amd64", "linux/arm64")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("lock", type=Path)
    args = parser.parse_args(argv)
    _, requirements = parse_lock(args.lock)
    failures = []
    with tempfile.TemporaryDirectory(prefix="pipedreamer-check-wheels-") as tmp:
        for version in PYTHON_VERSIONS:
            for platform in PLATFORMS:
                try:
                    site, _ = install_wheels(args.lock, version, parse_platform(platform), cache=Path(tmp))
                except BuildError as err:
                    failures.append(str(err))
                    continue
                installed = len(list(site.glob("*.dist-info")))
                print(f"check_wheels: Python {version} {platform}: {installed} of {len(requirements)} wheels", file=sys.stderr)
                if installed != len(requirements):
                    failures.append(f"Python {version} {platform}: {installed} wheels installed, {len(requirements)} locked")
    for failure in failures:
        print(f"check_wheels: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
