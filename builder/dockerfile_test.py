"""Tests for builder.dockerfile: a pure rendering of the same image."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from builder.build import ENGINE_EXCLUSIONS, ENTRYPOINT, WORKFLOW_EXCLUSIONS, WorkflowInfo, engine_entries, workflow_entries
from builder.dockerfile import (
    DEFAULT_BASE,
    DOCKERFILE_NAME,
    dockerfile_base,
    exclude_patterns,
    render_dockerfile,
)
from builder.errors import BuildError


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


def copy_instruction(text: str, destination: str) -> str:
    """The whole COPY instruction (continuation lines joined) that ends with `destination`."""
    instructions = text.replace("\\\n", " ").splitlines()
    return next(line for line in instructions if line.startswith("COPY ") and line.endswith(" " + destination))


def test_secrets_and_fixtures_are_not_copied() -> None:
    copy_app = copy_instruction(render_dockerfile(spec()), ". /app")
    assert "--exclude=**/.*" in copy_app and "--exclude=**/*.secrets.yaml" in copy_app and "--exclude=secrets " in copy_app
    assert "--exclude=tests" in copy_app and "--exclude=BUILD " in copy_app
    copy_engine = copy_instruction(render_dockerfile(spec()), "engine /opt/pipedreamer/lib/engine")
    for pattern in ("**/*_test.py", "**/conftest.py", "**/BUILD", "**/BUILD.bazel", "**/testdata", "**/.*"):
        assert f"--exclude={pattern} " in copy_engine


def test_runtime_requirements_are_inlined_and_output_is_stable() -> None:
    reqs = "grpcio==1.0 --hash=sha256:" + "b" * 64 + "\n"
    text = render_dockerfile(spec(), runtime_requirements=reqs)
    assert "COPY <<'EOF' /tmp/requirements.txt\ngrpcio==1.0" in text
    assert "requirements/runtime.txt" not in text
    assert text == render_dockerfile(spec(), runtime_requirements=reqs)
    # Without them, the checkout's runtime lock: never the CLI's or the tests'.
    assert "COPY --from=pipedreamer requirements/runtime.txt /tmp/requirements.txt" in render_dockerfile(spec())


def docker_pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore / `COPY --exclude` pattern as BuildKit's patternmatcher reads it."""
    regex, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        elif pattern[i] == "\\":
            regex, i = regex + re.escape(pattern[i + 1]), i + 2
        else:
            regex, i = regex + {"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i])), i + 1
    return re.compile(regex)


def copied_by_docker(root: Path, patterns: list[str]) -> set[str]:
    """Files under `root` that COPY with these excludes takes: a match on a parent directory drops its contents."""
    regexes = [docker_pattern(p) for p in patterns]
    kept = set()
    for path in root.rglob("*"):
        if path.is_file():
            parts = path.relative_to(root).as_posix().split("/")
            prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
            if not any(rx.fullmatch(prefix) for rx in regexes for prefix in prefixes):
                kept.add("/".join(parts))
    return kept


def make_tree(root: Path, files: list[str]) -> Path:
    for rel in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x\n")
    return root


TRICKY = ["BUILD", "BUILD.bazel", "conftest.py", "x_test.py", "testdata/a.txt", "testing_fixtures/b.json", ".hidden",
          ".git/config", ".DS_Store", "__pycache__/m.pyc", "m.pyc", "m.pyo", "tests/t.yaml", "bazel-out/x",
          "REBUILD.md", "my_testdata.py", "test_x.py", "tests_helper.py", DOCKERFILE_NAME, ".secrets/github",
          ".secrets.yaml", ".env", "deep/.secrets/db", "prod.secrets.yaml", "secrets/db", "secrets.py"]  # fmt: skip


def test_engine_copies_take_exactly_the_engine_layers_files(tmp_path: Path) -> None:
    files = ["engine/__init__.py", "engine/spec.py", "proto/pipedreamer/v1/workflow_pb2.py", "proto/pipedreamer/v1/.generated"]
    files += [f"engine/{name}" for name in TRICKY] + [f"engine/sub/{name}" for name in TRICKY]
    root = make_tree(tmp_path / "checkout", files)
    layer = {e.path for e in engine_entries(root) if e.kind == "file"}
    patterns = exclude_patterns(ENGINE_EXCLUSIONS)
    for package in ("engine", "proto"):
        docker = {f"opt/pipedreamer/lib/{package}/{rel}" for rel in copied_by_docker(root / package, patterns)}
        assert docker == {path for path in layer if path.startswith(f"opt/pipedreamer/lib/{package}/")}
    assert "opt/pipedreamer/lib/engine/sub/REBUILD.md" in layer and "opt/pipedreamer/lib/engine/sub/x_test.py" not in layer


def test_app_copy_takes_exactly_the_workflow_layers_files(tmp_path: Path) -> None:
    files = ["workflow.yaml", "nodes/a.py", *TRICKY, *[f"nodes/{name}" for name in TRICKY]]
    root = make_tree(tmp_path / "flow", files)
    layer = {e.path for e in workflow_entries(root, WorkflowInfo("flow", "1.0.0", ("nodes/a.py",))) if e.kind == "file"}
    docker = {f"app/{rel}" for rel in copied_by_docker(root, exclude_patterns(WORKFLOW_EXCLUSIONS))}
    assert docker == layer
    assert "app/nodes/a.py" in layer and "app/.secrets/github" not in layer and "app/nodes/__pycache__/m.pyc" not in layer
    # Secrets files at any depth stay out; a `secrets` directory only at the top (the Secret volume's mount point).
    for kept_out in ("nodes/.env", "nodes/.secrets.yaml", "nodes/deep/.secrets/db", "nodes/prod.secrets.yaml", "secrets/db"):
        assert f"app/{kept_out}" not in layer
    assert {"app/nodes/secrets/db", "app/secrets.py", "app/nodes/secrets.py"} <= layer


def test_rendered_excludes_are_the_builders() -> None:
    text = render_dockerfile(spec())
    assert " ".join(f"--exclude={p}" for p in exclude_patterns(ENGINE_EXCLUSIONS)) in copy_instruction(
        text, "proto /opt/pipedreamer/lib/proto"
    )
    assert " ".join(f"--exclude={p}" for p in exclude_patterns(WORKFLOW_EXCLUSIONS)) in copy_instruction(text, ". /app")
    assert DOCKERFILE_NAME in WORKFLOW_EXCLUSIONS.top_names


def test_wheels_are_built_for_the_bases_python() -> None:
    text = render_dockerfile(spec(), base="registry.local/base@sha256:" + "a" * 64, python_version="3.12")
    assert "ARG PYTHON_VERSION=3.12\n" in text
    assert "FROM python:${PYTHON_VERSION}-slim AS wheels\n" in text
    assert "python:3.13" not in text
    assert 'dev.pipedreamer.python.version="${PYTHON_VERSION}"' in text
    final_stage = text.split("FROM ${BASE}\n", 1)[1]
    assert final_stage.startswith("ARG PYTHON_VERSION\n")  # redeclared, so LABEL can use it
    with pytest.raises(BuildError, match="expected 3.N"):
        render_dockerfile(spec(), python_version="3.13; rm -rf /")


def test_header_says_what_a_base_without_libseccomp_costs() -> None:
    text = render_dockerfile(spec())
    header = text.split("\nARG BASE", 1)[0]
    assert f"ARG BASE={DEFAULT_BASE}\n" in text
    assert "libseccomp2" in header and "does not ship" in header
    assert "PERMISSION LOCK DEGRADED: seccomp is not active" in header
    assert "deploy/base" in header and "@sha256:<digest>" in header
    pinned = render_dockerfile(spec(), base="registry.local/base@sha256:" + "a" * 64)
    assert "does not ship" not in pinned and "libseccomp2" in pinned
    unset = render_dockerfile(spec(), base="", python_version="3.12")
    assert "\nARG BASE\n" in unset and "BASE has no default" in unset


def test_dockerfile_base() -> None:
    pinned = "registry.local:5000/bases/python@sha256:" + "a" * 64
    assert dockerfile_base(pinned, "3.12") == pinned
    assert dockerfile_base(None, "3.13") == DEFAULT_BASE
    assert dockerfile_base("/tmp/base", "3.13") == DEFAULT_BASE  # a layout directory: Docker cannot use it
    assert dockerfile_base("/tmp/base", "3.12") == ""  # and the default base's Python would not match
    assert dockerfile_base("registry.local/bases/python:latest", "3.13") == DEFAULT_BASE
