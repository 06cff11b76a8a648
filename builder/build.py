"""`build_image`: workflow directory + base → OCI image layout (wheels, engine, workflow layers)."""

from __future__ import annotations

import dataclasses
import re
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from builder.errors import BuildError
from builder.layers import Layer, LayerEntry, entries_from_dir, normalise_path, resolve_mtime, write_layer_cached
from builder.oci import (
    DEFAULT_PYTHON_VERSION,
    INDEX_MEDIA_TYPE,
    MANIFEST_MEDIA_TYPE,
    REF_NAME_ANNOTATION,
    BaseImage,
    ImageSettings,
    LayoutWriter,
    Platform,
    base_python_version,
    canonical_json,
    created_timestamp,
    descriptor,
    image_config,
    image_index,
    image_manifest,
    parse_platform,
    read_base,
)
from builder.reference import image_reference, image_tag
from builder.wheels import RUNTIME_LOCK, SITE_PACKAGES, cache_root, wheels_layer

__all__ = [
    "APP_DIR",
    "BuildError",
    "BuildResult",
    "ENGINE_EXCLUSIONS",
    "ENTRYPOINT",
    "Exclusions",
    "LayerReport",
    "USER",
    "WORKFLOW_EXCLUSIONS",
    "WorkflowInfo",
    "build_image",
    "canonical_source",
    "engine_entries",
    "image_annotations",
    "image_reference",
    "image_settings",
    "read_workflow",
    "workflow_entries",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
ENGINE_LIB = "/opt/pipedreamer/lib"
ENGINE_PACKAGES = ("engine", "proto")  # the checkout's directories copied under ENGINE_LIB
APP_DIR = "/app"
ENTRYPOINT = (
    "/usr/bin/python3", "-m", "engine",
    "--workflow", "/app/workflow.yaml",
    "--allow-read=/app", "--allow-write=/tmp", "--allow-net",
)  # fmt: skip
HTTP_PORT = "8080/tcp"
USER = "65534"

Progress = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Exclusions:
    """Files and directories a layer leaves out of a tree, by name (a directory goes with all below it).

    `names`, `prefixes` and `suffixes` apply at every depth; `top_names` and
    `top_prefixes` only to entries directly in the tree's root. Besides these,
    `builder.layers.is_excluded` drops caches and VCS directories everywhere.
    builder/dockerfile.py renders the same rules as `COPY --exclude` patterns,
    so `docker build` copies the same files.
    """

    names: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()
    top_names: frozenset[str] = frozenset()
    top_prefixes: tuple[str, ...] = ()

    def excludes(self, rel: str) -> bool:
        """Whether `rel` (posix, relative to the tree's root) is left out, itself or through a parent."""
        parts = rel.split("/")
        if parts[0] in self.top_names or parts[0].startswith(self.top_prefixes):
            return True
        return any(
            name in self.names or name.startswith(self.prefixes) or name.endswith(self.suffixes) for name in parts
        )


# Never copied into /app. At any depth: hidden files and directories (`.secrets/`,
# `.secrets.yaml`, `.env`, VCS and tool state) and `*.secrets.yaml` files (as kept
# for `--secrets`): secrets are mounted at run time, never baked in. At the top:
# `secrets/` (where the Secret volume mounts, so a copy would be read as secrets
# when the volume is absent), fixtures (they serve `pipedreamer test`, not the
# pod), build outputs and Bazel files. builder/workflow.bzl keeps the same set
# out of Bazel's inputs (WORKFLOW_LAYER_EXCLUDES).
WORKFLOW_EXCLUSIONS = Exclusions(
    prefixes=(".",),
    suffixes=(".secrets.yaml", ".secrets.yml"),
    top_names=frozenset({"secrets", "tests", "Dockerfile.pipedreamer", "BUILD.bazel", "BUILD"}),
    top_prefixes=("bazel-",),
)
# In engine/ and proto/: tests, fixtures and Bazel files are not part of the
# runtime; hidden files are tool state (e.g. tools/gen_proto.py's
# proto/.../.generated stamp).
ENGINE_EXCLUSIONS = Exclusions(
    names=frozenset({"BUILD.bazel", "BUILD", "conftest.py", "testdata", "testing_fixtures"}),
    prefixes=(".",),
    suffixes=("_test.py",),
)


@dataclasses.dataclass(frozen=True)
class LayerReport:
    name: str  # "wheels" | "engine" | "workflow"
    platform: str
    digest: str
    size: int
    cached: bool


@dataclasses.dataclass(frozen=True)
class BuildResult:
    image: str  # builder.reference.image_reference: {registry}/{name}:{tag}
    digest: str  # of what the layout's index.json points to (manifest, or index for several platforms)
    layout: Path = Path()
    platforms: tuple[str, ...] = ()
    python_version: str = ""
    layers: tuple[LayerReport, ...] = ()
    image_size: int = 0  # compressed bytes of config + all layers, first platform
    base_size: int = 0


@dataclasses.dataclass(frozen=True)
class WorkflowInfo:
    name: str
    version: str
    node_paths: tuple[str, ...]


def read_workflow(workflow_dir: Path) -> WorkflowInfo:
    """Name, version and node files of the workflow, through the one spec parser."""
    from engine.spec import SpecError, load_spec

    if not Path(workflow_dir).is_dir():
        raise BuildError(f"{workflow_dir}: no such workflow directory")
    try:
        loaded = load_spec(workflow_dir)
    except SpecError as err:
        raise BuildError(str(err)) from None
    spec = loaded.spec
    return WorkflowInfo(spec.name, spec.version, tuple(node.path for node in spec.nodes))


def build_image(
    workflow_dir: str | Path,
    base: str | Path,
    out_layout: str | Path,
    platforms: Sequence[str] = ("linux/amd64",),
    source_date_epoch: int | None = None,
    progress: Progress | None = None,
    *,
    registry: str = "",
    python_version: str | None = None,
    lock: str | Path | None = None,
    cache: str | Path | None = None,
    revision: str | None = None,
    source: str | None = None,
    insecure: bool = False,
    engine_root: str | Path | None = None,
) -> BuildResult:
    """Build the workflow's image for `platforms` on `base` and write it as an OCI layout.

    `base` is an OCI layout directory or a registry reference pinned by digest
    (`host/repo@sha256:…`, pulled into the cache). `python_version` is used only
    when the base does not tell its own. The wheels layer holds every package
    of `lock` (default: the runtime lock, requirements/runtime.txt) and no
    other. `engine_root` is the checkout whose `engine/` and `proto/` go into
    the image (default: this one). Nothing is left at `out_layout` unless the
    whole layout was written.
    """
    say = progress or (lambda _message: None)
    workflow_dir = Path(workflow_dir)
    cache_dir = Path(cache) if cache else cache_root()
    lock_path = Path(lock) if lock else RUNTIME_LOCK
    mtime = resolve_mtime(source_date_epoch)
    targets = _parse_platforms(platforms)
    info = read_workflow(workflow_dir)
    image = image_reference(registry, info.name, info.version)
    base_layout = resolve_base(base, cache_dir, targets, insecure=insecure, progress=say)

    bases = [read_base(base_layout, platform) for platform in targets]
    say(f"base {base_layout}: {', '.join(str(b.platform) for b in bases)}")

    workflow_layer, workflow_cached = _workflow_layer(workflow_dir, info, cache_dir, mtime)
    engine_layer, engine_cached = _engine_layer(Path(engine_root) if engine_root else REPO_ROOT, cache_dir, mtime)
    revision = revision if revision is not None else _git_revision(workflow_dir)
    source = source if source is not None else _git_source(workflow_dir)
    annotations = image_annotations(info, revision, source)

    reports: list[LayerReport] = []
    manifests: list[dict] = []
    sizes: list[tuple[int, int]] = []
    chosen_python = ""
    try:
        with LayoutWriter(Path(out_layout)) as writer:
            for base_image in bases:
                pyver = base_python_version(base_image, python_version or DEFAULT_PYTHON_VERSION)
                chosen_python = chosen_python or pyver
                if not re.fullmatch(r"3\.1[1-3]", pyver):
                    say(f"warning: base Python {pyver}; the engine supports 3.11-3.13")
                platform_name = str(base_image.platform)
                wheels, wheels_cached = wheels_layer(
                    lock_path, pyver, base_image.platform, cache=cache_dir, source_date_epoch=mtime, progress=say
                )
                ours = [("wheels", wheels, wheels_cached), ("engine", engine_layer, engine_cached),
                        ("workflow", workflow_layer, workflow_cached)]  # fmt: skip
                for name, layer, cached in ours:
                    reports.append(LayerReport(name, platform_name, layer.digest, layer.size, cached))
                    say(f"layer {name} ({platform_name}): {layer.digest[:19]} {layer.size} bytes{' (cached)' if cached else ''}")
                manifest_desc, image_size, base_size = _add_image(
                    writer, base_image, [layer for _, layer, _ in ours], [name for name, _, _ in ours],
                    image_settings(info, pyver, mtime, annotations), annotations,
                )  # fmt: skip
                manifests.append(manifest_desc)
                sizes.append((image_size, base_size))
            ref_annotations = {REF_NAME_ANNOTATION: image_tag(info.version)}
            if len(manifests) == 1:
                top = {**manifests[0], "annotations": ref_annotations}
            else:
                top = writer.add_json(image_index(manifests, annotations), INDEX_MEDIA_TYPE, annotations=ref_annotations)
            writer.commit([top])
    except OSError as err:
        where = err.filename or out_layout
        raise BuildError(f"--oci-layout {out_layout}: cannot write {where}: {err.strerror or err}") from None
    say(f"wrote {out_layout}: {image}@{top['digest']}")
    return BuildResult(
        image=image,
        digest=top["digest"],
        layout=Path(out_layout),
        platforms=tuple(str(b.platform) for b in bases),
        python_version=chosen_python,
        layers=tuple(reports),
        image_size=sizes[0][0],
        base_size=sizes[0][1],
    )


def _parse_platforms(platforms: Sequence[str]) -> list[Platform]:
    if isinstance(platforms, str):
        platforms = [p for p in platforms.split(",") if p.strip()]
    if not platforms:
        raise BuildError("--platform: give at least one platform, e.g. linux/amd64")
    parsed: list[Platform] = []
    for text in platforms:
        platform = parse_platform(text)
        if any(p.matches(platform) for p in parsed):
            raise BuildError(f"--platform {text}: given twice")
        parsed.append(platform)
    return parsed


def resolve_base(
    base: str | Path,
    cache_dir: Path,
    platforms: Sequence[Platform],
    *,
    insecure: bool = False,
    progress: Progress | None = None,
) -> Path:
    """An OCI layout directory for `--base`: the directory itself, or a digest-pinned pull."""
    text = str(base)
    if not text:
        raise BuildError("--base: required (an OCI layout directory or host/repo@sha256:…)")
    path = Path(text)
    if path.exists() or text.startswith((".", "/", "~")):
        return path.expanduser()
    if "@" in text or re.match(r"^[a-z0-9.-]+(:\d+)?/", text):
        from builder.registry import pull_base

        return pull_base(text, cache_dir / "bases", platforms=platforms, insecure=insecure, progress=progress,
                         known_blobs_dir=cache_dir)  # fmt: skip
    raise BuildError(f"--base {text}: no such OCI layout directory, and not a registry reference host/repo@sha256:…")


def image_annotations(info: WorkflowInfo, revision: str = "", source: str = "") -> dict[str, str]:
    """The manifest's OCI annotations: title and version, plus revision/source when known."""
    annotations = {
        "org.opencontainers.image.title": info.name,
        "org.opencontainers.image.version": info.version,
    }
    if revision:
        annotations["org.opencontainers.image.revision"] = revision
    if source:
        annotations["org.opencontainers.image.source"] = source
    return annotations


def image_settings(info: WorkflowInfo, python_version: str, mtime: int, annotations: dict[str, str]) -> ImageSettings:
    """Entrypoint, env, working dir, user, labels and `created` of a workflow image
    (also what builder/layer_tool.py hands to rules_oci's oci_image)."""
    labels = dict(annotations)
    labels.update({
        "dev.pipedreamer.workflow": info.name,
        "dev.pipedreamer.workflow.version": info.version,
        "dev.pipedreamer.python.version": python_version,
    })  # fmt: skip
    return ImageSettings(
        entrypoint=ENTRYPOINT,
        env={
            "PYTHONPATH": f"{ENGINE_LIB}:{SITE_PACKAGES}",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
        },
        working_dir=APP_DIR,
        user=USER,
        labels=labels,
        annotations=annotations,
        created=created_timestamp(mtime),
        exposed_ports=(HTTP_PORT,),
    )


def _add_image(
    writer: LayoutWriter,
    base: BaseImage,
    layers: Sequence[Layer],
    names: Sequence[str],
    settings: ImageSettings,
    annotations: dict[str, str],
) -> tuple[dict, int, int]:
    for layer_desc in base.layers:
        writer.add_file(base.blob_path(layer_desc["digest"]), layer_desc["digest"])
    for layer in layers:
        writer.add_file(layer.path, layer.digest)
    config = image_config(base.config, layers, settings, names)
    config_blob = canonical_json(config)
    writer.add_bytes(config_blob)
    layer_descs = list(base.layers) + [descriptor(layer.media_type, layer.digest, layer.size) for layer in layers]
    manifest = image_manifest(config_blob, layer_descs, annotations)
    manifest_desc = writer.add_json(manifest, MANIFEST_MEDIA_TYPE, platform=base.platform.to_json())
    base_size = sum(d["size"] for d in base.layers)
    return manifest_desc, base_size + sum(layer.size for layer in layers) + len(config_blob), base_size


def workflow_entries(workflow_dir: Path, info: WorkflowInfo) -> list[LayerEntry]:
    """The files of `/app`: the workflow directory less secrets, VCS, caches and fixtures."""

    entries = entries_from_dir(workflow_dir, APP_DIR, exclude=WORKFLOW_EXCLUSIONS.excludes)
    present = {e.path for e in entries if e.kind != "dir"}
    for node_path in ("workflow.yaml", *info.node_paths):
        image_path = normalise_path(f"{APP_DIR}/{node_path}")
        if image_path not in present:
            raise BuildError(f"{workflow_dir / node_path}: needed at run time but excluded from /app (move it out of {node_path.split('/')[0]}/)")
    return entries


def _workflow_layer(workflow_dir: Path, info: WorkflowInfo, cache_dir: Path, mtime: int) -> tuple[Layer, bool]:
    return write_layer_cached(workflow_entries(workflow_dir, info), cache_dir / "layers", source_date_epoch=mtime)


def engine_entries(repo_root: Path = REPO_ROOT) -> list[LayerEntry]:
    """`engine/` and `proto/` (with its generated stubs) under /opt/pipedreamer/lib."""
    stubs = list((repo_root / "proto").rglob("*_pb2.py"))
    if not stubs:
        raise BuildError(f"{repo_root / 'proto'}: no generated *_pb2.py stubs; run tools/venv.sh (it runs tools/gen_proto.py)")
    if not (repo_root / "engine").is_dir():
        raise BuildError(f"{repo_root / 'engine'}: the engine package is missing")

    entries: list[LayerEntry] = []
    for package in ENGINE_PACKAGES:
        entries += entries_from_dir(repo_root / package, f"{ENGINE_LIB}/{package}", exclude=ENGINE_EXCLUSIONS.excludes)
    return entries


def _engine_layer(repo_root: Path, cache_dir: Path, mtime: int) -> tuple[Layer, bool]:
    return write_layer_cached(engine_entries(repo_root), cache_dir / "layers", source_date_epoch=mtime)


def _git(workflow_dir: Path, *args: str) -> str:
    try:
        result = subprocess.run(
            ["git", "-C", str(workflow_dir), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def _git_revision(workflow_dir: Path) -> str:
    revision = _git(workflow_dir, "rev-parse", "HEAD")
    return revision if re.fullmatch(r"[0-9a-f]{40,64}", revision) else ""


def _git_source(workflow_dir: Path) -> str:
    """The origin's canonical https URL, or "" (no origin, or a local one)."""
    return canonical_source(_git(workflow_dir, "remote", "get-url", "origin"))


# Git's scp-like syntax, `[user@]host:path`: a colon before any slash, no `://`.
_SCP_LIKE_RE = re.compile(r"^(?:[^@/]*@)?(?P<host>\[[^\]/]+\]|[^:/\[\]]+):(?P<path>.*)$")
_REMOTE_SCHEMES = {"https", "http", "ssh", "git+ssh", "ssh+git", "git"}
_DEFAULT_PORTS = {"https": 443, "http": 80}


def canonical_source(url: str) -> str:
    """An origin URL as the one https URL that names the repository, or "" for a local one.

    `git@host:org/repo.git`, `ssh://git@host:2222/org/repo`, `git://host/org/repo`
    and `https://user:token@host/org/repo.git` all give `https://host/org/repo`,
    so the `org.opencontainers.image.source` annotation, and with it the image
    digest, does not depend on how the checkout was cloned. User names, passwords
    and tokens, queries and fragments never come through. An ssh port is the ssh
    server's and is dropped; an http(s) port other than the default is kept.
    Local paths and `file://` URLs give "".
    """
    url = url.strip()
    if "://" in url:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return ""
        scheme = parts.scheme.lower()
        if scheme not in _REMOTE_SCHEMES:
            return ""
        host = parts.hostname or ""
        if ":" in host:  # IPv6, which urlsplit unbrackets
            host = f"[{host}]"
        if host and port and scheme in _DEFAULT_PORTS and port != _DEFAULT_PORTS[scheme]:
            host = f"{host}:{port}"  # the web server's own port
        path = parts.path
    else:
        match = _SCP_LIKE_RE.match(url)
        # A one-letter "host" is a Windows drive (C:/repo), which git treats as a path.
        if not match or len(match["host"]) == 1:
            return ""
        host = match["host"].lower()
        path = match["path"]
    if not host:
        return ""
    path = path.strip("/")
    path = path[: -len(".git")] if path.endswith(".git") else path
    path = path.rstrip("/")
    if not path:
        return ""
    return urlunsplit(("https", host, "/" + path, "", ""))
