"""A private apt for Debian 13 (trixie): its own sources, lists, cache and an empty dpkg status.

Every apt-get call gets `-o Dir::…` options pointing into a state directory of
ours, so the machine's apt lists and package database are never read nor
written. The mirror is the caller's (deploy/base/mirror.py: flags, environment
or the machine's apt sources).
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

from builder.errors import BuildError
from deploy.base.mirror import Mirrors

SUITE = "trixie"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
ARCHITECTURES = ("amd64", "arm64")


@dataclasses.dataclass(frozen=True)
class PackageVersion:
    name: str
    version: str
    architecture: str
    filename: str
    sha256: str
    size: int


def sources(mirrors: Mirrors) -> list[tuple[str, str]]:
    """(archive URI, suite): trixie and trixie-updates from the main archive, trixie-security from its own."""
    return [(mirrors.main, SUITE), (mirrors.main, f"{SUITE}-updates"), (mirrors.security, f"{SUITE}-security")]


class PrivateApt:
    """apt-get / apt-cache for one architecture against trixie on `mirrors`, with state under `state_dir`."""

    def __init__(self, state_dir: Path, architecture: str, mirrors: Mirrors) -> None:
        if architecture not in ARCHITECTURES:
            raise BuildError(f"--arch {architecture}: supported are {', '.join(ARCHITECTURES)}")
        self.architecture = architecture
        self.root = Path(state_dir) / f"{SUITE}-{architecture}"
        self.sources = self.root / "sources.list"
        self.lists = self.root / "lists"
        self.cache = self.root / "cache"
        self.status = self.root / "status"
        for directory in (self.lists / "partial", self.cache / "archives" / "partial"):
            directory.mkdir(parents=True, exist_ok=True)
        self.status.touch()
        self.sources.write_text(
            "".join(f"deb [arch={architecture} signed-by={KEYRING}] {uri} {suite} main\n" for uri, suite in sources(mirrors))
        )

    def options(self) -> list[str]:
        settings = {
            "Dir::Etc::SourceList": self.sources,
            "Dir::Etc::SourceParts": "/dev/null",
            "Dir::State::Lists": self.lists,
            "Dir::State::status": self.status,
            "Dir::Cache": self.cache,
            "Dir::Cache::archives": self.cache / "archives",
            "Dir::Cache::pkgcache": "",
            "Dir::Cache::srcpkgcache": "",
            "APT::Architecture": self.architecture,
            "APT::Architectures": self.architecture,
            "APT::Install-Recommends": "false",
            "APT::Install-Suggests": "false",
            "Acquire::Languages": "none",
            "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled": "false",
            "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled": "false",
            "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled": "false",
            "Debug::NoLocking": "true",
        }
        return [arg for key, value in settings.items() for arg in ("-o", f"{key}={value}")]

    def run(self, tool: str, *args: str, cwd: Path | None = None) -> str:
        command = [tool, *self.options(), *args]
        env = {**os.environ, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"}
        result = subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env)
        if result.returncode != 0:
            tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-8:])
            raise BuildError(f"{tool} {' '.join(args[:3])}… failed (private apt state {self.root}):\n{tail}")
        return result.stdout

    def update(self) -> None:
        self.run("apt-get", "-q", "update")

    def resolve(self, roots: Sequence[str]) -> list[tuple[str, str]]:
        """(name, version) of `roots` and everything they depend on, as apt would install them."""
        out = self.run("apt-get", "-s", "-q", "install", *roots)
        found = re.findall(r"^Inst (\S+) \((\S+) ", out, re.MULTILINE)
        return sorted((name.split(":")[0], version) for name, version in found)

    def show(self, name: str, version: str) -> PackageVersion:
        out = self.run("apt-cache", "show", f"{name}={version}")
        record = out.split("\n\n")[0]
        fields = dict(re.findall(r"^([A-Za-z0-9-]+): ?(.*)$", record, re.MULTILINE))
        try:
            return PackageVersion(
                name=name,
                version=fields["Version"],
                architecture=fields["Architecture"],
                filename=fields["Filename"],
                sha256=fields["SHA256"],
                size=int(fields["Size"]),
            )
        except KeyError as err:
            raise BuildError(f"apt-cache show {name}={version}: no {err.args[0]} field") from None
