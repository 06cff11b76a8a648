"""Assemble the distroless Python base as an OCI layout from the locked Debian 13 packages.

    python -m deploy.base.assemble --out OUT [--arch amd64 --arch arm64] [--mirror URL]
    python -m deploy.base.assemble --out OUT --arch amd64 --deb FILE...   (no network; Bazel)
    python -m deploy.base.assemble --out OUT --arch amd64 --arch arm64 --push REGISTRY/REPO:TAG

`--push` sends the base to a registry once (blobs first, manifest last;
credentials as `docker login` left them) and prints the index digest to pin:
`pipedreamer build --base REGISTRY/REPO@sha256:…`, or rules_oci's `oci.pull`
in MODULE.bazel.

Downloads exactly the files in lock.json by their pool paths from the Debian
mirror deploy/base/mirror.py chooses (the machine's apt sources unless
--mirror or $PIPEDREAMER_DEBIAN_MIRROR; snapshot.debian.org for versions the
mirror has dropped), or takes the given .deb files (matched to the lock by
sha256, as Bazel's http_file downloads them: deploy/base/extensions.bzl),
checks every .deb's sha256 against the lock, unpacks their data
without dpkg (no maintainer scripts run), drops docs and package-manager
bits, adds passwd/group/os-release//tmp and a CA bundle, and writes one
deterministic layer per architecture. There is no shell in the result.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import io
import json
import lzma
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath

from builder.errors import BuildError
from builder.layers import LayerEntry, file_digest, normalise_path, resolve_mtime, with_parents, write_layer
from builder.oci import (
    MANIFEST_MEDIA_TYPE,
    INDEX_MEDIA_TYPE,
    PYTHON_VERSION_LABEL,
    LayoutWriter,
    canonical_json,
    created_timestamp,
    descriptor,
    image_index,
    image_manifest,
)
from builder.registry import parse_reference, push_image
from builder.wheels import cache_root
from deploy.base import mirror
from deploy.base.apt_archive import ARCHITECTURES

HERE = Path(__file__).resolve().parent
LOCK = HERE / "lock.json"
PYTHON_VERSION = "3.13"
MULTIARCH = {"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}
# Merged /usr (as Debian 13 itself): top-level dirs are links into /usr.
USRMERGE = {"amd64": ("bin", "sbin", "lib", "lib64"), "arm64": ("bin", "sbin", "lib")}
SHELLS = ("bin/sh", "bin/bash", "bin/dash", "usr/bin/sh", "usr/bin/bash", "usr/bin/dash")

# Paths (prefixes, after the /usr merge) never copied from any package.
_DROPPED_PREFIXES = (
    "usr/share/man/", "usr/share/info/", "usr/share/lintian/", "usr/share/bug/", "usr/share/locale/",
    "usr/share/bash-completion/", "usr/share/debconf/", "usr/share/menu/", "usr/share/pixmaps/",
    "usr/share/applications/", "usr/share/binfmts/", "usr/share/pkgconfig/", "usr/share/gcc/",
    "usr/share/gdb/", "usr/share/python3/", "usr/share/ca-certificates/",
    "usr/lib/systemd/", "usr/lib/tmpfiles.d/", "usr/lib/sysctl.d/", "usr/lib/mime/",
    "usr/sbin/update-ca-certificates",
    "etc/cron.", "etc/init.d/", "etc/logrotate.d/", "etc/systemd/", "etc/ca-certificates",
    "var/lib/dpkg/", "var/cache/", "var/log/",
)  # fmt: skip
# Per package: keep only these paths (plus copyright); everything else of it is dropped.
_ONLY = {"libc-bin": ("usr/sbin/ldconfig",)}


@dataclasses.dataclass(frozen=True)
class LockedDeb:
    name: str
    version: str
    architecture: str
    filename: str
    sha256: str
    size: int

    @property
    def local_name(self) -> str:
        """Its name in the cache: as `apt-get download` names it (an epoch's ':' is written %3a)."""
        return f"{self.name}_{self.version.replace(':', '%3a')}_{self.architecture}.deb"


def _load_lock(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise BuildError(f"{path}: cannot read the base lock: {err}") from None


def lock_snapshot(path: Path) -> str:
    """The lock's snapshot time (snapshot.debian.org still serves every locked file at it), or ""."""
    return str(_load_lock(path).get("snapshot", ""))


def read_lock(path: Path, arch: str) -> list[LockedDeb]:
    lock = _load_lock(path)
    packages = lock.get("architectures", {}).get(arch)
    if not packages:
        raise BuildError(f"{path}: no packages locked for {arch}; run python -m deploy.base.refresh_lock")
    debs = []
    for name, info in sorted(packages.items()):
        if not re.fullmatch(r"[0-9a-f]{64}", info.get("sha256", "")):
            raise BuildError(f"{path}: {arch}/{name} has no sha256")
        debs.append(LockedDeb(name, info["version"], info["architecture"], info["filename"], info["sha256"], info["size"]))
    return debs


def fetch_debs(
    debs: Sequence[LockedDeb],
    arch: str,
    cache: Path,
    progress: Callable[[str], None],
    mirrors: mirror.Mirrors | Callable[[], mirror.Mirrors],
    snapshot: str = "",
) -> dict[str, Path]:
    """Locked .debs in the cache, downloaded from `mirrors` when missing, every one checked against its sha256.

    `mirrors` may be a function giving them: it is only called when something must be downloaded.
    """
    dest = cache / "debs" / arch
    dest.mkdir(parents=True, exist_ok=True)
    missing = []
    for deb in debs:
        path = dest / deb.local_name
        if path.exists() and file_digest(path) != f"sha256:{deb.sha256}":
            path.unlink()
        if not path.exists():
            missing.append(deb)
    if missing:
        chosen = mirrors() if callable(mirrors) else mirrors
        progress(f"{arch}: downloading {len(missing)} packages from {chosen.main} (mirror from {chosen.origin})")
        for deb in missing:
            try:
                mirror.fetch_pool_file(chosen, deb.filename, deb.sha256, dest / deb.local_name, snapshot_time=snapshot)
            except mirror.MirrorError as err:
                raise BuildError(f"{deb.name}={deb.version}: {err}") from None
    return {deb.name: dest / deb.local_name for deb in debs}


def local_debs(debs: Sequence[LockedDeb], files: Sequence[Path], arch: str) -> dict[str, Path]:
    """The given .deb files by package name, matched to the lock by sha256 (file names do not
    matter). Every locked package must be among them."""
    by_sum: dict[str, Path] = {}
    for path in files:
        by_sum.setdefault(file_digest(Path(path))[len("sha256:"):], Path(path))
    found: dict[str, Path] = {}
    missing = []
    for deb in debs:
        path = by_sum.get(deb.sha256)
        if path is None:
            missing.append(f"{deb.name}={deb.version} ({deb.filename.rsplit('/', 1)[-1]})")
        else:
            found[deb.name] = path
    if missing:
        raise BuildError(f"--deb: no file has the locked sha256 of these {arch} packages: {', '.join(missing)}")
    return found


def deb_data_tar(path: Path) -> bytes:
    """The uncompressed data.tar of a .deb (an `ar` archive), without dpkg."""
    with open(path, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise BuildError(f"{path}: not a Debian package (no ar header)")
        while header := f.read(60):
            if len(header) < 60 or header[58:60] != b"`\n":
                raise BuildError(f"{path}: corrupt ar member header")
            name = header[:16].decode().strip().rstrip("/")
            size = int(header[48:58].decode().strip())
            data = f.read(size)
            if size % 2:
                f.read(1)
            if name.startswith("data.tar"):
                return _decompress(name, data, path)
    raise BuildError(f"{path}: no data.tar member")


def _decompress(name: str, data: bytes, path: Path) -> bytes:
    if name == "data.tar":
        return data
    if name.endswith(".xz"):
        return lzma.decompress(data)
    if name.endswith(".gz"):
        return gzip.decompress(data)
    if name.endswith(".zst"):
        if shutil.which("zstd") is None:
            raise BuildError(f"{path}: data.tar.zst needs the zstd program (apt-get install zstd)")
        return subprocess.run(["zstd", "-dc"], input=data, capture_output=True, check=True).stdout
    raise BuildError(f"{path}: unsupported {name}")


def merged_path(path: str, arch: str) -> str:
    first, _, rest = path.partition("/")
    if first in USRMERGE[arch] or first in ("lib32", "libx32"):
        return f"usr/{first}/{rest}".rstrip("/")
    return path


def is_dropped(package: str, path: str) -> bool:
    if path.startswith("usr/share/doc/"):
        return not re.fullmatch(r"usr/share/doc/[^/]+/copyright|usr/share/doc/[^/]+", path) and path != "usr/share/doc"
    if package in _ONLY:
        return path not in _ONLY[package] and (path + "/") not in set(_dir_prefixes(_ONLY[package]))
    return (path + "/").startswith(_DROPPED_PREFIXES) or path.startswith(_DROPPED_PREFIXES)


def _dir_prefixes(paths: Sequence[str]) -> Iterator[str]:
    for p in paths:
        parts = PurePosixPath(p).parts
        for i in range(1, len(parts)):
            yield "/".join(parts[:i]) + "/"


def package_entries(package: str, data_tar: bytes, arch: str) -> Iterator[tuple[LayerEntry, bytes | None]]:
    """Entries of one package's data, /usr-merged and filtered. Hard links become copies."""
    contents: dict[str, LayerEntry] = {}
    with tarfile.open(fileobj=io.BytesIO(data_tar)) as tar:
        for member in tar:
            raw = member.name.removeprefix("./")
            if not raw or raw == ".":
                continue
            path = merged_path(normalise_path(raw), arch)
            if member.isfile():  # remembered even when dropped: a kept hard link may point here
                extracted = tar.extractfile(member)
                data = extracted.read() if extracted else b""
                contents[path] = LayerEntry(path, "file", data=data, executable=bool(member.mode & 0o111))
            if not path or is_dropped(package, path):
                continue
            if member.isdir():
                yield LayerEntry(path, "dir"), None
            elif member.issym():
                yield LayerEntry(path, "symlink", link_target=member.linkname), None
            elif member.islnk():
                target = merged_path(normalise_path(member.linkname.removeprefix("./")), arch)
                original = contents.get(target)
                if original is None:
                    raise BuildError(f"{package}: hard link {raw} → {member.linkname} precedes its target")
                yield dataclasses.replace(original, path=path), original.data
            elif member.isfile():
                yield contents[path], contents[path].data
            # device nodes, fifos: none in these packages; ignored if present


def generated_entries(arch: str, ca_bundle: bytes) -> list[LayerEntry]:
    passwd = (
        "root:x:0:0:root:/root:/usr/sbin/nologin\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    )
    group = "root:x:0:\nnobody:x:65534:\n"
    os_release = (
        'PRETTY_NAME="Pipedreamer distroless Python 3.13 (Debian GNU/Linux 13 trixie)"\n'
        'NAME="Debian GNU/Linux"\nVERSION_ID="13"\nVERSION_CODENAME=trixie\nID=debian\n'
        'HOME_URL="https://www.debian.org/"\n'
    )
    entries = [
        LayerEntry("etc/passwd", "file", data=passwd.encode()),
        LayerEntry("etc/group", "file", data=group.encode()),
        LayerEntry("etc/os-release", "file", data=os_release.encode()),
        LayerEntry("etc/nsswitch.conf", "file", data=b"passwd: files\ngroup: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n"),
        LayerEntry("etc/ld.so.conf", "file", data=f"/usr/local/lib\n/usr/lib/{MULTIARCH[arch]}\n".encode()),
        LayerEntry("etc/ssl/certs/ca-certificates.crt", "file", data=ca_bundle),
        LayerEntry("usr/lib/ssl/certs", "symlink", link_target="/etc/ssl/certs"),
        LayerEntry("usr/lib/ssl/cert.pem", "symlink", link_target="/etc/ssl/certs/ca-certificates.crt"),
        LayerEntry("usr/bin/python3", "symlink", link_target=f"python{PYTHON_VERSION}"),
        LayerEntry("tmp", "dir", mode=0o1777),
        LayerEntry("root", "dir", mode=0o700),
        LayerEntry("var/tmp", "dir", mode=0o1777),
    ]
    entries += [LayerEntry(top, "symlink", link_target=f"usr/{top}") for top in USRMERGE[arch]]
    return entries


def ca_bundle(data_tar: bytes) -> bytes:
    """/etc/ssl/certs/ca-certificates.crt as update-ca-certificates builds it: every
    mozilla certificate, in file-name order."""
    certs = []
    with tarfile.open(fileobj=io.BytesIO(data_tar)) as tar:
        for member in tar:
            if member.isfile() and re.match(r"^\./usr/share/ca-certificates/mozilla/.+\.crt$", member.name):
                extracted = tar.extractfile(member)
                certs.append((member.name, extracted.read() if extracted else b""))
    if not certs:
        raise BuildError("ca-certificates: no certificates under usr/share/ca-certificates/mozilla")
    return b"".join(data if data.endswith(b"\n") else data + b"\n" for _, data in sorted(certs))


# qemu-user-static's names, then qemu-user's: since Debian 13 (qemu 9.1) its
# binaries are the static ones, without the suffix.
_QEMU = {"amd64": ("qemu-x86_64-static", "qemu-x86_64"), "arm64": ("qemu-aarch64-static", "qemu-aarch64")}


def ld_so_cache(entries: Sequence[LayerEntry], arch: str) -> bytes:
    """/etc/ld.so.cache made by the image's own static ldconfig (under qemu-user for a
    foreign architecture), so `ldconfig -p` (ctypes.util.find_library) works in the image."""
    host = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine)
    emulator: list[str] = []
    if host != arch:
        qemu = next(filter(None, map(shutil.which, _QEMU[arch])), None)
        if qemu is None:
            raise BuildError(
                f"--arch {arch}: running its ldconfig here needs {_QEMU[arch][0]} (apt-get install qemu-user-static)"
            )
        emulator = [qemu]
    with tempfile.TemporaryDirectory(prefix="pipedreamer-base-") as tmp:
        root = Path(tmp)
        for entry in with_parents(entries):
            target = root / entry.path
            if entry.kind == "dir":
                target.mkdir(exist_ok=True)
            elif entry.kind == "symlink":
                target.symlink_to(entry.link_target)
            elif entry.data is not None:
                target.write_bytes(entry.data)
                target.chmod(0o755 if entry.executable else 0o644)
        ldconfig = root / "usr/sbin/ldconfig"
        result = subprocess.run([*emulator, str(ldconfig), "-r", str(root), "-X"], capture_output=True, text=True)
        if result.returncode != 0:
            raise BuildError(f"ldconfig -r (for /etc/ld.so.cache) failed: {result.stderr.strip()}")
        return (root / "etc/ld.so.cache").read_bytes()


def base_entries(debs: Mapping[str, Path], arch: str) -> list[LayerEntry]:
    by_path: dict[str, LayerEntry] = {}
    bundle = b""
    for name, path in sorted(debs.items()):
        data_tar = deb_data_tar(path)
        if name == "ca-certificates":
            bundle = ca_bundle(data_tar)
        for entry, _ in package_entries(name, data_tar, arch):
            previous = by_path.get(entry.path)
            if previous is not None and not (previous.kind == entry.kind == "dir"):
                if previous != entry:
                    raise BuildError(f"{name}: /{entry.path} is also shipped, differently, by another package")
            by_path.setdefault(entry.path, entry)
    if not bundle:
        raise BuildError("the lock has no ca-certificates package")
    for entry in generated_entries(arch, bundle):
        by_path[entry.path] = entry
    entries = list(by_path.values())
    entries.append(LayerEntry("etc/ld.so.cache", "file", data=ld_so_cache(entries, arch)))
    return entries


def check_distroless(entries: Sequence[LayerEntry], arch: str) -> None:
    paths = {e.path: e for e in entries}
    for shell in SHELLS:
        if merged_path(shell, arch) in paths:
            raise BuildError(f"the base would contain a shell: /{shell}")
    for needed in (f"usr/bin/python{PYTHON_VERSION}", "etc/passwd", "etc/ssl/certs/ca-certificates.crt"):
        if needed not in paths:
            raise BuildError(f"the base lacks /{needed}")


def assemble(
    out: Path,
    *,
    architectures: Sequence[str] = ("amd64",),
    lock: Path = LOCK,
    cache: Path | None = None,
    source_date_epoch: int | None = None,
    progress: Callable[[str], None] | None = None,
    deb_files: Sequence[Path] | None = None,
    mirrors: mirror.Mirrors | None = None,
) -> str:
    """Write the base as an OCI layout at `out`; returns the digest index.json points to.

    With `deb_files`, the packages come from those files (no network) and,
    unless `cache` is given, nothing is written outside `out`. Else missing
    packages are downloaded from `mirrors` (default: `mirror.resolve_mirrors()`).
    """
    if deb_files is not None and cache is None:
        with tempfile.TemporaryDirectory(prefix="pipedreamer-base-") as scratch:
            return assemble(out, architectures=architectures, lock=lock, cache=Path(scratch),
                            source_date_epoch=source_date_epoch, progress=progress, deb_files=deb_files)  # fmt: skip

    def chosen_mirrors() -> mirror.Mirrors:
        try:
            return mirrors or mirror.resolve_mirrors()
        except mirror.MirrorError as err:
            raise BuildError(str(err)) from None

    say = progress or (lambda _m: None)
    cache = (cache or cache_root()) / "base"
    mtime = resolve_mtime(source_date_epoch)
    lock_digest = file_digest(lock)
    manifests = []
    used: set[Path] = set()
    with LayoutWriter(out) as writer:
        for arch in architectures:
            if arch not in ARCHITECTURES:
                raise BuildError(f"--arch {arch}: supported are {', '.join(ARCHITECTURES)}")
            if deb_files is not None:
                debs = local_debs(read_lock(lock, arch), deb_files, arch)
                used.update(debs.values())
            else:
                debs = fetch_debs(read_lock(lock, arch), arch, cache, say, chosen_mirrors, lock_snapshot(lock))
            entries = base_entries(debs, arch)
            check_distroless(entries, arch)
            layer = write_layer(entries, cache / "layers" / f"base-{arch}.tar.gz", source_date_epoch=mtime)
            writer.add_file(layer.path, layer.digest)
            say(f"{arch}: layer {layer.digest} ({layer.size} bytes)")
            created = created_timestamp(mtime)
            config = {
                "architecture": arch,
                "os": "linux",
                "created": created,
                "config": {
                    "User": "65534",
                    "Env": [
                        "PATH=/usr/local/bin:/usr/bin:/bin",
                        "LANG=C.UTF-8",
                        "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
                    ],
                    "Entrypoint": [f"/usr/bin/python{PYTHON_VERSION}"],
                    "WorkingDir": "/",
                    "Labels": {
                        PYTHON_VERSION_LABEL: PYTHON_VERSION,
                        "dev.pipedreamer.base.lock": lock_digest,
                        "org.opencontainers.image.title": "pipedreamer-python-base",
                    },
                },
                "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
                "history": [{"created": created, "created_by": f"deploy/base/assemble.py (lock {lock_digest})"}],
            }
            if arch == "arm64":
                config["variant"] = "v8"
            config_blob = canonical_json(config)
            writer.add_bytes(config_blob)
            manifest = image_manifest(
                config_blob,
                [descriptor(layer.media_type, layer.digest, layer.size)],
                {"org.opencontainers.image.title": "pipedreamer-python-base", "dev.pipedreamer.base.lock": lock_digest},
            )
            platform = {"architecture": arch, "os": "linux", **({"variant": "v8"} if arch == "arm64" else {})}
            manifests.append(writer.add_json(manifest, MANIFEST_MEDIA_TYPE, platform=platform))
        unused = sorted(str(p) for p in deb_files or () if Path(p) not in used)
        if unused:
            raise BuildError(f"--deb {unused[0]}: not a locked package of {', '.join(architectures)} (no sha256 matches)")
        ref = {"org.opencontainers.image.ref.name": PYTHON_VERSION}
        if len(manifests) == 1:
            top = {**manifests[0], "annotations": ref}
        else:
            top = writer.add_json(image_index(manifests), INDEX_MEDIA_TYPE, annotations=ref)
        writer.commit([top])
    return top["digest"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="OCI layout directory to write")
    parser.add_argument("--arch", action="append", choices=ARCHITECTURES, help="default: amd64")
    parser.add_argument("--lock", type=Path, default=LOCK)
    parser.add_argument("--deb", type=Path, action="append",
                        help="use these .deb files (matched to the lock by sha256) instead of downloading")  # fmt: skip
    parser.add_argument("--cache", type=Path, help="download/scratch cache (default: $PIPEDREAMER_CACHE or ~/.cache/pipedreamer)")
    parser.add_argument("--source-date-epoch", type=int, default=None, help="default: $SOURCE_DATE_EPOCH, else 0")
    parser.add_argument("--push", metavar="REGISTRY/REPO:TAG", help="then push the base there and print its pinned reference")
    parser.add_argument("--insecure", action="store_true", help="with --push: plain HTTP (loopback registries always are)")
    mirror.add_arguments(parser)
    args = parser.parse_args(argv)
    say = lambda m: print(m, file=sys.stderr)
    try:
        if args.push:
            parse_reference(args.push)  # a bad reference fails before minutes of assembling
        mirrors = None
        if args.deb is None:
            mirrors = mirror.resolve_mirrors(args.mirror, args.security_mirror, args.snapshot)
        digest = assemble(args.out, architectures=args.arch or ["amd64"], lock=args.lock, cache=args.cache,
                          source_date_epoch=args.source_date_epoch, deb_files=args.deb, progress=say,
                          mirrors=mirrors)  # fmt: skip
        result = {"layout": str(args.out), "digest": digest}
        if args.push:
            pushed = push_image(args.out, args.push, insecure=args.insecure, progress=say)
            ref = parse_reference(pushed.reference)
            result["pushed"] = f"{ref.registry}/{ref.repository}@{pushed.digest}"
    except (BuildError, mirror.MirrorError) as err:
        print(f"assemble: {err}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
