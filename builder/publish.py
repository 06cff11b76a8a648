"""Build, then publish: the workflow's image as an OCI layout (`build_image`), pushed to a
registry (`push_image`) and/or described by a Dockerfile, as ko splits build from publish.
What `pipedreamer build` calls; the CLI only parses flags and prints."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Sequence

from builder.build import BuildResult, Progress, build_image
from builder.dockerfile import DOCKERFILE_NAME, dockerfile_base, render_dockerfile
from builder.registry import Credentials, PushResult, push_image
from builder.wheels import RUNTIME_LOCK, runtime_lock_text
from engine.spec import load_spec


@dataclasses.dataclass(frozen=True)
class Published:
    built: BuildResult
    oci_layout: Path | None  # kept where asked; None when the layout was only a step to the push
    pushed: PushResult | None
    dockerfile: Path | None


def publish_image(
    directory: str | Path,
    base: str,
    *,
    oci_layout: str | Path | None = None,
    push: bool = False,
    registry: str = "",
    platforms: Sequence[str] = ("linux/amd64",),
    python_version: str | None = None,
    credentials: Credentials | None = None,
    insecure: bool = False,
    dockerfile: bool = False,
    progress: Progress | None = None,
) -> Published:
    """Builds the image into `oci_layout` (or a scratch layout), then pushes it as
    `{registry}/{name}:{tag}` and/or writes DIR/Dockerfile.pipedreamer on the same base."""
    directory = Path(directory)
    with tempfile.TemporaryDirectory(prefix="pipedreamer-build-") as scratch:
        layout = Path(oci_layout) if oci_layout else Path(scratch) / "layout"
        built = build_image(
            directory,
            base,
            layout,
            platforms=list(platforms),
            progress=progress,
            registry=registry,
            python_version=python_version,
            insecure=insecure,
        )
        written = write_dockerfile(directory, base, built.python_version) if dockerfile else None
        pushed = None
        if push:
            pushed = push_image(layout, built.image, credentials=credentials, insecure=insecure, progress=progress)
    return Published(built, Path(oci_layout) if oci_layout else None, pushed, written)


def write_dockerfile(directory: str | Path, base: str | None, python_version: str) -> Path:
    """DIR/Dockerfile.pipedreamer on `base` when Docker can pull it, with that Python and the runtime lock."""
    directory = Path(directory)
    spec = load_spec(directory).spec
    target = directory / DOCKERFILE_NAME
    text = render_dockerfile(
        spec,
        base=dockerfile_base(base, python_version),
        python_version=python_version,
        runtime_requirements=runtime_lock_text(RUNTIME_LOCK),
    )
    target.write_text(text, encoding="utf-8")
    return target
