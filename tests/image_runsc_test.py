"""The built image under gVisor's `runsc`, as a gVisor pod runs it: the runc test's leg, again on gVisor.

The image is unpacked with umoci into a bundle set up like the pod (read-only
root, uid 65534, no capabilities, no-new-privileges, tmpfs /tmp, secrets
read-only at /app/secrets: `tests/image_support.prepare_bundle`), and started
with the pinned Debian 13 `runsc` (`tools/gvisor/fetch_runsc.py`) with the
image's own entrypoint and arguments, untouched.

Network and runsc: `tests/runsc_support.py`.

No skips: when runsc cannot be fetched or cannot run here, the test fails
with the reason.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
import requests

from builder.build import build_image
from tests.image_support import REPO, real_base, shared_cache
from tests.netns_host import NetnsHost
from tests.runsc_support import RunscContainer, fresh_netns, image_tag, runsc_binary

LOCK_LINE = re.compile(r"permission lock: landlock (\w+)(?: \(ABI (\d+)\))?, seccomp (\w+), audit_hook (\w+); (.*)")
SHELLS = ("sh", "bash", "dash", "ash", "busybox", "zsh")


@pytest.fixture(scope="module")
def runsc() -> Path:
    return runsc_binary()


@pytest.fixture
def netns():
    with fresh_netns() as host:
        yield host


def lock_layers(log: str) -> dict[str, str]:
    """{layer: "active" | "INACTIVE"} from the engine's startup line (the first one the sandbox logs)."""
    match = LOCK_LINE.search(log)
    assert match, f"no 'permission lock:' line in the engine's startup log:\n{log}"
    return {"landlock": match.group(1), "seccomp": match.group(3), "audit_hook": match.group(4)}


def host_landlock() -> str:
    from engine.sandbox import landlock

    try:
        return f"ABI {landlock.abi_version()}"
    except landlock.LandlockUnavailable as exc:
        return f"none ({exc})"


def test_hello_image_serves_post_run_under_runsc(runsc: Path, netns: NetnsHost, tmp_path: Path,
                                                 tmp_path_factory: pytest.TempPathFactory) -> None:  # fmt: skip
    base = real_base(tmp_path_factory)
    started = time.monotonic()
    result = build_image(REPO / "examples" / "hello", base, tmp_path / "image", cache=shared_cache(tmp_path_factory))
    built = time.monotonic() - started
    secrets = tmp_path / "secrets"
    (secrets / "github").mkdir(parents=True)
    (secrets / "github" / "token").write_text("not-a-real-token")

    container = RunscContainer(runsc, tmp_path / "image", image_tag(tmp_path / "image"), tmp_path, netns,
                               read_only_mounts={"/app/secrets": secrets})  # fmt: skip
    try:
        rootfs = container.bundle / "rootfs"
        shells = [str(p.relative_to(rootfs)) for p in rootfs.rglob("*") if p.name in SHELLS and os.path.lexists(p)]
        assert not os.path.lexists(rootfs / "bin" / "sh") and not shells, f"the image has a shell: {shells}"
        assert container.args[:3] == ["/usr/bin/python3", "-m", "engine"], container.args
        assert "--allow-write=/tmp" in container.args and "--allow-read=/app" in container.args, container.args

        ready = container.start()
        # The engine really runs on gVisor: runsc knows the container, and it is running.
        state = subprocess.run(container.runsc_command("state", container.name), capture_output=True, text=True)
        assert state.returncode == 0 and json.loads(state.stdout)["status"] == "running", state.stdout + state.stderr

        posted = time.monotonic()
        response = requests.post(container.url + "/run", json={"name": "pod"}, timeout=30)
        run_seconds = time.monotonic() - posted
        assert response.status_code == 200, f"{response.status_code} {response.text}\n{container.diagnostics()}"
        body = response.json()
        assert body["status"] == "RUN_STATUS_SUCCEEDED", body
        assert body["output"] == {"greeting": "HELLO, POD!"}, body

        health = requests.get(container.url + "/healthz?verbose", timeout=10).json()["permission_lock"]
        assert container.stop() == 0, container.diagnostics()
    finally:
        container.close()

    log = container.output()
    layers = lock_layers(log)
    print(f"\nunder gVisor: {layers} (host kernel {platform.release()}, Landlock on the host: {host_landlock()})")
    print(f"build {built:.1f}s, runsc start to /readyz {ready:.1f}s, POST /run {run_seconds * 1000:.0f} ms")
    assert {name: layer["active"] for name, layer in health["layers"].items()} == {
        name: state == "active" for name, state in layers.items()
    }, (health, layers)  # fmt: skip
    assert layers["seccomp"] == "active" and layers["audit_hook"] == "active", log
    if layers["landlock"] != "active":
        # Loud, with the reason; the remaining layers still hold.
        assert "PERMISSION LOCK DEGRADED: landlock is not active" in log, log
        assert health["degraded"] is True and health["layers"]["landlock"]["detail"], health
    assert "read=/app write=/tmp net=all hosts run=denied" in log, log
    assert "not-a-real-token" not in log
    assert result.image == "hello:1.0.0"


# One node, told by the input what to try (the permission-lock tests' probe, trimmed to what the image has).
PROBE_NODE = '''
import ctypes, os, subprocess


async def run(ctx, input):
    action = input["action"]
    if action == "kernel":
        return os.uname().release
    if action == "identity":
        with open("/proc/self/status") as f:
            status = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
        with open("/proc/self/mounts") as f:
            mounts = [line.split()[1:4] for line in f.read().splitlines()]
        return {"uid": os.getuid(), "gid": os.getgid(), "mounts": mounts,
                **{key: status.get(key, "").strip() for key in ("CapEff", "CapPrm", "CapBnd", "NoNewPrivs")}}
    if action == "write":
        with open(input["path"], "w") as f:
            f.write("x")
        return "written"
    if action == "read":
        with open(input["path"]) as f:
            return f.read()
    if action == "subprocess":
        return subprocess.run(["/usr/bin/python3", "-c", "pass"]).returncode
    if action == "ctypes_execve":
        libc = ctypes.CDLL(None, use_errno=True)
        argv = (ctypes.c_char_p * 2)(b"/usr/bin/python3", None)
        libc.execve(b"/usr/bin/python3", argv, None)
        err = ctypes.get_errno()
        raise OSError(err, "execve: " + os.strerror(err))
    if action == "ctypes_syscall_execve":
        libc = ctypes.CDLL(None, use_errno=True)
        argv = (ctypes.c_char_p * 2)(b"/usr/bin/python3", None)
        number = {"x86_64": 59, "aarch64": 221}[os.uname().machine]
        libc.syscall(number, b"/usr/bin/python3", argv, None)
        err = ctypes.get_errno()
        raise OSError(err, "execve: " + os.strerror(err))
    raise ValueError(action)
'''


def test_node_denials_under_runsc(runsc: Path, netns: NetnsHost, tmp_path: Path,
                                  tmp_path_factory: pytest.TempPathFactory) -> None:  # fmt: skip
    workflow = tmp_path / "probe-flow"
    (workflow / "nodes").mkdir(parents=True)
    (workflow / "nodes" / "probe.py").write_text(PROBE_NODE)
    (workflow / "workflow.yaml").write_text(textwrap.dedent("""\
        name: probe-flow
        version: "1.0"
        triggers:
          - type: manual
        nodes:
          probe:
            path: nodes/probe.py
            retries: 0
        edges: []
    """))  # fmt: skip
    build_image(workflow, real_base(tmp_path_factory), tmp_path / "image", cache=shared_cache(tmp_path_factory))
    container = RunscContainer(runsc, tmp_path / "image", image_tag(tmp_path / "image"), tmp_path, netns)

    def probe(payload: dict) -> tuple[int, dict]:
        response = requests.post(container.url + "/run", json=payload, timeout=30)
        return response.status_code, response.json()["nodes"]["probe"]

    expectations = {
        # audit hook: the message names the flag
        "write /etc": ({"action": "write", "path": "/etc/pd-probe"},
                       "PermissionDenied: write to /etc/pd-probe denied: add it to --allow-write"),
        "write /app": ({"action": "write", "path": "/app/written.txt"},
                       "PermissionDenied: write to /app/written.txt denied: add it to --allow-write"),
        "read outside /app": ({"action": "read", "path": "/etc/passwd"},
                              "PermissionDenied: read of /etc/passwd denied: add it to --allow-read"),
        "subprocess": ({"action": "subprocess"}, "PermissionDenied: running programs is denied: add --allow-run"),
        "execve via ctypes": ({"action": "ctypes_execve"},
                              "PermissionDenied: running programs is denied: add --allow-run (ctypes lookup of execve)"),
        # seccomp inside gVisor: execve from C through libc's syscall(), past the audit hook, answers EPERM
        "execve from C": ({"action": "ctypes_syscall_execve"}, "PermissionError: [Errno 1] execve: Operation not permitted"),
    }  # fmt: skip
    try:
        container.start()
        status, node = probe({"action": "kernel"})
        assert status == 200, node
        assert node["output"] != platform.release(), f"the node saw the host kernel {platform.release()}: not under gVisor"
        print(f"\nkernel seen by the node under runsc: {node['output']} (host: {platform.release()})")

        # The pod's restrictions, as the sandboxed process sees them.
        status, node = probe({"action": "identity"})
        assert status == 200, node
        seen = node["output"]
        assert (seen["uid"], seen["gid"]) == (65534, 65534), seen
        assert all(int(seen[key] or "0", 16) == 0 for key in ("CapEff", "CapPrm", "CapBnd")), seen
        mounts = {target: (kind, options.split(",")) for target, kind, options in seen["mounts"]}
        assert "ro" in mounts["/"][1], f"root not read-only under runsc: {mounts['/']}"
        assert mounts["/tmp"][0] == "tmpfs" and "rw" in mounts["/tmp"][1], mounts.get("/tmp")

        for label, (payload, error) in expectations.items():
            status, node = probe(payload)
            assert status == 500, (label, node)
            assert node["status"] == "NODE_STATUS_FAILED", (label, node)
            assert error in node["error"], (label, node["error"], container.diagnostics())

        status, node = probe({"action": "write", "path": "/tmp/allowed.txt"})
        assert (status, node["output"]) == (200, "written"), node  # the tmpfs /tmp is the one writable place
        assert container.stop() == 0, container.diagnostics()  # and the engine kept serving until told to stop
    finally:
        container.close()
