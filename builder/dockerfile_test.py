"""Tests for builder.dockerfile: a pure rendering of the same image."""

from __future__ import annotations

import json
from types import SimpleNamespace

from builder.build import ENTRYPOINT
from builder.dockerfile import render_dockerfile


def spec() -> SimpleNamespace:
    return SimpleNamespace(name="github-digest", version="1.0.0")


def test_dockerfile_runs_the_engine_as_nobody_from_app() -> None:
    text = render_dockerfile(spec(), base="registry.local/base@sha256:" + "a" * 64)
    assert text.startswith("# syntax=docker/dockerfile:1.7-labs\n")
    assert "ARG BASE=registry.local/base@sha256:" + "a" * 64 in text
    assert "USER 65534\n" in text
    assert "WORKDIR /app\n" in text
    assert f"ENTRYPOINT {json.dumps(list(ENTRYPOINT))}\n" in text
    assert "PYTHONPATH=/opt/pipedreamer/lib:/opt/pipedreamer/site-packages" in text
    assert "--require-hashes" in text and "--only-binary=:all:" in text
    assert "-t github-digest:1.0.0 ." in text
    assert 'org.opencontainers.image.version="1.0.0"' in text


def test_secrets_and_fixtures_are_not_copied() -> None:
    copy_app = next(line for line in render_dockerfile(spec()).splitlines() if line.endswith(" . /app"))
    assert "--exclude=.*" in copy_app and "--exclude=tests" in copy_app


def test_runtime_requirements_are_inlined_and_output_is_stable() -> None:
    reqs = "grpcio==1.0 --hash=sha256:" + "b" * 64 + "\n"
    text = render_dockerfile(spec(), runtime_requirements=reqs)
    assert "COPY <<'EOF' /tmp/requirements.txt\ngrpcio==1.0" in text
    assert "requirements_lock.txt" not in text
    assert text == render_dockerfile(spec(), runtime_requirements=reqs)
    assert "COPY --from=pipedreamer requirements_lock.txt" in render_dockerfile(spec())
