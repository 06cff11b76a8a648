"""Tests for `pipedreamer build --dockerfile`: the file follows --base and its Python (no real build)."""

from __future__ import annotations

import json
import pathlib
import shutil

import pytest

from builder.build import BuildResult
from builder.dockerfile import DEFAULT_BASE, DOCKERFILE_NAME
from builder.wheels import RUNTIME_LOCK, parse_lock
from builder import publish
from cli.main import main

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "hello"
PINNED = "registry.local:5000/bases/python@sha256:" + "a" * 64


@pytest.fixture
def project(tmp_path: pathlib.Path) -> pathlib.Path:
    return pathlib.Path(shutil.copytree(EXAMPLE, tmp_path / "hello", ignore=shutil.ignore_patterns("__pycache__")))


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Stands in for build_image: records its arguments, answers with a base Python of 3.12."""
    calls: list[dict] = []

    def build_image(directory, base, layout, **kwargs):
        calls.append({"base": base, **kwargs})
        return BuildResult(image="hello:1.0.0", digest="sha256:" + "b" * 64, layout=layout,
                           platforms=("linux/amd64",), python_version="3.12")  # fmt: skip

    monkeypatch.setattr(publish, "build_image", build_image)
    return calls


def dockerfile_args(text: str) -> dict[str, str]:
    return dict(
        (line[4:].split("=", 1) + [""])[:2] for line in text.splitlines() if line.startswith("ARG ") and "=" in line
    )


def test_dockerfile_alone_uses_the_default_base_and_its_python(project, built, capsys) -> None:
    assert main(["build", str(project), "--dockerfile", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"dockerfile": str(project / DOCKERFILE_NAME)}
    args = dockerfile_args((project / DOCKERFILE_NAME).read_text())
    assert args == {"BASE": DEFAULT_BASE, "PYTHON_VERSION": "3.13"}
    assert built == []


def test_python_version_flag_reaches_the_wheels_stage(project, built) -> None:
    assert main(["build", str(project), "--dockerfile", "--python-version", "3.12"]) == 0
    text = (project / DOCKERFILE_NAME).read_text()
    assert dockerfile_args(text) == {"PYTHON_VERSION": "3.12"}  # the default base has 3.13: no default BASE
    assert "\nARG BASE\n" in text


def test_pinned_base_and_its_python_go_into_the_dockerfile(project, built, capsys) -> None:
    assert main(["build", str(project), "--base", PINNED, "--dockerfile", "-o", "json"]) == 0
    assert built[0]["base"] == PINNED
    doc = json.loads(capsys.readouterr().out)
    assert doc["dockerfile"] == str(project / DOCKERFILE_NAME) and doc["digest"] == "sha256:" + "b" * 64
    assert dockerfile_args((project / DOCKERFILE_NAME).read_text()) == {"BASE": PINNED, "PYTHON_VERSION": "3.12"}


def test_a_layout_base_is_not_written_into_the_dockerfile(project, built, tmp_path) -> None:
    assert main(["build", str(project), "--base", str(tmp_path / "layout"), "--dockerfile"]) == 0
    text = (project / DOCKERFILE_NAME).read_text()
    assert str(tmp_path / "layout") not in text
    assert dockerfile_args(text) == {"PYTHON_VERSION": "3.12"}


def test_the_dockerfile_installs_the_runtime_lock_and_nothing_else(project, built) -> None:
    assert main(["build", str(project), "--dockerfile"]) == 0
    text = (project / DOCKERFILE_NAME).read_text()
    inlined = text.split("COPY <<'EOF' /tmp/requirements.txt\n", 1)[1].split("\nEOF\n", 1)[0]
    pinned = {line.split(" ", 1)[0] for line in inlined.splitlines()}
    assert pinned == {f"{r.name}=={r.version}" for r in parse_lock(RUNTIME_LOCK)[1]}
    assert not any(line.startswith(("kubernetes==", "grpcio-tools==", "pytest==")) for line in pinned)
