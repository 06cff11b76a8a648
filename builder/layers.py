"""Deterministic layer tars: the same files give the same bytes on any machine.

Entries are sorted, owned by 0:0 with empty owner names, stamped with one
mtime (`SOURCE_DATE_EPOCH`, else 0), with modes normalised to 0755/0644, and
gzip-compressed without a timestamp or file name. Nothing of the host (paths,
users, umask, file times) reaches the tar.

Compression is libdeflate's (the `deflate` wheel, pinned by hash in the lock),
not the interpreter's zlib: zlib builds differ (Fedora's zlib-ng, say) and so
would the compressed bytes and every digest. A golden digest in
layers_test.py holds this on each machine the tests run on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path, PurePosixPath

from builder.errors import BuildError

LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"

# Fixed so that the compressed bytes (and so the digest) do not depend on a default.
GZIP_LEVEL = 6
# What the layer cache's fingerprint says about the compressor: a new one, a new key.
COMPRESSOR = "libdeflate-deflate==0.9.0"

# Never put in a layer: byte-code caches (rebuilt by the interpreter, vary by
# host) and version-control / editor droppings.
ALWAYS_EXCLUDED_NAMES = frozenset({"__pycache__", ".git", ".hg", ".svn", ".DS_Store"})
ALWAYS_EXCLUDED_SUFFIXES = (".pyc", ".pyo")

_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class LayerEntry:
    """One member of a layer: `path` is relative to the image root (no leading '/')."""

    path: str
    kind: str  # "file" | "dir" | "symlink"
    source: Path | None = None  # file contents come from here ...
    data: bytes | None = None  # ... or from here
    executable: bool = False
    link_target: str = ""
    mode: int | None = None  # explicit mode (e.g. 0o1777 for /tmp); else normalised

    def __post_init__(self) -> None:
        if self.kind not in ("file", "dir", "symlink"):
            raise ValueError(f"unknown entry kind {self.kind!r}")
        if self.path != normalise_path(self.path):
            raise ValueError(f"entry path {self.path!r} is not normalised")


@dataclasses.dataclass(frozen=True)
class Layer:
    """A written layer blob: `digest` of the gzip bytes, `diff_id` of the tar."""

    path: Path
    digest: str
    diff_id: str
    size: int
    media_type: str = LAYER_MEDIA_TYPE


def normalise_path(path: str) -> str:
    """`/a//b/./c/` → `a/b/c`; rejects paths that climb out with `..`."""
    parts = [p for p in PurePosixPath("/" + path).parts[1:] if p not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"path {path!r} climbs out of the image root")
    return "/".join(parts)


def resolve_mtime(source_date_epoch: int | None = None) -> int:
    """The layer mtime: the argument, else `$SOURCE_DATE_EPOCH`, else 0."""
    if source_date_epoch is not None:
        value: int | str = source_date_epoch
    else:
        value = os.environ.get("SOURCE_DATE_EPOCH", "").strip() or 0
    try:
        mtime = int(value)
    except ValueError:
        raise BuildError(f"SOURCE_DATE_EPOCH={value!r} is not a whole number of seconds") from None
    if mtime < 0:
        raise BuildError(f"SOURCE_DATE_EPOCH={mtime} is negative")
    return mtime


def is_excluded(name: str) -> bool:
    return name in ALWAYS_EXCLUDED_NAMES or name.endswith(ALWAYS_EXCLUDED_SUFFIXES)


def entries_from_dir(
    source: Path,
    dest: str,
    *,
    exclude: Callable[[str], bool] | None = None,
) -> list[LayerEntry]:
    """Walk `source` into entries under `dest` (an image path).

    `exclude` gets the path relative to `source` (posix) and drops it (and, for a
    directory, everything below). Symlinks are kept only when they are relative
    and stay inside `source`; anything else would smuggle a host path in.
    """
    source = Path(source)
    if not source.is_dir():
        raise BuildError(f"{source}: not a directory")
    dest = normalise_path(dest)
    entries: list[LayerEntry] = []
    root_real = source.resolve()

    def image_path(rel: str) -> str:
        return normalise_path(f"{dest}/{rel}") if rel else dest

    def on_error(err: OSError) -> None:
        raise BuildError(f"{err.filename}: cannot read directory: {err.strerror}")

    if dest:
        entries.append(LayerEntry(dest, "dir"))
    for dirpath, dirnames, filenames in os.walk(source, onerror=on_error):
        rel_dir = Path(dirpath).relative_to(source).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir
        kept_dirs = []
        for name in sorted(dirnames):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if is_excluded(name) or (exclude and exclude(rel)):
                continue
            full = Path(dirpath, name)
            if full.is_symlink():
                entries.append(_symlink_entry(full, image_path(rel), root_real))
                continue
            kept_dirs.append(name)
            entries.append(LayerEntry(image_path(rel), "dir"))
        dirnames[:] = kept_dirs
        for name in sorted(filenames):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if is_excluded(name) or (exclude and exclude(rel)):
                continue
            full = Path(dirpath, name)
            try:
                st = full.lstat()
            except OSError as err:
                raise BuildError(f"{full}: cannot read: {err.strerror}") from None
            if stat.S_ISLNK(st.st_mode):
                entries.append(_symlink_entry(full, image_path(rel), root_real))
            elif stat.S_ISREG(st.st_mode):
                entries.append(
                    LayerEntry(image_path(rel), "file", source=full, executable=bool(st.st_mode & 0o111))
                )
            else:
                raise BuildError(f"{full}: not a regular file, directory or symlink")
    return entries


def _symlink_entry(full: Path, image_path: str, root_real: Path) -> LayerEntry:
    target = os.readlink(full)
    resolved = (full.parent / target).resolve()
    if os.path.isabs(target) or not resolved.is_relative_to(root_real):
        raise BuildError(f"{full}: symlink to {target!r} points outside {root_real}")
    return LayerEntry(image_path, "symlink", link_target=target)


def with_parents(entries: Iterable[LayerEntry]) -> list[LayerEntry]:
    """Entries plus a directory entry for every missing parent, sorted, duplicates refused."""
    by_path: dict[str, LayerEntry] = {}
    for entry in entries:
        if not entry.path:
            continue
        previous = by_path.get(entry.path)
        if previous is not None and not (previous.kind == entry.kind == "dir"):
            raise BuildError(f"two layer entries for /{entry.path}")
        if previous is None or entry.mode is not None:
            by_path[entry.path] = entry
    for path in list(by_path):
        parent = PurePosixPath(path).parent
        while str(parent) != ".":
            by_path.setdefault(str(parent), LayerEntry(str(parent), "dir"))
            parent = parent.parent
    # Sorting by path components puts a directory right before its contents.
    return [by_path[p] for p in sorted(by_path, key=lambda p: p.split("/"))]


def _tarinfo(entry: LayerEntry, mtime: int, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.path + ("/" if entry.kind == "dir" else ""))
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if entry.kind == "dir":
        info.type = tarfile.DIRTYPE
        info.mode = 0o755 if entry.mode is None else entry.mode
    elif entry.kind == "symlink":
        info.type = tarfile.SYMTYPE
        info.linkname = entry.link_target
        info.mode = 0o777
    else:
        info.type = tarfile.REGTYPE
        info.size = size
        info.mode = entry.mode if entry.mode is not None else (0o755 if entry.executable else 0o644)
    return info


class _HashingWriter(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through to `sink`."""

    def __init__(self, sink) -> None:  # any binary writable
        self._sink = sink
        self.sha256 = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # bytes-like
        view = memoryview(data)
        self.sha256.update(view)
        self.size += view.nbytes
        if self._sink is not None:
            self._sink.write(view)
        return view.nbytes


def _write_tar(entries: Sequence[LayerEntry], mtime: int, sink) -> None:
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar:
        for entry in entries:
            if entry.kind != "file":
                tar.addfile(_tarinfo(entry, mtime, 0))
            elif entry.data is not None:
                tar.addfile(_tarinfo(entry, mtime, len(entry.data)), io.BytesIO(entry.data))
            else:
                assert entry.source is not None
                try:
                    with open(entry.source, "rb") as f:
                        size = os.fstat(f.fileno()).st_size
                        tar.addfile(_tarinfo(entry, mtime, size), f)
                except OSError as err:
                    raise BuildError(f"{entry.source}: cannot read: {err.strerror}") from None


def tar_bytes(entries: Iterable[LayerEntry], source_date_epoch: int | None = None) -> bytes:
    """The uncompressed tar of `entries` (with their parents), for tests and small layers."""
    buf = io.BytesIO()
    _write_tar(with_parents(entries), resolve_mtime(source_date_epoch), buf)
    return buf.getvalue()


def write_layer(
    entries: Iterable[LayerEntry],
    out_path: Path,
    *,
    source_date_epoch: int | None = None,
) -> Layer:
    """Write the gzip layer to `out_path` (temp file + rename) and return its digests."""
    mtime = resolve_mtime(source_date_epoch)
    ordered = with_parents(entries)
    out_path = Path(out_path)
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent)
    except OSError as err:
        raise BuildError(f"{out_path}: cannot write the layer: {err.strerror}") from None
    try:
        # libdeflate compresses whole buffers: the tar is made in memory (the
        # largest layer, the wheels, is tens of MB).
        with io.BytesIO() as tar:
            uncompressed = _HashingWriter(tar)
            _write_tar(ordered, mtime, uncompressed)
            with tar.getbuffer() as view:
                data = gzip_bytes(view)
        with os.fdopen(fd, "wb") as raw:
            compressed = _HashingWriter(raw)
            compressed.write(data)
            raw.flush()
            os.fsync(raw.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, out_path)
    except OSError as err:
        _unlink_quietly(tmp_name)
        raise BuildError(f"{out_path}: cannot write the layer: {err.strerror}") from None
    except BaseException:
        _unlink_quietly(tmp_name)
        raise
    return Layer(
        path=out_path,
        digest="sha256:" + compressed.sha256.hexdigest(),
        diff_id="sha256:" + uncompressed.sha256.hexdigest(),
        size=compressed.size,
    )


def gzip_bytes(data: bytes | memoryview) -> bytes:
    """`data` as gzip (no name, mtime 0) by libdeflate at GZIP_LEVEL: the same bytes on every machine."""
    try:
        import deflate
    except ImportError:
        raise BuildError(
            "the `deflate` package (libdeflate) is missing: layers are compressed with it so that "
            "digests do not depend on this machine's zlib; install requirements/cli.txt"
        ) from None
    return deflate.gzip_compress(data, GZIP_LEVEL)


def entries_fingerprint(entries: Iterable[LayerEntry], source_date_epoch: int | None = None) -> str:
    """A content hash of what `write_layer` would write: the key for reusing a layer."""
    h = hashlib.sha256(f"layer-v2 {COMPRESSOR} level {GZIP_LEVEL} mtime={resolve_mtime(source_date_epoch)}\n".encode())
    for entry in with_parents(entries):
        mode = entry.mode if entry.mode is not None else -1
        h.update(f"{entry.kind}\0{entry.path}\0{entry.link_target}\0{int(entry.executable)}\0{mode}\0".encode())
        if entry.kind == "file":
            if entry.data is not None:
                h.update(hashlib.sha256(entry.data).digest())
            else:
                assert entry.source is not None
                h.update(_file_sha256(entry.source))
    return h.hexdigest()


def _file_sha256(path: Path) -> bytes:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except OSError as err:
        raise BuildError(f"{path}: cannot read: {err.strerror}") from None
    return h.digest()


def write_layer_cached(
    entries: Sequence[LayerEntry],
    cache_dir: Path,
    *,
    source_date_epoch: int | None = None,
    key: str | None = None,
) -> tuple[Layer, bool]:
    """`write_layer` into `cache_dir`, reusing an earlier layer with the same key.

    The key defaults to the entries' content fingerprint. Returns the layer and
    whether it came from the cache.
    """
    cache_dir = Path(cache_dir)
    key = key or entries_fingerprint(entries, source_date_epoch)
    cached = cached_layer(cache_dir, key)
    if cached is not None:
        return cached, True
    layer = write_layer(entries, cache_dir / f"{key}.tar.gz", source_date_epoch=source_date_epoch)
    write_file_atomic(cache_dir / f"{key}.json", json.dumps({"digest": layer.digest, "diff_id": layer.diff_id, "size": layer.size}).encode())
    return layer, False


def cached_layer(cache_dir: Path, key: str) -> Layer | None:
    """The layer stored under `key` by `write_layer_cached`, if it is intact."""
    blob = Path(cache_dir) / f"{key}.tar.gz"
    meta = Path(cache_dir) / f"{key}.json"
    try:
        info = json.loads(meta.read_text())
        size = blob.stat().st_size
    except (OSError, ValueError):
        return None
    # A cache entry is trusted only if its bytes still match what was recorded.
    if size != info.get("size") or file_digest(blob) != info.get("digest"):
        return None
    return Layer(path=blob, digest=info["digest"], diff_id=info["diff_id"], size=size)


def write_file_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to `path` through a temp file in the same directory and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
    except BaseException:
        _unlink_quietly(tmp_name)
        raise


def _unlink_quietly(path: str | Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def file_digest(path: Path) -> str:
    """`sha256:<hex>` of a file's bytes."""
    return "sha256:" + _file_sha256(Path(path)).hex()
