"""Tests for `pipedreamer init`'s templates and its all-or-nothing write."""

from __future__ import annotations

import json

import pytest

from builder import scaffold
from engine.spec import load_spec


def test_scaffolded_project_is_valid(tmp_path):
    created = scaffold.scaffold_workflow("my-flow", tmp_path)
    loaded = load_spec(created.directory)
    assert loaded.spec.name == "my-flow" and loaded.warnings == ()
    fixture = json.loads((created.directory / "tests/fixtures/hello.json").read_text())
    assert fixture == {"input": {"name": "Pipedreamer"}, "expected": {"message": "Hello, Pipedreamer!"}}


def test_empty_existing_directory_is_used(tmp_path):
    (tmp_path / "flow").mkdir()
    created = scaffold.scaffold_workflow("flow", tmp_path)
    assert (created.directory / "workflow.yaml").is_file()


def test_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    def explode(name):
        files = {"workflow.yaml": "x", "nodes/hello.py": "y"}
        return files | {"nodes": "a directory already"}  # writing a file over a dir fails

    monkeypatch.setattr(scaffold, "render_project", explode)
    with pytest.raises(OSError):
        scaffold.scaffold_workflow("flow", tmp_path)
    assert list(tmp_path.iterdir()) == []
