"""`bazel build //examples/hello:layers` writes the layers `pipedreamer build` writes, byte for byte.

Runs under `bazel test` only: the layers are this test's data, built by Bazel
(the wheels layer by the image_wheels extension, the engine and workflow layers
by builder/layer_tool.py actions). The plain path is the CLI itself,
`python -m cli build`, on a plain copy of the files Bazel hands this test (the
checkout as tools/venv.sh leaves it: sources plus generated stubs) and with an
empty cache, so pip installs the locked wheels again instead of reusing
Bazel's. Outside Bazel, .ci/run compares `./pipedreamer build` on the host with
Bazel's tars the same way (tools/bazel/same_layers.sh).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from builder.layers import file_digest
from builder.oci import blob_path
from builder.testing import write_fake_base
from tools.pytest import child_python

# wheels, engine, workflow: the image's order (builder/workflow.bzl :layers).
LAYER_NAMES = ("wheels.tar.gz", "engine_layer.tar.gz", "workflow_layer.tar.gz")


def bazel_layers() -> list[Path]:
    main = Path(os.environ["TEST_SRCDIR"]) / "_main"
    by_name = {Path(p).name: main / p for p in os.environ["HELLO_LAYERS"].split()}  # $(rootpaths) sorts them
    assert sorted(by_name) == sorted(LAYER_NAMES)
    return [by_name[name] for name in LAYER_NAMES]


def plain_checkout(dst: Path) -> Path:
    """The runfiles of this test as a checkout has them: ordinary files with ordinary modes
    (Bazel's outputs are read-only and executable), without the layers under test."""
    main = Path(os.environ["TEST_SRCDIR"]) / "_main"
    ignore = shutil.ignore_patterns("*.runfiles", "__pycache__", "*_main.py", "*.tar.gz")
    shutil.copytree(main, dst, symlinks=False, ignore=ignore, copy_function=shutil.copyfile)
    return dst


def test_hello_layers_match_pipedreamer_build(tmp_path: Path) -> None:
    checkout = plain_checkout(tmp_path / "checkout")
    base = write_fake_base(tmp_path / "base", python_version="3.13")
    third_party = child_python.pythonpath(checkout).split(os.pathsep)[1:]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(checkout), *third_party]),
        "PIPEDREAMER_CACHE": str(tmp_path / "cache"),  # pip installs the wheels anew
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.pop("SOURCE_DATE_EPOCH", None)
    out = tmp_path / "hello.oci"
    result = subprocess.run(
        [sys.executable, "-m", "cli", "--output", "json", "build", "examples/hello", "--base", str(base), "--oci-layout", str(out)],
        cwd=checkout, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    digest = json.loads(result.stdout)["digest"]
    manifest = json.loads(blob_path(out, digest).read_bytes())
    plain = [layer["digest"] for layer in manifest["layers"][-3:]]
    from_bazel = [file_digest(path) for path in bazel_layers()]
    print("\n".join(f"[layers] {name}: bazel {b}  plain {p}" for name, b, p in zip(LAYER_NAMES, from_bazel, plain)))
    assert from_bazel == plain
