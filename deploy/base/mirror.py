"""Where Debian packages are downloaded from: the machine's apt sources, unless told otherwise.

Two archives serve the packages the locks pin: Debian's main archive (suites
trixie and trixie-updates, pool paths `pool/main/...`) and its security
archive (trixie-security, `pool/updates/...`). The locks name packages,
versions, pool paths and sha256 sums, never a host; the mirror is chosen here:

1. `--mirror URL` (and `--security-mirror URL`), else
2. `$PIPEDREAMER_DEBIAN_MIRROR` (and `$PIPEDREAMER_DEBIAN_SECURITY_MIRROR`), else
3. the machine's apt configuration, when the machine is Debian: the first
   `deb` source for one of its own release's suites with the `main` component
   (in /etc/apt/sources.list, then sources.list.d/*.list and *.sources,
   deb822 included), and the one for its `-security` suite.

The security archive likewise: `--security-mirror`, else the variable, else
apt's `-security` source (when the main archive came from apt too), else the
main one's sibling (`https://mirror.example/debian` → `.../debian-security`,
as on Debian's own mirrors).

Debian drops superseded versions from its pool; snapshot.debian.org keeps
every version ever published. Files the mirror no longer has are then taken
from the snapshot service at the lock's `snapshot` time: `--snapshot URL`,
`$PIPEDREAMER_DEBIAN_SNAPSHOT`, else DEFAULT_SNAPSHOT; `off` turns it off.
Every download is checked against the lock's sha256, whichever host served it.

Standard library only: Bazel's module extension (deploy/base/extensions.bzl)
runs this file as a script (`--json`) so both ways in choose the same mirror.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

ENV_MIRROR = "PIPEDREAMER_DEBIAN_MIRROR"
ENV_SECURITY_MIRROR = "PIPEDREAMER_DEBIAN_SECURITY_MIRROR"
ENV_SNAPSHOT = "PIPEDREAMER_DEBIAN_SNAPSHOT"
DEFAULT_SNAPSHOT = "https://snapshot.debian.org/archive"
APT_ETC = Path("/etc/apt")
OS_RELEASE = Path("/etc/os-release")
# Archive names under the snapshot service (snapshot.debian.org/archive/<name>/<time>/pool/...).
MAIN_ARCHIVE, SECURITY_ARCHIVE = "debian", "debian-security"

_SCHEMES = ("http://", "https://", "file://")
_RELEASE_ALIASES = ("stable", "oldstable", "oldoldstable", "testing", "unstable", "sid")
_SUITE_SUFFIXES = ("", "-updates", "-security", "-backports", "-proposed-updates", "/updates")


class MirrorError(Exception):
    """No usable mirror, or a file it cannot serve; the message says which and what to do."""


@dataclasses.dataclass(frozen=True)
class AptSource:
    """One `deb` source of the machine's apt configuration (one URI of a deb822 stanza)."""

    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    where: str  # file:line


@dataclasses.dataclass(frozen=True)
class Mirrors:
    main: str  # the main archive's root (the directory holding pool/ and dists/)
    security: str
    snapshot: str  # the snapshot service's archive root, "" for none
    origin: str  # where main came from: a flag, a variable, or file:line of the apt configuration

    def urls(self, filename: str, snapshot_time: str = "") -> list[str]:
        """Where a locked pool file is: the mirror, then the snapshot service at `snapshot_time`."""
        security = filename.startswith("pool/updates/")
        root, archive = (self.security, SECURITY_ARCHIVE) if security else (self.main, MAIN_ARCHIVE)
        urls = [f"{root}/{filename}"]
        if self.snapshot and snapshot_time:
            urls.append(f"{self.snapshot}/{archive}/{snapshot_time}/{filename}")
        return urls

    def to_json(self) -> dict[str, str]:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------- apt config


def read_apt_sources(etc: Path = APT_ETC) -> list[AptSource]:
    """The enabled `deb` sources of an apt configuration directory, in apt's reading order."""
    files = [etc / "sources.list"]
    parts = etc / "sources.list.d"
    if parts.is_dir():
        files += sorted(p for p in parts.iterdir() if p.suffix in (".list", ".sources"))
    sources: list[AptSource] = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (FileNotFoundError, IsADirectoryError):
            continue
        except (OSError, UnicodeDecodeError) as err:
            raise MirrorError(f"{path}: cannot read the apt sources: {err}") from None
        reader = _deb822_sources if path.suffix == ".sources" else _one_line_sources
        sources.extend(reader(text, str(path)))
    return sources


def _one_line_sources(text: str, path: str) -> list[AptSource]:
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        line = re.sub(r"\[[^\]]*\]", " ", line)  # [arch=amd64 signed-by=...]
        words = line.split()
        if len(words) >= 3 and words[0] == "deb":
            found.append(AptSource(words[1].rstrip("/"), (words[2],), tuple(words[3:]), f"{path}:{number}"))
    return found


def _deb822_sources(text: str, path: str) -> list[AptSource]:
    found = []
    for start, stanza in _stanzas(text):
        types = stanza.get("types", "").split()
        if "deb" not in types or stanza.get("enabled", "yes").strip().lower() == "no":
            continue
        suites, components = tuple(stanza.get("suites", "").split()), tuple(stanza.get("components", "").split())
        found.extend(AptSource(uri.rstrip("/"), suites, components, f"{path}:{start}")
                     for uri in stanza.get("uris", "").split())  # fmt: skip
    return found


def _stanzas(text: str) -> list[tuple[int, dict[str, str]]]:
    """deb822 paragraphs as (first line, lower-cased field → value); continuation lines are joined."""
    stanzas: list[tuple[int, dict[str, str]]] = []
    fields: dict[str, str] = {}
    start, key = 0, ""
    for number, raw in enumerate(text.splitlines(), 1):
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if fields:
                stanzas.append((start, fields))
            fields, key = {}, ""
            continue
        if raw[0] in " \t" and key:
            fields[key] += " " + raw.strip()
            continue
        name, sep, value = raw.partition(":")
        if sep:
            if not fields:
                start = number
            key = name.strip().lower()
            fields[key] = value.strip()
    if fields:
        stanzas.append((start, fields))
    return stanzas


def os_release(path: Path = OS_RELEASE) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return {}
    pairs = (line.partition("=") for line in text.splitlines() if "=" in line and not line.startswith("#"))
    return {key.strip(): value.strip().strip("\"'") for key, _, value in pairs}


def _debian_suite(suite: str, codename: str) -> bool:
    releases = (*_RELEASE_ALIASES, *((codename,) if codename else ()))
    return any(suite == release + suffix for release in releases for suffix in _SUITE_SUFFIXES)


def _is_security(suite: str) -> bool:
    return suite.endswith(("-security", "/updates"))


def apt_mirrors(etc: Path = APT_ETC, release: Path = OS_RELEASE) -> tuple[str, str, str]:
    """(main URI, security URI or "", file:line) of the machine's Debian sources."""
    info = os_release(release)
    if info.get("ID") != "debian":
        what = f"ID={info['ID']}" if info.get("ID") else "no ID"
        raise MirrorError(
            f"this machine is not Debian ({what} in {release}), so its apt sources name no Debian mirror; "
            f"give --mirror URL or set {ENV_MIRROR} (e.g. to your mirror's .../debian)"
        )
    codename = info.get("VERSION_CODENAME", "")
    main = security = None
    for source in read_apt_sources(etc):
        if not source.uri.startswith(_SCHEMES) or "main" not in source.components:
            continue
        suites = [s for s in source.suites if _debian_suite(s, codename)]
        if security is None and any(_is_security(s) for s in suites):
            security = source
        if main is None and any(not _is_security(s) for s in suites):
            main = source
    if main is None:
        raise MirrorError(
            f"no Debian mirror in the apt sources ({etc}/sources.list, {etc}/sources.list.d/): no deb line "
            f"for {codename or 'this release'} with the main component; give --mirror URL or set {ENV_MIRROR}"
        )
    return main.uri, security.uri if security else "", main.where


# ------------------------------------------------------------------- choice


def resolve_mirrors(
    mirror: str | None = None,
    security_mirror: str | None = None,
    snapshot: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    apt_etc: Path = APT_ETC,
    release: Path = OS_RELEASE,
) -> Mirrors:
    """The mirrors to use: flags, else the environment, else the machine's apt configuration."""
    env = os.environ if environ is None else environ
    apt_security = ""
    if mirror:
        main, origin = mirror, "--mirror"
    elif env.get(ENV_MIRROR):
        main, origin = env[ENV_MIRROR], f"${ENV_MIRROR}"
    else:
        main, apt_security, origin = apt_mirrors(apt_etc, release)
    main = _root(main, origin)
    security = security_mirror or env.get(ENV_SECURITY_MIRROR) or apt_security
    security = _root(security, "--security-mirror") if security else main + "-security"
    chosen = snapshot if snapshot is not None else env.get(ENV_SNAPSHOT, DEFAULT_SNAPSHOT)
    snapshot_root = "" if chosen.strip().lower() in ("", "off", "none") else _root(chosen, "--snapshot")
    return Mirrors(main, security, snapshot_root, origin)


def _root(uri: str, origin: str) -> str:
    uri = uri.strip().rstrip("/")
    if not uri.startswith(_SCHEMES):
        raise MirrorError(f"{origin}: {uri!r} is not a mirror URL (expected http://, https:// or file://)")
    return uri


# ----------------------------------------------------------------- download


def fetch_pool_file(
    mirrors: Mirrors,
    filename: str,
    sha256: str,
    dest: Path,
    *,
    snapshot_time: str = "",
    progress: Callable[[str], None] = lambda _m: None,
    timeout: float = 60.0,
) -> Path:
    """Download a locked pool file to `dest` (atomically), from the first of `mirrors.urls` that has it
    with the locked sha256."""
    failures = []
    dest.parent.mkdir(parents=True, exist_ok=True)
    for url in mirrors.urls(filename, snapshot_time):
        with tempfile.NamedTemporaryFile(dir=dest.parent, prefix=".partial-", delete=False) as out:
            partial = Path(out.name)
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    digest = hashlib.sha256()
                    while block := response.read(1 << 20):
                        digest.update(block)
                        out.write(block)
            except urllib.error.HTTPError as err:
                failures.append(f"{url}: HTTP {err.code} {err.reason}")
                partial.unlink(missing_ok=True)
                continue
            except (urllib.error.URLError, OSError) as err:
                failures.append(f"{url}: {getattr(err, 'reason', None) or err}")
                partial.unlink(missing_ok=True)
                continue
        if digest.hexdigest() != sha256:
            failures.append(f"{url}: sha256 {digest.hexdigest()}, the lock says {sha256}")
            partial.unlink()
            continue
        os.replace(partial, dest)
        progress(f"fetched {url}")
        return dest
    raise MirrorError(
        f"{filename}: no mirror has it with the locked sha256 (mirror from {mirrors.origin}):\n  "
        + "\n  ".join(failures)
        + f"\nA mirror elsewhere: --mirror URL or ${ENV_MIRROR}; a version gone from the pool: refresh the lock"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print the Debian mirrors deploy/base would use, as JSON.")
    add_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print {main, security, snapshot, origin}")
    parser.add_argument("--apt-etc", type=Path, default=APT_ETC, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        mirrors = resolve_mirrors(args.mirror, args.security_mirror, args.snapshot, apt_etc=args.apt_etc)
    except MirrorError as err:
        print(f"mirror: {err}", file=sys.stderr)
        return 1
    print(json.dumps(mirrors.to_json()) if args.json else f"{mirrors.main}\n{mirrors.security}\n{mirrors.snapshot}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--mirror, --security-mirror and --snapshot, for every command that downloads packages."""
    parser.add_argument("--mirror", metavar="URL",
                        help=f"Debian archive to download from (default: ${ENV_MIRROR}, else the machine's apt sources)")  # fmt: skip
    parser.add_argument("--security-mirror", metavar="URL",
                        help=f"Debian security archive (default: ${ENV_SECURITY_MIRROR}, else beside the main one)")  # fmt: skip
    parser.add_argument("--snapshot", metavar="URL",
                        help=f"snapshot service for versions gone from the mirror, or 'off' "
                        f"(default: ${ENV_SNAPSHOT}, else {DEFAULT_SNAPSHOT})")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
