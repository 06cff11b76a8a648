"""A workflow's :deploy target prints what `pipedreamer deploy DIR` prints."""

from __future__ import annotations

import pathlib

import pytest

from builder import workflow_deploy
from cli.main import main as cli_main

SPEC = "examples/hello/workflow.yaml"


def test_dry_run_prints_the_cli_manifests(capsys):
    assert cli_main(["deploy", "examples/hello", "--dry-run"]) == 0
    expected = capsys.readouterr().out
    assert workflow_deploy.main([SPEC, "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "kind: Deployment" in printed
    assert printed == expected


def test_bazel_run_uses_the_checkout_directory(tmp_path):
    assert workflow_deploy.workflow_directory(SPEC, {"BUILD_WORKSPACE_DIRECTORY": str(tmp_path)}) == str(
        tmp_path / "examples" / "hello"
    )
    assert workflow_deploy.workflow_directory(SPEC, {}) == "examples/hello"


def test_without_a_spec_it_says_how_to_call_it(capsys):
    assert workflow_deploy.main([]) == 2
    assert "usage" in capsys.readouterr().err


@pytest.fixture(autouse=True)
def _checkout_root(monkeypatch):
    # pytest from the checkout and `bazel test` (runfiles) both have examples/ here.
    root = pathlib.Path(__file__).resolve().parent.parent
    if (pathlib.Path.cwd() / SPEC).exists():
        return
    monkeypatch.chdir(root)
