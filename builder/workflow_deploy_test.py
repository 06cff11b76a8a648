"""A workflow's :deploy target prints what `pipedreamer deploy DIR` prints."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from builder import workflow_deploy
from cli.main import main as cli_main

HELLO = Path(__file__).resolve().parent.parent / "examples" / "hello"


@pytest.fixture
def hello(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """examples/hello as plain files at examples/hello below the working directory
    (under Bazel the runfiles are symlinks, which the loader refuses)."""
    shutil.copytree(Path("examples/hello") if Path("examples/hello").is_dir() else HELLO, tmp_path / "examples" / "hello")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BUILD_WORKSPACE_DIRECTORY", raising=False)
    return tmp_path / "examples" / "hello"


def test_dry_run_prints_the_cli_manifests(hello: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["deploy", "examples/hello", "--dry-run"]) == 0
    expected = capsys.readouterr().out
    assert workflow_deploy.main(["examples/hello/workflow.yaml", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "kind: Deployment" in printed
    assert printed == expected


def test_bazel_run_uses_the_checkout_directory(tmp_path: Path) -> None:
    spec = "examples/hello/workflow.yaml"
    assert workflow_deploy.workflow_directory(spec, {"BUILD_WORKSPACE_DIRECTORY": str(tmp_path)}) == str(
        tmp_path / "examples" / "hello"
    )
    assert workflow_deploy.workflow_directory(spec, {}) == "examples/hello"


def test_without_a_spec_it_says_how_to_call_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert workflow_deploy.main([]) == 2
    assert "usage" in capsys.readouterr().err
