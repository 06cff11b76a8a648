"""Tests for the CLI surface: global flags, exit codes, JSON output, no tracebacks."""

from __future__ import annotations

import json
import pathlib

import pytest

from cli.main import main
from tests.support import run_cli

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "github-digest"


def test_validate_example(capsys):
    assert main(["validate", str(EXAMPLE)]) == 0
    assert "github-digest 1.0.0 is valid (3 nodes, 2 edges, 3 stages)" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--output", "json", "validate", str(EXAMPLE)], ["validate", str(EXAMPLE), "--output", "json"], ["validate", "-o", "json", str(EXAMPLE)]])
def test_global_flags_before_or_after_the_verb(argv, capsys):
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["valid"] is True and doc["nodes"] == ["fetch-repos", "summarize", "notify"]


def test_invalid_workflow_exits_1_with_every_problem(tmp_path):
    (tmp_path / "workflow.yaml").write_text("name: Bad\nversion: x\nnodes: {a: {path: nodes/a.py}}\n")
    result = run_cli("validate", str(tmp_path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"{tmp_path}/workflow.yaml:1: name: 'Bad' is not kebab-case" in result.stderr
    assert f"{tmp_path}/workflow.yaml:2: version: expected a semantic version" in result.stderr
    assert f"{tmp_path}/workflow.yaml:3: nodes.a.path: file not found: nodes/a.py" in result.stderr


def test_invalid_workflow_json_output_is_one_document(tmp_path):
    (tmp_path / "workflow.yaml").write_text("name: ok\nversion: 1.0.0\nnodes: {a: {path: nodes/a.py}}\n")
    result = run_cli("validate", str(tmp_path), "--output", "json")
    assert result.returncode == 1
    doc = json.loads(result.stdout)
    assert doc["problems"] == [
        {"field": "nodes.a.path", "file": f"{tmp_path}/workflow.yaml", "line": 3, "message": "file not found: nodes/a.py", "severity": "error"}
    ]


def test_bad_usage_exits_2():
    assert run_cli("visualize", "--format", "png").returncode == 2
    assert run_cli("no-such-command").returncode == 2
    assert run_cli().returncode == 2


def test_visualize_formats(capsys):
    assert main(["visualize", str(EXAMPLE)]) == 0
    assert capsys.readouterr().out.startswith("graph TD\n")
    assert main(["visualize", str(EXAMPLE), "--format", "dot"]) == 0
    assert capsys.readouterr().out.startswith('digraph "github-digest"')
    assert main(["visualize", str(EXAMPLE), "--format", "html"]) == 0
    assert "<svg" in capsys.readouterr().out


def test_init_validate_visualize_roundtrip(tmp_path):
    assert run_cli("init", "demo", cwd=tmp_path).returncode == 0
    project = tmp_path / "demo"
    assert sorted(str(p.relative_to(project)) for p in project.rglob("*") if p.is_file()) == [
        ".gitignore",
        "BUILD.bazel",
        "nodes/hello.py",
        "tests/fixtures/hello.json",
        "workflow.yaml",
    ]
    assert ".secrets*" in (project / ".gitignore").read_text()
    assert "pipedreamer_workflow(" in (project / "BUILD.bazel").read_text()
    assert run_cli("validate", "demo", cwd=tmp_path).returncode == 0
    shown = run_cli("visualize", "demo", cwd=tmp_path)
    assert shown.returncode == 0 and shown.stdout.startswith("graph TD")


def test_init_refuses_a_non_empty_directory(tmp_path):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "keep.txt").write_text("mine")
    result = run_cli("init", "demo", cwd=tmp_path)
    assert result.returncode == 1 and "already exists and is not empty" in result.stderr
    assert [p.name for p in (tmp_path / "demo").iterdir()] == ["keep.txt"]


def test_init_rejects_bad_names_and_leaves_nothing(tmp_path):
    result = run_cli("init", "Bad_Name", cwd=tmp_path)
    assert result.returncode == 1 and "invalid workflow name 'Bad_Name'" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_unexpected_errors_have_no_traceback_unless_debug(tmp_path):
    (tmp_path / "workflow.yaml").mkdir()
    result = run_cli("validate", str(tmp_path))
    assert result.returncode == 1 and "Traceback" not in result.stderr and "error:" in result.stderr


@pytest.mark.parametrize(
    "argv,unknown",
    [
        (["--bogus"], "--bogus"),
        (["-x"], "-x"),
        (["--output", "json", "--bogus"], "--bogus"),
        (["--bogus", "validate", str(EXAMPLE)], "--bogus"),
        (["validate", str(EXAMPLE), "--bogus"], "--bogus"),
    ],
)
def test_unknown_option_is_named_and_exits_2(argv, unknown, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == f"pipedreamer: error: unrecognized arguments: {unknown}"
    assert "required" not in err


@pytest.mark.parametrize(
    "argv,unknown",
    [
        # absl-py's own flags: the CLI is plain argparse, none of them may slip through.
        (["-v", "1", "validate", str(EXAMPLE)], "-v"),
        (["validate", str(EXAMPLE), "-v", "1"], "-v 1"),
        (["--verbosity=1", "validate", str(EXAMPLE)], "--verbosity=1"),
        (["--flagfile=flags.txt", "validate", str(EXAMPLE)], "--flagfile=flags.txt"),
        (["--helpfull"], "--helpfull"),
        (["validate", str(EXAMPLE), "--log_dir", "/tmp"], "--log_dir /tmp"),
        (["--logtostderr", "validate", str(EXAMPLE)], "--logtostderr"),
        (["--undefok=x", "validate", str(EXAMPLE)], "--undefok=x"),
    ],
)
def test_absl_flags_are_unknown_options(argv, unknown, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines()[-1] == f"pipedreamer: error: unrecognized arguments: {unknown}"
    assert captured.out == ""


def test_debug_shows_the_libraries_debug_logs(capsys):
    import logging

    root = logging.getLogger()
    level = root.level
    try:
        assert main(["--debug", "validate", str(EXAMPLE)]) == 0
        logging.getLogger("pipedreamer.test").debug("a debug line")
        assert "debug: pipedreamer.test: a debug line" in capsys.readouterr().err
    finally:
        root.setLevel(level)


@pytest.mark.parametrize("argv", [[], ["--output", "json"], ["--debug"]])
def test_missing_command_is_still_required(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == "pipedreamer: error: the following arguments are required: COMMAND"


# Parsed in this order: the top-level key (line 13) is warned about first, then
# the trigger's (line 6), the node's (line 9) and the missing file (line 11).
REPORTED = """\
name: reported
version: 1.0.0
triggers:
  - type: cron
    schedule: "@daily"
    colour: blue
nodes:
  a:
    flavour: x
    path: nodes/a.py
  b: {path: nodes/b.py}
edges: [{from: a, to: b}]
owner: me
"""


def write_reported(directory: pathlib.Path, text: str = REPORTED) -> pathlib.Path:
    (directory / "nodes").mkdir()
    (directory / "nodes" / "a.py").write_text("async def run(ctx, input):\n    return input\n")
    (directory / "workflow.yaml").write_text(text)
    return directory / "workflow.yaml"


def test_invalid_workflow_report_is_one_line_per_problem_in_reading_order(tmp_path, capsys):
    spec = write_reported(tmp_path)
    assert main(["validate", str(tmp_path)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"warning: {spec}:6: triggers[0].colour: unknown key (expected one of: type, name, schedule, timezone, subject, path, signature, durable, max_deliver)",
        f"warning: {spec}:9: nodes.a.flavour: unknown key (expected one of: path, timeout, retries, description)",
        f"error: {spec}:11: nodes.b.path: file not found: nodes/b.py",
        f"warning: {spec}:13: owner: unknown key (expected one of: name, version, description, triggers, config, nodes, edges)",
    ]


def test_invalid_workflow_json_lists_problems_in_reading_order(tmp_path, capsys):
    write_reported(tmp_path)
    assert main(["validate", str(tmp_path), "--output", "json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert [(p["line"], p["severity"]) for p in doc["problems"]] == [(6, "warning"), (9, "warning"), (11, "error"), (13, "warning")]


def test_warnings_of_a_valid_workflow_have_one_prefix_each(tmp_path, capsys):
    spec = write_reported(tmp_path, REPORTED.replace("nodes/b.py", "nodes/a.py"))
    assert main(["validate", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f"warning: {spec}:6: triggers[0].colour: unknown key (expected one of: type, name, schedule, timezone, subject, path, signature, durable, max_deliver)",
        f"warning: {spec}:9: nodes.a.flavour: unknown key (expected one of: path, timeout, retries, description)",
        f"warning: {spec}:13: owner: unknown key (expected one of: name, version, description, triggers, config, nodes, edges)",
    ]
    assert "reported 1.0.0 is valid" in captured.out


def test_single_errors_keep_their_one_prefix(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "missing")]) == 1
    assert capsys.readouterr().err.splitlines() == [f"error: {tmp_path}/missing: file not found"]
