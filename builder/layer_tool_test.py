"""builder/layer_tool.py writes the layers `pipedreamer build` puts in its images, byte for byte.

Bazel runs layer_tool in an execroot: sources at their workspace paths,
generated files under bazel-out/<config>/bin with the mode Bazel gives every
output (0555). These tests build such an execroot from the checkout, with the
inputs the BUILD files and builder/workflow.bzl declare, run layer_tool as
Bazel does (working directory = execroot, arguments in a params file) and
compare with the layers `build_image` wrote from the same files. What they
cannot show without Bazel: that Bazel hands over exactly these inputs, and
that rules_oci assembles the image as emulated in `rules_oci_config`.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from builder import build as build_module
from builder import layer_tool, wheels
from builder.build import APP_DIR, ENTRYPOINT, USER, WorkflowInfo, build_image
from builder.errors import BuildError
from builder.layers import LayerEntry, file_digest, write_layer_cached
from builder.oci import DEFAULT_PYTHON_VERSION, blob_path, parse_platform
from builder.testing import write_fake_base
from deploy.base.assemble import PYTHON_VERSION as BASE_PYTHON_VERSION
from tools.bazel_check import buildgraph

REPO = Path(__file__).resolve().parent.parent
HELLO = REPO / "examples" / "hello"
BAZEL_BIN = "bazel-out/k8-fastbuild/bin"


@pytest.fixture(autouse=True)
def fake_wheels(monkeypatch: pytest.MonkeyPatch) -> None:
    """`build_image` gets a small stand-in wheels layer instead of pip (as in build_test)."""

    def wheels_layer(lock, python_version, platform, *, cache, source_date_epoch, progress=None, **_):
        entries = [LayerEntry(f"opt/pipedreamer/site-packages/fake-{platform.architecture}.py", "file", data=b"x = 1\n")]
        return write_layer_cached(entries, Path(cache) / "layers", source_date_epoch=source_date_epoch)

    monkeypatch.setattr(build_module, "wheels_layer", wheels_layer)
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return write_fake_base(tmp_path / "base")


def bzl_constants(path: Path) -> dict[str, object]:
    """Top-level `NAME = <literal>` assignments of a .bzl file."""
    constants: dict[str, object] = {}
    for stmt in ast.parse(path.read_text()).body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            try:
                constants[stmt.targets[0].id] = ast.literal_eval(stmt.value)
            except ValueError:
                continue
    return constants


DEFAULTS = bzl_constants(REPO / "builder" / "image_defaults.bzl")


def plain_image(workflow_dir: Path, base: Path, tmp_path: Path) -> tuple[dict, dict, Path]:
    """(manifest, config, layout) of the image `pipedreamer build` makes (unstamped, as Bazel's)."""
    layout = tmp_path / "plain-layout"
    build_image(workflow_dir, base, layout, cache=tmp_path / "plain-cache", revision="", source="")
    return (*layout_json(layout), layout)


def layout_json(layout: Path) -> tuple[dict, dict]:
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(blob_path(layout, index["manifests"][0]["digest"]).read_text())
    config = json.loads(blob_path(layout, manifest["config"]["digest"]).read_text())
    return manifest, config


def bazel_glob(directory: Path, exclude: list[str]) -> dict[str, Path]:
    """glob(["**"], exclude = exclude) over a directory: relative path → file."""
    found = {}
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).as_posix()
        if path.is_file() and not buildgraph.matches_any(exclude, rel):
            found[rel] = path
    return found


def make_execroot(root: Path, files: Mapping[str, tuple[Path, bool]]) -> list[str]:
    """Lay out inputs as Bazel does; returns the arguments an action would get."""
    args = []
    for workspace_path, (source, generated) in sorted(files.items()):
        rel = f"{BAZEL_BIN}/{workspace_path}" if generated else workspace_path
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
        dest.chmod(0o555 if generated else (0o755 if source.stat().st_mode & 0o111 else 0o644))
        args.append(rel)
    return args


def run_layer_tool(execroot: Path, *args: str) -> subprocess.CompletedProcess:
    """`builder/layer_tool.py @params` in the execroot, as the Bazel actions run it."""
    params = execroot / "bazel-out" / "layer_tool.params"
    params.parent.mkdir(parents=True, exist_ok=True)
    params.write_text("".join(f"{arg}\n" for arg in args))
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH", ""), str(REPO)) if p)
    command = [sys.executable, str(REPO / "builder" / "layer_tool.py"), "@" + str(params.relative_to(execroot))]
    return subprocess.run(command, cwd=execroot, env=env, capture_output=True, text=True, timeout=120)


def ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------
# Same layer bytes from both paths


def test_workflow_layer_is_byte_identical_to_build_image(tmp_path: Path, base: Path) -> None:
    src = tmp_path / "checkout" / "flows" / "hello"
    shutil.copytree(HELLO, src, ignore=shutil.ignore_patterns("__pycache__"))
    (src / "README.md").write_text("# hello\n")
    (src / "nodes" / "data").mkdir()
    (src / "nodes" / "data" / "greeting.json").write_text('{"text": "hi"}\n')
    (src / "scripts").mkdir()
    (src / "scripts" / "run.sh").write_text("#!/bin/sh\n")
    (src / "scripts" / "run.sh").chmod(0o755)
    (src / ".secrets").mkdir()
    (src / ".secrets" / "token").write_text("s3cret\n")
    (src / "Dockerfile.pipedreamer").write_text("FROM scratch\n")
    (src / "data").mkdir()
    (src / "data" / "generated.json").write_text("[]\n")  # a genrule output under Bazel
    manifest, _, layout = plain_image(src, base, tmp_path)
    plain = manifest["layers"][-1]["digest"]

    excludes = bzl_constants(REPO / "builder" / "workflow.bzl")["WORKFLOW_LAYER_EXCLUDES"]
    inputs = bazel_glob(src, excludes)
    assert ".secrets/token" not in inputs and "tests/fixtures/greet.json" not in inputs
    files = {f"flows/hello/{rel}": (path, rel == "data/generated.json") for rel, path in inputs.items()}
    execroot = tmp_path / "execroot"
    args = make_execroot(execroot, files)
    out = f"{BAZEL_BIN}/flows/hello/workflow_layer.tar.gz"
    ok(run_layer_tool(execroot, "workflow", "--spec", "flows/hello/workflow.yaml", "--out", out,
                      "--source-date-epoch", str(DEFAULTS["IMAGE_SOURCE_DATE_EPOCH"]), *args))  # fmt: skip
    assert file_digest(execroot / out) == plain
    assert (execroot / out).read_bytes() == blob_path(layout, plain).read_bytes()


SECRETS_AND_TOOL_STATE = [
    ".secrets/github", ".secrets.yaml", ".env", ".git/config", "prod.secrets.yaml", "staging.secrets.yml",
    "secrets/db", "tests/fixtures/a.json", "bazel-out/x", "BUILD", "BUILD.bazel", "Dockerfile.pipedreamer",
    "nodes/.env", "nodes/.secrets.yaml", "nodes/.secrets/token", "nodes/lib/.hidden/x.py", "nodes/lib/.npmrc",
    "nodes/prod.secrets.yaml", "nodes/__pycache__/a.cpython-313.pyc", "nodes/a.pyc",
]
KEPT = ["workflow.yaml", "nodes/a.py", "nodes/secrets/vault.py", "nodes/tests/helper.py", "nodes/BUILD", "secrets.py",
        "data/secrets.json", "README.md"]  # fmt: skip


def test_bazel_inputs_exclude_exactly_what_the_workflow_layer_leaves_out(tmp_path: Path) -> None:
    """Secrets at any depth never reach Bazel's inputs, and Bazel drops nothing the layer keeps."""
    root = tmp_path / "flow"
    for rel in SECRETS_AND_TOOL_STATE + KEPT:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x\n")
    excludes = bzl_constants(REPO / "builder" / "workflow.bzl")["WORKFLOW_LAYER_EXCLUDES"]
    layer = {e.path.removeprefix(APP_DIR.strip("/") + "/") for e in
             build_module.workflow_entries(root, WorkflowInfo("flow", "1.0.0", ("nodes/a.py",))) if e.kind == "file"}  # fmt: skip
    assert set(bazel_glob(root, excludes)) == layer == set(KEPT)


def bazel_inputs(repo: buildgraph.Repo, text: str, package: str) -> dict[str, tuple[Path, bool]]:
    """The files a label hands to an action: workspace path → (file in the checkout, generated)."""
    label = buildgraph.parse_label(text, package)
    assert not label.repo, text
    owner = repo.packages[label.package]
    rule = owner.rule(label.name)
    path = f"{label.package}/{label.name}" if label.package else label.name
    if rule is None:
        return {path: (REPO / path, False)}
    if rule.outs():
        # Generated by tools/gen_proto.py, the script the genrule runs; the
        # checkout holds the copies it made (tools/venv.sh).
        outs = [f"{label.package}/{out}" for out in rule.outs()]
        return {out: (REPO / out, True) for out in outs}
    assert rule.kind == "filegroup", f"{text}: expand a {rule.kind}"
    found: dict[str, tuple[Path, bool]] = {}
    for item in rule.items("srcs"):
        found.update(bazel_inputs(repo, item.text, label.package))
    return found


def test_engine_layer_is_byte_identical_to_build_image(tmp_path: Path, base: Path) -> None:
    manifest, _, layout = plain_image(HELLO, base, tmp_path)
    plain = manifest["layers"][-2]["digest"]
    repo = buildgraph.load_repo(REPO)
    rule = repo.packages["deploy/engine"].rule("engine_layer")
    files: dict[str, tuple[Path, bool]] = {}
    for item in rule.items("srcs"):
        files.update(bazel_inputs(repo, item.text, "deploy/engine"))
    assert "engine/spec.py" in files and "engine/spec_test.py" not in files
    assert files["proto/pipedreamer/v1/workflow_pb2.py"][1]  # generated
    execroot = tmp_path / "execroot"
    args = make_execroot(execroot, files)
    out = f"{BAZEL_BIN}/deploy/engine/engine_layer.tar.gz"
    ok(run_layer_tool(execroot, "engine", "--out", out, "--source-date-epoch", "0", *args))
    assert file_digest(execroot / out) == plain, "the engine layer's inputs in deploy/engine/BUILD.bazel and engine/BUILD.bazel miss or add files"
    assert (execroot / out).read_bytes() == blob_path(layout, plain).read_bytes()


def test_wheels_layer_is_byte_identical_to_the_plain_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "installed" / "site-packages"
    (site / "pkg" / "__pycache__").mkdir(parents=True)
    (site / "pkg" / "__init__.py").write_text("VERSION = 1\n")
    (site / "pkg" / "__pycache__" / "__init__.cpython-313.pyc").write_bytes(b"\0")
    (site / "pkg" / "_speedups.so").write_bytes(b"\x7fELF")
    (site / "pkg" / "_speedups.so").chmod(0o755)
    (site / "pkg-1.0.dist-info").mkdir()
    (site / "pkg-1.0.dist-info" / "RECORD").write_text("pkg/__init__.py,,\n")
    installs = []

    def install_wheels(lock, python_version, platform, *, cache=None, progress=None, **_):
        installs.append((python_version, str(platform)))
        return site, "key"

    monkeypatch.setattr(wheels, "install_wheels", install_wheels)
    lock = wheels.RUNTIME_LOCK
    plain, _ = wheels.wheels_layer(lock, "3.13", parse_platform("linux/arm64"), cache=tmp_path / "cache", source_date_epoch=0)

    out, digest_json = tmp_path / "from-lock.tar.gz", tmp_path / "from-lock.json"
    assert layer_tool.main(["wheels", "--lock", str(lock), "--python-version", "3.13", "--platform", "linux/arm64",
                            "--out", str(out), "--source-date-epoch", "0", "--digest-out", str(digest_json)]) == 0  # fmt: skip
    assert installs == [("3.13", "linux/arm64"), ("3.13", "linux/arm64")]
    assert file_digest(out) == plain.digest == json.loads(digest_json.read_text())["digest"]

    execroot = tmp_path / "execroot"
    execroot.mkdir()
    ok(run_layer_tool(execroot, "wheels", "--site-packages", str(site), "--out", "wheels.tar.gz", "--source-date-epoch", "0"))
    assert (execroot / "wheels.tar.gz").read_bytes() == plain.path.read_bytes()


# ---------------------------------------------------------------------------
# The image configuration rules_oci gets


def rules_oci_config(base_config: dict, base_annotations: dict, prefix: Path) -> tuple[dict, dict]:
    """(config, manifest annotations) as rules_oci 2.x's oci/private/image.sh makes them from
    our files: env updates or appends keys, entrypoint clears Cmd, labels and ports merge
    into the base's, `created` is the file as is, annotations merge into the base manifest's."""

    def read(kind: str) -> str:
        return Path(f"{prefix}.{kind}.txt").read_text()

    def pairs(text: str) -> dict[str, str]:
        return dict(line.split("=", 1) for line in text.split("\n") if line)

    config = json.loads(json.dumps(base_config))
    cfg = config.setdefault("config", {})
    env = [e.split("=", 1) for e in cfg.get("Env") or []]
    for key, value in pairs(read("env")).items():
        assert "$" not in value
        for entry in env:
            if entry[0] == key:
                entry[1] = value
                break
        else:
            env.append([key, value])
    cfg["Env"] = [f"{k}={v}" for k, v in env]
    cfg.pop("Cmd", None)
    cfg["Entrypoint"] = [a for a in read("entrypoint").split("\n") if a]
    cfg["ExposedPorts"] = {**(cfg.get("ExposedPorts") or {}), **{p: {} for p in read("exposed_ports").split(",")}}
    cfg["User"] = DEFAULTS["IMAGE_USER"]
    cfg["WorkingDir"] = DEFAULTS["IMAGE_WORKDIR"]
    cfg["Labels"] = {**(cfg.get("Labels") or {}), **pairs(read("labels"))}
    config["created"] = read("created")
    return config, {**base_annotations, **pairs(read("annotations"))}


def test_config_files_give_build_image_s_config(tmp_path: Path, base: Path) -> None:
    manifest, config, _ = plain_image(HELLO, base, tmp_path)
    base_manifest, base_config = layout_json(base)
    execroot = tmp_path / "execroot"
    args = make_execroot(execroot, {f"examples/hello/{rel}": (p, False) for rel, p in bazel_glob(HELLO, ["tests/**"]).items()})
    prefix = f"{BAZEL_BIN}/examples/hello/image"
    ok(run_layer_tool(execroot, "config", "--spec", "examples/hello/workflow.yaml", "--python-version",
                      str(DEFAULTS["IMAGE_PYTHON_VERSION"]), "--source-date-epoch", "0", "--out-prefix", prefix, *args))  # fmt: skip
    bazel_config, annotations = rules_oci_config(base_config, base_manifest.get("annotations", {}), execroot / prefix)
    assert bazel_config["config"] == config["config"]
    assert bazel_config["created"] == config["created"]
    assert annotations == manifest["annotations"]
    assert (execroot / f"{prefix}.repo_tags.txt").read_text() == "hello:1.0.0\n"
    assert (execroot / f"{prefix}.remote_tags.txt").read_text() == "1.0.0\n"
    assert not (execroot / f"{prefix}.created.txt").read_text().endswith("\n")  # rules_oci reads it raw


def test_engine_image_config_runs_the_workflow_at_app(tmp_path: Path) -> None:
    prefix = tmp_path / "image"
    assert layer_tool.main(["config", "--name", "pipedreamer-engine", "--version", "0.1.0", "--python-version", "3.13",
                            "--out-prefix", str(prefix)]) == 0  # fmt: skip
    files = {kind: Path(f"{prefix}.{kind}.txt").read_text() for kind in ("entrypoint", "labels", "annotations", "env")}
    assert files["entrypoint"].split("\n") == list(ENTRYPOINT)
    assert dict(line.split("=", 1) for line in files["labels"].split("\n")) == {
        "org.opencontainers.image.title": "pipedreamer-engine",
        "org.opencontainers.image.version": "0.1.0",
        "dev.pipedreamer.python.version": "3.13",
    }
    assert "PYTHONPATH=/opt/pipedreamer/lib:/opt/pipedreamer/site-packages" in files["env"].split("\n")


def test_bazel_constants_match_build_py_and_the_base() -> None:
    assert DEFAULTS["IMAGE_USER"] == USER
    assert DEFAULTS["IMAGE_WORKDIR"] == APP_DIR
    assert DEFAULTS["IMAGE_PYTHON_VERSION"] == DEFAULT_PYTHON_VERSION == BASE_PYTHON_VERSION
    (wheels_tag,) = module_tags("image_wheels.install")
    (toolchain,) = module_tags("python.toolchain")
    assert wheels_tag["python_version"] == DEFAULTS["IMAGE_PYTHON_VERSION"]
    assert toolchain["python_version"] == DEFAULTS["IMAGE_PYTHON_VERSION"]
    assert "python_%s_host" % DEFAULTS["IMAGE_PYTHON_VERSION"].replace(".", "_") in wheels_tag["python"]


def module_tags(call: str) -> list[dict[str, str]]:
    """The string keyword arguments of each `call(...)` (e.g. python.toolchain) in MODULE.bazel."""
    tags = []
    for node in ast.walk(ast.parse((REPO / "MODULE.bazel").read_text())):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == call:
            tags.append({k.arg: k.value.value for k in node.keywords if k.arg and isinstance(k.value, ast.Constant)})
    return tags


# ---------------------------------------------------------------------------
# Inputs and bad input


@pytest.mark.parametrize(
    ("arg", "workspace_path", "generated"),
    [
        ("engine/spec.py", "engine/spec.py", False),
        ("bazel-out/k8-fastbuild/bin/proto/pipedreamer/v1/workflow_pb2.py", "proto/pipedreamer/v1/workflow_pb2.py", True),
        ("external/pipedreamer+/engine/spec.py", "engine/spec.py", False),
        ("bazel-out/aarch64-opt-exec/bin/external/pipedreamer+/proto/x_pb2.py", "proto/x_pb2.py", True),
        ("../pipedreamer+/engine/spec.py", "engine/spec.py", False),
    ],
)
def test_inputs_map_to_workspace_paths(arg: str, workspace_path: str, generated: bool) -> None:
    assert layer_tool.classify(arg) == layer_tool.Input(Path(arg), workspace_path, generated)


def test_paths_outside_the_execroot_are_refused() -> None:
    for bad in ("/etc/passwd", "engine/../../x"):
        with pytest.raises(BuildError, match="not a path inside the execroot"):
            layer_tool.classify(bad)


def test_bad_workflow_inputs_fail_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copytree(HELLO, "wf", ignore=shutil.ignore_patterns("__pycache__"))
    Path("other").mkdir()
    Path("other/x.txt").write_text("x")
    Path("wf/spec.yaml").write_text(Path("wf/workflow.yaml").read_text())
    nodes = ["wf/nodes/greet.py", "wf/nodes/shout.py"]
    cases = [
        (["--spec", "wf/spec.yaml", *nodes], "must be called workflow.yaml"),
        (["--spec", "wf/workflow.yaml", *nodes, "other/x.txt"], "other/x.txt: outside the workflow directory wf/"),
        (["--spec", "wf/workflow.yaml", "wf/nodes/greet.py"], "shout.py"),
    ]
    Path(BAZEL_BIN, "wf", "nodes").mkdir(parents=True)
    Path(BAZEL_BIN, "wf", "nodes", "greet.py").write_text("# a different greet.py\n")
    cases.append((["--spec", "wf/workflow.yaml", *nodes, f"{BAZEL_BIN}/wf/nodes/greet.py"], "both /wf/nodes/greet.py"))
    for args, message in cases:
        assert layer_tool.main(["workflow", "--out", "layer.tar.gz", *args]) == 1
        err = capsys.readouterr().err
        assert err.startswith("layer_tool workflow: ") and message in err, err
    assert not Path("layer.tar.gz").exists()


def test_settings_rules_oci_cannot_carry_are_refused() -> None:
    settings, info = layer_tool.engine_settings("pipedreamer-engine", "0.1.0", "3.13", 0)
    with pytest.raises(BuildError, match=r"contains '\$'"):
        layer_tool.oci_files(dataclasses.replace(settings, env={"PATH": "$PATH:/x"}), info)
    with pytest.raises(BuildError, match="not a valid image repository name"):
        layer_tool.oci_files(settings, dataclasses.replace(info, name="Hello World"))


def test_at_fetch_time_a_bare_interpreter_gets_the_locked_compressor(tmp_path: Path) -> None:
    # Bazel's wheels repository rule runs layer_tool with the hermetic Python and
    # no @pip packages: it must install deflate (hash-checked) from the lock that
    # pins it, the CLI's (images do not carry it), and compress exactly as the venv does.
    bare = Path(sys.base_prefix) / "bin" / "python3"
    probe = subprocess.run([str(bare), "-I", "-c", "import deflate"], capture_output=True)
    assert probe.returncode != 0, f"{bare} already has deflate: this test needs an interpreter without it"
    repo = Path(__file__).resolve().parent.parent
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from pathlib import Path;"
        "from builder.layer_tool import DEFLATE_LOCK, ensure_pip, ensure_deflate;"
        "ensure_pip(); ensure_deflate(DEFLATE_LOCK, Path(sys.argv[2]) / 'deflate');"
        "from builder.layers import gzip_bytes; print(gzip_bytes(b'pipedreamer ' * 5000).hex())"
    )
    result = subprocess.run([str(bare), "-I", "-c", script, str(repo), str(tmp_path)], capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    from builder.layers import gzip_bytes

    assert result.stdout.strip() == gzip_bytes(b"pipedreamer " * 5000).hex()
