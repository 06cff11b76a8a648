"""Test support for image tests: a shared cache, the real base, umoci + runc runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from deploy.base.assemble import assemble

REPO = Path(__file__).resolve().parent.parent


def require(*programs: str) -> None:
    """Fail (not skip) with the install hint when a program the test needs is missing."""
    hints = {"umoci": "umoci", "runc": "runc", "docker-registry": "docker-registry", "htpasswd": "apache2-utils",
             "qemu-aarch64-static": "qemu-user-static"}  # fmt: skip
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: apt-get install -y {' '.join(hints.get(p, p) for p in missing)}")


def shared_cache(factory: pytest.TempPathFactory) -> Path:
    """One cache for the whole session (debs, wheels, layers), fresh for each session."""
    path = factory.getbasetemp() / "pipedreamer-cache"
    path.mkdir(exist_ok=True)
    return path


def real_base(factory: pytest.TempPathFactory, architectures: tuple[str, ...] = ("amd64",)) -> Path:
    """The distroless base assembled from deploy/base/lock.json (downloads the .debs once)."""
    out = factory.getbasetemp() / f"base-{'-'.join(architectures)}"
    if not (out / "index.json").exists():
        assemble(out, architectures=architectures, cache=shared_cache(factory))
    return out


def prepare_bundle(
    layout: Path,
    tag: str,
    workdir: Path,
    *,
    args: list[str] | None = None,
    host_network: bool = False,
    read_only_mounts: dict[str, Path] | None = None,
) -> Path:
    """Unpack `layout:tag` with umoci into a runc bundle set up as the pod runs it:
    read-only root, uid 65534, no capabilities, no-new-privileges, a tmpfs /tmp,
    and `read_only_mounts` (container path → host dir) bound read-only."""
    require("umoci", "runc")
    bundle = workdir / f"bundle-{uuid.uuid4().hex[:8]}"
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:{tag}", str(bundle)], check=True, capture_output=True)
    config_path = bundle / "config.json"
    config = json.loads(config_path.read_text())
    process = config["process"]
    process["terminal"] = False
    if args is not None:
        process["args"] = args
    process["user"] = {"uid": 65534, "gid": 65534}
    process["noNewPrivileges"] = True
    process["capabilities"] = {k: [] for k in ("bounding", "effective", "inheritable", "permitted", "ambient")}
    config["root"]["readonly"] = True
    config["mounts"] = [m for m in config["mounts"] if m["destination"] != "/tmp"] + [
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]}
    ]
    for destination, source in (read_only_mounts or {}).items():
        config["mounts"].append({"destination": destination, "type": "bind", "source": str(source),
                                 "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]})  # fmt: skip
    if host_network:
        config["linux"]["namespaces"] = [n for n in config["linux"]["namespaces"] if n["type"] != "network"]
    config_path.write_text(json.dumps(config))
    return bundle


def run_in_runc(layout: Path, tag: str, workdir: Path, args: list[str], *, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `args` in the image under runc (see `prepare_bundle`) and wait for it."""
    bundle = prepare_bundle(layout, tag, workdir, args=args)
    name = f"pd-test-{uuid.uuid4().hex[:10]}"
    try:
        return subprocess.run(["runc", "run", name], cwd=bundle, capture_output=True, text=True, timeout=timeout)
    finally:
        subprocess.run(["runc", "delete", "--force", name], capture_output=True)
        shutil.rmtree(bundle, ignore_errors=True)
