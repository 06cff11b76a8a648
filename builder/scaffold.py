"""Scaffolds a new workflow project (`pipedreamer init`): pure templates, one atomic write."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import tempfile

from engine.errors import PipedreamerError
from engine.spec import MAX_NAME_LENGTH, _NAME_RE


class ScaffoldError(PipedreamerError):
    """The project cannot be created where asked."""


@dataclasses.dataclass(frozen=True)
class Scaffolded:
    directory: pathlib.Path
    files: tuple[pathlib.Path, ...]


def render_project(name: str) -> dict[str, str]:
    """Relative path → file content for a new workflow called `name`."""
    return {
        "workflow.yaml": f"""name: {name}
version: "0.1.0"
triggers:
  - type: manual
config:
  timeout: 30s
  retries: 0
nodes:
  hello:
    path: nodes/hello.py
edges: []
""",
        "nodes/hello.py": '''"""Says hello to whoever the input names."""


async def run(ctx, input):
    name = (input or {}).get("name", "world")
    ctx.log.info(f"greeting {name}")
    return {"message": f"Hello, {name}!"}
''',
        "tests/fixtures/hello.json": json.dumps(
            {"input": {"name": "Pipedreamer"}, "expected": {"message": "Hello, Pipedreamer!"}}, indent=2
        )
        + "\n",
        "BUILD.bazel": f'''load("@pipedreamer//builder:workflow.bzl", "pipedreamer_workflow")

pipedreamer_workflow(
    name = "{name}",
    srcs = glob(["nodes/**/*.py"]),
    fixtures = glob(["tests/fixtures/*.json"]),
    spec = "workflow.yaml",
)
''',
        ".gitignore": "# Secrets stay on this machine; deploy turns them into a Kubernetes Secret.\n.secrets*\n__pycache__/\n",
    }


def scaffold_workflow(name: str, parent: pathlib.Path | str = ".") -> Scaffolded:
    """Creates parent/name with a working hello workflow; nothing is left on failure."""
    if len(name) > MAX_NAME_LENGTH or not _NAME_RE.match(name):
        raise ScaffoldError(
            f"invalid workflow name {name!r}: use lowercase letters, digits and '-', "
            f"starting with a letter, at most {MAX_NAME_LENGTH} characters (e.g. my-workflow)"
        )
    parent = pathlib.Path(parent)
    target = parent / name
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ScaffoldError(f"{target} already exists and is not empty; choose another name or remove it")
    files = render_project(name)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{name}.", dir=parent))
    try:
        for relative, content in files.items():
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
        staging.chmod(0o777 & ~_umask())
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Scaffolded(directory=target, files=tuple(pathlib.Path(p) for p in sorted(files)))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
