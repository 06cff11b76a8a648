"""The dependency locks: one per audience, layered, hashed, and true to what the code imports.

requirements/runtime.txt is what images carry, so it must be exactly the
closure of what the image's code (engine/, proto/, the workflows' nodes)
imports, on every Python the engine runs on; cli.txt and dev.txt extend it at
the same pins. These tests read the repository's files and the installed
distributions' metadata; they need no network.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import os
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from builder.build import engine_entries
from builder.layer_tool import DEFLATE_LOCK
from builder.wheels import RUNTIME_LOCK, LockedRequirement, normalise_name, parse_lock


def repo_root() -> Path:
    """The source tree (under `bazel test`, realpath leads from the runfiles back to it)."""
    if os.environ.get("PIPEDREAMER_REPO_ROOT"):
        return Path(os.environ["PIPEDREAMER_REPO_ROOT"])
    return next(p for p in Path(os.path.realpath(__file__)).parents if (p / "MODULE.bazel").is_file())


REPO = repo_root()
REQUIREMENTS = REPO / "requirements"
AUDIENCES = ("runtime", "cli", "dev")  # each lock extends the one before it
TOOL_LOCK = REPO / "tools" / "locks" / "pip-tools.txt"
PYTHONS = ("3.11", "3.12", "3.13")  # the engine's (builder/build.py warns outside them)
MACHINES = ("x86_64", "aarch64")  # linux/amd64, linux/arm64
# Directories whose modules are the tests' and benchmarks' (besides *_test.py, conftest.py).
TEST_DIRS = ("tests", "bench", "tools/pytest")
SKIP_DIRS = {".git", ".venv", "node_modules", ".tools", "__pycache__", "testdata"}


def lock(audience: str) -> dict[str, LockedRequirement]:
    _, requirements = parse_lock(REQUIREMENTS / f"{audience}.txt")
    return {r.name: r for r in requirements}


def read_in(path: Path) -> tuple[list[Requirement], list[Path], list[Path]]:
    """(requirements, -r includes, -c constraints) of a pip-tools .in file, includes followed."""
    requirements: list[Requirement] = []
    includes: list[Path] = []
    constraints: list[Path] = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        option, _, value = line.partition(" ")
        if option in ("-r", "--requirement"):
            included = (path.parent / value.strip()).resolve()
            includes.append(included)
            more, more_includes, more_constraints = read_in(included)
            requirements += more
            includes += more_includes
            constraints += more_constraints
        elif option in ("-c", "--constraint"):
            constraints.append((path.parent / value.strip()).resolve())
        else:
            requirements.append(Requirement(line))
    return requirements, includes, constraints


def declared(audience: str) -> set[str]:
    """The distributions an audience's .in file asks for, its includes' too."""
    return {normalise_name(r.name) for r in read_in(REQUIREMENTS / f"{audience}.in")[0]}


def marker_environment(python: str, machine: str) -> dict[str, str]:
    return {"python_version": python, "python_full_version": f"{python}.0", "implementation_version": f"{python}.0",
            "implementation_name": "cpython", "platform_python_implementation": "CPython", "os_name": "posix",
            "sys_platform": "linux", "platform_system": "Linux", "platform_machine": machine,
            "platform_release": "", "platform_version": "", "extra": ""}  # fmt: skip


def closure(roots: Iterable[Requirement], environment: dict[str, str]) -> set[str]:
    """Every distribution `roots` need in `environment`, by the installed distributions' Requires-Dist."""
    seen: set[tuple[str, frozenset[str]]] = set()
    names: set[str] = set()
    todo = [(normalise_name(r.name), frozenset(r.extras)) for r in roots]
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        names.add(name)
        for text in importlib.metadata.distribution(name).requires or []:
            requirement = Requirement(text)
            marker = requirement.marker
            if marker is None or any(marker.evaluate({**environment, "extra": e}) for e in ("", *extras)):
                todo.append((normalise_name(requirement.name), frozenset(requirement.extras)))
    return names


# ---------------------------------------------------------------------------
# Who imports what


def python_files() -> Iterator[Path]:
    for directory, subdirs, files in os.walk(REPO):
        subdirs[:] = sorted(d for d in subdirs if d not in SKIP_DIRS and not d.startswith("bazel-"))
        yield from (Path(directory) / f for f in sorted(files) if f.endswith(".py"))


def image_files() -> set[Path]:
    """The Python files images carry: the engine layer's, and the workflows' nodes."""
    engine = {e.source.resolve() for e in engine_entries(REPO) if e.source and e.path.endswith(".py")}
    nodes = {p.resolve() for p in (REPO / "examples").rglob("*.py")}
    return engine | nodes


def is_test_file(path: Path) -> bool:
    relative = path.relative_to(REPO).as_posix()
    return (path.name.endswith("_test.py") or path.name == "conftest.py"
            or any(relative.startswith(d + "/") for d in TEST_DIRS))  # fmt: skip


def _optional(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Inside `try: ... except ImportError:` (a module some Pythons lack)."""
    child, parent = node, parents.get(node)
    while parent is not None:
        if isinstance(parent, ast.Try) and child in parent.body:
            for handler in parent.handlers:
                names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
                if any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError") for n in names):
                    return True
        child, parent = parent, parents.get(parent)
    return False


def third_party_imports(path: Path) -> dict[str, bool]:
    """Top-level modules `path` imports that are neither the standard library nor this
    repository's → whether every import of it is optional (guarded by `except ImportError`)."""
    tree = ast.parse(path.read_text(), str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    first_party = {p.name for p in REPO.iterdir() if p.is_dir()} | {"__future__"}
    found: dict[str, bool] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        else:
            continue
        optional = _optional(node, parents)
        for top in {m.split(".")[0] for m in modules} - set(sys.stdlib_module_names) - first_party:
            found[top] = found.get(top, True) and optional
    return found


def _distributions_beside(module: str) -> list[str]:
    """The distributions installed where `module` is: for site-packages without RECORD files
    (Bazel's rules_python, one directory per wheel), which packages_distributions() needs."""
    spec = importlib.util.find_spec(module)
    location = None
    if spec is not None:
        location = next(iter(spec.submodule_search_locations)) if spec.submodule_search_locations else spec.origin
    if not location:
        return []
    return [d.metadata["Name"] for d in importlib.metadata.distributions(path=[str(Path(location).parent)])]


def imported_distributions(files: Iterable[Path]) -> tuple[dict[str, set[str]], list[str]]:
    """({distribution: files importing it}, problems) for the third-party imports of `files`."""
    owners = importlib.metadata.packages_distributions()
    used: dict[str, set[str]] = {}
    problems = []
    for path in files:
        for module, optional in sorted(third_party_imports(path).items()):
            dists = owners.get(module) or _distributions_beside(module)
            if not dists and optional:
                continue  # another Python's standard library (`_interpreters` is 3.13's)
            if not dists:
                problems.append(f"{path.relative_to(REPO)} imports {module}, which no installed distribution provides")
            for dist in dists:
                used.setdefault(normalise_name(dist), set()).add(str(path.relative_to(REPO)))
    return used, problems


def audiences() -> dict[str, set[Path]]:
    """The repository's Python files by who runs them: the image, the CLI, the tests."""
    image = image_files()
    files = {"runtime": set(), "cli": set(), "dev": set()}
    for path in python_files():
        resolved = path.resolve()
        files["runtime" if resolved in image else "dev" if is_test_file(path) else "cli"].add(path)
    return files


def describe(used: dict[str, set[str]], names: Iterable[str]) -> list[str]:
    return [f"{name} (imported by {', '.join(sorted(used.get(name, ()))[:3]) or 'nothing'})" for name in sorted(names)]


# ---------------------------------------------------------------------------
# The lock files


@pytest.mark.parametrize("path", [*(f"requirements/{a}.txt" for a in AUDIENCES), "tools/locks/pip-tools.txt"])
def test_a_lock_pins_every_package_by_hash_and_nothing_of_the_machine(path: str) -> None:
    text = (REPO / path).read_text()
    options, requirements = parse_lock(REPO / path)  # raises, naming file and line, on a line without --hash
    assert requirements and all(r.hashes for r in requirements)
    # No --find-links (the lock maker's wheel directory), index URL or other pip option:
    # the lock installs on a fresh machine from PyPI alone.
    assert options == []
    assert not re.search(r"--find-links|--index-url|--extra-index-url|--trusted-host|file:/", text)
    # Made by the one pinned tool; the header says how to make it again.
    assert "# This file is autogenerated by pip-compile with Python 3.11" in text
    assert re.search(r"^#    tools/locks/lock\.sh( --tool)?$", text, re.MULTILINE)


def test_the_tool_is_pip_tools_at_the_version_pip_tools_in_pins() -> None:
    wanted = {normalise_name(r.name): r for r in read_in(REPO / "tools" / "locks" / "pip-tools.in")[0]}
    _, locked = parse_lock(TOOL_LOCK)
    pinned = {r.name: r.version for r in locked}
    assert "pip-tools" in wanted and "pip" in wanted
    for name, requirement in wanted.items():
        assert str(requirement.specifier).startswith("=="), f"pip-tools.in: pin {name} to one version"
        assert pinned[name] == str(requirement.specifier).removeprefix("==")


def test_each_lock_extends_the_one_before_at_the_same_pins() -> None:
    locks = {audience: lock(audience) for audience in AUDIENCES}
    for smaller, larger in zip(AUDIENCES, AUDIENCES[1:]):
        missing = sorted(set(locks[smaller]) - set(locks[larger]))
        assert missing == [], f"{larger}.txt lacks {smaller}.txt's {missing}"
        differ = [
            f"{name}: {smaller}.txt {r.version}, {larger}.txt {locks[larger][name].version}"
            for name, r in sorted(locks[smaller].items())
            if (r.version, set(r.hashes)) != (locks[larger][name].version, set(locks[larger][name].hashes))
        ]  # fmt: skip
        assert differ == [], differ


def test_each_in_file_builds_on_the_one_before_and_its_lock_holds_it() -> None:
    for before, audience in zip(AUDIENCES, AUDIENCES[1:]):
        _, includes, constraints = read_in(REQUIREMENTS / f"{audience}.in")
        # Includes the audience before (its packages) and is held to that lock's pins.
        assert (REQUIREMENTS / f"{before}.in").resolve() in includes
        assert (REQUIREMENTS / f"{before}.txt").resolve() in constraints
    for audience in AUDIENCES:
        missing = declared(audience) - set(lock(audience))
        assert missing == set(), f"requirements/{audience}.txt lacks {sorted(missing)}: run tools/locks/lock.sh"


def test_runtime_lock_is_the_closure_of_runtime_in_on_every_python_the_engine_runs_on() -> None:
    """No more (a CLI-only package would ship in every image) and no less (an import fails in the image)."""
    roots = read_in(REQUIREMENTS / "runtime.in")[0]
    needed: set[str] = set()
    for python in PYTHONS:
        for machine in MACHINES:
            needed |= closure(roots, marker_environment(python, machine))
    locked = set(lock("runtime"))
    assert sorted(needed - locked) == [], "needed in the image but not locked: run tools/locks/lock.sh"
    assert sorted(locked - needed) == [], "locked for the image but needed by nothing in runtime.in"


def _module_calls(path: Path) -> dict[str, dict[str, str]]:
    """`ext.tag(key = "value", …)` calls of a MODULE.bazel file (Starlark parses as Python), by `ext.tag`."""
    calls: dict[str, dict[str, str]] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name):
            calls[f"{node.func.value.id}.{node.func.attr}"] = {
                k.arg: k.value.value for k in node.keywords if isinstance(k.value, ast.Constant) and k.arg
            }
    return calls


@pytest.mark.parametrize("module", ["MODULE.bazel", "tools/bazel/ci/MODULE.bazel"])
def test_bazel_and_the_plain_path_read_the_same_locks(module: str) -> None:
    """Users' MODULE.bazel and CI's overlay of it feed Bazel the files the plain path installs."""
    calls = _module_calls(REPO / module)

    def path(label: str) -> Path:
        package, _, name = label.removeprefix("//").partition(":")
        return REPO / package / name

    # The @pip hub serves tests too: the tests' lock, which holds the other two.
    assert path(calls["pip.parse"]["requirements_lock"]) == REQUIREMENTS / "dev.txt"
    # Bazel's wheels layer: the lock `pipedreamer build` installs, deflate from the one the builder uses.
    assert path(calls["image_wheels.install"]["lock"]) == RUNTIME_LOCK == REQUIREMENTS / "runtime.txt"
    assert path(calls["image_wheels.install"]["deflate_lock"]) == DEFLATE_LOCK
    assert "deflate" in lock("cli") and "deflate" not in lock("runtime")


# ---------------------------------------------------------------------------
# The .in files against the code


def test_runtime_in_is_exactly_what_the_image_code_imports() -> None:
    used, problems = imported_distributions(audiences()["runtime"])
    assert problems == []
    wanted = declared("runtime")
    assert describe(used, set(used) - wanted) == [], "imported by the image's code: declare it in requirements/runtime.in"
    assert describe(used, wanted - set(used)) == [], "in requirements/runtime.in but the image's code never imports it"


def test_cli_in_adds_exactly_what_the_cli_imports_beyond_the_runtime() -> None:
    used, problems = imported_distributions(audiences()["cli"])
    assert problems == []
    runtime = declared("runtime")
    cli_only = declared("cli") - runtime
    beyond = set(used) - runtime
    assert describe(used, beyond - cli_only) == [], "imported by CLI code: declare it in requirements/cli.in"
    assert describe(used, cli_only - beyond) == [], "in requirements/cli.in but no CLI code imports it"


def test_tests_import_only_declared_packages() -> None:
    used, problems = imported_distributions(audiences()["dev"])
    assert problems == []
    assert describe(used, set(used) - declared("dev")) == [], "imported by tests: declare it in requirements/dev.in"


def test_the_audiences_split_the_repository_as_expected() -> None:
    files = {a: {p.relative_to(REPO).as_posix() for p in paths} for a, paths in audiences().items()}
    assert {"engine/spec.py", "engine/__main__.py", "examples/hello/nodes/greet.py"} <= files["runtime"]
    assert {"cli/main.py", "builder/registry.py", "k8s/client.py", "tools/gen_proto.py"} <= files["cli"]
    assert {"engine/spec_test.py", "tests/conftest.py", "tools/pytest/pytest_main.py"} <= files["dev"]


def _pip_labels(text: str) -> set[str]:
    return set(re.findall(r'"@pip//([A-Za-z0-9_]+)"', text))


def test_every_pip_label_of_the_bazel_files_is_in_the_hub_lock() -> None:
    """Bazel's @pip hub is made from dev.txt: a label for anything else fails the whole build
    (`no such package '@pip//absl_py'` once absl-py left the locks)."""
    hub = {re.sub(r"[-_.]+", "_", name) for name in lock("dev")}
    files = [*REPO.glob("**/BUILD.bazel"), *REPO.glob("**/*.bzl")]
    unknown = {
        f"{path.relative_to(REPO)}: @pip//{label}"
        for path in files
        if not any(part.startswith((".", "bazel-")) or part == "node_modules" for part in path.relative_to(REPO).parts)
        for label in _pip_labels(path.read_text(encoding="utf-8")) - hub
    }
    assert sorted(unknown) == []
    # The checker's index under Bazel sees exactly the hub's wheels.
    everything = _pip_labels((REPO / "tools" / "bazel_check" / "BUILD.bazel").read_text(encoding="utf-8"))
    assert everything >= hub - {"pip", "setuptools"}
    # This test reads the runtime lock's distributions' metadata: under Bazel, only its deps are installed.
    mine = _pip_labels((REPO / "tools" / "locks" / "BUILD.bazel").read_text(encoding="utf-8"))
    assert sorted({re.sub(r"[-_.]+", "_", name) for name in lock("runtime")} - mine) == []
