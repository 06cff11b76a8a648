"""Every library's errors share one base: the CLI explains them (exit 1) and prints one JSON form."""

from __future__ import annotations

import json

import pytest

from builder.errors import BuildError
from cli.errors import CommandError
from engine.compiler import CompileError
from engine.errors import PipedreamerError, Problem
from engine.loader import LoadError, LoadProblem
from engine.secrets import SecretsError
from engine.spec import SpecError
from k8s.errors import ClusterError


@pytest.mark.parametrize(
    "error",
    [
        SpecError([Problem("flow/workflow.yaml", 3, "nodes.a.path", "file not found")]),
        CompileError(["edges[0].to: unknown node 'ghost'"]),
        LoadError([LoadProblem("a", "nodes/a.py", 2, "import failed: ValueError: x")]),
        SecretsError("flow/.secrets.yaml", "invalid YAML: line 2"),
        BuildError("registry localhost:5000: push refused"),
        ClusterError("deployments.apps is forbidden", reason="forbidden", status=403),
        CommandError("--input: not valid JSON"),
    ],
)
def test_every_domain_error_is_a_pipedreamer_error_with_a_json_form(error):
    assert isinstance(error, PipedreamerError)
    data = json.loads(json.dumps(error.to_dict()))
    assert data["error"] == str(error) and str(error)


def test_problems_make_the_report_and_the_json():
    error = SpecError([Problem("f.yaml", 9, "edges", "cycle: a → b → a"), Problem("f.yaml", 2, "name", "too long", "warning")])
    assert str(error) == "warning: f.yaml:2: name: too long\nerror: f.yaml:9: edges: cycle: a → b → a"
    assert [p["line"] for p in error.to_dict()["problems"]] == [2, 9]
    compiled = CompileError(["edges[1]: self-loop: b → b"])
    assert compiled.to_dict()["problems"] == [
        {"file": "", "line": None, "field": "edges[1]", "message": "self-loop: b → b", "severity": "error"}
    ]
    assert ClusterError("gone", reason="not-found", status=404).to_dict() == {"error": "gone", "status": 404, "reason": "not-found"}
