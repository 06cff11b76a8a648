"""The fixture runner behind `pipedreamer test`: node fixtures and the pipeline fixture, fetches answered from the fixture.

A fixture is `tests/fixtures/<node>.json` (or `pipeline.json`):
`{"input": …, "expected": …, "fetch": {"<service> <path>": <json body>}}`.
An unanswered fetch gets `{"mock": true, "service": …, "path": …}`.
Runs are hermetic: no secrets unless a secrets path is given, and then their
values are shown as *** in results, diffs and errors, as in logs. `pipedreamer
test` runs them under the permission lock (`lock_for_fixtures`), as the image does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import difflib
import io
import json
import math
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from engine import sandbox
from engine.compiler import CompileError
from engine.errors import PipedreamerError
from engine.context import Response
from engine.executor import node_policies
from engine.values import DEFAULT_MAX_OUTPUT, MAX_JSON_DEPTH, output_problem, too_deep, value_to_python
from engine.loader import LoadError
from engine.runtime import Engine
from engine.secrets import SecretsError
from engine.spec import WORKFLOW_FILE, SpecError
from proto.pipedreamer.v1 import execution_pb2

FIXTURES_DIR = Path("tests") / "fixtures"
PIPELINE = "pipeline"
# The diff when expected and actual differ only inside secret values, which are never shown.
SECRET_ONLY_DIFF = "expected and actual differ only in secret values (shown as ***)\n"


class FixtureError(PipedreamerError):
    """A fixture file or test target that cannot be used; the message names it."""


class NotAWorkflow(FixtureError):
    """A target that is a plain file (e.g. from `examples/*`): skipped, not failed."""


@dataclasses.dataclass(frozen=True)
class Fixture:
    name: str  # the node id, or "pipeline"
    file: Path
    input: Any
    expected: Any
    has_expected: bool
    fetch: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class FixtureResult:
    name: str
    file: str
    passed: bool
    expected: Any = None
    actual: Any = None
    diff: str = ""
    error: str = ""
    duration: float = 0.0
    logs: str = ""  # what the nodes logged while this fixture ran

    def to_dict(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it deep-copies `expected`/`actual` recursively, one frame per nesting level.
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}


@dataclasses.dataclass(frozen=True)
class WorkflowReport:
    """Every fixture result of one workflow directory, or why it could not run at all."""

    directory: str
    workflow: str = ""
    results: tuple[FixtureResult, ...] = ()
    untested: tuple[str, ...] = ()  # nodes without a fixture
    error: str = ""
    skipped: str = ""  # why the target was not a workflow at all

    @property
    def passed(self) -> bool:
        return not self.error and all(r.passed for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        data = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        data.update(results=[r.to_dict() for r in self.results], untested=list(self.untested), passed=self.passed)
        return data


class StubFetcher:
    """Answers `ctx.fetch` from a fixture's `fetch` map (`"<service> <path>"` → JSON body)."""

    def __init__(self, answers: Mapping[str, Any] | None = None):
        self.answers = dict(answers or {})
        self.calls: list[dict[str, Any]] = []

    async def fetch(self, service: str, path: str, **kwargs: Any) -> Response:
        method = str(kwargs.get("method", "GET")).upper()
        self.calls.append({"service": service, "path": path, "method": method})
        key = f"{service} {path}"
        if key in self.answers:
            body = self.answers[key]
        elif f"{service} {path.split('?', 1)[0]}" in self.answers:
            body = self.answers[f"{service} {path.split('?', 1)[0]}"]
        else:
            body = {"mock": True, "service": service, "path": path}
        data = json.dumps(body).encode()
        return Response(200, data, {"Content-Type": "application/json"}, url=f"stub://{service}{path}", reason="OK")


def resolve_target(target: str | Path) -> tuple[Path, str | None]:
    """`DIR` → (DIR, None); `DIR/<node>` → (DIR, node) when DIR has a workflow.yaml and no such subdirectory."""
    path = Path(target)
    if path.is_file() and path.name != WORKFLOW_FILE:
        raise NotAWorkflow(f"{target}: a file, not a workflow directory")
    if (path / WORKFLOW_FILE).is_file():
        return path, None
    if path.is_file() and path.name == WORKFLOW_FILE:
        return path.parent, None
    if path.name and (path.parent / WORKFLOW_FILE).is_file():
        return path.parent, path.name
    raise FixtureError(f"{target}: no {WORKFLOW_FILE} here; expected a workflow directory or DIR/<node>")


def load_fixture(file: Path, name: str) -> Fixture:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FixtureError(f"{file}: not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FixtureError(f"{file}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise FixtureError(f"{file}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    except RecursionError:
        # json.loads recurses once per nesting level; a deep file is invalid, not a crash.
        raise FixtureError(f"{file}: invalid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise FixtureError(f"{file}: expected an object {{\"input\": …, \"expected\": …}}, got {type(data).__name__}")
    for key in ("input", "expected"):
        if too_deep(data.get(key)):
            # As /run refuses such an input: no result could carry it.
            raise FixtureError(f"{file}: {key!r} is nested too deeply (more than {MAX_JSON_DEPTH} levels)")
    fetch = data.get("fetch") or {}
    if not isinstance(fetch, dict):
        raise FixtureError(f"{file}: \"fetch\" must map \"<service> <path>\" to a JSON body")
    return Fixture(
        name=name,
        file=file,
        input=data.get("input"),
        expected=data.get("expected"),
        has_expected="expected" in data,
        fetch=fetch,
    )


def discover(directory: Path, node_ids: tuple[str, ...], *, node: str | None = None, pipeline_only: bool = False) -> tuple[list[Path], list[str]]:
    """The fixture files to run (node fixtures in DAG order, then the pipeline) and the untested nodes."""
    folder = directory / FIXTURES_DIR
    if node is not None:
        return [folder / f"{node}.json"], []
    pipeline = folder / f"{PIPELINE}.json"
    if pipeline_only:
        if not pipeline.is_file():
            raise FixtureError(f"{pipeline}: not found (--pipeline needs it)")
        return [pipeline], []
    present = {p.stem: p for p in sorted(folder.glob("*.json"))} if folder.is_dir() else {}
    files = [present[n] for n in node_ids if n in present]
    # A fixture named after no node is a typo waiting to hide a missing test.
    files += [p for stem, p in present.items() if stem not in node_ids and stem != PIPELINE]
    if PIPELINE in present:
        files.append(present[PIPELINE])
    return files, [n for n in node_ids if n not in present]


def lock_for_fixtures(
    targets: Sequence[str | Path], policy: sandbox.PermissionPolicy, *, secrets_path: Path | None = None
) -> sandbox.LockReport:
    """Applies the permission lock for `pipedreamer test`, before any node module is imported:
    `policy`, plus the targets' workflow directories (and a --secrets path) readable.

    Irreversible for this process, as in the image: call it from a process of its own.
    """
    readable = []
    for target in targets:
        try:
            directory, _ = resolve_target(target)
        except FixtureError:
            continue  # reported as the target's own error when it runs
        readable.append(str(directory.absolute()))
    if secrets_path is not None:
        readable.append(str(Path(secrets_path).absolute()))
    return sandbox.apply_policy(policy, extra_read=readable)


async def run_workflow_fixtures(
    target: str | Path,
    *,
    pipeline_only: bool = False,
    secrets_path: Path | None = None,
) -> WorkflowReport:
    """Runs the fixtures of one target (`DIR` or `DIR/<node>`)."""
    try:
        directory, node = resolve_target(target)
    except NotAWorkflow as exc:
        return WorkflowReport(directory=str(target), skipped=str(exc))
    except FixtureError as exc:
        return WorkflowReport(directory=str(target), error=str(exc))
    logs = io.StringIO()
    try:
        engine = await Engine.start(
            directory,
            secrets_path=secrets_path,
            secrets_mount=None,
            secrets=None if secrets_path else {},
            log_stream=logs,
            log_level="debug",
        )
    except (SpecError, CompileError, LoadError, SecretsError) as exc:
        return WorkflowReport(directory=str(directory), error=str(exc))
    try:
        return await _run_all(engine, directory, node, pipeline_only, logs)
    finally:
        await engine.close()


async def _run_all(engine: Engine, directory: Path, node: str | None, pipeline_only: bool, logs: io.StringIO) -> WorkflowReport:
    name = f"{engine.spec.name} {engine.spec.version}"
    node_ids = engine.dag.order
    if node is not None and node not in node_ids:
        return WorkflowReport(str(directory), name, error=f"{directory}: no node {node!r} (nodes: {', '.join(node_ids)})")
    try:
        files, untested = discover(directory, node_ids, node=node, pipeline_only=pipeline_only)
    except FixtureError as exc:
        return WorkflowReport(str(directory), name, error=str(exc))
    results = []
    for file in files:
        logs.seek(0)
        logs.truncate()
        result = await run_fixture_file(engine, directory, file, node_ids)
        results.append(dataclasses.replace(result, logs=logs.getvalue()))
    return WorkflowReport(str(directory), name, tuple(results), tuple(untested))


async def run_fixture_file(engine: Engine, directory: Path, file: Path, node_ids: tuple[str, ...]) -> FixtureResult:
    shown = str(file.relative_to(directory)) if file.is_relative_to(directory) else str(file)
    name = file.stem
    try:
        fixture = load_fixture(file, name)
    except FixtureError as exc:
        return FixtureResult(name, shown, False, error=str(exc))
    if name != PIPELINE and name not in node_ids:
        return FixtureResult(name, shown, False, error=f"no node {name!r} in {WORKFLOW_FILE} (nodes: {', '.join(node_ids)})")
    started = time.perf_counter()
    try:
        if name == PIPELINE:
            actual, error = await _run_pipeline(engine, fixture)
        else:
            actual, error = await _run_node(engine, fixture)
    except RecursionError:
        # Input that json.loads still took, but too deep to check or to put in a result: this fixture fails, not the run.
        actual, error = None, "input or output nested too deeply to carry in a result"
    duration = time.perf_counter() - started
    # Verdicts compare what the node returned; everything stored or shown is redacted like logs and results.
    redact = engine.log_sink.redactor
    expected, shown_actual = redact.value(fixture.expected), redact.value(actual)
    if error:
        return FixtureResult(name, shown, False, expected, shown_actual, error=redact.text(error), duration=duration)
    # A pipeline's result is already redacted by the engine, so its expectation is compared redacted too.
    wanted = expected if name == PIPELINE else fixture.expected
    if fixture.has_expected and not json_equal(wanted, actual):
        diff = redact.text(diff_json(expected, shown_actual)) or SECRET_ONLY_DIFF
        return FixtureResult(name, shown, False, expected, shown_actual, diff, duration=duration)
    return FixtureResult(name, shown, True, expected, shown_actual, duration=duration)


async def _run_node(engine: Engine, fixture: Fixture) -> tuple[Any, str]:
    timeout = node_policies(engine.dag)[fixture.name].timeout
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            output = await engine.run_node(fixture.name, fixture.input, fetcher=StubFetcher(fixture.fetch))
    except Exception as exc:  # noqa: BLE001 - the node's own failure is the test result
        if deadline.expired():
            return None, f"timed out after {timeout:g} s"
        return None, engine.describe_error(exc)
    problem = output_problem(fixture.name, output, DEFAULT_MAX_OUTPUT)
    if problem:
        return None, problem
    return json.loads(json.dumps(output)), ""


async def _run_pipeline(engine: Engine, fixture: Fixture) -> tuple[Any, str]:
    result = await engine.run(fixture.input, trigger="test", fetcher=StubFetcher(fixture.fetch))
    if result.status != execution_pb2.RUN_STATUS_SUCCEEDED:
        return None, result.error or execution_pb2.RunStatus.Name(result.status)
    return value_to_python(result.output), ""


def json_equal(expected: Any, actual: Any) -> bool:
    """JSON equality: numbers by value (1 == 1.0), but booleans are not numbers."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(expected) is type(actual) and expected == actual
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        return expected == actual or (math.isnan(expected) and math.isnan(actual))
    if isinstance(expected, dict) and isinstance(actual, dict):
        return expected.keys() == actual.keys() and all(json_equal(v, actual[k]) for k, v in expected.items())
    if isinstance(expected, list) and isinstance(actual, list):
        return len(expected) == len(actual) and all(json_equal(e, a) for e, a in zip(expected, actual))
    return type(expected) is type(actual) and expected == actual


def diff_json(expected: Any, actual: Any) -> str:
    """A unified diff of the two values as pretty JSON (keys sorted)."""

    def lines(value: Any) -> list[str]:
        return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=repr) + "\n").splitlines(keepends=True)

    return "".join(difflib.unified_diff(lines(expected), lines(actual), "expected", "actual"))


@dataclasses.dataclass(frozen=True)
class FixtureRun:
    """The reports of every target of one `pipedreamer test`, and how long it took."""

    reports: tuple[WorkflowReport, ...]
    seconds: float

    @property
    def passed(self) -> int:
        return sum(1 for r in self.reports for f in r.results if f.passed)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.reports for f in r.results if not f.passed) + sum(1 for r in self.reports if r.error)

    @property
    def ok(self) -> bool:
        return all(r.passed for r in self.reports)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.ok,
            "summary": {"passed": self.passed, "failed": self.failed, "seconds": round(self.seconds, 3)},
            "workflows": [r.to_dict() for r in self.reports],
        }

    def render(self) -> str:
        """The text `pipedreamer test` prints: one line per fixture, diffs and logs of failures, a summary."""
        lines: list[str] = []
        for report in self.reports:
            if report.skipped:
                lines.append(f"{report.directory}: skipped ({report.skipped.split(': ', 1)[-1]})")
                continue
            lines.append(f"{report.directory}" + (f" ({report.workflow})" if report.workflow else ""))
            if report.error:
                # A spec report already starts each line with "error: " / "warning: ".
                error = report.error if report.error.startswith(("error: ", "warning: ")) else f"error: {report.error}"
                lines.append("  " + error.replace("\n", "\n  "))
            width = max((len(r.name) for r in report.results), default=0)
            for result in report.results:
                status = "PASS" if result.passed else "FAIL"
                lines.append(f"  {status}  {result.name:<{width}}  {result.file}  ({result.duration * 1000:.1f} ms)")
                if result.error:
                    lines.append("        " + result.error.replace("\n", "\n        "))
                if result.diff:
                    lines.extend("        " + line for line in result.diff.rstrip("\n").splitlines())
                if result.logs and not result.passed:
                    lines.append("        logs:")
                    lines.extend("          " + line for line in result.logs.rstrip("\n").splitlines())
            if report.untested and not report.error:
                lines.append(f"  note: no fixture for {', '.join(report.untested)}")
            if not report.results and not report.error:
                lines.append("  note: no fixtures in tests/fixtures/")
        summary = f"{self.passed} passed, {self.failed} failed in {self.seconds:.2f}s"
        lines.append(f"{'=' * 10} {summary} {'=' * 10}")
        return "\n".join(lines)


async def run_fixtures(
    targets: Sequence[str | Path], *, pipeline_only: bool = False, secrets_path: Path | None = None
) -> FixtureRun:
    """Runs the fixtures of each target (`DIR` or `DIR/<node>`) in turn."""
    started = time.perf_counter()
    reports = [await run_workflow_fixtures(t, pipeline_only=pipeline_only, secrets_path=secrets_path) for t in targets]
    return FixtureRun(tuple(reports), time.perf_counter() - started)
