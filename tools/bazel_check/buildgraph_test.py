"""Unit tests of the BUILD checker (ownership, tests, imports) on small synthetic repositories."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

from tools.bazel_check import buildgraph
from tools.bazel_check.buildgraph import DistributionIndex, Finding, Label

#: What the fake virtualenv has installed: module → distribution.
FAKE_DISTS = DistributionIndex(
    {
        "yaml": ("pyyaml",),
        "pytest": ("pytest",),
        "_pytest": ("pytest",),
        "requests": ("requests",),
    }
)

MODULE = """\
module(name = "demo", version = "0.1.0")

bazel_dep(name = "rules_python", version = "2.4.1")
bazel_dep(name = "rules_oci", version = "2.3.3")

python = use_extension("@rules_python//python/extensions:python.bzl", "python")
python.toolchain(python_version = "3.13")

pip = use_extension("@rules_python//python/extensions:pip.bzl", "pip")
pip.parse(
    hub_name = "pip",
    python_version = "3.13",
    requirements_lock = "//requirements:dev.txt",
)
use_repo(pip, "pip")

oci = use_extension("@rules_oci//oci:extensions.bzl", "oci")
oci.pull(
    name = "base",
    digest = "sha256:0123",
    image = "gcr.io/distroless/python3-debian13",
)
use_repo(oci, "base")
"""

LOCK = """\
# pip-compile output
pytest==8.3.0 \\
    --hash=sha256:aaaa
pyyaml==6.0.2 \\
    --hash=sha256:bbbb
"""

PYTEST_DEFS = '''\
"""pytest_test macro (shaped like //tools/pytest:defs.bzl)."""

load("@rules_python//python:defs.bzl", "py_test")

def pytest_test(name, srcs, deps = [], **kwargs):
    main = name + "_main.py"
    native.genrule(
        name = name + "_main",
        srcs = ["//tools/pytest:pytest_main.py"],
        outs = [main],
        cmd = "cp $< $@",
    )
    py_test(
        name = name,
        srcs = srcs + [main],
        main = main,
        deps = deps + ["//tools/pytest:pytest_main", "@pip//pytest"],
        **kwargs
    )
'''

WORKFLOW_DEFS = '''\
"""pipedreamer_workflow macro: a filegroup plus image layers."""

def _layers(name, srcs):
    native.filegroup(name = name + "_tar", srcs = srcs)

def pipedreamer_workflow(name, srcs, spec, **kwargs):
    native.filegroup(name = name, srcs = srcs + [spec], **kwargs)
    _layers(name = name + ".layers", srcs = srcs)
'''

BASE_TREE = {
    "MODULE.bazel": MODULE,
    "requirements/dev.txt": LOCK,
    "requirements/BUILD.bazel": 'exports_files(["dev.txt"])\n',
    "tools/pytest/BUILD.bazel": """\
        load("@rules_python//python:defs.bzl", "py_library")

        exports_files(["pytest_main.py"])

        py_library(
            name = "pytest_main",
            testonly = True,
            srcs = ["pytest_main.py"],
            visibility = ["//:__subpackages__"],
            deps = ["@pip//pytest"],
        )
    """,
    "tools/pytest/defs.bzl": PYTEST_DEFS,
    "tools/pytest/pytest_main.py": "import sys\n\nimport pytest\n",
    "builder/BUILD.bazel": 'exports_files(["workflow.bzl"])\n',
    "builder/workflow.bzl": WORKFLOW_DEFS,
    "app/BUILD.bazel": """\
        load("@rules_python//python:defs.bzl", "py_binary", "py_library")
        load("//tools/pytest:defs.bzl", "pytest_test")

        py_library(
            name = "app",
            srcs = ["__init__.py"],
        )

        py_library(
            name = "util",
            srcs = ["util.py"],
            deps = ["@pip//pyyaml"],
        )

        py_library(
            name = "core",
            srcs = ["core.py"],
            deps = [":util"],
        )

        py_binary(
            name = "cli",
            srcs = ["cli.py"],
            deps = [":core"],
        )

        pytest_test(
            name = "core_test",
            srcs = ["core_test.py"],
            deps = [":core"],
        )
    """,
    "app/__init__.py": '"""App."""\n',
    "app/util.py": "import json\n\nimport yaml\n",
    "app/core.py": "from __future__ import annotations\n\nfrom app.util import yaml\n",
    "app/cli.py": "def main():\n    from app import core\n",
    "app/core_test.py": "import pytest\n\nfrom app import core\n",
    "examples/hello/BUILD.bazel": """\
        load("//builder:workflow.bzl", "pipedreamer_workflow")

        pipedreamer_workflow(
            name = "hello",
            srcs = glob(["nodes/**/*.py"]),
            spec = "workflow.yaml",
        )
    """,
    "examples/hello/workflow.yaml": "name: hello\n",
    "examples/hello/nodes/greet.py": "import yaml\n",
}


def write(root: Path, files: dict[str, str]) -> None:
    """Writes (dedented) files under root."""
    for path, text in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text))


def findings(root: Path) -> list[str]:
    """The checker's findings on `root`, as printed lines."""
    return [str(f) for f in buildgraph.check_repo(root, dists=FAKE_DISTS)]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A small repository the checker finds nothing wrong with."""
    write(tmp_path, BASE_TREE)
    return tmp_path


def edit(root: Path, path: str, old: str, new: str) -> None:
    """Replaces `old` (which must occur) with `new` in one file."""
    text = (root / path).read_text()
    assert old in text, f"{old!r} not in {path}"
    (root / path).write_text(text.replace(old, new))


# -- the baseline -----------------------------------------------------------


def test_clean_tree_has_no_findings(repo: Path) -> None:
    assert findings(repo) == []


# -- rule 1: ownership --------------------------------------------------------


def test_py_file_in_no_target(repo: Path) -> None:
    write(repo, {"app/extra.py": "x = 1\n"})
    assert findings(repo) == ["app/BUILD.bazel: app/extra.py is in no target's srcs [ownership]"]


def test_py_file_in_two_targets(repo: Path) -> None:
    edit(repo, "app/BUILD.bazel", 'srcs = ["core.py"]', 'srcs = ["core.py", "util.py"]')
    assert "app/BUILD.bazel: app/util.py is in the srcs of several targets: :util, :core [ownership]" in findings(repo)


def test_directory_with_py_files_but_no_build_file(repo: Path) -> None:
    write(repo, {"lib/__init__.py": "", "lib/helpers.py": ""})
    assert findings(repo) == ["lib/: directory has 2 .py file(s) but no BUILD.bazel [ownership]"]


def test_workflow_node_outside_the_macro_glob(repo: Path) -> None:
    edit(repo, "examples/hello/BUILD.bazel", 'glob(["nodes/**/*.py"])', '["nodes/greet.py"]')
    write(repo, {"examples/hello/nodes/extra/other.py": ""})
    assert findings(repo) == [
        "examples/hello/BUILD.bazel: examples/hello/nodes/extra/other.py is in no target's srcs [ownership]"
    ]


#: A workflow project as `pipedreamer init` writes it, loading the macro from the main module.
SCAFFOLDED_WORKFLOW = {
    "BUILD.bazel": """\
        load("@demo//builder:workflow.bzl", "pipedreamer_workflow")

        pipedreamer_workflow(
            name = "digest",
            srcs = glob(["nodes/**/*.py"]),
            spec = "workflow.yaml",
        )
    """,
    "workflow.yaml": "name: digest\n",
    "nodes/fetch.py": "import yaml\n",
    "nodes/format/markdown.py": "",
}


@pytest.mark.parametrize("where", ["digest", "teams/news/digest"])
def test_workflow_package_outside_examples_owns_its_node_directories(
    repo: Path, where: str
) -> None:
    write(repo, {f"{where}/{path}": text for path, text in SCAFFOLDED_WORKFLOW.items()})
    assert findings(repo) == []


def test_workflow_declared_through_a_wrapping_macro_owns_its_node_directories(repo: Path) -> None:
    write(
        repo,
        {
            "tools/flows/BUILD.bazel": "",
            "tools/flows/defs.bzl": """\
                load("//builder:workflow.bzl", "pipedreamer_workflow")

                def team_workflow(name, **kwargs):
                    pipedreamer_workflow(name = name, **kwargs)
            """,
            "digest/BUILD.bazel": """\
                load("//tools/flows:defs.bzl", "team_workflow")

                team_workflow(
                    name = "digest",
                    srcs = glob(["nodes/**/*.py"]),
                    spec = "workflow.yaml",
                )
            """,
            "digest/workflow.yaml": "name: digest\n",
            "digest/nodes/fetch.py": "",
        },
    )
    assert findings(repo) == []


def test_stray_py_file_outside_a_workflow_package_needs_a_build_file(repo: Path) -> None:
    write(repo, {f"digest/{path}": text for path, text in SCAFFOLDED_WORKFLOW.items()})
    write(repo, {"digest_tools/nodes/run.py": "", "app/nodes/extra.py": ""})
    assert findings(repo) == [
        "app/nodes/: directory has 1 .py file(s) but no BUILD.bazel [ownership]",
        "digest_tools/nodes/: directory has 1 .py file(s) but no BUILD.bazel [ownership]",
    ]


def test_py_file_in_a_workflow_package_must_be_in_the_workflow_srcs(repo: Path) -> None:
    write(repo, {f"digest/{path}": text for path, text in SCAFFOLDED_WORKFLOW.items()})
    write(repo, {"digest/lib/helpers.py": ""})
    assert findings(repo) == [
        "digest/BUILD.bazel: digest/lib/helpers.py is in no target's srcs [ownership]"
    ]


def test_generated_protobuf_code_needs_no_srcs_entry(repo: Path) -> None:
    write(repo, {"proto/pipedreamer/v1/BUILD.bazel": "", "proto/pipedreamer/v1/workflow_pb2.py": ""})
    assert findings(repo) == []


# -- rule 4: imports and deps --------------------------------------------------


def test_uncovered_first_party_import(repo: Path) -> None:
    edit(repo, "app/BUILD.bazel", 'deps = [":util"],', "deps = [],")
    assert findings(repo) == [
        'app/BUILD.bazel: target :core: app/core.py:3: imports app.util.yaml (app/util.py): add ":util" to deps [imports]'
    ]


def test_import_inside_a_function_counts(repo: Path) -> None:
    edit(repo, "app/BUILD.bazel", 'deps = [":core"],\n)\n\npytest_test', "deps = [],\n)\n\npytest_test")
    assert findings(repo) == [
        'app/BUILD.bazel: target :cli: app/cli.py:2: imports app.core (app/core.py): add ":core" to deps [imports]'
    ]


def test_relative_import_resolves_within_the_package(repo: Path) -> None:
    write(repo, {"app/core.py": "from .util import yaml\n"})
    edit(repo, "app/BUILD.bazel", 'deps = [":util"],', "deps = [],")
    assert findings(repo) == [
        'app/BUILD.bazel: target :core: app/core.py:1: imports app.util.yaml (app/util.py): add ":util" to deps [imports]'
    ]


def test_third_party_import_without_pip_dep(repo: Path) -> None:
    edit(repo, "app/BUILD.bazel", 'deps = ["@pip//pyyaml"],', "deps = [],")
    assert findings(repo) == [
        'app/BUILD.bazel: target :util: app/util.py:3: imports yaml: add "@pip//pyyaml" to deps [imports]'
    ]


def test_unknown_module_is_reported(repo: Path) -> None:
    write(repo, {"app/util.py": "import yaml\nimport notinstalled.sub\n"})
    assert findings(repo) == [
        "app/BUILD.bazel: target :util: app/util.py:2: imports notinstalled.sub: "
        "not stdlib, first-party or installed [imports]"
    ]


def test_first_party_module_that_does_not_exist(repo: Path) -> None:
    write(repo, {"app/core.py": "from app.util import yaml\nimport app.missing\n"})
    assert findings(repo) == [
        "app/BUILD.bazel: target :core: app/core.py:2: imports app.missing: no such first-party module [imports]"
    ]


def test_ignore_import_comment(repo: Path) -> None:
    write(repo, {"app/util.py": "import yaml  # buildcheck: ignore-import yaml\n"})
    edit(repo, "app/BUILD.bazel", 'deps = ["@pip//pyyaml"],', "deps = [],")
    assert findings(repo) == []


def test_unused_dep(repo: Path) -> None:
    edit(repo, "app/BUILD.bazel", 'deps = [":util"],', 'deps = [\n        ":util",\n        "@pip//pyyaml",\n    ],')
    assert findings(repo) == [
        "app/BUILD.bazel: target :core: deps: @pip//pyyaml is not imported by any source "
        "(add `# keep` if needed at run time) [unused-dep]"
    ]


def test_the_same_label_twice_in_deps(repo: Path) -> None:
    # Bazel fails the whole package ("Label '//app:util' is duplicated in the 'deps' attribute").
    edit(repo, "app/BUILD.bazel", 'deps = [":util"],', 'deps = [\n        ":util",\n        "//app:util",\n    ],')
    assert findings(repo) == [
        "app/BUILD.bazel: target :core: deps: //app:util is the same label as :util: list it once [duplicate-dep]"
    ]


def test_unused_dep_marked_keep_is_accepted(repo: Path) -> None:
    edit(
        repo,
        "app/BUILD.bazel",
        'deps = [":util"],',
        'deps = [\n        ":util",\n        "@pip//pyyaml",  # keep\n    ],',
    )
    assert findings(repo) == []


def test_dep_on_parent_package_init_is_not_unused(repo: Path) -> None:
    edit(repo, "app/BUILD.bazel", 'deps = [":util"],', 'deps = [":app", ":util"],')
    assert findings(repo) == []


def test_imports_of_generated_files_resolve_to_their_library(repo: Path) -> None:
    write(
        repo,
        {
            "gen/BUILD.bazel": """\
                load("@rules_python//python:defs.bzl", "py_library")

                genrule(
                    name = "codegen",
                    srcs = ["api.proto"],
                    outs = ["api_pb2.py"],
                    cmd = "touch $@",
                )

                py_library(
                    name = "api",
                    srcs = [":codegen"],
                )
            """,
            "gen/api.proto": "",
            "app/core.py": "from app.util import yaml\nfrom gen import api_pb2\n",
        },
    )
    assert findings(repo) == [
        'app/BUILD.bazel: target :core: app/core.py:2: imports gen.api_pb2 (gen/api_pb2.py): add "//gen:api" to deps [imports]'
    ]


def test_macro_implicit_deps_cover_imports(repo: Path) -> None:
    # core_test imports pytest; the pytest_test macro adds @pip//pytest on its own.
    assert "import pytest" in (repo / "app/core_test.py").read_text()
    assert findings(repo) == []


# -- rule 5: tests ------------------------------------------------------------


def test_test_file_in_a_library(repo: Path) -> None:
    write(repo, {"app/util_test.py": "from app import util\n"})
    edit(repo, "app/BUILD.bazel", 'srcs = ["util.py"]', 'srcs = ["util.py", "util_test.py"]')
    assert findings(repo) == [
        "app/BUILD.bazel: target :util: srcs: app/util_test.py is a test file in a py_library: "
        "use pytest_test or py_test [tests]"
    ]


def test_test_file_without_test_target(repo: Path) -> None:
    write(repo, {"app/util_test.py": "from app import util\n"})
    assert findings(repo) == [
        "app/BUILD.bazel: app/util_test.py is a test file in no target: add a pytest_test [tests]"
    ]


# -- rule 6: visibility and testonly -------------------------------------------

#: A library package of its own that app depends on, private by default.
LIB_PACKAGE = {
    "lib/BUILD.bazel": """\
        load("@rules_python//python:defs.bzl", "py_library")

        package(default_visibility = ["//visibility:private"])

        exports_files(["schema.json"], visibility = ["//tools:__pkg__"])

        py_library(
            name = "lib",
            srcs = ["__init__.py"],
            visibility = ["//app:__pkg__"],
        )

        py_library(
            name = "internal",
            srcs = ["internal.py"],
        )
    """,
    "lib/__init__.py": "",
    "lib/internal.py": "",
    "lib/schema.json": "{}\n",
    "lib/notes.txt": "",
}


@pytest.fixture
def lib_repo(repo: Path) -> Path:
    """The base repository plus //lib, which grants :lib to //app only."""
    write(repo, LIB_PACKAGE)
    edit(repo, "app/BUILD.bazel", 'deps = [":util"],', 'deps = [\n        ":util",\n        "//lib",  # keep\n    ],')
    assert findings(repo) == []
    return repo


def test_dep_on_a_private_target_of_another_package(lib_repo: Path) -> None:
    edit(lib_repo, "app/BUILD.bazel", '"//lib",  # keep', '"//lib:internal",  # keep')
    assert findings(lib_repo) == [
        "app/BUILD.bazel: target :core: deps: //lib:internal is not visible to //app "
        '(default_visibility: //visibility:private): give //lib:internal a visibility with "//app:__pkg__" '
        "in lib/BUILD.bazel [visibility]"
    ]


def test_target_visibility_names_other_packages(lib_repo: Path) -> None:
    edit(lib_repo, "lib/BUILD.bazel", '"//app:__pkg__"', '"//tools:__pkg__"')
    assert findings(lib_repo) == [
        "app/BUILD.bazel: target :core: deps: //lib is not visible to //app "
        '(its visibility: //tools:__pkg__): add "//app:__pkg__" to the visibility of //lib '
        "in lib/BUILD.bazel [visibility]"
    ]


@pytest.mark.parametrize(
    "grant",
    [
        '"//visibility:public"',
        '"//:__subpackages__"',
        '"//app:__subpackages__"',
        '"//lib:users"',
    ],
)
def test_what_grants_a_package(lib_repo: Path, grant: str) -> None:
    write(lib_repo, {"app/sub/BUILD.bazel": 'filegroup(\n    name = "sub",\n    srcs = ["//lib"],\n)\n'})
    edit(lib_repo, "lib/BUILD.bazel", '"//app:__pkg__"', f'"//app:__pkg__", {grant}')
    lines = (lib_repo / "lib/BUILD.bazel").read_text()
    lines += 'package_group(\n    name = "users",\n    packages = ["//app/..."],\n)\n'
    write(lib_repo, {"lib/BUILD.bazel": lines})
    assert findings(lib_repo) == []


def test_pkg_grant_is_not_a_subpackage_grant(lib_repo: Path) -> None:
    write(lib_repo, {"app/sub/BUILD.bazel": 'filegroup(\n    name = "sub",\n    srcs = ["//lib"],\n)\n'})
    assert findings(lib_repo) == [
        "app/sub/BUILD.bazel: target :sub: srcs: //lib is not visible to //app/sub "
        '(its visibility: //app:__pkg__): add "//app/sub:__pkg__" to the visibility of //lib '
        "in lib/BUILD.bazel [visibility]"
    ]


def test_source_file_of_another_package(lib_repo: Path) -> None:
    edit(lib_repo, "app/BUILD.bazel", 'srcs = ["cli.py"],', 'srcs = ["cli.py"],\n    data = [\n        "//lib:notes.txt",\n        "//lib:schema.json",\n    ],')
    assert findings(lib_repo) == [
        "app/BUILD.bazel: target :cli: data: //lib:notes.txt is not visible to //app "
        "(a source file not in exports_files, default_visibility: //visibility:private): "
        'export notes.txt with exports_files(visibility = ["//app:__pkg__"]) in lib/BUILD.bazel [visibility]',
        "app/BUILD.bazel: target :cli: data: //lib:schema.json is not visible to //app "
        '(exports_files visibility: //tools:__pkg__): add "//app:__pkg__" to the exports_files visibility '
        "of schema.json in lib/BUILD.bazel [visibility]",
    ]


def test_exports_files_without_visibility_is_public(lib_repo: Path) -> None:
    edit(lib_repo, "lib/BUILD.bazel", ', visibility = ["//tools:__pkg__"])', ")")
    edit(lib_repo, "app/BUILD.bazel", 'srcs = ["cli.py"],', 'srcs = ["cli.py"],\n    data = ["//lib:schema.json"],')
    assert findings(lib_repo) == []


def test_labels_a_macro_adds_are_checked_against_the_calling_package(repo: Path) -> None:
    edit(repo, "tools/pytest/BUILD.bazel", '"//:__subpackages__"', '"//tools:__subpackages__"')
    assert findings(repo) == [
        "app/BUILD.bazel: target :core_test: //tools/pytest:pytest_main (added by pytest_test) is not visible "
        'to //app (its visibility: //tools:__subpackages__): add "//app:__pkg__" to the visibility of '
        "//tools/pytest:pytest_main in tools/pytest/BUILD.bazel [visibility]"
    ]


def test_labels_of_nested_macros_count(repo: Path) -> None:
    write(
        repo,
        {
            "builder/workflow.bzl": WORKFLOW_DEFS.replace(
                'name + "_tar", srcs = srcs)', 'name + "_tar", srcs = srcs + [Label("//builder:tool")])'
            ),
            "builder/BUILD.bazel": 'exports_files(["workflow.bzl"])\n\nfilegroup(\n    name = "tool",\n    srcs = [],\n)\n',
        },
    )
    assert findings(repo) == [
        "examples/hello/BUILD.bazel: target :hello: //builder:tool (added by pipedreamer_workflow) is not visible "
        "to //examples/hello (default_visibility: //visibility:private): give //builder:tool a visibility with "
        '"//examples/hello:__pkg__" in builder/BUILD.bazel [visibility]'
    ]


def test_label_of_a_target_a_macro_makes_is_left_to_bazel(lib_repo: Path) -> None:
    edit(lib_repo, "app/BUILD.bazel", 'srcs = ["cli.py"],', 'srcs = ["cli.py"],\n    data = ["//examples/hello:files"],')
    assert findings(lib_repo) == []


def test_library_depending_on_a_testonly_library(lib_repo: Path) -> None:
    edit(lib_repo, "lib/BUILD.bazel", 'srcs = ["__init__.py"],', 'testonly = True,\n    srcs = ["__init__.py"],')
    assert findings(lib_repo) == [
        "app/BUILD.bazel: target :core: deps: //lib is testonly and :core is not: "
        "mark it testonly = True or drop the dep [testonly]"
    ]


def test_tests_and_testonly_targets_may_depend_on_testonly_ones(lib_repo: Path) -> None:
    edit(lib_repo, "lib/BUILD.bazel", 'srcs = ["__init__.py"],', 'testonly = True,\n    srcs = ["__init__.py"],')
    edit(lib_repo, "app/BUILD.bazel", 'srcs = ["core.py"],', 'testonly = True,\n    srcs = ["core.py"],')
    # core_test (a test) depends on :core, now testonly; the pytest_test macro adds the testonly pytest_main.
    assert findings(lib_repo) == [
        "app/BUILD.bazel: target :cli: deps: :core is testonly and :cli is not: "
        "mark it testonly = True or drop the dep [testonly]"
    ]


# -- what the checker reads ---------------------------------------------------


def test_too_dynamic_deps_are_reported(repo: Path) -> None:
    edit(repo, "app/BUILD.bazel", 'deps = [":core"],\n)\n\npytest_test', "deps = some_function(),\n)\n\npytest_test")
    assert "app/BUILD.bazel: target :cli: deps: cannot read some_function() [static]" in findings(repo)


def test_syntax_error_in_a_build_file(repo: Path) -> None:
    write(repo, {"gen/BUILD.bazel": "py_library(name = \n"})
    assert findings(repo) == ["gen/BUILD.bazel: syntax error: '(' was never closed (line 1) [static]"]


def test_constants_select_and_label_are_read(repo: Path) -> None:
    edit(repo, "app/BUILD.bazel", 'deps = ["@pip//pyyaml"],', 'deps = YAML + select({"//c:x": [], "//conditions:default": []}),')
    edit(repo, "app/BUILD.bazel", 'srcs = ["cli.py"],', 'srcs = [Label("cli.py")],')
    write(repo, {"app/BUILD.bazel": 'YAML = ["@pip//pyyaml"]\n' + (repo / "app/BUILD.bazel").read_text()})
    assert findings(repo) == []


def test_glob_honours_exclude_and_subpackages(tmp_path: Path) -> None:
    write(tmp_path, {"BUILD": "", "a.py": "", "b.py": "", "sub/c.py": "", "sub/deep/BUILD": "", "sub/deep/d.py": ""})
    evaluator = buildgraph._Evaluator(buildgraph.Tree.scan(tmp_path), "", {})
    call = ast.parse('glob(["**/*.py"], exclude = ["b.py"])', mode="eval").body
    assert [item.text for item in evaluator.items(call)] == ["a.py", "sub/c.py"]


@pytest.mark.parametrize(
    ("text", "label"),
    [
        (":core", Label("", "app", "core")),
        ("core.py", Label("", "app", "core.py")),
        ("//engine", Label("", "engine", "engine")),
        ("//engine:spec", Label("", "engine", "spec")),
        ("//requirements:dev.txt", Label("", "requirements", "dev.txt")),
        ("@pip//nats_py", Label("pip", "nats_py", "nats_py")),
        ("@rules_python//python:defs.bzl", Label("rules_python", "python", "defs.bzl")),
    ],
)
def test_parse_label(text: str, label: Label) -> None:
    assert buildgraph.parse_label(text, "app") == label


def test_glob_regex() -> None:
    assert buildgraph.glob_regex("nodes/**/*.py").match("nodes/a.py")
    assert buildgraph.glob_regex("nodes/**/*.py").match("nodes/x/y/a.py")
    assert not buildgraph.glob_regex("*.py").match("x/a.py")
    assert buildgraph.glob_regex("examples/**/nodes").match("examples/hello/nodes")


def test_macros_are_read_from_their_bzl_files(repo: Path) -> None:
    macros = buildgraph.MacroReader(buildgraph.Tree.scan(repo))
    assert macros.macro(("//tools/pytest:defs.bzl", "pytest_test"), "app") == buildgraph.Macro(
        "test",
        ("//tools/pytest:pytest_main", "@pip//pytest"),
        ("//tools/pytest:pytest_main.py", "//tools/pytest:pytest_main", "@pip//pytest"),
    )
    assert macros.macro(("//builder:workflow.bzl", "pipedreamer_workflow"), "app") == buildgraph.Macro("files")
    assert macros.macro(("@rules_python//python:defs.bzl", "py_library"), "app") is None


def test_finding_format() -> None:
    assert str(Finding("a/BUILD.bazel", "t", "imports", "bad")) == "a/BUILD.bazel: target :t: bad [imports]"
    assert str(Finding("a/BUILD.bazel", "", "ownership", "x")) == "a/BUILD.bazel: x [ownership]"


def test_distribution_index_from_this_environment() -> None:
    """The checkout's virtualenv, or under Bazel the wheels this test depends on."""
    index = DistributionIndex.from_environment()
    assert index.distributions("yaml") == ("pyyaml",)
    assert index.distributions("google.protobuf.json_format") == ("protobuf",)
    assert index.distributions("grpc_health.v1") == ("grpcio_health_checking",)
    assert index.distributions("nats.aio.client") == ("nats_py",)
