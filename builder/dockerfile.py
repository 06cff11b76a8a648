"""`render_dockerfile`: the same image as `build_image`, for people who use `docker build`."""

from __future__ import annotations

import json
import re

from builder.build import (
    APP_DIR,
    ENGINE_EXCLUSIONS,
    ENGINE_LIB,
    ENGINE_PACKAGES,
    ENTRYPOINT,
    HTTP_PORT,
    USER,
    WORKFLOW_EXCLUSIONS,
    Exclusions,
)
from builder.errors import BuildError
from builder.layers import ALWAYS_EXCLUDED_NAMES, ALWAYS_EXCLUDED_SUFFIXES
from builder.oci import DEFAULT_PYTHON_VERSION
from builder.wheels import SITE_PACKAGES

DOCKERFILE_NAME = "Dockerfile.pipedreamer"
# Google's distroless Python: public, but without libseccomp2 (the generated header says what that costs).
DEFAULT_BASE = "gcr.io/distroless/python3-debian13"
DEFAULT_BASE_PYTHON = "3.13"
# What the engine logs at startup when its seccomp layer cannot load libseccomp (engine/sandbox/).
SECCOMP_WARNING = (
    "PERMISSION LOCK DEGRADED: seccomp is not active: libseccomp cannot be loaded (...); install libseccomp2"
)

# builder.layers.is_excluded drops these at every depth of every tree.
_ALWAYS = Exclusions(names=ALWAYS_EXCLUDED_NAMES, suffixes=ALWAYS_EXCLUDED_SUFFIXES)
_PINNED_REFERENCE_RE = re.compile(r"^[a-z0-9.-]+(:\d+)?/[a-z0-9._/-]+@sha256:[0-9a-f]{64}$")


def exclude_patterns(rules: Exclusions) -> list[str]:
    """`rules`, and what builder.layers always drops, as `COPY --exclude` patterns (.dockerignore syntax).

    A pattern without a slash matches only at the top of the copied tree, so
    rules for every depth get `**/`; a matched directory takes its contents along.
    """
    patterns = [_glob_escape(name) for name in sorted(rules.top_names)]
    patterns += [_glob_escape(prefix) + "*" for prefix in rules.top_prefixes]
    for exclusions in (rules, _ALWAYS):
        patterns += ["**/" + _glob_escape(name) for name in sorted(exclusions.names)]
        patterns += ["**/" + _glob_escape(prefix) + "*" for prefix in exclusions.prefixes]
        patterns += ["**/*" + _glob_escape(suffix) for suffix in exclusions.suffixes]
    return list(dict.fromkeys(patterns))


def dockerfile_base(base: str | None, python_version: str) -> str:
    """The Dockerfile's default BASE for `pipedreamer build --base`.

    `base` itself when Docker can pull it (`host/repo@sha256:…`); else
    DEFAULT_BASE if its Python is `python_version`; else "" (no default, so
    `docker build` needs `--build-arg BASE=…`): an OCI layout directory means
    nothing to Docker, and wheels for another Python would not load.
    """
    if base and _PINNED_REFERENCE_RE.match(base):
        return base
    return DEFAULT_BASE if python_version == DEFAULT_BASE_PYTHON else ""


def render_dockerfile(
    spec: object,
    *,
    base: str = DEFAULT_BASE,
    python_version: str = DEFAULT_PYTHON_VERSION,
    runtime_requirements: str = "",
) -> str:
    """A Dockerfile (BuildKit syntax) for the workflow described by `spec`.

    `spec` is anything with `name` and `version` (a `WorkflowSpec`). `base` is
    the default of `ARG BASE` ("" for none) and `python_version` its Python,
    which the wheels stage installs wheels for. The build context is the
    workflow directory; the Pipedreamer checkout comes in as the named context
    `pipedreamer` (engine, proto stubs, lock). The files copied are the ones
    `build_image` puts in its layers (same exclusion rules). With
    `runtime_requirements` (the runtime lock as `builder.wheels.runtime_lock_text`
    gives it) the file carries its own requirements; otherwise it copies the
    checkout's runtime lock, requirements/runtime.txt.
    """
    name = spec.name
    version = spec.version
    if not re.fullmatch(r"3\.\d+", python_version):
        raise BuildError(f"--python-version {python_version}: expected 3.N, e.g. {DEFAULT_PYTHON_VERSION}")
    if runtime_requirements:
        requirements = (
            "COPY <<'EOF' /tmp/requirements.txt\n" + runtime_requirements.rstrip("\n") + "\nEOF\n"
        )
    else:
        requirements = "COPY --from=pipedreamer requirements/runtime.txt /tmp/requirements.txt\n"
    entrypoint = json.dumps(list(ENTRYPOINT))
    labels = " \\\n      ".join(
        f'{key}="{value}"'
        for key, value in (
            ("org.opencontainers.image.title", name),
            ("org.opencontainers.image.version", version),
            ("dev.pipedreamer.workflow", name),
            ("dev.pipedreamer.workflow.version", version),
            ("dev.pipedreamer.python.version", "${PYTHON_VERSION}"),
        )
    )
    engine_excludes = " ".join(f"--exclude={p}" for p in exclude_patterns(ENGINE_EXCLUSIONS))
    app_excludes = " ".join(f"--exclude={p}" for p in exclude_patterns(WORKFLOW_EXCLUSIONS))
    engine_copies = "".join(
        f"COPY --from=pipedreamer {engine_excludes} \\\n     {package} {ENGINE_LIB}/{package}\n"
        for package in ENGINE_PACKAGES
    )
    if base == DEFAULT_BASE:
        about_default = (
            "# The default BASE below, Google's distroless Python, does not ship\n"
            "# libseccomp2: on it the engine runs with that warning.\n"
        )
    elif not base:
        about_default = (
            f"# BASE has no default: {DEFAULT_BASE} has Python {DEFAULT_BASE_PYTHON},\n"
            f"# not {python_version}. Pass a base with Python {python_version}, by digest.\n"
        )
    else:
        about_default = ""
    return f"""\
# syntax=docker/dockerfile:1.7-labs
# Generated by `pipedreamer build --dockerfile` for {name} {version}.
# `pipedreamer build` makes the same image without Docker. To use Docker, run
# from the workflow directory:
#   docker build -f {DOCKERFILE_NAME} \\
#     --build-context pipedreamer=<path to the Pipedreamer checkout> \\
#     -t {name}:{version} .
#
# BASE must have Python {python_version} at /usr/bin/python3 (the wheels are
# built for PYTHON_VERSION; change both together) and libseccomp2, which the
# engine's permission lock loads for its seccomp filter. Without libseccomp2
# the engine still starts, but logs
#   {SECCOMP_WARNING}
# and runs with Landlock and the audit hook only. Use Pipedreamer's own base
# (deploy/base: pinned Debian 13 packages, libseccomp2 included), pushed once
# and referenced by digest:
#   --build-arg BASE=<registry>/<repository>@sha256:<digest>
{about_default}
ARG BASE{"=" + base if base else ""}
ARG PYTHON_VERSION={python_version}

FROM python:${{PYTHON_VERSION}}-slim AS wheels
{requirements}RUN pip install --no-cache-dir --no-compile --require-hashes --no-deps --only-binary=:all: \\
      --target {SITE_PACKAGES} -r /tmp/requirements.txt \\
 && rm -rf {SITE_PACKAGES}/bin

FROM ${{BASE}}
ARG PYTHON_VERSION
COPY --from=wheels {SITE_PACKAGES} {SITE_PACKAGES}
{engine_copies}# Secrets are mounted at {APP_DIR}/secrets at run time, never baked in.
COPY {app_excludes} \\
     . {APP_DIR}
ENV PYTHONPATH={ENGINE_LIB}:{SITE_PACKAGES} \\
    PYTHONDONTWRITEBYTECODE=1 \\
    PYTHONUNBUFFERED=1
LABEL {labels}
WORKDIR {APP_DIR}
USER {USER}
EXPOSE {HTTP_PORT.split("/")[0]}
ENTRYPOINT {entrypoint}
"""


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)
