"""A workflow's image reference, `{registry}/{name}:{tag}`: the one answer for build, push and deploy."""

from __future__ import annotations

__all__ = ["image_reference", "image_tag"]


def image_tag(version: str) -> str:
    """The OCI tag of a workflow version (semver, as the spec parser normalised it).

    A tag is `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`: semver's `+` (build metadata)
    is not allowed, so `1.2.3-rc.1+build.7` is tagged `1.2.3-rc.1_build.7`
    (semver itself never contains `_`, so no two versions share a tag).
    """
    return version.replace("+", "_")[:128]


def image_reference(registry: str, name: str, version: str) -> str:
    """`{registry}/{name}:{tag}`, or `{name}:{tag}` without a registry (trailing `/` ignored)."""
    registry = registry.strip().rstrip("/")
    tag = image_tag(version)
    return f"{registry}/{name}:{tag}" if registry else f"{name}:{tag}"
