"""Bazel's way into the plain-path image builder: the same layer tars, the same image settings.

    layer_tool workflow --spec SPEC --out OUT.tar.gz [--source-date-epoch N] FILE...
    layer_tool engine --out OUT.tar.gz [--source-date-epoch N] FILE...
    layer_tool wheels --out OUT.tar.gz --site-packages DIR [--source-date-epoch N]
    layer_tool wheels --out OUT.tar.gz --lock requirements/runtime.txt --python-version 3.13 --platform linux/amd64
                      [--deflate-lock requirements/cli.txt] [...]
    layer_tool config (--spec SPEC FILE... | --name N --version V) --python-version 3.13
                      --out-prefix PREFIX [--source-date-epoch N]

FILE arguments are paths as a Bazel action sees them, relative to the execroot:
a source file `pkg/x.py`, a generated one `bazel-out/<config>/bin/pkg/x.py`, a
file of another repository `external/<repo>/pkg/x.py` (or `../<repo>/pkg/x.py`).
Each is copied into a scratch tree at its workspace path, and the functions
`pipedreamer build` itself uses (`workflow_entries`, `engine_entries`,
`site_packages_entries`, `write_layer`, `image_settings`) walk that tree, so
both paths apply the same exclusions and write the same bytes. The one thing
Bazel adds is modes: it marks every generated file executable, so a generated
input gets the mode the plain path's generator gives it (0644); a source file
keeps its executable bit.

`wheels --lock` installs the runtime lock's wheels with the plain path's own pip
call (`builder.wheels.install_wheels`: hashes required, binary only, the
image's Python and manylinux platform). Bazel runs it at fetch time
(builder/extensions.bzl): it is the one step that needs the network. There no
@pip package exists, so the layers' compressor, `deflate`, is installed first
from the lock that pins it (`--deflate-lock`, the CLI's lock: the builder needs
it, images do not).

`config` writes the files rules_oci's `oci_image` reads (entrypoint, env,
labels, annotations, created, exposed ports) and the tags for `oci_load` and
`oci_push`, from `builder.build.image_settings`. Arguments may come from a
file: `layer_tool @params` (one argument per line, as Bazel writes them).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

from builder import wheels
from builder.build import (
    USER,
    WorkflowInfo,
    engine_entries,
    image_annotations,
    image_settings,
    read_workflow,
    workflow_entries,
)
from builder.errors import BuildError
from builder.layers import Layer, resolve_mtime, write_layer
from builder.oci import PYTHON_VERSION_LABEL, ImageSettings, parse_platform
from builder.reference import image_reference, image_tag

#: The lock that pins `deflate` (the layers' compressor): the CLI's, since the
#: builder needs it and images do not.
DEFLATE_LOCK = Path(__file__).resolve().parent.parent / "requirements" / "cli.txt"

# bazel-out/<config>/bin/… (generated), external/<repo>/… and ../<repo>/… (other repositories).
_GENERATED_PREFIX = re.compile(r"^bazel-out/[^/]+/(?:bin|genfiles)/")
_REPOSITORY_PREFIX = re.compile(r"^(?:external|\.\.)/[^/]+/")
_REPOSITORY_NAME = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
ENGINE_IMAGE_NAME = "pipedreamer-engine"


@dataclasses.dataclass(frozen=True)
class Input:
    """One action input: where Bazel put it, where it belongs in the workspace."""

    path: Path  # as given (relative to the action's working directory)
    workspace_path: str  # e.g. engine/spec.py
    generated: bool


def classify(arg: str) -> Input:
    """`bazel-out/k8-fastbuild/bin/proto/x_pb2.py` → (proto/x_pb2.py, generated)."""
    text = PurePosixPath(arg).as_posix()
    generated = bool(_GENERATED_PREFIX.match(text))
    rel = _GENERATED_PREFIX.sub("", text, count=1)
    rel = _REPOSITORY_PREFIX.sub("", rel, count=1)
    parts = PurePosixPath(rel).parts
    if not parts or rel.startswith("/") or ".." in parts:
        raise BuildError(f"{arg}: not a path inside the execroot")
    return Input(Path(arg), "/".join(parts), generated)


def stage(args: Sequence[str], root: Path) -> dict[str, Input]:
    """Copy the inputs into `root` at their workspace paths; returns them by workspace path.

    The executable bit is the plain path's: a source file keeps its own, a
    generated file (which Bazel always marks executable) gets none.
    """
    staged: dict[str, Input] = {}
    for arg in args:
        item = classify(arg)
        previous = staged.get(item.workspace_path)
        if previous is not None:
            if previous.path != item.path and _read(previous.path) != _read(item.path):
                raise BuildError(f"{previous.path} and {item.path} are both /{item.workspace_path}, with different contents")
            continue
        if item.path.is_dir():
            raise BuildError(f"{item.path}: is a directory; pass its files")
        dest = root / item.workspace_path
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(item.path, dest)
            executable = not item.generated and bool(item.path.stat().st_mode & 0o111)
        except OSError as err:
            raise BuildError(f"{item.path}: cannot read: {err.strerror}") from None
        dest.chmod(0o755 if executable else 0o644)
        staged[item.workspace_path] = item
    return staged


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise BuildError(f"{path}: cannot read: {err.strerror}") from None


def _staged_workflow(spec: str, files: Sequence[str], root: Path) -> tuple[Path, WorkflowInfo]:
    """Stage the workflow's files; returns its directory in the scratch tree and its spec."""
    spec_input = classify(spec)
    if PurePosixPath(spec_input.workspace_path).name != "workflow.yaml":
        raise BuildError(f"--spec {spec}: the spec must be called workflow.yaml (the image runs /app/workflow.yaml)")
    staged = stage([spec, *files], root)
    directory = PurePosixPath(spec_input.workspace_path).parent
    outside = sorted(p for p in staged if directory != PurePosixPath(".") and not PurePosixPath(p).is_relative_to(directory))
    if outside:
        raise BuildError(f"{outside[0]}: outside the workflow directory {directory}/; only its files go to /app")
    workflow_dir = root / directory
    return workflow_dir, read_workflow(workflow_dir)


def workflow_layer(spec: str, files: Sequence[str], out: Path, source_date_epoch: int | None = None) -> Layer:
    """The /app layer, as `pipedreamer build` writes it for the same workflow directory."""
    with tempfile.TemporaryDirectory(prefix="pipedreamer-workflow-") as tmp:
        workflow_dir, info = _staged_workflow(spec, files, Path(tmp))
        return write_layer(workflow_entries(workflow_dir, info), out, source_date_epoch=source_date_epoch)


def engine_layer(files: Sequence[str], out: Path, source_date_epoch: int | None = None) -> Layer:
    """The engine layer (`engine/`, `proto/` with its generated stubs) under /opt/pipedreamer/lib."""
    with tempfile.TemporaryDirectory(prefix="pipedreamer-engine-") as tmp:
        stage(files, Path(tmp))
        return write_layer(engine_entries(Path(tmp)), out, source_date_epoch=source_date_epoch)


def wheels_layer_from_site_packages(site: Path, out: Path, source_date_epoch: int | None = None) -> Layer:
    """The third-party layer from an installed site-packages directory."""
    return write_layer(wheels.site_packages_entries(site), out, source_date_epoch=source_date_epoch)


def wheels_layer_from_lock(
    lock: Path,
    python_version: str,
    platform: str,
    out: Path,
    source_date_epoch: int | None = None,
    deflate_lock: Path = DEFLATE_LOCK,
) -> Layer:
    """Install the runtime lock's wheels as `pipedreamer build` does, then write the layer."""
    ensure_pip()
    with tempfile.TemporaryDirectory(prefix="pipedreamer-wheels-") as tmp:
        ensure_deflate(Path(deflate_lock), Path(tmp) / "deflate")
        site, _ = wheels.install_wheels(Path(lock), python_version, parse_platform(platform), cache=Path(tmp),
                                        progress=lambda message: print(message, file=sys.stderr))  # fmt: skip
        return wheels_layer_from_site_packages(site, out, source_date_epoch)


def ensure_deflate(lock: Path, target: Path) -> None:
    """Make `import deflate` (the layers' compressor) work at fetch time, where no @pip
    repository exists: pip installs the lock's pinned `deflate` wheel, hash-checked,
    for this interpreter into `target`."""
    if importlib.util.find_spec("deflate") is not None:
        return
    _, requirements = wheels.parse_lock(lock)
    pinned = next((r for r in requirements if r.name == "deflate"), None)
    if pinned is None:
        raise BuildError(f"{lock}: no deflate==… line; layers are compressed with it (add it and re-lock)")
    requirement = target.parent / "deflate-requirement.txt"
    requirement.write_text(f"deflate=={pinned.version} " + " ".join(f"--hash={h}" for h in pinned.hashes) + "\n")
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input",
               "--no-deps", "--only-binary=:all:", "--require-hashes", "--target", str(target), "-r", str(requirement)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise BuildError(f"cannot install deflate=={pinned.version} for layer compression:\n{result.stderr.strip()[-1500:]}")
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()


def ensure_pip() -> None:
    """Make `python -m pip` work: an interpreter without pip installed (a hermetic
    toolchain) runs the pip wheel CPython bundles for ensurepip."""
    if importlib.util.find_spec("pip") is not None:
        return
    spec = importlib.util.find_spec("ensurepip")
    bundled = sorted(Path(spec.origin).parent.glob("_bundled/pip-*.whl")) if spec and spec.origin else []
    if not bundled:
        raise BuildError(f"{sys.executable}: has no pip and no bundled pip wheel (ensurepip); cannot install wheels")
    path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(bundled[-1]), path) if p)


# ---------------------------------------------------------------------------
# Image settings for rules_oci


def workflow_settings(spec: str, files: Sequence[str], python_version: str, source_date_epoch: int | None) -> tuple[ImageSettings, WorkflowInfo]:
    """`image_settings` of the workflow, without revision/source (Bazel builds are unstamped)."""
    with tempfile.TemporaryDirectory(prefix="pipedreamer-config-") as tmp:
        _, info = _staged_workflow(spec, files, Path(tmp))
    mtime = resolve_mtime(source_date_epoch)
    return image_settings(info, python_version, mtime, image_annotations(info)), info


def engine_settings(name: str, version: str, python_version: str, source_date_epoch: int | None) -> tuple[ImageSettings, WorkflowInfo]:
    """The engine image: a workflow image's entrypoint, env, user and working dir (the
    engine serves the workflow mounted or layered at /app), without workflow labels."""
    info = WorkflowInfo(name, version, ())
    annotations = image_annotations(info)
    settings = image_settings(info, python_version, resolve_mtime(source_date_epoch), annotations)
    labels = {**annotations, PYTHON_VERSION_LABEL: python_version}
    return dataclasses.replace(settings, labels=labels), info


def oci_files(settings: ImageSettings, info: WorkflowInfo) -> dict[str, str]:
    """File suffix → contents, in the formats rules_oci 2.x parses (its image.sh):
    newline-separated entrypoint, `key=value` lines, a bare `created`, comma-separated ports."""
    if settings.user != USER:
        raise BuildError(f"image user {settings.user!r} differs from builder.build.USER")
    for arg in settings.entrypoint:
        _plain("entrypoint argument", arg, forbidden="\n")
    for key, value in settings.env.items():
        # rules_oci expands $VAR / ${VAR} in env values against the base's env.
        _plain("env", f"{key}={value}", forbidden="\n$")
    for kind, mapping in (("label", settings.labels), ("annotation", settings.annotations)):
        for key, value in mapping.items():
            _plain(kind, f"{key}={value}", forbidden="\n")
            if "=" in key or not key:
                raise BuildError(f"{kind} key {key!r}: must be non-empty and without '='")
    for port in settings.exposed_ports:
        _plain("exposed port", port, forbidden="\n,")
    if not _REPOSITORY_NAME.match(info.name):
        raise BuildError(f"workflow name {info.name!r} is not a valid image repository name (lowercase a-z, 0-9, . _ -)")
    tag = image_tag(info.version)
    if not _TAG.match(tag):
        raise BuildError(f"workflow version {info.version!r} gives {tag!r}, which is not a valid image tag")
    return {
        "entrypoint.txt": "\n".join(settings.entrypoint),
        "env.txt": "\n".join(f"{k}={v}" for k, v in settings.env.items()),
        "labels.txt": "\n".join(f"{k}={v}" for k, v in settings.labels.items()),
        "annotations.txt": "\n".join(f"{k}={v}" for k, v in settings.annotations.items()),
        # Read raw by rules_oci: no trailing newline.
        "created.txt": settings.created,
        "exposed_ports.txt": ",".join(settings.exposed_ports),
        "repo_tags.txt": f"{image_reference('', info.name, info.version)}\n",
        "remote_tags.txt": f"{tag}\n",
    }


def _plain(what: str, text: str, *, forbidden: str) -> None:
    bad = [c for c in forbidden if c in text]
    if bad:
        raise BuildError(f"{what} {text!r}: contains {bad[0]!r}, which rules_oci's image config files cannot carry")


def write_oci_files(files: Mapping[str, str], prefix: str) -> list[Path]:
    written = []
    for suffix, text in files.items():
        path = Path(f"{prefix}.{suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


# ---------------------------------------------------------------------------
# Command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="layer_tool", description=__doc__.split("\n")[0], fromfile_prefix_chars="@")
    modes = parser.add_subparsers(dest="mode", required=True)

    def common(sub: argparse.ArgumentParser, out: bool = True) -> None:
        if out:
            sub.add_argument("--out", type=Path, required=True, help="the layer .tar.gz to write")
            sub.add_argument("--digest-out", type=Path, help="also write {digest, diff_id, size} as JSON here")
        sub.add_argument("--source-date-epoch", type=int, default=None,
                         help="layer mtime / image created (default: $SOURCE_DATE_EPOCH, else 0)")  # fmt: skip

    workflow = modes.add_parser("workflow", help="the /app layer of a workflow")
    workflow.add_argument("--spec", required=True, help="the workflow's workflow.yaml")
    workflow.add_argument("files", nargs="*", help="the workflow directory's files")
    common(workflow)

    engine = modes.add_parser("engine", help="the engine layer")
    engine.add_argument("files", nargs="+", help="engine/ and proto/ files, generated stubs included")
    common(engine)

    wheel = modes.add_parser("wheels", help="the third-party layer")
    source = wheel.add_mutually_exclusive_group(required=True)
    source.add_argument("--site-packages", type=Path, help="an installed site-packages directory")
    source.add_argument("--lock", type=Path, help="install this lock's wheels first, the runtime lock (needs the network)")
    wheel.add_argument("--python-version", help="with --lock: the image's Python, e.g. 3.13")
    wheel.add_argument("--platform", help="with --lock: linux/amd64 or linux/arm64")
    wheel.add_argument("--deflate-lock", type=Path, default=DEFLATE_LOCK,
                       help="with --lock: the lock pinning deflate, the compressor (default: requirements/cli.txt)")  # fmt: skip
    common(wheel)

    config = modes.add_parser("config", help="rules_oci config files (entrypoint, env, labels, ...) and tags")
    what = config.add_mutually_exclusive_group(required=True)
    what.add_argument("--spec", help="a workflow's workflow.yaml (pass its files too)")
    what.add_argument("--name", help="an image without a workflow (the engine image): its name")
    config.add_argument("--version", help="with --name: its version")
    config.add_argument("--python-version", required=True, help="the base's Python, e.g. 3.13")
    config.add_argument("--out-prefix", required=True, help="writes PREFIX.entrypoint.txt, PREFIX.env.txt, ...")
    config.add_argument("files", nargs="*", help="with --spec: the workflow directory's files")
    common(config, out=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.mode == "config":
            if args.spec:
                settings, info = workflow_settings(args.spec, args.files, args.python_version, args.source_date_epoch)
            else:
                if not args.version:
                    raise BuildError("config --name: give --version too")
                settings, info = engine_settings(args.name, args.version, args.python_version, args.source_date_epoch)
            write_oci_files(oci_files(settings, info), args.out_prefix)
            return 0
        if args.mode == "workflow":
            layer = workflow_layer(args.spec, args.files, args.out, args.source_date_epoch)
        elif args.mode == "engine":
            layer = engine_layer(args.files, args.out, args.source_date_epoch)
        elif args.site_packages:
            layer = wheels_layer_from_site_packages(args.site_packages, args.out, args.source_date_epoch)
        else:
            if not (args.python_version and args.platform):
                raise BuildError("wheels --lock: give --python-version and --platform too")
            layer = wheels_layer_from_lock(args.lock, args.python_version, args.platform, args.out, args.source_date_epoch,
                                           args.deflate_lock)  # fmt: skip
        if args.digest_out:
            args.digest_out.write_text(json.dumps({"digest": layer.digest, "diff_id": layer.diff_id, "size": layer.size}) + "\n")
    except BuildError as err:
        print(f"layer_tool {args.mode}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
