"""Tests for the workflow.yaml parser: valid specs, every kind of bad input, fuzzing."""

from __future__ import annotations

import pathlib
import textwrap

import hypothesis
import pytest
import yaml
from hypothesis import strategies as st

from engine import spec as spec_mod
from engine.spec import SpecError, load_spec, parse_duration, parse_spec
from proto.pipedreamer.v1 import workflow_pb2

VALID = """\
name: github-digest
version: "1.0"
triggers:
  - type: manual
  - type: cron
    name: daily
    schedule: "0 9 * * *"
  - type: queue
    subject: digests.requests
  - type: webhook
    path: /hooks/github
config:
  timeout: 10s
  retries: 2
  nats_url: nats://nats:4222
  services:
    github: {base_url: "http://127.0.0.1:9999"}
nodes:
  fetch:
    path: nodes/fetch.py
    timeout: 500ms
    retries: 1
  summarize:
    path: ./nodes/summarize.py
edges:
  - from: fetch
    to: summarize
"""


def errors_of(text: str, **kwargs) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec(textwrap.dedent(text), **kwargs)
    return [str(p) for p in info.value.problems if p.severity == "error"]


def test_valid_spec_becomes_protobuf():
    loaded = parse_spec(VALID)
    spec = loaded.spec
    assert spec.name == "github-digest"
    assert spec.version == "1.0.0"
    assert [t.type for t in spec.triggers] == [
        workflow_pb2.Trigger.TYPE_MANUAL,
        workflow_pb2.Trigger.TYPE_CRON,
        workflow_pb2.Trigger.TYPE_QUEUE,
        workflow_pb2.Trigger.TYPE_WEBHOOK,
    ]
    assert spec.triggers[1].name == "daily" and spec.triggers[1].schedule == "0 9 * * *"
    assert spec.config.timeout.ToTimedelta().total_seconds() == 10
    assert spec.config.retries == 2
    assert [n.id for n in spec.nodes] == ["fetch", "summarize"]
    assert spec.nodes[0].timeout.ToTimedelta().total_seconds() == 0.5
    assert spec.nodes[0].retries == 1 and not spec.nodes[1].HasField("retries")
    assert [(e.source, e.target) for e in spec.edges] == [("fetch", "summarize")]
    assert loaded.warnings == ()


def test_config_extras_are_preserved_with_their_types():
    config = spec_mod.config_to_dict(parse_spec(VALID).spec.config)
    assert config == {
        "timeout": 10.0,
        "retries": 2,
        "nats_url": "nats://nats:4222",
        "services": {"github": {"base_url": "http://127.0.0.1:9999"}},
    }


@pytest.mark.parametrize(
    "raw,expected",
    [("1.0", "1.0.0"), ("1.10", "1.10.0"), ("2.3.4", "2.3.4"), ("1.0.0-rc.1+build.5", "1.0.0-rc.1+build.5"), ("1.2-beta", "1.2.0-beta")],
)
def test_versions_are_read_from_the_raw_text(raw, expected):
    text = VALID.replace('version: "1.0"', f"version: {raw}")
    assert parse_spec(text).spec.version == expected


@pytest.mark.parametrize("raw", ["1", "v1.0", "01.2.3", "1.2.3.4", "latest", "[1]"])
def test_bad_versions_are_rejected(raw):
    text = VALID.replace('version: "1.0"', f"version: {raw}")
    assert any("version" in e for e in errors_of(text))


@pytest.mark.parametrize(
    "name,why",
    [
        ("Github", "kebab-case"),
        ("my_flow", "kebab-case"),
        ("-flow", "kebab-case"),
        ("flow-", "kebab-case"),
        ("9flow", "kebab-case"),
        ("a" * 64, "at most 63"),
    ],
)
def test_names_must_be_dns_labels(name, why):
    text = VALID.replace("name: github-digest", f"name: {name}")
    (error,) = errors_of(text)
    assert error.startswith("workflow.yaml:1: name:") and why in error


def test_every_error_is_reported_at_once_with_line_and_field():
    errors = errors_of(
        """\
        name: Bad_Name
        version: one
        triggers:
          - type: cron
            schedule: "61 * * * *"
          - type: queue
          - type: carrier-pigeon
        config:
          timeout: soon
          retries: -1
        nodes:
          a: {path: nodes/a.py, timeout: 0}
          b: {path: /etc/passwd}
          c: {path: nodes/c.txt}
        edges:
          - {from: a, to: zzz}
          - {from: b, to: b}
        """
    )
    assert errors == [
        "workflow.yaml:1: name: 'Bad_Name' is not kebab-case: use lowercase letters, digits and '-', "
        "starting with a letter and not ending with '-' (it names Kubernetes objects)",
        "workflow.yaml:2: version: expected a semantic version such as 1.0.0, got 'one'",
        "workflow.yaml:5: triggers[0].schedule: invalid cron schedule '61 * * * *': minute '61': 61 is above the maximum 59 (expected 0-59)",
        "workflow.yaml:6: triggers[1].subject: required for a queue trigger",
        "workflow.yaml:7: triggers[2].type: unknown trigger type 'carrier-pigeon' (expected one of: manual, cron, queue, webhook)",
        "workflow.yaml:9: config.timeout: expected a duration such as 30, 500ms, 30s or 2m, got 'soon'",
        "workflow.yaml:10: config.retries: expected 0 to 100 extra attempts, got -1",
        "workflow.yaml:12: nodes.a.timeout: duration must be positive, got 0",
        "workflow.yaml:13: nodes.b.path: must be a path inside the workflow directory, got '/etc/passwd'",
        "workflow.yaml:14: nodes.c.path: expected a Python file ending in .py, got 'nodes/c.txt'",
        "workflow.yaml:16: edges[0].to: unknown node 'zzz' (defined: a, b, c)",
        "workflow.yaml:17: edges[1]: self-loop: b → b",
    ]


def test_yaml_syntax_error_names_the_line():
    (error,) = errors_of("name: x\nnodes:\n  a: {path: [\n")
    assert error.startswith("workflow.yaml:") and "YAML syntax error" in error


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("", "file is empty"),
        ("- just\n- a list\n", "expected the workflow (a mapping"),
        ("42\n", "expected the workflow (a mapping"),
        ("name: x\nversion: 1.0.0\nnodes: []\n", "nodes: expected a mapping of node id"),
        ("name: x\nversion: 1.0.0\nnodes: {}\n", "at least one node is required"),
        ("name: x\nversion: 1.0.0\n", "nodes: required"),
        ("version: 1.0.0\nnodes: {a: {path: a.py}}\n", "name: required"),
        ("name: x\nnodes: {a: {path: a.py}}\n", "version: required"),
        ("name: x\nversion: 1.0.0\nnodes: {a: {path: a.py}}\nedges: {from: a}\n", "edges: expected a list"),
        ("name: x\nversion: 1.0.0\nnodes: {a: {path: a.py}}\ntriggers: manual\n", "triggers: expected a list"),
        ("name: x\nversion: 1.0.0\nnodes: {a: nodes/a.py}\n", "nodes.a: expected a mapping with a path"),
        ("name: x\nversion: 1.0.0\nnodes: {a: {}}\n", "nodes.a.path: required"),
        ("name: [x]\nversion: 1.0.0\nnodes: {a: {path: a.py}}\n", "name: expected a kebab-case string, got a list"),
        ("name: x\nversion: 1.0.0\nnodes: {a: {path: a.py, retries: 1.5}}\n", "nodes.a.retries: expected a whole number"),
        ("name: x\nversion: 1.0.0\nnodes: {a: {path: a.py, retries: true}}\n", "got a boolean"),
        ("name: x\nversion: 1.0.0\nnodes: {a: {path: a.py}}\nconfig: {when: 2024-01-01}\n", "config.when: date values are not supported"),
        ("name: x\nversion: 1.0.0\nnodes: {a: {path: a.py}}\ntriggers: [{type: cron, schedule: '* * * * * *'}]\n", "expected 5 fields (minute hour day-of-month month day-of-week) or a macro such as @daily, got 6 fields"),
        ("name: x\nversion: 1.0.0\nnodes: {a: {path: a.py}}\ntriggers: [{type: webhook, path: hooks}]\n", "must start with '/'"),
        ("name: x\nversion: 1.0.0\nnodes: {a: {path: a.py}}\ntriggers: [{type: queue, subject: 'a b'}]\n", "invalid NATS subject"),
        ("name: x\nversion: 1.0.0\nnodes: {a: {path: a.py}}\ntriggers: [{type: cron, name: d, schedule: '@daily'}, {type: cron, name: d, schedule: '0 1 * * *'}]\n", "duplicate trigger name 'd'"),
        ("name: x\nversion: 1.0.0\nnodes: {a: {path: a.py}, b: {path: b.py}}\nedges: [{from: a, to: b}, {from: a, to: b}]\n", "duplicate edge a → b"),
        ("name: x\nversion: 1.0.0\nnodes: {'a b': {path: a.py}}\n", "invalid node id 'a b'"),
        ("name: x\nname: y\nversion: 1.0.0\nnodes: {a: {path: a.py}}\n", "name: duplicate key (first defined at line 1)"),
        ("a: &a [*a]\n", "required"),
    ],
)
def test_malformed_documents_get_a_clear_message(text, fragment):
    errors = errors_of(text)
    assert any(fragment in e for e in errors), errors
    assert all(e.startswith("workflow.yaml") for e in errors)


CRON_SPEC = "name: x\nversion: 1.0.0\nnodes: {a: {path: a.py}}\ntriggers: [{type: cron, schedule: '%s'}]\n"


@pytest.mark.parametrize("macro", ["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"])
def test_cron_macros_kubernetes_accepts_are_kept_as_written(macro):
    loaded = parse_spec(CRON_SPEC % macro)
    assert [t.schedule for t in loaded.spec.triggers] == [macro]
    assert loaded.warnings == ()


@pytest.mark.parametrize("macro", ["@reboot", "@Daily", "@daily ", "@fortnightly", "@", "@every"])
def test_other_cron_macros_are_rejected(macro):
    (error,) = errors_of(CRON_SPEC % macro)
    assert error == (
        f"workflow.yaml:4: triggers[0].schedule: unknown cron macro {macro!r} (Kubernetes CronJobs accept "
        "@yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly, @every <duration>)"
    )


@pytest.mark.parametrize(
    "schedule,fragment",
    [
        ("0 9 * * *", None),
        ("*/5 0-6 1,15 * mon-fri", None),
        ("61 * * * *", "invalid cron schedule '61 * * * *'"),
        ("0 9 * * * 30", "expected 5 fields (minute hour day-of-month month day-of-week) or a macro such as @daily"),
        ("0 9 * * @daily", "invalid cron schedule"),
    ],
)
def test_five_field_schedules_are_still_checked(schedule, fragment):
    if fragment is None:
        assert [t.schedule for t in parse_spec(CRON_SPEC % schedule).spec.triggers] == [schedule]
    else:
        (error,) = errors_of(CRON_SPEC % schedule)
        assert fragment in error


def test_cron_timezone_is_checked_and_only_for_cron_triggers():
    spec = "name: x\nversion: 1.0.0\nnodes: {a: {path: a.py}}\ntriggers:\n%s"
    loaded = parse_spec(spec % "  - {type: cron, schedule: '0 9 * * *', timezone: America/New_York}\n")
    assert loaded.spec.triggers[0].timezone == "America/New_York"
    (error,) = errors_of(spec % "  - {type: cron, schedule: '0 9 * * *', timezone: Mars/Olympus}\n")
    assert error == ("workflow.yaml:5: triggers[0].timezone: unknown time zone 'Mars/Olympus' "
                     "(expected an IANA time zone such as Europe/Paris or UTC)")  # fmt: skip
    (error,) = errors_of(spec % "  - {type: cron, schedule: 'CRON_TZ=Europe/Paris 0 9 * * *'}\n")
    assert "give the trigger a timezone instead (e.g. timezone: Europe/Paris)" in error
    ignored = parse_spec(spec % "  - {type: manual, timezone: UTC}\n")
    assert ignored.spec.triggers[0].timezone == ""
    assert [str(w) for w in ignored.warnings] == ["workflow.yaml:5: triggers[0].timezone: ignored for a manual trigger"]


def test_cycle_is_named():
    errors = errors_of(
        """\
        name: x
        version: 1.0.0
        nodes: {a: {path: a.py}, b: {path: b.py}, c: {path: c.py}}
        edges: [{from: a, to: b}, {from: b, to: c}, {from: c, to: a}]
        """
    )
    assert errors == ["workflow.yaml:4: edges: cycle: a → b → c → a"]


def test_unknown_keys_warn_with_their_line():
    loaded = parse_spec(VALID + "owner: me\n")
    (warning,) = loaded.warnings
    assert warning.line == VALID.count("\n") + 1
    assert warning.field == "owner" and "unknown key" in warning.message


# A warning the parser finds first (the top-level key, line 12) sits below an
# error (line 10) and another warning (line 8).
OUT_OF_ORDER = """\
name: x
version: 1.0.0
triggers:
  - type: cron
    schedule: "@daily"
nodes:
  a:
    colour: blue
    path: a.py
  b: {path: /b.py}
  c: {path: c.py}
owner: me
"""


def test_spec_error_lists_problems_in_reading_order_one_prefix_each():
    with pytest.raises(SpecError) as info:
        parse_spec(OUT_OF_ORDER)
    assert [(p.line, p.severity) for p in info.value.problems] == [(8, "warning"), (10, "error"), (12, "warning")]
    assert str(info.value).splitlines() == [
        "warning: workflow.yaml:8: nodes.a.colour: unknown key (expected one of: path, timeout, retries, description)",
        "error: workflow.yaml:10: nodes.b.path: must be a path inside the workflow directory, got '/b.py'",
        "warning: workflow.yaml:12: owner: unknown key "
        "(expected one of: name, version, description, triggers, config, nodes, edges)",
    ]


def test_warnings_of_a_valid_spec_are_in_reading_order():
    loaded = parse_spec(OUT_OF_ORDER.replace("/b.py", "b.py"))
    assert [(w.line, w.field) for w in loaded.warnings] == [(8, "nodes.a.colour"), (12, "owner")]


def test_problem_text_has_no_severity_and_its_report_line_has_exactly_one():
    warning = spec_mod.Problem("w.yaml", 3, "owner", "unknown key", "warning")
    error = spec_mod.Problem("w.yaml", None, "", "file not found")
    assert str(warning) == "w.yaml:3: owner: unknown key"
    assert warning.describe() == "warning: w.yaml:3: owner: unknown key"
    assert error.describe() == "error: w.yaml: file not found"


def test_spec_error_sorts_by_file_then_line_errors_first():
    problems = [
        spec_mod.Problem("b.yaml", 2, "x", "late file", "warning"),
        spec_mod.Problem("a.yaml", 24, "y", "line 24"),
        spec_mod.Problem("a.yaml", 18, "z", "line 18", "warning"),
        spec_mod.Problem("a.yaml", 18, "z", "same line, error"),
        spec_mod.Problem("a.yaml", None, "", "whole file"),
    ]
    assert str(SpecError(problems)).splitlines() == [
        "error: a.yaml: whole file",
        "error: a.yaml:18: z: same line, error",
        "warning: a.yaml:18: z: line 18",
        "error: a.yaml:24: y: line 24",
        "warning: b.yaml:2: x: late file",
    ]


def test_recursive_alias_is_an_error_not_a_crash():
    errors = errors_of("name: x\nversion: 1.0.0\nnodes: {a: {path: a.py}}\nconfig: {loop: &l [*l]}\n")
    assert errors


def test_billion_laughs_is_bounded():
    lol = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for level in "bcdefgh":
        prev = chr(ord(level) - 1)
        lol += f"{level}: &{level} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
    text = "name: x\nversion: 1.0.0\nnodes: {a: {path: a.py}}\nconfig:\n" + "".join("  " + line for line in lol.splitlines(True))
    assert any("document too large" in e for e in errors_of(text))


@pytest.mark.parametrize(
    "value,seconds", [(30, 30.0), (1.5, 1.5), ("500ms", 0.5), ("30s", 30.0), ("2m", 120.0), ("1h", 3600.0), ("45", 45.0)]
)
def test_durations(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "fast", "-1s", "1d", 0, -3, True, None, [1]])
def test_bad_durations(value):
    with pytest.raises(ValueError):
        parse_duration(value)


# -- files on disk ---------------------------------------------------------


def write_workflow(tmp_path: pathlib.Path, nodes: dict[str, str], yaml_nodes: str | None = None) -> pathlib.Path:
    for relative, source in nodes.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    listing = yaml_nodes or "".join(f"  {pathlib.Path(r).stem}: {{path: {r}}}\n" for r in nodes)
    (tmp_path / "workflow.yaml").write_text(f"name: flow\nversion: 1.0.0\nnodes:\n{listing}")
    return tmp_path


def test_load_spec_checks_node_files(tmp_path):
    directory = write_workflow(
        tmp_path,
        {
            "nodes/good.py": "async def run(ctx, input):\n    return input\n",
            "nodes/sync.py": "def run(ctx, input):\n    return input\n",
            "nodes/none.py": "x = 1\n",
            "nodes/broken.py": "async def run(ctx, input)\n    return 1\n",
            "nodes/nested.py": "def helper():\n    async def run(ctx, input):\n        pass\n",
        },
        "  good: {path: nodes/good.py}\n  sync: {path: nodes/sync.py}\n  none: {path: nodes/none.py}\n"
        "  broken: {path: nodes/broken.py}\n  nested: {path: nodes/nested.py}\n  missing: {path: nodes/missing.py}\n",
    )
    with pytest.raises(SpecError) as info:
        load_spec(directory)
    errors = [str(p) for p in info.value.problems]
    file = f"{directory}/workflow.yaml"
    assert errors == [
        f"{file}:5: nodes.sync.path: nodes/sync.py: `run` at line 1 must be `async def run(ctx, input)`, found a plain `def`",
        f"{file}:6: nodes.none.path: nodes/none.py: no module-level `async def run(ctx, input)`",
        f"{file}:7: nodes.broken.path: nodes/broken.py: syntax error at line 1: expected ':'",
        f"{file}:8: nodes.nested.path: nodes/nested.py: no module-level `async def run(ctx, input)`",
        f"{file}:9: nodes.missing.path: file not found: nodes/missing.py",
    ]


def test_symlink_escaping_the_workflow_dir_is_rejected(tmp_path):
    outside = tmp_path / "outside.py"
    outside.write_text("async def run(ctx, input):\n    return 1\n")
    directory = tmp_path / "flow"
    write_workflow(directory, {"nodes/ok.py": "async def run(ctx, input):\n    return 1\n"},
                   "  ok: {path: nodes/ok.py}\n  evil: {path: nodes/evil.py}\n")
    (directory / "nodes" / "evil.py").symlink_to(outside)
    with pytest.raises(SpecError) as info:
        load_spec(directory)
    assert "resolves outside the workflow directory" in str(info.value)


def test_load_spec_missing_file_names_it(tmp_path):
    with pytest.raises(SpecError, match=r"workflow.yaml: file not found"):
        load_spec(tmp_path)


def test_examples_are_valid():
    root = pathlib.Path(__file__).resolve().parent.parent / "examples"
    examples = sorted(p.parent for p in root.glob("*/workflow.yaml"))
    assert {p.name for p in examples} >= {"hello", "github-digest"}
    for directory in examples:
        assert load_spec(directory).spec.name == directory.name


# -- fuzzing -----------------------------------------------------------------

_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=12))
_documents = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(["name", "version", "nodes", "edges", "triggers", "config", "path", "from", "to", "type", "schedule", "x"]) | st.text(max_size=6), children, max_size=5),
    ),
    max_leaves=25,
)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(_documents)
def test_random_documents_give_a_spec_or_errors(document):
    text = yaml.safe_dump(document)
    try:
        loaded = parse_spec(text)
    except SpecError as exc:
        assert exc.problems and all(p.file == "workflow.yaml" for p in exc.problems)
    else:
        assert loaded.spec.name and loaded.spec.nodes


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(st.text(max_size=200))
def test_random_text_never_crashes(text):
    try:
        parse_spec(text)
    except SpecError as exc:
        assert exc.problems


@pytest.mark.parametrize("text", ["name: !!int abc\n", "name: !!python/object:os.system x\n", "x: !!binary '@@'\n"])
def test_bad_tags_are_errors(text):
    assert errors_of(text)


WEBHOOK_SPEC = "name: x\nversion: 1.0.0\nnodes: {a: {path: a.py}}\ntriggers:\n%s"


def test_webhook_triggers_get_a_name_and_a_signature_scheme():
    loaded = parse_spec(WEBHOOK_SPEC % (
        "  - {type: webhook, path: /hooks/github}\n"
        "  - {type: webhook, path: /hooks/pay, name: billing, signature: standard}\n"
        "  - {type: webhook, path: /hooks/open, signature: none}\n"
    ))  # fmt: skip
    hooks = loaded.spec.triggers
    assert [(t.name, t.path, t.signature) for t in hooks] == [
        ("github", "/hooks/github", workflow_pb2.Trigger.SIGNATURE_GITHUB),  # the default scheme, named after the path
        ("billing", "/hooks/pay", workflow_pb2.Trigger.SIGNATURE_STANDARD),
        ("open", "/hooks/open", workflow_pb2.Trigger.SIGNATURE_NONE),
    ]
    assert [str(w) for w in loaded.warnings] == [
        "workflow.yaml:7: triggers[2].signature: none: /hooks/open runs the workflow for anyone who can reach it, "
        "unsigned; use github or standard with a key in secrets.webhooks"
    ]


@pytest.mark.parametrize(
    ("triggers", "error"),
    [
        ("  - {type: webhook, path: /run}\n", "triggers[0].path: /run is one of the engine's own routes"),
        ("  - {type: webhook, path: /runs/x}\n", "is one of the engine's own routes"),
        ("  - {type: webhook, path: '/hooks/{name}'}\n", "is not a plain URL path"),
        ("  - {type: webhook, path: '/hooks/a?b=1'}\n", "is not a plain URL path"),
        ("  - {type: webhook, path: /hooks/}\n", "is not a plain URL path"),
        ("  - {type: webhook, path: /hooks/a, signature: sha1}\n", "unknown signature scheme 'sha1' (expected one of: github, standard, none)"),
        ("  - {type: webhook, path: /a}\n  - {type: webhook, path: /a, name: b}\n", "triggers[1].path: duplicate webhook path /a (first at line 5)"),
        ("  - {type: webhook, path: /x/hook}\n  - {type: webhook, path: /y/hook}\n", "give it a name"),
        ("  - {type: queue, subject: a.b, durable: 'yes'}\n", "triggers[0].durable: expected true or false"),
        ("  - {type: queue, subject: a.b, durable: true, max_deliver: 0}\n", "expected 1 to 100 deliveries, got 0"),
    ],
)
def test_bad_webhook_and_durable_settings_are_errors(triggers, error):
    assert any(error in e for e in errors_of(WEBHOOK_SPEC % triggers)), errors_of(WEBHOOK_SPEC % triggers)


def test_durable_queue_settings_and_what_other_triggers_ignore():
    loaded = parse_spec(WEBHOOK_SPEC % (
        "  - {type: queue, subject: orders.new, durable: true, max_deliver: 5}\n"
        "  - {type: queue, subject: orders.old, max_deliver: 2}\n"
        "  - {type: cron, schedule: '@daily', signature: github}\n"
    ))  # fmt: skip
    durable, core, _ = loaded.spec.triggers
    assert (durable.durable, durable.max_deliver) == (True, 5)
    assert core.durable is False
    assert [str(w) for w in loaded.warnings] == [
        "workflow.yaml:6: triggers[1].max_deliver: ignored without durable: true (core NATS never redelivers)",
        "workflow.yaml:7: triggers[2].signature: ignored for a cron trigger",
    ]
