"""An image's third-party layer is the runtime lock: `pipedreamer build` of examples/hello, read back.

Real pip (the locked wheels for the base's Python 3.13, linux/amd64), the real
CLI; the base is a small fake one (builder.testing), since only its Python
version decides the wheels.
"""

from __future__ import annotations

import email.parser
import gzip
import io
import json
import os
import pathlib
import subprocess
import sys
import tarfile

import pytest

from builder.testing import write_fake_base
from builder.wheels import RUNTIME_LOCK, SITE_PACKAGES, normalise_name, parse_lock
from tools.pytest import child_python

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "hello"
SITE = SITE_PACKAGES.lstrip("/") + "/"
# What the CLI and the tests use and an engine never does (requirements/cli.in, dev.in).
NEVER_IN_AN_IMAGE = {"kubernetes", "grpcio-tools", "setuptools", "deflate", "requests",
                     "pytest", "hypothesis", "packaging"}  # fmt: skip


def locked(path: pathlib.Path) -> dict[str, str]:
    return {r.name: r.version for r in parse_lock(path)[1]}


@pytest.fixture(scope="module")
def wheels_layer(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """{path in the layer: file bytes} of the wheels layer of examples/hello's image."""
    tmp = tmp_path_factory.mktemp("image-wheels")
    base = write_fake_base(tmp / "base", python_version="3.13")
    env = dict(os.environ, PYTHONPATH=child_python.pythonpath(ROOT), PIPEDREAMER_CACHE=str(tmp / "cache"))
    result = subprocess.run(
        [sys.executable, "-m", "cli", "build", str(EXAMPLE), "--base", str(base), "--oci-layout", str(tmp / "out"),
         "--output", "json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    digest = json.loads(result.stdout)["digest"]
    blobs = tmp / "out" / "blobs" / "sha256"
    manifest = json.loads((blobs / digest.removeprefix("sha256:")).read_bytes())
    for descriptor in manifest["layers"]:
        data = gzip.decompress((blobs / descriptor["digest"].removeprefix("sha256:")).read_bytes())
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            members = [m for m in tar.getmembers() if m.isfile()]
            if members and all(m.name.startswith(SITE) for m in members):
                return {m.name.removeprefix(SITE): tar.extractfile(m).read() for m in members}
    pytest.fail(f"no layer of {digest} holds {SITE_PACKAGES} alone")


def installed(layer: dict[str, bytes]) -> dict[str, str]:
    """{distribution: version} from the layer's *.dist-info/METADATA."""
    found = {}
    for path, data in layer.items():
        directory, _, name = path.partition("/")
        if directory.endswith(".dist-info") and name == "METADATA":
            metadata = email.parser.BytesHeaderParser().parsebytes(data)
            found[normalise_name(metadata["Name"])] = metadata["Version"]
    return found


def test_the_wheels_layer_holds_exactly_the_runtime_lock(wheels_layer: dict[str, bytes]) -> None:
    assert installed(wheels_layer) == locked(RUNTIME_LOCK)


def test_no_cli_or_test_package_reaches_the_image(wheels_layer: dict[str, bytes]) -> None:
    in_image = installed(wheels_layer)
    assert sorted(NEVER_IN_AN_IMAGE & set(in_image)) == []
    # Their modules neither, under whatever distribution name.
    tops = {path.split("/", 1)[0] for path in wheels_layer}
    assert sorted(tops & {"kubernetes", "grpc_tools", "absl", "deflate", "requests", "_pytest", "pytest",
                          "hypothesis", "setuptools"}) == []  # fmt: skip
    # Every package the CLI's and the tests' locks add stays out.
    extra = set(locked(ROOT / "requirements" / "dev.txt")) - set(locked(RUNTIME_LOCK))
    assert NEVER_IN_AN_IMAGE <= extra
    assert sorted(extra & set(in_image)) == []
