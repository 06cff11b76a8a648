"""The one workflow.yaml parser: YAML in, `WorkflowSpec` protobuf out.

Every problem is collected (not just the first) and carries the file, the line
and the field path, so the CLI, the engine and the builder all report the same
thing the same way.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import pathlib
import re
from collections.abc import Iterable
from typing import Any

import yaml

from engine import cron
from engine.errors import PipedreamerError, Problem, reading_order
from engine.values import struct_to_python
from engine.yaml_values import PlainValues, YAMLValueError
from proto.pipedreamer.v1 import workflow_pb2

WORKFLOW_FILE = "workflow.yaml"
MAX_NAME_LENGTH = 63

_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_NODE_ID_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
_SEMVER_RE = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)(?:\.(0|[1-9]\d*))?"
    r"(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$"
)
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_NATS_SUBJECT_RE = re.compile(r"^[^\s.]+(\.[^\s.]+)*$")

_TOP_LEVEL_KEYS = ("name", "version", "description", "triggers", "config", "nodes", "edges")
_TRIGGER_TYPES = {
    "manual": workflow_pb2.Trigger.TYPE_MANUAL,
    "cron": workflow_pb2.Trigger.TYPE_CRON,
    "queue": workflow_pb2.Trigger.TYPE_QUEUE,
    "webhook": workflow_pb2.Trigger.TYPE_WEBHOOK,
}
# The field each trigger type requires.
_TRIGGER_REQUIRED = {"cron": "schedule", "queue": "subject", "webhook": "path"}
_TRIGGER_FIELDS = ("type", "name", "schedule", "timezone", "subject", "path", "signature", "durable", "max_deliver")
# Keys only one trigger type uses, besides _TRIGGER_REQUIRED's.
_TRIGGER_ONLY = {"timezone": "cron", "signature": "webhook", "durable": "queue", "max_deliver": "queue"}
_SIGNATURES = {
    "github": workflow_pb2.Trigger.SIGNATURE_GITHUB,
    "standard": workflow_pb2.Trigger.SIGNATURE_STANDARD,
    "none": workflow_pb2.Trigger.SIGNATURE_NONE,
}
DEFAULT_MAX_DELIVER = 3
MAX_MAX_DELIVER = 100
# A webhook path: plain segments (no `{}` route patterns, queries, dots-only segments).
_WEBHOOK_PATH_RE = re.compile(r"^(/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)+$")
# The engine's own routes: a webhook cannot take them over.
ENGINE_PATHS = ("/run", "/runs", "/healthz", "/readyz", "/metrics", "/triggers")
_NODE_KEYS = ("path", "timeout", "retries", "description")
_EDGE_KEYS = ("from", "to")


class SpecError(PipedreamerError):
    """A workflow file that cannot be used; `problems` lists every reason.

    The message is the report: one line per problem in reading order, each
    starting with its severity (``error: `` or ``warning: ``).
    """

    def __init__(self, problems: Iterable[Problem]):
        super().__init__(problems=problems)


@dataclasses.dataclass(frozen=True)
class LoadedSpec:
    spec: workflow_pb2.WorkflowSpec
    directory: pathlib.Path | None
    file: str
    warnings: tuple[Problem, ...] = ()


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string such as `500ms`, `30s`, `2m`, `1h`."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30, 500ms, 30s or 2m, got a boolean")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION_RE.match(value)
        if not match:
            raise ValueError(f"expected a duration such as 30, 500ms, 30s or 2m, got {value!r}")
        number, unit = float(match.group(1)), match.group(2) or "s"
        seconds = number * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]
    else:
        raise ValueError(f"expected a duration such as 30, 500ms, 30s or 2m, got {type(value).__name__}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"duration must be positive, got {value!r}")
    return seconds


def normalize_version(text: str) -> str:
    """`1.0` → `1.0.0`; raises ValueError for anything that is not semver."""
    match = _SEMVER_RE.match(text)
    if not match:
        raise ValueError(f"expected a semantic version such as 1.0.0, got {text!r}")
    if match.group(3) is None:
        major_minor = f"{match.group(1)}.{match.group(2)}.0"
        return major_minor + text[len(f"{match.group(1)}.{match.group(2)}") :]
    return text


def config_to_dict(config: workflow_pb2.WorkflowConfig) -> dict[str, Any]:
    """The workflow config as nodes see it (`ctx.config`): typed fields and extras merged."""
    merged = struct_to_python(config.extras)
    if config.HasField("timeout"):
        merged["timeout"] = config.timeout.ToTimedelta().total_seconds()
    if config.HasField("retries"):
        merged["retries"] = config.retries
    return merged


def load_spec(path: str | pathlib.Path, *, check_sources: bool = True) -> LoadedSpec:
    """Reads and validates `path` (a workflow directory or its workflow.yaml).

    Node files must exist inside the directory; with `check_sources` each is
    read (never executed) to confirm it defines a module-level `async def run`.
    """
    path = pathlib.Path(path)
    file = path / WORKFLOW_FILE if path.is_dir() else path
    display = str(file)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError([Problem(display, None, "", "file not found")]) from None
    except IsADirectoryError:
        raise SpecError([Problem(display, None, "", "is a directory, expected a workflow.yaml file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([Problem(display, None, "", f"cannot read: {exc}")]) from None
    return parse_spec(text, file=display, directory=file.parent, check_sources=check_sources)


def parse_spec(
    text: str,
    *,
    file: str = WORKFLOW_FILE,
    directory: pathlib.Path | None = None,
    check_sources: bool = False,
) -> LoadedSpec:
    """Parses workflow.yaml text. Without `directory`, node files are not looked at."""
    parser = _Parser(file, directory, check_sources)
    spec = parser.parse(text)
    errors = [p for p in parser.problems if p.severity == "error"]
    if errors:
        raise SpecError(errors + [p for p in parser.problems if p.severity == "warning"])
    warnings = reading_order(p for p in parser.problems if p.severity == "warning")
    return LoadedSpec(spec=spec, directory=directory, file=file, warnings=warnings)


def find_async_run(source: str, filename: str) -> str | None:
    """None when `source` defines a module-level `async def run`, else why not."""
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as exc:
        return f"syntax error at line {exc.lineno}: {exc.msg}"
    found = None
    for statement in tree.body:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)) and statement.name == "run":
            found = statement
    if found is None:
        return "no module-level `async def run(ctx, input)`"
    if not isinstance(found, ast.AsyncFunctionDef):
        return f"`run` at line {found.lineno} must be `async def run(ctx, input)`, found a plain `def`"
    positional = found.args.posonlyargs + found.args.args
    if len(positional) < 2 and found.args.vararg is None:
        return f"`run` at line {found.lineno} must accept (ctx, input)"
    return None


class _Parser:
    """Walks the composed YAML tree so every value keeps its line."""

    def __init__(self, file: str, directory: pathlib.Path | None, check_sources: bool):
        self.file = file
        self.directory = directory
        self.check_sources = check_sources
        self.problems: list[Problem] = []
        # One budget for the whole document: aliases anywhere count against it.
        self._values = PlainValues()

    # -- reporting -------------------------------------------------------

    def error(self, node: yaml.Node | None, field: str, message: str) -> None:
        self.problems.append(Problem(self.file, _line(node), field, message))

    def warn(self, node: yaml.Node | None, field: str, message: str) -> None:
        self.problems.append(Problem(self.file, _line(node), field, message, "warning"))

    # -- YAML plumbing ---------------------------------------------------

    def parse(self, text: str) -> workflow_pb2.WorkflowSpec:
        spec = workflow_pb2.WorkflowSpec()
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark else None
            what = exc.problem or exc.context or "invalid YAML"
            self.problems.append(Problem(self.file, line, "", f"YAML syntax error: {what}"))
            return spec
        except yaml.YAMLError as exc:
            self.problems.append(Problem(self.file, None, "", f"YAML error: {exc}"))
            return spec
        except RecursionError:
            self.problems.append(Problem(self.file, None, "", "YAML nested too deeply"))
            return spec
        if root is None:
            self.error(None, "", "file is empty; expected a mapping with name, version and nodes")
            return spec
        top = self.mapping(root, "", "the workflow (a mapping with name, version and nodes)")
        if top is None:
            return spec
        for key, (key_node, _) in top.items():
            if key not in _TOP_LEVEL_KEYS:
                self.warn(key_node, key, f"unknown key (expected one of: {', '.join(_TOP_LEVEL_KEYS)})")

        self.parse_name(spec, top)
        self.parse_version(spec, top)
        self.parse_triggers(spec, top.get("triggers"))
        self.parse_config(spec, top.get("config"))
        node_lines = self.parse_nodes(spec, top.get("nodes"), root)
        self.parse_edges(spec, top.get("edges"), node_lines)
        return spec

    def mapping(
        self, node: yaml.Node, field: str, expected: str
    ) -> dict[str, tuple[yaml.Node, yaml.Node]] | None:
        """A YAML mapping as {key: (key_node, value_node)}; reports duplicates."""
        if not isinstance(node, yaml.MappingNode):
            self.error(node, field, f"expected {expected}, got {_kind(node)}")
            return None
        result: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self.error(key_node, field, f"keys must be plain strings, got {_kind(key_node)}")
                continue
            key = key_node.value
            if key == "<<" and key_node.tag == "tag:yaml.org,2002:merge":
                self.error(key_node, field, "YAML merge keys (<<) are not supported; write the keys out")
                continue
            child = f"{field}.{key}" if field else key
            if key in result:
                first = _line(result[key][0])
                self.error(key_node, child, f"duplicate key (first defined at line {first})")
                continue
            result[key] = (key_node, value_node)
        return result

    def plain(self, node: yaml.Node, field: str) -> Any:
        """A YAML value as plain Python (JSON-compatible), or raises YAMLValueError."""
        return self._values.value(node, field)

    def scalar(self, node: yaml.Node, field: str, kinds: tuple[type, ...], expected: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            self.error(node, field, f"expected {expected}, got {_kind(node)}")
            return None
        try:
            value = self.plain(node, field)
        except YAMLValueError as exc:
            self.error(node, exc.field, exc.message)
            return None
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            self.error(node, field, f"expected {expected}, got {_describe(value)}")
            return None
        return value

    # -- sections ----------------------------------------------------------

    def parse_name(self, spec: workflow_pb2.WorkflowSpec, top: dict) -> None:
        if "name" not in top:
            self.error(None, "name", "required: a kebab-case name such as my-workflow")
            return
        node = top["name"][1]
        name = self.scalar(node, "name", (str,), "a kebab-case string")
        if name is None:
            return
        if len(name) > MAX_NAME_LENGTH:
            self.error(node, "name", f"{name!r} is {len(name)} characters; at most {MAX_NAME_LENGTH} allowed")
        elif not _NAME_RE.match(name):
            self.error(
                node,
                "name",
                f"{name!r} is not kebab-case: use lowercase letters, digits and '-', "
                "starting with a letter and not ending with '-' (it names Kubernetes objects)",
            )
        spec.name = name

    def parse_version(self, spec: workflow_pb2.WorkflowSpec, top: dict) -> None:
        if "version" not in top:
            self.error(None, "version", "required: a semantic version such as 1.0.0")
            return
        node = top["version"][1]
        if not isinstance(node, yaml.ScalarNode) or not node.value:
            self.error(node, "version", f"expected a semantic version such as 1.0.0, got {_kind(node)}")
            return
        # The raw text: YAML would turn 1.0 into a float and 1.10 into 1.1.
        try:
            spec.version = normalize_version(str(node.value))
        except ValueError as exc:
            self.error(node, "version", str(exc))

    def parse_triggers(self, spec: workflow_pb2.WorkflowSpec, entry: tuple | None) -> None:
        if entry is None:
            return
        node = entry[1]
        if _is_null(node):
            return
        if not isinstance(node, yaml.SequenceNode):
            self.error(node, "triggers", f"expected a list of triggers, got {_kind(node)}")
            return
        names: dict[str, int | None] = {}
        webhook_paths: dict[str, int | None] = {}
        for index, item in enumerate(node.value):
            field = f"triggers[{index}]"
            fields = self.mapping(item, field, "a trigger mapping with a type")
            if fields is None:
                continue
            trigger = workflow_pb2.Trigger()
            type_name = None
            if "type" not in fields:
                self.error(item, f"{field}.type", f"required: one of {', '.join(_TRIGGER_TYPES)}")
            else:
                type_node = fields["type"][1]
                type_name = self.scalar(type_node, f"{field}.type", (str,), "a trigger type")
                if type_name is not None and type_name not in _TRIGGER_TYPES:
                    self.error(
                        type_node,
                        f"{field}.type",
                        f"unknown trigger type {type_name!r} (expected one of: {', '.join(_TRIGGER_TYPES)})",
                    )
                    type_name = None
                if type_name is not None:
                    trigger.type = _TRIGGER_TYPES[type_name]
            for key, (key_node, value_node) in fields.items():
                if key not in _TRIGGER_FIELDS:
                    self.warn(key_node, f"{field}.{key}", f"unknown key (expected one of: {', '.join(_TRIGGER_FIELDS)})")
                    continue
                if key == "type":
                    continue
                only = _TRIGGER_ONLY.get(key)
                if type_name and only and only != type_name:
                    self.warn(key_node, f"{field}.{key}", f"ignored for a {type_name} trigger")
                    continue
                if type_name and key in _TRIGGER_REQUIRED.values() and _TRIGGER_REQUIRED.get(type_name) != key:
                    self.warn(key_node, f"{field}.{key}", f"ignored for a {type_name} trigger")
                    continue
                if key in ("signature", "durable", "max_deliver"):
                    self.trigger_option(trigger, key, value_node, f"{field}.{key}")
                    continue
                value = self.scalar(value_node, f"{field}.{key}", (str,), "a string")
                if value is None:
                    continue
                if not value.strip():
                    self.error(value_node, f"{field}.{key}", "must not be empty")
                    continue
                setattr(trigger, key, value)
                if key == "name":
                    if value in names:
                        self.error(value_node, f"{field}.name", f"duplicate trigger name {value!r} (first at line {names[value]})")
                    names[value] = _line(value_node)
            if type_name == "webhook":
                self.check_webhook(trigger, item, fields, field, names, webhook_paths)
            elif type_name == "queue" and trigger.max_deliver and not trigger.durable:
                self.warn(fields["max_deliver"][0], f"{field}.max_deliver", "ignored without durable: true (core NATS never redelivers)")
            required = _TRIGGER_REQUIRED.get(type_name or "")
            if required and not getattr(trigger, required):
                if required not in fields:
                    self.error(item, f"{field}.{required}", f"required for a {type_name} trigger")
            elif type_name == "cron" and trigger.schedule:
                # It goes to the CronJob as written: only what the API server takes passes.
                problem = cron.schedule_problem(trigger.schedule)
                if problem:
                    self.error(fields["schedule"][1], f"{field}.schedule", problem)
                zone_problem = trigger.timezone and cron.time_zone_problem(trigger.timezone)
                if zone_problem:
                    self.error(fields["timezone"][1], f"{field}.timezone", zone_problem)
            elif type_name == "queue" and trigger.subject and not _NATS_SUBJECT_RE.match(trigger.subject):
                self.error(fields["subject"][1], f"{field}.subject", f"invalid NATS subject {trigger.subject!r}")
            spec.triggers.append(trigger)

    def trigger_option(self, trigger: workflow_pb2.Trigger, key: str, node: yaml.Node, field: str) -> None:
        """`signature` (webhook), `durable` and `max_deliver` (queue): the trigger fields that are not free text."""
        if key == "signature":
            value = self.scalar(node, field, (str,), f"one of {', '.join(_SIGNATURES)}")
            if value is not None and value not in _SIGNATURES:
                self.error(node, field, f"unknown signature scheme {value!r} (expected one of: {', '.join(_SIGNATURES)})")
            elif value is not None:
                trigger.signature = _SIGNATURES[value]
        elif key == "durable":
            value = self.scalar(node, field, (bool,), "true or false")
            if value is not None:
                trigger.durable = value
        else:
            value = self.scalar(node, field, (int,), f"a whole number of deliveries (1 to {MAX_MAX_DELIVER})")
            if value is not None and not 1 <= value <= MAX_MAX_DELIVER:
                self.error(node, field, f"expected 1 to {MAX_MAX_DELIVER} deliveries, got {value}")
            elif value is not None:
                trigger.max_deliver = value

    def check_webhook(
        self,
        trigger: workflow_pb2.Trigger,
        item: yaml.Node,
        fields: dict,
        field: str,
        names: dict[str, int | None],
        paths: dict[str, int | None],
    ) -> None:
        """A webhook's path is a plain route of its own; its name (default: the path's last
        segment) names its key, `secrets.webhooks.<name>`; `signature` defaults to github."""
        path = trigger.path
        if not path:
            return
        path_node = fields["path"][1]
        if not path.startswith("/"):
            self.error(path_node, f"{field}.path", f"must start with '/', got {path!r}")
            return
        if not _WEBHOOK_PATH_RE.match(path):
            self.error(
                path_node, f"{field}.path",
                f"{path!r} is not a plain URL path: use segments of letters, digits and -._~ "
                "(no query, no {…} patterns, no trailing /)",
            )  # fmt: skip
            return
        if path in ENGINE_PATHS or path.startswith("/runs/"):
            self.error(path_node, f"{field}.path", f"{path} is one of the engine's own routes ({', '.join(ENGINE_PATHS)})")
            return
        if path in paths:
            self.error(path_node, f"{field}.path", f"duplicate webhook path {path} (first at line {paths[path]})")
            return
        paths[path] = _line(path_node)
        if not trigger.name:
            trigger.name = path.rsplit("/", 1)[-1]
            if trigger.name in names:
                self.error(
                    path_node, f"{field}.name",
                    f"the webhook's name defaults to its path's last segment, {trigger.name!r}, which another "
                    f"trigger has (line {names[trigger.name]}): give it a name",
                )  # fmt: skip
            names[trigger.name] = _line(path_node)
        if trigger.signature == workflow_pb2.Trigger.SIGNATURE_UNSPECIFIED:
            trigger.signature = workflow_pb2.Trigger.SIGNATURE_GITHUB
        if trigger.signature == workflow_pb2.Trigger.SIGNATURE_NONE:
            self.warn(
                fields["signature"][1], f"{field}.signature",
                f"none: {path} runs the workflow for anyone who can reach it, unsigned; "
                "use github or standard with a key in secrets.webhooks",
            )  # fmt: skip

    def parse_config(self, spec: workflow_pb2.WorkflowSpec, entry: tuple | None) -> None:
        if entry is None or _is_null(entry[1]):
            return
        fields = self.mapping(entry[1], "config", "a mapping")
        if fields is None:
            return
        for key, (_, value_node) in fields.items():
            field = f"config.{key}"
            if key == "timeout":
                seconds = self.duration(value_node, field)
                if seconds is not None:
                    spec.config.timeout.FromNanoseconds(round(seconds * 1e9))
            elif key == "retries":
                retries = self.retries(value_node, field)
                if retries is not None:
                    spec.config.retries = retries
            else:
                try:
                    value = self.plain(value_node, field)
                except YAMLValueError as exc:
                    self.error(value_node, exc.field, exc.message)
                    continue
                spec.config.extras.update({key: value})

    def duration(self, node: yaml.Node, field: str) -> float | None:
        value = self.scalar(node, field, (int, float, str), "a duration such as 30, 500ms, 30s or 2m")
        if value is None:
            return None
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.error(node, field, str(exc))
            return None

    def retries(self, node: yaml.Node, field: str) -> int | None:
        value = self.scalar(node, field, (int,), "a whole number of extra attempts (0 or more)")
        if value is None:
            return None
        if value < 0 or value > 100:
            self.error(node, field, f"expected 0 to 100 extra attempts, got {value}")
            return None
        return value

    def parse_nodes(self, spec: workflow_pb2.WorkflowSpec, entry: tuple | None, root: yaml.Node) -> dict[str, int | None]:
        if entry is None:
            self.error(root, "nodes", "required: a mapping of node id → {path: nodes/<id>.py}")
            return {}
        fields = self.mapping(entry[1], "nodes", "a mapping of node id → {path: ...}")
        if fields is None:
            return {}
        if not fields:
            self.error(entry[1], "nodes", "at least one node is required")
            return {}
        lines: dict[str, int | None] = {}
        for node_id, (key_node, value_node) in fields.items():
            field = f"nodes.{node_id}"
            lines[node_id] = _line(key_node)
            if not _NODE_ID_RE.match(node_id) or len(node_id) > MAX_NAME_LENGTH:
                self.error(
                    key_node,
                    field,
                    f"invalid node id {node_id!r}: use letters, digits, '-' and '_', starting with a letter (at most 63)",
                )
            node_spec = workflow_pb2.NodeSpec(id=node_id)
            node_fields = self.mapping(value_node, field, "a mapping with a path")
            if node_fields is None:
                continue
            for key, (k_node, _) in node_fields.items():
                if key not in _NODE_KEYS:
                    self.warn(k_node, f"{field}.{key}", f"unknown key (expected one of: {', '.join(_NODE_KEYS)})")
            if "path" not in node_fields:
                self.error(value_node, f"{field}.path", "required: the node's Python file, e.g. nodes/<id>.py")
            else:
                path_node = node_fields["path"][1]
                path = self.scalar(path_node, f"{field}.path", (str,), "a relative path to a .py file")
                if path is not None:
                    node_spec.path = path
                    self.check_node_path(path_node, f"{field}.path", path)
            if "timeout" in node_fields:
                seconds = self.duration(node_fields["timeout"][1], f"{field}.timeout")
                if seconds is not None:
                    node_spec.timeout.FromNanoseconds(round(seconds * 1e9))
            if "retries" in node_fields:
                retries = self.retries(node_fields["retries"][1], f"{field}.retries")
                if retries is not None:
                    node_spec.retries = retries
            spec.nodes.append(node_spec)
        return lines

    def check_node_path(self, node: yaml.Node, field: str, path: str) -> None:
        relative = pathlib.PurePosixPath(path)
        if relative.is_absolute() or ".." in relative.parts:
            self.error(node, field, f"must be a path inside the workflow directory, got {path!r}")
            return
        if not path.endswith(".py"):
            self.error(node, field, f"expected a Python file ending in .py, got {path!r}")
            return
        if self.directory is None:
            return
        root = self.directory.resolve()
        target = (self.directory / relative).resolve()
        if not target.is_relative_to(root):
            self.error(node, field, f"resolves outside the workflow directory (symlink?): {path}")
            return
        if not target.is_file():
            self.error(node, field, f"file not found: {relative}")
            return
        if self.check_sources:
            try:
                source = target.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                self.error(node, field, f"cannot read {relative}: {exc}")
                return
            reason = find_async_run(source, str(relative))
            if reason:
                self.error(node, field, f"{relative}: {reason}")

    def parse_edges(self, spec: workflow_pb2.WorkflowSpec, entry: tuple | None, node_lines: dict[str, int | None]) -> None:
        if entry is None or _is_null(entry[1]):
            return
        node = entry[1]
        if not isinstance(node, yaml.SequenceNode):
            self.error(node, "edges", f"expected a list of {{from: <node>, to: <node>}}, got {_kind(node)}")
            return
        seen: dict[tuple[str, str], int | None] = {}
        edges_ok = True
        for index, item in enumerate(node.value):
            field = f"edges[{index}]"
            fields = self.mapping(item, field, "a mapping {from: <node>, to: <node>}")
            if fields is None:
                edges_ok = False
                continue
            for key, (k_node, _) in fields.items():
                if key not in _EDGE_KEYS:
                    self.warn(k_node, f"{field}.{key}", "unknown key (expected from and to)")
            ends = []
            for key in _EDGE_KEYS:
                if key not in fields:
                    self.error(item, f"{field}.{key}", "required: a node id")
                    continue
                value_node = fields[key][1]
                value = self.scalar(value_node, f"{field}.{key}", (str,), "a node id")
                if value is None:
                    continue
                if node_lines and value not in node_lines:
                    self.error(value_node, f"{field}.{key}", f"unknown node {value!r} (defined: {', '.join(sorted(node_lines))})")
                    continue
                ends.append(value)
            if len(ends) != 2:
                edges_ok = False
                continue
            source, target = ends
            if source == target:
                self.error(item, field, f"self-loop: {source} → {source}")
                edges_ok = False
                continue
            if (source, target) in seen:
                self.error(item, field, f"duplicate edge {source} → {target} (first at line {seen[(source, target)]})")
                continue
            seen[(source, target)] = _line(item)
            spec.edges.append(workflow_pb2.Edge(source=source, target=target))
        if edges_ok and node_lines:
            from engine.compiler import find_cycle

            cycle = find_cycle([n.id for n in spec.nodes], [(e.source, e.target) for e in spec.edges])
            if cycle:
                self.error(node, "edges", "cycle: " + " → ".join(cycle + [cycle[0]]))


def _line(node: yaml.Node | None) -> int | None:
    return node.start_mark.line + 1 if node is not None else None


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if _is_null(node):
        return "nothing (null)"
    try:
        return _describe(yaml.SafeLoader("").construct_object(node))
    except (yaml.YAMLError, ValueError, TypeError):
        return "an invalid value"


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    return f"a {type(value).__name__}"

