"""Loader: imports by path, rejects escapes (symlinks too), sync `run`, import errors with file and line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from engine.loader import LoadError, load_nodes, resolve_node_path
from proto.pipedreamer.v1 import workflow_pb2


def spec_for(nodes: dict[str, str]) -> workflow_pb2.WorkflowSpec:
    spec = workflow_pb2.WorkflowSpec(name="t", version="1.0.0")
    for node_id, path in nodes.items():
        spec.nodes.add(id=node_id, path=path)
    return spec


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


async def test_loads_async_run_under_unique_module_names(tmp_path):
    write(tmp_path / "nodes/a.py", "import dataclasses\n@dataclasses.dataclass\nclass P:\n    x: int\nasync def run(ctx, input):\n    return P(input).x\n")
    write(tmp_path / "nodes/b-c.py", "async def run(ctx, input):\n    return 'b'\n")
    first = load_nodes(spec_for({"a": "nodes/a.py", "b-c": "nodes/b-c.py"}), tmp_path)
    second = load_nodes(spec_for({"a": "nodes/a.py"}), tmp_path)
    assert await first["a"](None, 7) == 7 and await first["b-c"](None, None) == "b"
    assert first.modules["a"].__name__ != second.modules["a"].__name__
    assert first.modules["a"].__name__ in sys.modules
    assert first.files["a"] == (tmp_path / "nodes/a.py").resolve()
    first.discard()
    assert first.modules["a"].__name__ not in sys.modules
    assert await first["a"](None, 3) == 3  # still callable after discard


def test_rejects_paths_outside_the_directory(tmp_path):
    root = tmp_path / "wf"
    write(tmp_path / "outside.py", "async def run(ctx, input):\n    return 1\n")
    with pytest.raises(LoadError) as info:
        load_nodes(spec_for({"up": "../outside.py", "abs": str(tmp_path / "outside.py")}), root)
    messages = [str(p) for p in info.value.problems]
    assert "resolves outside the workflow directory" in messages[0]
    assert "must be relative" in messages[1]


def test_rejects_symlink_escapes(tmp_path):
    root = tmp_path / "wf"
    target = write(tmp_path / "secret" / "evil.py", "async def run(ctx, input):\n    return 1\n")
    (root / "nodes").mkdir(parents=True)
    (root / "nodes" / "evil.py").symlink_to(target)
    (root / "linkdir").symlink_to(tmp_path / "secret")
    with pytest.raises(LoadError) as info:
        load_nodes(spec_for({"file": "nodes/evil.py", "dir": "linkdir/evil.py"}), root)
    assert len(info.value.problems) == 2
    assert all("outside the workflow directory" in p.message for p in info.value.problems)


def test_symlink_inside_the_directory_is_fine(tmp_path):
    write(tmp_path / "nodes/real.py", "async def run(ctx, input):\n    return 1\n")
    (tmp_path / "nodes/alias.py").symlink_to(tmp_path / "nodes/real.py")
    assert "a" in load_nodes(spec_for({"a": "nodes/alias.py"}), tmp_path).functions


@pytest.mark.parametrize(
    "source, line, message",
    [
        ("def run(ctx, input):\n    return 1\n", 1, "`run` must be `async def run(ctx, input)`, found a plain function"),
        ("run = 42\n", None, "`run` must be `async def run(ctx, input)`, found int"),
        ("async def other(ctx, input):\n    pass\n", None, "no module-level `async def run(ctx, input)`"),
        ("async def run(ctx):\n    pass\n", 1, "`run` must accept two arguments (ctx, input)"),
        ("x = 1\n\nasync def run(ctx, input)\n    pass\n", 3, "SyntaxError: expected ':'"),
        ("import os\n\nraise RuntimeError('no config')\n", 3, "import failed: RuntimeError: no config"),
        ("import does_not_exist_anywhere\n", 1, "import failed: ModuleNotFoundError: No module named 'does_not_exist_anywhere'"),
        ("import sys\nsys.exit(2)\n", 2, "import failed: SystemExit: 2"),
    ],
)
def test_bad_modules_are_reported_with_file_and_line(tmp_path, source, line, message):
    write(tmp_path / "nodes/bad.py", source)
    with pytest.raises(LoadError) as info:
        load_nodes(spec_for({"bad": "nodes/bad.py"}), tmp_path)
    (problem,) = info.value.problems
    assert (problem.file, problem.line, problem.message) == ("nodes/bad.py", line, message)
    where = f"nodes/bad.py:{line}" if line else "nodes/bad.py"
    assert str(info.value) == f"{where}: {message} (node bad)"


def test_every_failing_node_is_reported_and_nothing_stays_imported(tmp_path):
    write(tmp_path / "nodes/good.py", "async def run(ctx, input):\n    return 1\n")
    write(tmp_path / "nodes/bad.py", "def run(ctx, input):\n    return 1\n")
    before = set(sys.modules)
    with pytest.raises(LoadError) as info:
        load_nodes(spec_for({"good": "nodes/good.py", "bad": "nodes/bad.py", "gone": "nodes/gone.py"}), tmp_path)
    assert [p.node_id for p in info.value.problems] == ["bad", "gone"]
    assert info.value.problems[1].message == "file not found"
    assert {m for m in set(sys.modules) - before if m.startswith("pipedreamer_node")} == set()


def test_resolve_node_path(tmp_path):
    write(tmp_path / "n.py", "")
    assert resolve_node_path(tmp_path, "n.py") == (tmp_path / "n.py").resolve()
    with pytest.raises(ValueError, match="outside"):
        resolve_node_path(tmp_path / "sub", "../n.py")
