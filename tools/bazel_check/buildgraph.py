"""What Bazel cannot check in our BUILD files: every ``.py`` file belongs to a target,
and each Python target's deps cover its imports.

Bazel itself (CI runs it: tools/bazel/run.sh) checks labels, loads,
MODULE.bazel and duplicate names, and visibility; visibility is checked here
too, so that the plain path (no Bazel) catches a dep another package does not
grant. It does not know which file Python imports:
a module in no target, or an import that works only because another target
happened to bring the module along, passes ``bazel test`` and breaks later.

BUILD and .bzl files are Starlark, a Python subset, so they are read with
:mod:`ast`; the few expressions our BUILD files use for ``srcs``, ``deps`` and
``main`` (literals, ``+``, ``glob``, ``select``, ``Label``) are evaluated
against the file tree. A macro (``pytest_test``, ``pipedreamer_workflow``) is
read from its .bzl: whether its ``srcs`` reach a ``py_*`` rule, and which deps
it adds. :func:`check_repo` reports every problem at once; each
:class:`Finding` prints as ``path/BUILD.bazel: target :name: problem [rule]``.

``ownership``
    Every ``.py`` file is in the ``srcs`` of exactly one target of its own
    package, and a directory with ``.py`` files has a BUILD file, unless it is
    inside a workflow package (``pipedreamer_workflow`` owns ``nodes/``).
``tests``
    ``*_test.py`` files are in test targets, and only there.
``imports`` / ``unused-dep``
    Every import of a Python target is stdlib, inside the target, or covered by
    a dep on the target owning the module (``@pip//<dist>`` for third-party
    code). Every dep is needed by an import, unless its line says ``# keep``.
    A source silences a deliberate exception with
    ``# buildcheck: ignore-import <module>``.
``visibility`` / ``testonly``
    A label in ``deps``, ``data``, ``srcs`` or ``tools`` (or one a macro adds)
    that names a target or source file of another package must be granted by
    that package: the target's ``visibility``, else the package's
    ``default_visibility`` (private when there is none); a source file's
    ``exports_files`` (public without a ``visibility``), else the package
    default, as Bazel 7 has it. Grants read: ``//visibility:public|private``,
    ``//pkg:__pkg__``, ``//pkg:__subpackages__`` and a ``package_group``'s
    ``packages``. A target that is not testonly (tests are) may not depend on a
    ``testonly`` one. Targets a macro makes (``:files`` of a workflow) are not
    known here: labels naming them are left to Bazel.
``static``
    A ``srcs``/``deps``/``main`` too dynamic to read, or a BUILD file that does
    not parse.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.metadata
import os
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

BUILD_FILE_NAMES = ("BUILD.bazel", "BUILD")
MODULE_FILE = "MODULE.bazel"
SKIPPED_DIR_NAMES = frozenset({"node_modules", "__pycache__"})
SKIPPED_DIR_PREFIXES = (".", "bazel-")
PYTHON_RULES = {"py_library": "library", "py_binary": "binary", "py_test": "test"}
#: The attributes the checks read; a target's other attributes are Bazel's business.
READ_ATTRS = ("srcs", "deps", "main", "outs", "data", "tools", "visibility")
#: The attributes whose labels must be visible to the target's package (and not testonly).
DEP_ATTRS = ("deps", "data", "srcs", "tools")
PUBLIC = "//visibility:public"
PRIVATE = "//visibility:private"
STDLIB_MODULES = frozenset(sys.stdlib_module_names) | {"__future__", "__main__"}
IGNORE_IMPORT_RE = re.compile(r"#\s*buildcheck:\s*ignore-import\s+([\w.,\s]+)")
KEEP_RE = re.compile(r"#\s*keep\b")


@dataclass(frozen=True, order=True)
class Finding:
    """One problem: where it is, which target (if any), which rule, what."""

    path: str
    target: str
    rule: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: target :{self.target}: " if self.target else f"{self.path}: "
        return f"{where}{self.message} [{self.rule}]"


@dataclass(frozen=True)
class Config:
    """The repository's deliberate exceptions (glob patterns, repo-relative)."""

    #: Generated Python files: owned by the rule that generates them, not by ``srcs``.
    generated_py: tuple[str, ...] = ("proto/pipedreamer/v1/*_pb2*.py",)
    test_file_pattern: str = "*_test.py"
    pip_hub: str = "pip"


@dataclass(frozen=True, order=True)
class Label:
    """A Bazel label; ``repo`` is empty for the main repository."""

    repo: str
    package: str
    name: str

    def __str__(self) -> str:
        return f"{'@' + self.repo if self.repo else ''}//{self.package}:{self.name}"

    def short(self, package: str) -> str:
        """The label as a BUILD file in `package` would write it."""
        if not self.repo and self.package == package:
            return f":{self.name}"
        if not self.repo and self.package.rsplit("/", 1)[-1] == self.name:
            return f"//{self.package}"
        return str(self)


def parse_label(text: str, package: str) -> Label:
    """Parses an absolute or package-relative label; raises ValueError if malformed."""
    repo, rest = "", text
    if text.startswith("@"):
        repo, sep, rest = text.lstrip("@").partition("//")
        if not sep:
            return Label(repo, "", repo)
        rest = "//" + rest
    if rest.startswith("//"):
        pkg, colon, name = rest[2:].partition(":")
        name = name if colon else pkg.rsplit("/", 1)[-1]
    else:
        pkg, name = package, rest.removeprefix(":")
    if not name or pkg.startswith("/") or pkg.endswith("/") or ":" in name:
        raise ValueError(f"malformed label {text!r}")
    return Label(repo, pkg, name)


def normalize_dist(name: str) -> str:
    """A distribution name as the pip hub spells it (``nats-py`` → ``nats_py``)."""
    return re.sub(r"[-_.]+", "_", name).lower()


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A regex for a Bazel glob pattern (``*``, ``?``, ``**`` for any directories)."""
    parts: list[str] = []
    segments = pattern.split("/")
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "**":
            parts.append("(?:[^/]+/)*" + ("[^/]+" if last else ""))
            continue
        regex = "".join("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c) for c in segment)
        parts.append(regex + ("" if last else "/"))
    return re.compile("".join(parts) + r"\Z")


def matches_any(patterns: Iterable[str], path: str) -> bool:
    """Whether `path` matches one of the glob `patterns`."""
    return any(glob_regex(pattern).match(path) for pattern in patterns)


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def _join(package: str, name: str) -> str:
    return f"{package}/{name}" if package else name


# --------------------------------------------------------------------------
# The file tree


@dataclass(frozen=True)
class Tree:
    """The source files the checker sees, as repo-relative POSIX paths."""

    root: Path
    files: frozenset[str]
    build_dirs: frozenset[str]

    @classmethod
    def scan(cls, root: Path) -> Tree:
        """Walks `root`, skipping hidden directories, node_modules, bazel-* and what
        .bazelignore lists (as Bazel does)."""
        ignored = _bazelignore(root)
        files: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(root):
            rel = Path(dirpath).relative_to(root).as_posix()
            prefix = "" if rel == "." else rel + "/"
            dirnames[:] = sorted(
                d
                for d in dirnames
                if d not in SKIPPED_DIR_NAMES and not d.startswith(SKIPPED_DIR_PREFIXES) and prefix + d not in ignored
            )
            files.update(prefix + name for name in filenames)
        build_dirs = {_parent(f) for f in files if f.rsplit("/", 1)[-1] in BUILD_FILE_NAMES}
        return cls(root, frozenset(files), frozenset(build_dirs))

    def package_of(self, path: str) -> str | None:
        """The nearest directory at or above `path`'s directory with a BUILD file."""
        directory: str | None = _parent(path)
        while directory is not None:
            if directory in self.build_dirs:
                return directory
            directory = None if directory == "" else _parent(directory)
        return None

    def build_file(self, package: str) -> str:
        for name in BUILD_FILE_NAMES:
            if _join(package, name) in self.files:
                return _join(package, name)
        return _join(package, BUILD_FILE_NAMES[0])

    def read(self, path: str) -> str:
        return (self.root / path).read_text(encoding="utf-8")


def _bazelignore(root: Path) -> frozenset[str]:
    path = root / ".bazelignore"
    if not path.is_file():
        return frozenset()
    lines = (line.split("#", 1)[0].strip().strip("/") for line in path.read_text().splitlines())
    return frozenset(line for line in lines if line)


# --------------------------------------------------------------------------
# Reading BUILD files


@dataclass(frozen=True)
class Item:
    """A string of an attribute (a label or a file), with the line it is on."""

    text: str
    line: int


class Unevaluable(Exception):
    """An expression beyond the little Starlark the checker reads."""


@dataclass(frozen=True)
class Macro:
    """What a macro from one of our .bzl files does with its `srcs` and `deps`."""

    kind: str  # "library" | "binary" | "test" (srcs reach that py_* rule) | "files"
    added_deps: tuple[str, ...] = ()
    #: Absolute labels in its body (and in the macros it calls): Bazel checks them
    #: against the package that calls the macro.
    labels: tuple[str, ...] = ()


@dataclass
class Target:
    """A rule or macro call in a BUILD file, with the attributes the checks read."""

    kind: str
    name: str
    package: str
    line: int
    attrs: dict[str, list[Item]] = field(default_factory=dict)
    macro: Macro | None = None
    testonly: bool = False

    @property
    def label(self) -> Label:
        return Label("", self.package, self.name)

    @property
    def category(self) -> str:
        """"library", "binary", "test", "files" (owns files, imports unchecked) or "other"."""
        if self.kind in PYTHON_RULES:
            return PYTHON_RULES[self.kind]
        return self.macro.kind if self.macro else "other"

    @property
    def is_test(self) -> bool:
        """A test rule (``*_test``, a macro around ``py_test``): testonly without saying so."""
        return self.kind.endswith("_test") or self.kind == "test_suite" or self.category == "test"

    @property
    def is_python(self) -> bool:
        return self.category in ("library", "binary", "test")

    def items(self, attr: str) -> list[Item]:
        return self.attrs.get(attr, [])

    def outs(self) -> list[str]:
        return [item.text for item in self.items("outs")]


@dataclass
class Package:
    path: str
    build_file: str
    targets: list[Target]
    problems: list[Finding]
    keep_lines: frozenset[int]
    #: package(default_visibility = ...); None when the BUILD file sets none (private).
    default_visibility: list[str] | None = None
    default_testonly: bool = False
    #: exports_files: file name → its visibility (None: public).
    exports: dict[str, list[str] | None] = field(default_factory=dict)
    #: package_group name → its `packages`.
    groups: dict[str, list[str]] = field(default_factory=dict)

    def rule(self, name: str) -> Target | None:
        return next((t for t in self.targets if t.name == name), None)

    def keeps(self, line: int) -> bool:
        return line in self.keep_lines


class _Evaluator:
    """Evaluates the expressions of one BUILD file that the checks read."""

    def __init__(self, tree: Tree, package: str, variables: Mapping[str, ast.expr]):
        self.tree, self.package, self.variables = tree, package, variables

    def items(self, node: ast.expr) -> list[Item]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return [Item(node.value, node.lineno)]
        if isinstance(node, (ast.List, ast.Tuple)):
            return [item for element in node.elts for item in self.items(element)]
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return self.items(node.left) + self.items(node.right)
        if isinstance(node, ast.Name) and node.id in self.variables:
            return self.items(self.variables[node.id])
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id == "glob":
                return self.glob(node)
            if node.func.id == "select" and node.args and isinstance(node.args[0], ast.Dict):
                return [item for value in node.args[0].values for item in self.items(value)]
            if node.func.id == "Label" and node.args:
                return self.items(node.args[0])
        raise Unevaluable(ast.unparse(node))

    def glob(self, call: ast.Call) -> list[Item]:
        include = [i.text for i in self.items(call.args[0])] if call.args else []
        exclude: list[str] = []
        for keyword in call.keywords:
            if keyword.arg == "include":
                include = [i.text for i in self.items(keyword.value)]
            elif keyword.arg == "exclude":
                exclude = [i.text for i in self.items(keyword.value)]
        prefix = self.package + "/" if self.package else ""
        found = []
        for path in sorted(self.tree.files):
            if not path.startswith(prefix):
                continue
            rel = path[len(prefix) :]
            if self.tree.package_of(path) != self.package:
                continue  # a glob stops at subpackages
            if matches_any(include, rel) and not matches_any(exclude, rel):
                found.append(Item(rel, call.lineno))
        return found


def read_package(tree: Tree, macros: MacroReader, package: str) -> Package:
    build_file = tree.build_file(package)
    text = tree.read(build_file)
    keep_lines = frozenset(n for n, line in enumerate(text.splitlines(), 1) if KEEP_RE.search(line))
    try:
        module = ast.parse(text, filename=build_file)
    except SyntaxError as error:
        finding = Finding(build_file, "", "static", f"syntax error: {error.msg} (line {error.lineno})")
        return Package(package, build_file, [], [finding], keep_lines)
    loads = _loads(module)
    variables = {
        target.id: stmt.value
        for stmt in module.body
        if isinstance(stmt, ast.Assign)
        for target in stmt.targets
        if isinstance(target, ast.Name)
    }
    evaluator = _Evaluator(tree, package, variables)
    result = Package(package, build_file, [], [], keep_lines)
    for stmt in module.body:
        call = stmt.value if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call) else None
        if call is None or not isinstance(call.func, ast.Name):
            continue
        keywords = {k.arg: k.value for k in call.keywords if k.arg}
        try:
            if _package_level(evaluator, call, keywords, result):
                continue
        except Unevaluable as error:
            result.problems.append(Finding(build_file, "", "static", f"{call.func.id}: cannot read {error}"))
            continue
        name = keywords.get("name")
        if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
            continue
        kind = call.func.id
        target = Target(kind, name.value, package, call.lineno, macro=macros.macro(loads.get(kind), package))
        target.testonly = _true(keywords.get("testonly"))
        for attr in READ_ATTRS:
            if attr in keywords:
                try:
                    target.attrs[attr] = evaluator.items(keywords[attr])
                except Unevaluable as error:
                    result.problems.append(Finding(build_file, target.name, "static", f"{attr}: cannot read {error}"))
        result.targets.append(target)
    return result


def _true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and bool(node.value)


def _package_level(evaluator: _Evaluator, call: ast.Call, keywords: Mapping[str, ast.expr], into: Package) -> bool:
    """Reads package(), exports_files() and package_group() into `into`; False for other calls."""
    def texts(node: ast.expr | None) -> list[str] | None:
        return None if node is None else [item.text for item in evaluator.items(node)]

    kind = call.func.id if isinstance(call.func, ast.Name) else ""
    if kind == "package":
        into.default_visibility = texts(keywords.get("default_visibility"))
        into.default_testonly = _true(keywords.get("default_testonly"))
    elif kind == "exports_files":
        files = texts(call.args[0] if call.args else keywords.get("srcs")) or []
        visibility = texts(call.args[1] if len(call.args) > 1 else keywords.get("visibility"))
        into.exports.update(dict.fromkeys(files, visibility))
    elif kind == "package_group":
        name = keywords.get("name")
        if isinstance(name, ast.Constant) and isinstance(name.value, str):
            into.groups[name.value] = texts(keywords.get("packages")) or []
    else:
        return False
    return True


def _loads(module: ast.Module) -> dict[str, tuple[str, str]]:
    """Local name → (.bzl label, symbol) of the top-level load() calls."""
    loads: dict[str, tuple[str, str]] = {}
    for stmt in module.body:
        call = stmt.value if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call) else None
        if not (call and isinstance(call.func, ast.Name) and call.func.id == "load" and call.args):
            continue
        bzl = call.args[0].value if isinstance(call.args[0], ast.Constant) else None
        for arg in call.args[1:]:
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                loads[arg.value] = (bzl, arg.value)
        for keyword in call.keywords:
            if keyword.arg and isinstance(keyword.value, ast.Constant):
                loads[keyword.arg] = (bzl, keyword.value.value)
    return loads


class MacroReader:
    """Reads macros of the repository's own .bzl files (external ones are rules)."""

    def __init__(self, tree: Tree):
        self.tree = tree
        self._cache: dict[tuple[str, str], Macro | None] = {}
        # `pipedreamer init` projects load the macro as @<main module>//builder:workflow.bzl.
        match = re.search(r'^module\(\s*name\s*=\s*"([^"]+)"', tree.read(MODULE_FILE), re.M) if MODULE_FILE in tree.files else None
        self.main_repos = {"", "@"} | ({match.group(1)} if match else set())

    def macro(self, loaded: tuple[str, str] | None, package: str) -> Macro | None:
        if not loaded or not loaded[0]:
            return None
        try:
            label = parse_label(loaded[0], package)
        except ValueError:
            return None
        if label.repo not in self.main_repos:
            return None
        key = (_join(label.package, label.name), loaded[1])
        if key not in self._cache:
            self._cache[key] = self._read(*key)
        return self._cache[key]

    def _read(self, path: str, symbol: str) -> Macro | None:
        if path not in self.tree.files:
            return None
        module = ast.parse(self.tree.read(path), filename=path)
        functions = {s.name: s for s in module.body if isinstance(s, ast.FunctionDef)}
        function = functions.get(symbol)
        if function is None:
            return None  # a rule(): its attributes are Bazel's to check
        loads = _loads(module)
        labels = tuple(dict.fromkeys(self._labels(path, functions, loads, function, {symbol})))
        python_rules = {local for local, (_bzl, name) in loads.items() if name in PYTHON_RULES}
        for call in (n for n in ast.walk(function) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)):
            if call.func.id not in python_rules:
                continue
            keywords = {k.arg: k.value for k in call.keywords if k.arg}
            if not _mentions(keywords.get("srcs"), "srcs"):
                continue
            return Macro(PYTHON_RULES[loads[call.func.id][1]], tuple(_added(keywords.get("deps"))), labels)
        return Macro("files", labels=labels)

    def _labels(
        self,
        path: str,
        functions: Mapping[str, ast.FunctionDef],
        loads: Mapping[str, tuple[str, str]],
        function: ast.FunctionDef,
        seen: set[str],
    ) -> list[str]:
        """Absolute label strings in `function`, and in the functions and macros it calls."""
        found = [
            n.value
            for n in ast.walk(function)
            if isinstance(n, ast.Constant)
            and isinstance(n.value, str)
            and n.value.startswith(("//", "@"))
            and not n.value.startswith("//visibility:")
        ]
        for call in (n for n in ast.walk(function) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)):
            name = call.func.id
            if name in functions and name not in seen:
                seen.add(name)
                found += self._labels(path, functions, loads, functions[name], seen)
            elif name in loads:
                called = self.macro(loads[name], self.tree.package_of(path) or "")
                found += called.labels if called else ()
        return found


def _mentions(node: ast.expr | None, name: str) -> bool:
    return node is not None and any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(node))


def _added(node: ast.expr | None) -> list[str]:
    """String literals in `deps = deps + [...]`."""
    if node is None:
        return []
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


# --------------------------------------------------------------------------
# Imports and distributions


@dataclass(frozen=True)
class Import:
    """One import: candidate module names, most specific first."""

    modules: tuple[str, ...]
    line: int

    @property
    def top(self) -> str:
        return self.modules[-1].split(".")[0]


def python_imports(path: str, text: str) -> tuple[Import, ...]:
    """Every import in a Python file (functions included), made absolute."""
    ignored = frozenset(
        name for m in IGNORE_IMPORT_RE.finditer(text) for name in re.split(r"[,\s]+", m.group(1).strip()) if name
    )
    imports: list[Import] = []
    for node in ast.walk(ast.parse(text, filename=path)):
        if isinstance(node, ast.Import):
            imports.extend(Import((alias.name,), node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute_module(node.module or "", node.level, path)
            if base:
                imports.extend(
                    Import((f"{base}.{a.name}", base) if a.name != "*" else (base,), node.lineno) for a in node.names
                )
    return tuple(
        i
        for i in imports
        if i.top != "__future__"
        and not any(m == name or m.startswith(name + ".") for m in i.modules for name in ignored)
    )


def _absolute_module(module: str, level: int, path: str) -> str:
    if level == 0:
        return module
    parts = path.split("/")[:-1]
    if level - 1 > len(parts):
        return ""
    parts = parts[: len(parts) - (level - 1)]
    return ".".join([*parts, module] if module else parts)


@dataclass(frozen=True)
class DistributionIndex:
    """Importable module name → normalised names of the distributions providing it."""

    modules: Mapping[str, tuple[str, ...]]

    def distributions(self, module: str) -> tuple[str, ...]:
        """The distributions behind `module`, by the longest known prefix."""
        parts = module.split(".")
        for size in range(len(parts), 0, -1):
            found = self.modules.get(".".join(parts[:size]))
            if found:
                return found
        return ()

    @classmethod
    def from_environment(cls) -> DistributionIndex:
        """Built from ``importlib.metadata.packages_distributions()`` of this interpreter;
        a namespace package (``google``) is split by the files each distribution installs."""
        top_level = importlib.metadata.packages_distributions()
        modules = {name: tuple(sorted({normalize_dist(d) for d in dists})) for name, dists in top_level.items()}
        for top, dists in top_level.items():
            if len(set(dists)) < 2:
                continue
            owners: dict[str, set[str]] = defaultdict(set)
            for dist in set(dists):
                for file in importlib.metadata.distribution(dist).files or ():
                    parts = PurePosixPath(str(file)).with_suffix("").parts
                    if len(parts) >= 2 and parts[0] == top:
                        for size in range(2, len(parts) + 1):
                            owners[".".join(parts[:size])].add(normalize_dist(dist))
            modules.update({module: tuple(sorted(names)) for module, names in owners.items()})
        for dist in importlib.metadata.distributions():
            if dist.files is None:  # no RECORD (Bazel's rules_python 0.22: one directory per wheel)
                for module in _modules_beside(Path(str(dist.locate_file("")))):
                    modules.setdefault(module, (normalize_dist(dist.metadata["Name"]),))
        return cls(modules)


def _modules_beside(site: Path) -> list[str]:
    """Top-level modules in a directory that holds one wheel's files."""
    if not site.is_dir() or len(list(site.glob("*.dist-info"))) != 1:
        return []
    names = []
    for entry in site.iterdir():
        if entry.name in ("__init__.py", "__pycache__") or entry.suffix in (".dist-info", ".data"):
            continue
        if entry.is_dir():
            names.append(entry.name)
        elif entry.suffix in (".py", ".so"):
            names.append(entry.name.split(".")[0])
    return names


# --------------------------------------------------------------------------
# The repository and the checks


@dataclass(frozen=True)
class Repo:
    tree: Tree
    config: Config
    packages: Mapping[str, Package]

    def source_files(self, target: Target) -> list[str]:
        """Repo-relative files in the target's ``srcs`` (a rule's ``outs`` expanded)."""
        files: list[str] = []
        for item in target.items("srcs"):
            try:
                label = parse_label(item.text, target.package)
            except ValueError:
                continue
            if label.repo:
                continue
            package = self.packages.get(label.package)
            rule = package.rule(label.name) if package else None
            if rule is not None and rule.outs():
                files.extend(_join(label.package, out) for out in rule.outs())
            else:
                files.append(_join(label.package, label.name))
        return files

    def owners(self) -> dict[str, list[Target]]:
        """Repo-relative file → the Python and workflow targets listing it in ``srcs``."""
        owners: dict[str, list[Target]] = defaultdict(list)
        for package in self.packages.values():
            for target in package.targets:
                if target.category != "other":
                    for path in dict.fromkeys(self.source_files(target)):
                        owners[path].append(target)
        return owners

    def python_files(self) -> list[str]:
        return sorted(f for f in self.tree.files if f.endswith(".py") and not matches_any(self.config.generated_py, f))

    def is_test_file(self, path: str) -> bool:
        return matches_any([self.config.test_file_pattern], path.rsplit("/", 1)[-1])

    def visibility_of(self, label: Label) -> tuple[list[str], str, bool] | None:
        """(visibility, where it comes from, testonly) of a main-repository label, or None when
        the label names no target or file this checker knows (a macro's target).

        Where: "rule" (its own visibility), "default" (the package's), "exported"
        (exports_files) or "file" (a source file not exported: the package default)."""
        package = self.packages[label.package]
        default = package.default_visibility if package.default_visibility is not None else [PRIVATE]
        rule = package.rule(label.name) or next((t for t in package.targets if label.name in t.outs()), None)
        if rule is not None:
            testonly = rule.testonly or rule.is_test or package.default_testonly
            if "visibility" in rule.attrs:
                return [item.text for item in rule.items("visibility")], "rule", testonly
            return default, "default", testonly
        path = _join(label.package, label.name)
        if path not in self.tree.files or self.tree.package_of(path) != label.package:
            return None
        if label.name in package.exports:
            return package.exports[label.name] or [PUBLIC], "exported", False
        return default, "file", False

    def grants(self, owner: str, visibility: Iterable[str], package: str) -> bool:
        """Whether `visibility` (of a target in package `owner`) lets `package` depend on it."""
        if owner == package:
            return True
        for text in visibility:
            try:
                label = parse_label(text, owner)
            except ValueError:
                continue
            if label.repo:
                continue
            if str(label) == PUBLIC:
                return True
            if label.name == "__pkg__" and label.package == package:
                return True
            if label.name == "__subpackages__" and _within(package, label.package):
                return True
            group = self.packages.get(label.package)
            specs = group.groups.get(label.name, []) if group else []
            if any(_in_package_spec(spec, package) for spec in specs):
                return True
        return False


def _within(package: str, base: str) -> bool:
    return base == "" or package == base or package.startswith(base + "/")


def _in_package_spec(spec: str, package: str) -> bool:
    """A package_group `packages` entry: "//pkg", "//pkg/...", "//...", "public" (no negations)."""
    if spec == "public":
        return True
    if not spec.startswith("//"):
        return False
    if spec == "//..." or spec.endswith("/..."):
        return _within(package, spec[2:].removesuffix("...").rstrip("/"))
    return spec[2:] == package


def load_repo(root: Path, config: Config = Config()) -> Repo:
    """Reads the tree and every BUILD file."""
    tree = Tree.scan(root)
    macros = MacroReader(tree)
    return Repo(tree, config, {pkg: read_package(tree, macros, pkg) for pkg in sorted(tree.build_dirs)})


def check_ownership(repo: Repo) -> Iterator[Finding]:
    """Every .py file is in exactly one target of its own package; test files in test targets."""
    owners = repo.owners()
    workflows = {p.path for p in repo.packages.values() if any(t.category == "files" for t in p.targets)}
    orphans = Counter(
        _parent(path)
        for path in repo.python_files()
        if _parent(path) not in repo.tree.build_dirs and repo.tree.package_of(path) not in workflows
    )
    for directory, count in sorted(orphans.items()):
        yield Finding(f"{directory or '.'}/", "", "ownership", f"directory has {count} .py file(s) but no BUILD.bazel")
    for path in repo.python_files():
        if _parent(path) in orphans:
            continue
        package = repo.tree.package_of(path) or ""
        build_file = repo.tree.build_file(package)
        found = owners.get(path, [])
        if not found:
            what = "a test file in no target: add a pytest_test" if repo.is_test_file(path) else "in no target's srcs"
            yield Finding(build_file, "", "tests" if repo.is_test_file(path) else "ownership", f"{path} is {what}")
        elif len(found) > 1:
            names = ", ".join(t.label.short(package) for t in found)
            yield Finding(build_file, "", "ownership", f"{path} is in the srcs of several targets: {names}")
        elif found[0].package != package:
            yield Finding(build_file, "", "ownership", f"{path} is listed by {found[0].label.short(package)}, not by its own package")
        for target in found:
            if repo.is_test_file(path) and target.category not in ("test", "files"):
                message = f"srcs: {path} is a test file in a {target.kind}: use pytest_test or py_test"
                yield Finding(repo.packages[target.package].build_file, target.name, "tests", message)


def check_imports(repo: Repo, dists: DistributionIndex) -> Iterator[Finding]:
    """Imports are covered by deps, and deps are used by imports (or marked ``# keep``)."""
    owners = repo.owners()
    known = repo.tree.files | {_join(p.path, out) for p in repo.packages.values() for t in p.targets for out in t.outs()}
    first_party = frozenset(f.split("/")[0] if "/" in f else f[:-3] for f in known if f.endswith(".py"))
    for package in repo.packages.values():
        for target in package.targets:
            if target.is_python:
                yield from _target_imports(repo, dists, owners, known, first_party, package, target)


def _dep_key(text: str, package: str, hub: str) -> Label:
    try:
        label = parse_label(text, package)
    except ValueError:
        return Label("", package, text)
    return Label(label.repo, label.package, label.package) if label.repo == hub else label


def _target_imports(
    repo: Repo,
    dists: DistributionIndex,
    owners: Mapping[str, list[Target]],
    known: frozenset[str],
    first_party: frozenset[str],
    package: Package,
    target: Target,
) -> Iterator[Finding]:
    hub = repo.config.pip_hub
    deps: dict[Label, Item | None] = {}
    for text in target.macro.added_deps if target.macro else ():
        deps.setdefault(_dep_key(text, target.package, hub), None)
    listed: dict[Label, str] = {}
    for text in target.macro.added_deps if target.macro else ():
        with contextlib.suppress(ValueError):
            listed[parse_label(text, target.package)] = f"{text} (added by {target.kind})"
    for item in target.items("deps"):
        deps[_dep_key(item.text, target.package, hub)] = item
        try:
            exact = parse_label(item.text, target.package)
        except ValueError:
            continue
        if exact in listed:  # Bazel refuses the whole package then
            message = f"deps: {item.text} is the same label as {listed[exact]}: list it once"
            yield Finding(package.build_file, target.name, "duplicate-dep", message)
        listed.setdefault(exact, item.text)
    used: set[Label] = set()
    complete = True
    for path in repo.source_files(target):
        if not path.endswith(".py"):
            continue
        if path not in repo.tree.files:
            complete = False  # generated and not on disk: its imports are unknown
            continue
        used |= _init_owners(owners, path, target)
        try:
            imports = python_imports(path, repo.tree.read(path))
        except (SyntaxError, UnicodeDecodeError) as error:
            yield Finding(package.build_file, target.name, "imports", f"{path}: cannot parse: {error}")
            continue
        for imported in imports:
            if imported.top in first_party:
                problem = _first_party(owners, known, target, imported, deps, used)
            elif imported.top in STDLIB_MODULES:
                problem = None
            else:
                problem = _third_party(dists, hub, target, imported, deps, used)
            if problem:
                yield Finding(package.build_file, target.name, "imports", f"{path}:{imported.line}: {problem}")
    if not complete:
        return
    for label, item in deps.items():
        if item is not None and label not in used and not package.keeps(item.line):
            message = f"deps: {item.text} is not imported by any source (add `# keep` if needed at run time)"
            yield Finding(package.build_file, target.name, "unused-dep", message)


def _first_party(
    owners: Mapping[str, list[Target]],
    known: frozenset[str],
    target: Target,
    imported: Import,
    deps: Mapping[Label, Item | None],
    used: set[Label],
) -> str | None:
    path = next(
        (c for m in imported.modules for c in (m.replace(".", "/") + ".py", m.replace(".", "/") + "/__init__.py") if c in known),
        None,
    )
    if path is None:
        return f"imports {imported.modules[-1]}: no such first-party module"
    labels = [t.label for t in owners.get(path, []) if t.is_python]
    if not labels or target.label in labels:
        return None  # an unowned file is the ownership check's finding
    used.update(_init_owners(owners, path, target))
    covered = [label for label in labels if label in deps]
    used.update(covered)
    if covered:
        return None
    wanted = " or ".join(f'"{label.short(target.package)}"' for label in labels)
    return f"imports {imported.modules[0]} ({path}): add {wanted} to deps"


def _third_party(
    dists: DistributionIndex,
    hub: str,
    target: Target,
    imported: Import,
    deps: Mapping[Label, Item | None],
    used: set[Label],
) -> str | None:
    names = dists.distributions(imported.modules[0])
    if not names:
        return f"imports {imported.modules[-1]}: not stdlib, first-party or installed"
    covered = [label for label in (Label(hub, d, d) for d in names) if label in deps]
    used.update(covered)
    if covered:
        return None
    wanted = " or ".join(f'"@{hub}//{d}"' for d in names)
    return f"imports {imported.modules[-1]}: add {wanted} to deps"


def _init_owners(owners: Mapping[str, list[Target]], path: str, target: Target) -> set[Label]:
    """Targets owning the ``__init__.py`` files above `path`: optional deps, never unused."""
    parts = path.split("/")[:-1]
    inits = ("/".join(parts[:size]) + "/__init__.py" for size in range(1, len(parts) + 1))
    return {t.label for init in inits for t in owners.get(init, []) if t.label != target.label}


def check_visibility(repo: Repo) -> Iterator[Finding]:
    """Labels of other packages are granted to the target's package; testonly stays with tests."""
    for package in repo.packages.values():
        for target in package.targets:
            uses = [(f"{attr}: {item.text}", item.text) for attr in DEP_ATTRS for item in target.items(attr)]
            uses += [(f"{text} (added by {target.kind})", text) for text in (target.macro.labels if target.macro else ())]
            testonly = target.testonly or target.is_test or package.default_testonly
            for what, text in uses:
                try:
                    label = parse_label(text, target.package)
                except ValueError:
                    continue
                if label.repo or label.package not in repo.packages:
                    continue
                found = repo.visibility_of(label)
                if found is None:
                    continue  # made by a macro, or missing: Bazel's to check
                visibility, source, dep_testonly = found
                if label.package != target.package and not repo.grants(label.package, visibility, target.package):
                    grant, name = f'"//{target.package}:__pkg__"', label.short(target.package)
                    shown = ", ".join(visibility)
                    if source == "rule":
                        why, fix = f"its visibility: {shown}", f"add {grant} to the visibility of {name}"
                    elif source == "default":
                        why, fix = f"default_visibility: {shown}", f"give {name} a visibility with {grant}"
                    elif source == "exported":
                        why, fix = f"exports_files visibility: {shown}", f"add {grant} to the exports_files visibility of {label.name}"
                    else:
                        why = f"a source file not in exports_files, default_visibility: {shown}"
                        fix = f"export {label.name} with exports_files(visibility = [{grant}])"
                    owner = repo.packages[label.package].build_file
                    message = f"{what} is not visible to //{target.package} ({why}): {fix} in {owner}"
                    yield Finding(package.build_file, target.name, "visibility", message)
                if dep_testonly and not testonly:
                    message = f"{what} is testonly and :{target.name} is not: mark it testonly = True or drop the dep"
                    yield Finding(package.build_file, target.name, "testonly", message)


def check_repo(root: Path, config: Config = Config(), dists: DistributionIndex | None = None) -> list[Finding]:
    """Every problem in the repository at `root`, sorted by path."""
    repo = load_repo(root, config)
    index = dists if dists is not None else DistributionIndex.from_environment()
    findings = [f for p in repo.packages.values() for f in p.problems]
    findings += check_ownership(repo)
    findings += check_imports(repo, index)
    findings += check_visibility(repo)
    return sorted(set(findings))


def format_report(findings: Iterable[Finding]) -> str:
    findings = list(findings)
    return f"{len(findings)} BUILD problem(s):\n" + "\n".join(map(str, findings))
