"""OCI image layouts: read a base, assemble config/manifest/index, write a layout atomically."""

from __future__ import annotations

import dataclasses
import datetime
import gzip
import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from builder.errors import BuildError
from builder.layers import Layer, file_digest

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_GZIP_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_TAR_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"

DOCKER_MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_LAYER_MEDIA_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"

MANIFEST_TYPES = (MANIFEST_MEDIA_TYPE, DOCKER_MANIFEST_MEDIA_TYPE)
INDEX_TYPES = (INDEX_MEDIA_TYPE, DOCKER_LIST_MEDIA_TYPE)
# Base layers keep their bytes; in our manifest they get the OCI name for the same format.
_LAYER_TYPE_MAP = {DOCKER_LAYER_MEDIA_TYPE: LAYER_GZIP_MEDIA_TYPE}

PYTHON_VERSION_LABEL = "dev.pipedreamer.python.version"
DEFAULT_PYTHON_VERSION = "3.13"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_PYTHON_DIR_RE = re.compile(r"^(?:\./)?(?:usr/|usr/local/)lib/python(3\.\d+)/")


@dataclasses.dataclass(frozen=True, order=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def to_json(self) -> dict[str, str]:
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        return out

    def matches(self, other: Platform) -> bool:
        """Same os/arch; a missing variant matches any (`linux/arm64` = `linux/arm64/v8`)."""
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        return not self.variant or not other.variant or self.variant == other.variant


SUPPORTED_PLATFORMS = ("linux/amd64", "linux/arm64")


def parse_platform(text: str) -> Platform:
    """`linux/amd64`, `linux/arm64`, `linux/arm64/v8` → `Platform`."""
    parts = text.strip().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise BuildError(f"--platform {text!r}: expected os/arch[/variant], e.g. linux/amd64")
    os_name, arch = parts[0], parts[1]
    variant = parts[2] if len(parts) == 3 else ""
    if f"{os_name}/{arch}" not in SUPPORTED_PLATFORMS:
        raise BuildError(f"--platform {text!r}: supported platforms are {', '.join(SUPPORTED_PLATFORMS)}")
    return Platform(os_name, arch, variant)


def canonical_json(value: object) -> bytes:
    """Sorted keys, no whitespace: the same document always gives the same digest."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def bytes_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def created_timestamp(source_date_epoch: int) -> str:
    """RFC 3339 UTC, as OCI wants (`1970-01-01T00:00:00Z` for 0)."""
    moment = datetime.datetime.fromtimestamp(source_date_epoch, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def descriptor(media_type: str, digest: str, size: int, **extra: object) -> dict:
    out: dict = {"mediaType": media_type, "digest": digest, "size": size}
    out.update({k: v for k, v in extra.items() if v})
    return out


# ---------------------------------------------------------------------------
# Reading a base


@dataclasses.dataclass(frozen=True)
class BaseImage:
    """One platform's image inside an OCI layout directory, every blob verified."""

    layout: Path
    platform: Platform
    manifest: dict
    config: dict
    config_digest: str
    layers: tuple[dict, ...]  # descriptors, media types mapped to OCI names

    def blob_path(self, digest: str) -> Path:
        return blob_path(self.layout, digest)

    @property
    def diff_ids(self) -> list[str]:
        return list(self.config.get("rootfs", {}).get("diff_ids", []))


def blob_path(layout: Path, digest: str) -> Path:
    if not _DIGEST_RE.match(digest):
        raise BuildError(f"{layout}: unsupported or malformed digest {digest!r}")
    return Path(layout) / "blobs" / "sha256" / digest.split(":", 1)[1]


def read_blob(layout: Path, desc: Mapping, *, verify: bool = True) -> bytes:
    path = blob_path(layout, desc["digest"])
    try:
        data = path.read_bytes()
    except OSError as err:
        raise BuildError(f"{layout}: blob {desc['digest']} is missing ({err.strerror})") from None
    if verify and (bytes_digest(data) != desc["digest"] or ("size" in desc and len(data) != desc["size"])):
        raise BuildError(f"{layout}: blob {desc['digest']} is corrupt (its content does not match its digest)")
    return data


def _read_json_blob(layout: Path, desc: Mapping) -> dict:
    data = read_blob(layout, desc)
    try:
        value = json.loads(data)
    except ValueError as err:
        raise BuildError(f"{layout}: blob {desc['digest']} is not JSON: {err}") from None
    if not isinstance(value, dict):
        raise BuildError(f"{layout}: blob {desc['digest']} is not a JSON object")
    return value


def verify_blob_file(layout: Path, desc: Mapping) -> None:
    """Check a (large) blob exists with the right size and digest, reading it in chunks."""
    path = blob_path(layout, desc["digest"])
    try:
        size = path.stat().st_size
    except OSError:
        raise BuildError(f"{layout}: blob {desc['digest']} is missing") from None
    if "size" in desc and size != desc["size"]:
        raise BuildError(f"{layout}: blob {desc['digest']} has {size} bytes, the manifest says {desc['size']}")
    if file_digest(path) != desc["digest"]:
        raise BuildError(f"{layout}: blob {desc['digest']} is corrupt (its content does not match its digest)")


def read_index(layout: Path) -> dict:
    layout = Path(layout)
    if not layout.is_dir():
        raise BuildError(f"--base {layout}: no such directory (expected an OCI image layout)")
    index_path = layout / "index.json"
    try:
        index = json.loads(index_path.read_text())
    except FileNotFoundError:
        raise BuildError(f"--base {layout}: not an OCI image layout (index.json is missing)") from None
    except (OSError, ValueError) as err:
        raise BuildError(f"--base {layout}: index.json is unreadable: {err}") from None
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        raise BuildError(f"--base {layout}: index.json has no 'manifests' list")
    layout_file = layout / "oci-layout"
    if layout_file.exists():
        try:
            version = json.loads(layout_file.read_text()).get("imageLayoutVersion")
        except (OSError, ValueError) as err:
            raise BuildError(f"--base {layout}: oci-layout is unreadable: {err}") from None
        if version != "1.0.0":
            raise BuildError(f"--base {layout}: unsupported imageLayoutVersion {version!r}")
    return index


def _manifest_descriptors(layout: Path, index: Mapping, depth: int = 0) -> Iterator[dict]:
    """The descriptor of every image manifest reachable from `index` (manifests not read)."""
    if depth > 4:
        raise BuildError(f"--base {layout}: image indexes nest too deeply")
    for desc in index.get("manifests", []):
        media_type = desc.get("mediaType")
        if media_type in INDEX_TYPES:
            yield from _manifest_descriptors(layout, _read_json_blob(layout, desc), depth + 1)
        elif media_type in MANIFEST_TYPES:
            yield desc


def read_base(layout: Path, platform: Platform) -> BaseImage:
    """The base image for `platform` from an OCI layout, with every blob verified."""
    layout = Path(layout)
    index = read_index(layout)
    seen: list[str] = []
    for desc in _manifest_descriptors(layout, index):
        declared = desc.get("platform")
        if declared:
            candidate = Platform(declared.get("os", ""), declared.get("architecture", ""), declared.get("variant", ""))
            if not candidate.matches(platform):
                seen.append(str(candidate))
                continue
        manifest = _read_json_blob(layout, desc)
        config_desc = manifest.get("config")
        if not isinstance(config_desc, dict) or "digest" not in config_desc:
            raise BuildError(f"--base {layout}: manifest {desc['digest']} has no config")
        config = _read_json_blob(layout, config_desc)
        candidate = Platform(config.get("os", ""), config.get("architecture", ""), config.get("variant", ""))
        if not candidate.matches(platform):
            seen.append(str(candidate))
            continue
        layers = []
        for layer in manifest.get("layers", []):
            verify_blob_file(layout, layer)
            media_type = _LAYER_TYPE_MAP.get(layer.get("mediaType"), layer.get("mediaType"))
            layers.append(descriptor(media_type, layer["digest"], layer["size"], annotations=layer.get("annotations")))
        diff_ids = config.get("rootfs", {}).get("diff_ids", [])
        if len(diff_ids) != len(layers):
            raise BuildError(
                f"--base {layout}: config lists {len(diff_ids)} diff_ids for {len(layers)} layers"
            )
        return BaseImage(layout, candidate, manifest, config, config_desc["digest"], tuple(layers))
    if not seen:
        raise BuildError(f"--base {layout}: the layout holds no image manifest")
    raise BuildError(
        f"--base {layout}: no image for {platform} (it has: {', '.join(sorted(set(seen)))}); "
        f"choose a matching --platform or another --base"
    )


def base_python_version(base: BaseImage, default: str = DEFAULT_PYTHON_VERSION) -> str:
    """The label `dev.pipedreamer.python.version`, else a `usr/lib/python3.N` dir, else `default`."""
    labels = base.config.get("config", {}).get("Labels") or {}
    label = labels.get(PYTHON_VERSION_LABEL)
    if label:
        if not re.fullmatch(r"3\.\d+", label):
            raise BuildError(f"--base {base.layout}: label {PYTHON_VERSION_LABEL}={label!r} is not like 3.13")
        return label
    found: set[str] = set()
    for layer in base.layers:
        found.update(_python_dirs_in_layer(base.blob_path(layer["digest"]), layer["mediaType"]))
    if found:
        return max(found, key=lambda v: tuple(int(x) for x in v.split(".")))
    return default


def _python_dirs_in_layer(path: Path, media_type: str) -> set[str]:
    found = set()
    mode = "r|gz" if media_type.endswith("gzip") else "r|"
    try:
        with open(path, "rb") as raw, tarfile.open(fileobj=raw, mode=mode) as tar:
            for member in tar:
                match = _PYTHON_DIR_RE.match(member.name + ("/" if member.isdir() else ""))
                if match:
                    found.add(match.group(1))
    except (OSError, tarfile.TarError, EOFError, gzip.BadGzipFile) as err:
        raise BuildError(f"--base {path.parent.parent.parent}: layer {path.name} is unreadable: {err}") from None
    return found


# ---------------------------------------------------------------------------
# Assembling an image


@dataclasses.dataclass(frozen=True)
class ImageSettings:
    """What our layers add to the base's config (pure data)."""

    entrypoint: tuple[str, ...]
    env: Mapping[str, str]
    working_dir: str
    user: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    created: str
    exposed_ports: tuple[str, ...] = ()


def image_config(base_config: Mapping, layers: Sequence[Layer], settings: ImageSettings, history_names: Sequence[str]) -> dict:
    """The image config: the base's, with our layers, user, entrypoint, env and labels."""
    base_cfg = dict(base_config.get("config") or {})
    env = [e for e in base_cfg.get("Env") or [] if e.split("=", 1)[0] not in settings.env]
    env += [f"{k}={v}" for k, v in settings.env.items()]
    labels = dict(base_cfg.get("Labels") or {})
    labels.update(settings.labels)
    cfg: dict = {
        "User": settings.user,
        "Env": env,
        "Entrypoint": list(settings.entrypoint),
        "WorkingDir": settings.working_dir,
        "Labels": labels,
    }
    # The base's Cmd would be appended to our entrypoint as arguments: drop it.
    ports = dict(base_cfg.get("ExposedPorts") or {})
    ports.update({p: {} for p in settings.exposed_ports})
    if ports:
        cfg["ExposedPorts"] = ports
    if base_cfg.get("StopSignal"):
        cfg["StopSignal"] = base_cfg["StopSignal"]
    diff_ids = list(base_config.get("rootfs", {}).get("diff_ids", [])) + [layer.diff_id for layer in layers]
    history = list(base_config.get("history") or [])
    if sum(1 for h in history if not h.get("empty_layer")) != len(diff_ids) - len(layers):
        history = []  # inconsistent base history would make ours wrong too
    history += [{"created": settings.created, "created_by": f"pipedreamer build: {name}"} for name in history_names]
    out = {
        "architecture": base_config.get("architecture"),
        "os": base_config.get("os"),
        "created": settings.created,
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }
    if base_config.get("variant"):
        out["variant"] = base_config["variant"]
    return out


def image_manifest(config_blob: bytes, layer_descriptors: Sequence[dict], annotations: Mapping[str, str]) -> dict:
    return {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": descriptor(CONFIG_MEDIA_TYPE, bytes_digest(config_blob), len(config_blob)),
        "layers": list(layer_descriptors),
        "annotations": dict(annotations),
    }


def image_index(manifest_descriptors: Sequence[dict], annotations: Mapping[str, str] | None = None) -> dict:
    out: dict = {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": list(manifest_descriptors)}
    if annotations:
        out["annotations"] = dict(annotations)
    return out


# ---------------------------------------------------------------------------
# Writing a layout


class LayoutWriter:
    """Builds a layout in a temp dir beside `out`; `commit()` renames it into place.

    Used as a context manager: leaving the block with an exception (disk full,
    interrupt, a bad base) removes the temp dir, so no half-written layout is
    ever seen at `out`. An existing `out` is replaced only if it is empty or an
    OCI layout itself: we never delete a directory we did not write.
    """

    def __init__(self, out: Path) -> None:
        self.out = Path(out).absolute()
        _check_replaceable(self.out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", suffix=".tmp", dir=self.out.parent))
        (self.tmp / "blobs" / "sha256").mkdir(parents=True)
        self._committed = False

    def __enter__(self) -> LayoutWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._committed:
            self.abort()

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def add_bytes(self, data: bytes) -> str:
        digest = bytes_digest(data)
        path = blob_path(self.tmp, digest)
        if not path.exists():
            _write_new(path, data)
        return digest

    def add_json(self, value: object, media_type: str, **extra: object) -> dict:
        data = canonical_json(value)
        return descriptor(media_type, self.add_bytes(data), len(data), **extra)

    def add_file(self, source: Path, digest: str) -> None:
        """Add a blob whose digest is already known (hard link when possible, else copy)."""
        path = blob_path(self.tmp, digest)
        if path.exists():
            return
        try:
            os.link(source, path)
        except OSError:
            with open(source, "rb") as src, open(path, "xb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)

    def commit(self, manifests: Sequence[dict]) -> None:
        _write_new(self.tmp / "oci-layout", canonical_json({"imageLayoutVersion": "1.0.0"}))
        _write_new(self.tmp / "index.json", canonical_json(image_index(manifests)))
        _fsync_tree(self.tmp)
        old = None
        if self.out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", suffix=".old", dir=self.out.parent))
            os.replace(self.out, old / "layout")
        try:
            os.replace(self.tmp, self.out)
        except BaseException:
            if old is not None:
                os.replace(old / "layout", self.out)
                shutil.rmtree(old, ignore_errors=True)
            raise
        self._committed = True
        os.chmod(self.out, 0o755)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _check_replaceable(out: Path) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise BuildError(f"--oci-layout {out}: exists and is not a directory")
    if any(out.iterdir()) and not (out / "oci-layout").is_file():
        raise BuildError(f"--oci-layout {out}: exists, is not empty and is not an OCI layout; refusing to replace it")


def _write_new(path: Path, data: bytes) -> None:
    with open(path, "xb") as f:
        f.write(data)


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
