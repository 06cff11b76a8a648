"""A YAML alias bomb ("billion laughs") as a secrets file: the real `./pipedreamer`
refuses it at once, naming the file, instead of expanding it for ever."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support import REPO, write_workflow
from tools.pytest import child_python

pytestmark = pytest.mark.timeout(120)

# Ten values, each level ten aliases of the one before: 10**9 strings once expanded.
BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{chr(ord(c) - 1)}'] * 10)}]\n" for c in "bcdefghi"
)
ECHO = {"echo": "async def run(ctx, input):\n    return input\n"}


def pipedreamer(*args: str) -> subprocess.CompletedProcess:
    try:
        env = dict(os.environ, PYTHONPATH=child_python.pythonpath(REPO))
        return subprocess.run([*child_python.cli_command(REPO), *args], env=env, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"pipedreamer {' '.join(args)} still running after 60 s: the alias bomb was expanded") from exc


def test_test_with_an_alias_bomb_as_secrets_exits_1_naming_the_file(tmp_path: Path):
    flow = write_workflow(tmp_path / "flow", ECHO)
    fixtures = flow / "tests" / "fixtures"
    fixtures.mkdir(parents=True)
    (fixtures / "echo.json").write_text('{"input": {"a": 1}, "expected": {"a": 1}}')
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    result = pipedreamer("test", str(flow), "--secrets", str(bomb))
    assert result.returncode == 1, result
    assert f"{bomb}: invalid YAML: " in result.stderr + result.stdout
    assert "document too large (more than 100000 values after aliases)" in result.stderr + result.stdout


def test_deploy_dry_run_with_an_alias_bomb_in_secrets_yaml_exits_1_naming_the_file(tmp_path: Path):
    flow = write_workflow(tmp_path / "flow", ECHO)
    (flow / ".secrets.yaml").write_text(BOMB)
    result = pipedreamer("deploy", str(flow), "--dry-run")
    assert result.returncode == 1, result
    assert f"{flow / '.secrets.yaml'}: invalid YAML: " in result.stderr
    assert "document too large (more than 100000 values after aliases)" in result.stderr
