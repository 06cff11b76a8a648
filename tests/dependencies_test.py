"""Every third-party import is declared in requirements*.in, and every declaration is used.

A package that only arrives as another one's dependency (requests through
kubernetes, multidict through aiohttp) disappears the day that package stops
needing it, so what the code imports must be named where the locks are made
from. Imports are read with the AST (functions included, as the BUILD check
does) and mapped to distributions with importlib.metadata of this virtualenv.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path

from tools.bazel_check import buildgraph

# Declared for what they do without being imported by our code.
USED_WITHOUT_IMPORT = {
    buildgraph.normalize_dist("pytest-asyncio"): "pytest plugin (asyncio_mode in pytest.ini)",
    buildgraph.normalize_dist("pytest-timeout"): "pytest plugin (timeout in pytest.ini)",
    buildgraph.normalize_dist("ruff"): "a program: tools/lint_test.py runs it",
}
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_INCLUDE = re.compile(r"^\s*(?:-r|--requirement)[\s=]+(\S+)")


def repo_root() -> Path:
    """The checkout, also under `bazel test` (tags = ["local"]: runfiles link back to it)."""
    here = Path(os.path.realpath(__file__))
    return next(p for p in here.parents if (p / buildgraph.MODULE_FILE).is_file())


def declared_requirements(root: Path) -> dict[str, str]:
    """Normalised distribution → the .in file declaring it (requirements*.in and requirements/*.in, with -r)."""
    pending = sorted({*root.glob("requirements*.in"), *root.glob("requirements/*.in")})
    seen: set[Path] = set()
    declared: dict[str, str] = {}
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0]
            if include := _INCLUDE.match(line):
                pending.append((path.parent / include.group(1)).resolve())
            elif not line.strip().startswith("-") and (match := _REQUIREMENT.match(line)):
                declared.setdefault(buildgraph.normalize_dist(match.group(1)), path.relative_to(root).as_posix())
    return declared


def third_party_imports(root: Path) -> dict[str, list[str]]:
    """Top-level module → `path:line` of every import of it that is neither stdlib nor ours."""
    tree = buildgraph.Tree.scan(root)
    python_files = sorted(f for f in tree.files if f.endswith(".py"))
    ours = {f.split("/", 1)[0] for f in python_files if "/" in f} | {f[:-3] for f in python_files if "/" not in f}
    found: dict[str, list[str]] = defaultdict(list)
    for path in python_files:
        siblings = {Path(f).stem for f in python_files if buildgraph._parent(f) == buildgraph._parent(path)}
        for imported in buildgraph.python_imports(path, tree.read(path)):
            top = imported.top
            if top in buildgraph.STDLIB_MODULES or top in ours or top in siblings:
                continue
            if f"{path}:{imported.line}" not in found[top]:
                found[top].append(f"{path}:{imported.line}")
    return found


def test_every_third_party_import_is_declared() -> None:
    root = repo_root()
    declared = declared_requirements(root)
    index = buildgraph.DistributionIndex.from_environment()
    problems = []
    for module, places in sorted(third_party_imports(root).items()):
        dists = index.distributions(module)
        if not dists:
            problems.append(f"{places[0]}: imports {module}, which no installed distribution provides")
        elif not set(dists) & set(declared):
            where = ", ".join(places[:3]) + (f" and {len(places) - 3} more" if len(places) > 3 else "")
            problems.append(f"{where}: imports {module} from {' or '.join(dists)}, not declared in requirements/*.in")
    assert not problems, "\n".join(problems)


def test_every_declared_requirement_is_imported() -> None:
    root = repo_root()
    index = buildgraph.DistributionIndex.from_environment()
    imported = {dist for module in third_party_imports(root) for dist in index.distributions(module)}
    unused = sorted(
        f"{where}: {dist} is declared but nothing imports it"
        for dist, where in declared_requirements(root).items()
        if dist not in imported and dist not in USED_WITHOUT_IMPORT
    )
    assert not unused, "\n".join(unused)
