"""Imports node files by path: each must stay inside the workflow directory and define `async def run(ctx, input)`.

A load produces a `NodeModules` map; hot reload builds a new map and the
engine swaps the reference, so runs already in flight keep the map they
started with.
"""

from __future__ import annotations

import dataclasses
import importlib.machinery
import importlib.util
import inspect
import itertools
import sys
import traceback
import types
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping

from engine.errors import PipedreamerError
from proto.pipedreamer.v1 import workflow_pb2

NodeFunction = Callable[[Any, Any], Awaitable[Any]]

# Every load gets a fresh generation, so module names never collide across reloads.
_generations = itertools.count(1)
_MODULE_PREFIX = "pipedreamer_node"


@dataclasses.dataclass(frozen=True)
class LoadProblem:
    node_id: str
    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message} (node {self.node_id})"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class LoadError(PipedreamerError):
    """Node modules that cannot be used; `problems` lists every reason (file and line)."""

    def __init__(self, problems: list[LoadProblem]):
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = tuple(problems)  # type: ignore[assignment] - LoadProblems, each naming its node


@dataclasses.dataclass(frozen=True)
class NodeModules:
    """One consistent generation of loaded nodes: id → `run`, plus the files they came from."""

    functions: Mapping[str, NodeFunction]
    files: Mapping[str, Path]
    modules: Mapping[str, types.ModuleType]
    generation: int

    def __getitem__(self, node_id: str) -> NodeFunction:
        return self.functions[node_id]

    def discard(self) -> None:
        """Drops this generation's entries from sys.modules (functions stay usable)."""
        for module in self.modules.values():
            if sys.modules.get(module.__name__) is module:
                del sys.modules[module.__name__]


def resolve_node_path(directory: Path, relative: str) -> Path:
    """The real path of a node file; ValueError when it leaves `directory` (symlinks followed)."""
    root = directory.resolve()
    if Path(relative).is_absolute():
        raise ValueError(f"must be relative to the workflow directory, got {relative!r}")
    target = (root / relative).resolve()
    if not target.is_relative_to(root):
        raise ValueError(f"resolves outside the workflow directory ({target}); node files must live inside {root}")
    if not target.is_file():
        raise ValueError("file not found")
    return target


def load_nodes(spec: workflow_pb2.WorkflowSpec, directory: Path | str) -> NodeModules:
    """Imports every node of `spec`; raises LoadError listing every node that failed."""
    directory = Path(directory)
    generation = next(_generations)
    functions: dict[str, NodeFunction] = {}
    files: dict[str, Path] = {}
    modules: dict[str, types.ModuleType] = {}
    problems: list[LoadProblem] = []
    for node in spec.nodes:
        try:
            path = resolve_node_path(directory, node.path)
        except ValueError as exc:
            problems.append(LoadProblem(node.id, node.path, None, str(exc)))
            continue
        try:
            module = import_node(node.id, path, node.path, generation)
            modules[node.id] = module
            functions[node.id] = node_function(module, node.id, node.path)
        except LoadError as exc:
            problems.extend(exc.problems)
            continue
        files[node.id] = path
    if problems:
        NodeModules({}, {}, modules, generation).discard()
        raise LoadError(problems)
    return NodeModules(functions, files, modules, generation)


class _SourceLoader(importlib.machinery.SourceFileLoader):
    """Compiles the node's source on every load, never a cached .pyc: one saved in the
    same second with the same size as the edit would hide it from a hot reload."""

    def get_code(self, fullname: str) -> types.CodeType:
        return self.source_to_code(self.get_data(self.path), self.path)


def import_node(node_id: str, path: Path, display: str, generation: int) -> types.ModuleType:
    """Executes the file as a fresh module; errors carry the file and line."""
    name = f"{_MODULE_PREFIX}_g{generation}_{_identifier(node_id)}"
    module_spec = importlib.util.spec_from_file_location(name, path, loader=_SourceLoader(name, str(path)))
    if module_spec is None or module_spec.loader is None:
        raise LoadError([LoadProblem(node_id, display, None, "cannot be imported as a Python module")])
    module = importlib.util.module_from_spec(module_spec)
    # Registered while it runs: dataclasses, typing and pickle look modules up by name.
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        raise LoadError([LoadProblem(node_id, display, exc.lineno, f"SyntaxError: {exc.msg}")]) from None
    except BaseException as exc:  # user code may raise anything at import, even SystemExit
        sys.modules.pop(name, None)
        if isinstance(exc, (KeyboardInterrupt, GeneratorExit)):
            raise
        line = _line_in(exc, path)
        raise LoadError(
            [LoadProblem(node_id, display, line, f"import failed: {type(exc).__name__}: {exc}")]
        ) from None
    return module


def node_function(module: types.ModuleType, node_id: str, display: str) -> NodeFunction:
    """The module's `run`, which must be a coroutine function taking (ctx, input)."""
    run = getattr(module, "run", None)
    if run is None:
        raise LoadError([LoadProblem(node_id, display, None, "no module-level `async def run(ctx, input)`")])
    line = _definition_line(run)
    if not inspect.iscoroutinefunction(run):
        kind = "a plain function" if inspect.isfunction(run) else type(run).__name__
        raise LoadError(
            [LoadProblem(node_id, display, line, f"`run` must be `async def run(ctx, input)`, found {kind}")]
        )
    try:
        inspect.signature(run).bind(None, None)
    except TypeError:
        raise LoadError([LoadProblem(node_id, display, line, "`run` must accept two arguments (ctx, input)")]) from None
    except ValueError:
        pass  # no introspectable signature: let the call decide
    return run


def _identifier(node_id: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in node_id)


def _line_in(exc: BaseException, path: Path) -> int | None:
    """The innermost traceback line inside `path` (where the import went wrong)."""
    line = None
    target = str(path)
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == target:
            line = frame.lineno
    return line


def _definition_line(function: Any) -> int | None:
    code = getattr(function, "__code__", None)
    return code.co_firstlineno if code is not None else None
