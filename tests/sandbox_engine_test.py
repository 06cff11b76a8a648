"""The permission lock inside the real engine: `python -m engine` with the image's flags serves a
workflow whose node tries what the lock forbids; each try fails that run's node with the message
naming the flag, the engine keeps serving, and with the matching `--allow-*` flag the same try succeeds.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.serve_harness import ServerProcess, _get, post_json
from tests.support import write_workflow

# One node, told by the input what to try.
PROBE_NODE = '''
import ctypes, os, socket, subprocess

OUTSIDE = {outside!r}
APP = {app!r}


async def run(ctx, input):
    action = input["action"]
    if action == "read_shadow":
        return open("/etc/shadow").read()[:0] + "read"
    if action == "read_outside":
        return open(os.path.join(OUTSIDE, "secret.txt")).read()
    if action == "write_app":
        with open(os.path.join(APP, "written.txt"), "w") as f:
            f.write("x")
        return "written"
    if action == "write_outside":
        with open(os.path.join(OUTSIDE, "written.txt"), "w") as f:
            f.write("x")
        return "written"
    if action == "subprocess":
        return subprocess.run(["true"]).returncode
    if action == "system":
        return os.system("true")
    if action == "execv":
        os.execv("/bin/true", ["true"])
    if action == "connect":
        socket.create_connection((input["host"], input["port"]), timeout=5).close()
        return "connected"
    if action == "fetch":
        response = await ctx.fetch("other", "/")
        return response.status
    if action == "ctypes_execve":
        libc = ctypes.CDLL(None, use_errno=True)
        argv = (ctypes.c_char_p * 2)(b"/bin/true", None)
        libc.execve(b"/bin/true", argv, None)
        err = ctypes.get_errno()
        raise OSError(err, "execve: " + os.strerror(err))
    if action == "ctypes_syscall_execve":
        # Past the audit hook (libc's generic `syscall`): the kernel's seccomp filter answers.
        libc = ctypes.CDLL(None, use_errno=True)
        argv = (ctypes.c_char_p * 2)(b"/bin/true", None)
        number = {{"x86_64": 59, "aarch64": 221}}[os.uname().machine]
        libc.syscall(number, b"/bin/true", argv, None)
        err = ctypes.get_errno()
        raise OSError(err, "execve: " + os.strerror(err))
    if action == "version":
        return "v1"
    raise ValueError(action)
'''


@pytest.fixture
def other_host():
    """A listener on 127.0.0.2, the host outside --allow-net (loopback only), answering HTTP 200."""
    server = socket.socket()
    server.bind(("127.0.0.2", 0))
    server.listen(64)
    server.settimeout(0.2)
    stop = threading.Event()

    def answer() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(65536)
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                except OSError:
                    pass

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    yield server.getsockname()
    stop.set()
    thread.join(5)
    server.close()


@pytest.fixture
def setup(tmp_path: Path, other_host):
    app = tmp_path / "app"
    outside = tmp_path / "outside"
    scratch = tmp_path / "scratch"
    outside.mkdir()
    scratch.mkdir()
    (outside / "secret.txt").write_text("top secret")
    host, port = other_host
    write_workflow(
        app,
        {"probe": PROBE_NODE.format(outside=str(outside), app=str(app))},
        config={"services": {"other": {"base_url": f"http://{host}:{port}"}}},
        node_options={"probe": {"retries": 0}},
    )
    image_flags = [f"--allow-read={app}", f"--allow-write={scratch}", "--allow-net=127.0.0.1"]
    return app, outside, scratch, (host, port), image_flags


def run_node(server: ServerProcess, payload: dict) -> tuple[int, dict]:
    status, result = post_json(server.url + "/run", payload)
    return status, result["nodes"]["probe"]


def test_each_forbidden_action_fails_its_node_and_the_engine_keeps_serving(setup):
    app, outside, scratch, (host, port), image_flags = setup
    server = ServerProcess.engine(app, *image_flags, "--grpc-port", "-1")
    try:
        server.wait_ready()
        status, health = _get(server.url + "/healthz?verbose")
        assert status == 200
        lock = json.loads(health)["permission_lock"]
        assert {name: layer["active"] for name, layer in lock["layers"].items()} == {
            "landlock": True, "seccomp": True, "audit_hook": True,
        }  # fmt: skip
        assert lock["layers"]["landlock"]["abi"] >= 1
        assert "permission lock: landlock active (ABI" in server.output()

        expectations = {
            "read_shadow": "PermissionDenied: read of /etc/shadow denied: add it to --allow-read",
            "read_outside": f"PermissionDenied: read of {outside / 'secret.txt'} denied: add it to --allow-read",
            "write_app": f"PermissionDenied: write to {app / 'written.txt'} denied: add it to --allow-write",
            "write_outside": f"PermissionDenied: write to {outside / 'written.txt'} denied: add it to --allow-write",
            "subprocess": "PermissionDenied: running programs is denied: add --allow-run",
            "system": "PermissionDenied: running programs is denied: add --allow-run",
            "execv": "PermissionDenied: running programs is denied: add --allow-run",
            "ctypes_execve": "PermissionDenied: running programs is denied: add --allow-run (ctypes lookup of execve)",
            "ctypes_syscall_execve": "PermissionError: [Errno 1] execve: Operation not permitted",
        }
        for action, error in expectations.items():
            status, node = run_node(server, {"action": action})
            assert status == 500, (action, node)
            assert node["status"] == "NODE_STATUS_FAILED", (action, node)
            assert error in node["error"], (action, node["error"])

        status, node = run_node(server, {"action": "connect", "host": host, "port": port})
        assert f"connect to {host}:{port} denied: add it to --allow-net" in node["error"], node
        status, node = run_node(server, {"action": "fetch"})
        assert node["status"] == "NODE_STATUS_FAILED"
        assert f"connect to {host}:{port} denied: add it to --allow-net" in node["error"], node

        assert not (app / "written.txt").exists() and not (outside / "written.txt").exists()
        # Still serving, and a harmless run still succeeds.
        status, node = run_node(server, {"action": "version"})
        assert (status, node["status"], node["output"]) == (200, "NODE_STATUS_SUCCEEDED", "v1")
        assert server.proc.poll() is None
    finally:
        server.close()


def test_the_matching_allow_flags_let_the_same_actions_succeed(setup):
    app, outside, scratch, (host, port), _ = setup
    flags = [
        f"--allow-read={app},{outside},/etc/shadow",
        f"--allow-write={scratch},{app},{outside}",
        f"--allow-net=127.0.0.1,{host}",
        "--allow-run",
    ]
    server = ServerProcess.engine(app, *flags, "--grpc-port", "-1")
    try:
        server.wait_ready()
        cases = [
            ({"action": "read_outside"}, "top secret"),
            ({"action": "write_app"}, "written"),
            ({"action": "write_outside"}, "written"),
            ({"action": "subprocess"}, 0),
            ({"action": "system"}, 0),
            ({"action": "connect", "host": host, "port": port}, "connected"),
            ({"action": "fetch"}, 200),
        ]
        if os.geteuid() == 0:  # as root only the lock stands between a node and /etc/shadow
            cases.append(({"action": "read_shadow"}, "read"))
        for payload, output in cases:
            status, node = run_node(server, payload)
            assert (status, node["status"], node.get("output")) == (200, "NODE_STATUS_SUCCEEDED", output), (payload, node)
    finally:
        server.close()


def test_hot_reload_works_inside_the_lock(setup):
    app, _, _, _, image_flags = setup
    server = ServerProcess.engine(app, *image_flags, "--grpc-port", "-1", "--watch")
    try:
        server.wait_ready()
        assert run_node(server, {"action": "version"})[1]["output"] == "v1"
        node_file = app / "nodes" / "probe.py"
        node_file.write_text(node_file.read_text().replace('return "v1"', 'return "v2"'))
        deadline = time.monotonic() + 15
        output = "v1"
        while time.monotonic() < deadline and output != "v2":
            time.sleep(0.2)
            output = run_node(server, {"action": "version"})[1].get("output")
        assert output == "v2", server.output()
        assert "PermissionDenied" not in server.output()
    finally:
        server.close()


# -- the lock holds from a node's first line --------------------------------------

# Module-level code: what ran unconfined when nodes were imported before the lock.
AT_IMPORT = {
    "read": ("SHADOW = open('/etc/shadow').read()\n", "read of /etc/shadow denied: add it to --allow-read"),
    "shell": (
        "import subprocess\nSHELL = subprocess.Popen(['/bin/sh'], stdin=subprocess.PIPE, stdout=subprocess.PIPE)\n",
        "running programs is denied: add --allow-run",
    ),
    "dial": (
        "import socket\nSOCK = socket.create_connection(('127.0.0.2', {port}), timeout=5)\n",
        "connect to 127.0.0.2:{port} denied: add it to --allow-net",
    ),
}
RUN = "\n\nasync def run(ctx, input):\n    return 'ran'\n"


@pytest.mark.parametrize("attack", sorted(AT_IMPORT))
@pytest.mark.parametrize("how", ["engine", "dev"])
def test_node_code_at_import_runs_under_the_lock_and_a_denial_stops_start_up(tmp_path: Path, other_host, attack, how):
    """`python -m engine` (the image) and `pipedreamer dev` import nodes only once the lock holds:
    a refused import is a start-up failure (exit 1) naming the node file, the action and the flag."""
    _, port = other_host
    source, denial = (text.format(port=port) for text in AT_IMPORT[attack])
    app = write_workflow(tmp_path / "app", {"evil": source + RUN})
    if how == "engine":
        server = ServerProcess.engine(app, f"--allow-read={app}", "--allow-net=127.0.0.1", "--grpc-port", "-1")
    else:
        server = ServerProcess.dev(app, "--allow-net=127.0.0.1")
    try:
        assert server.wait(30) == 1, server.output()
        line = next(line for line in server.output().splitlines() if "error:" in line)
        assert f"nodes/evil.py:{source.count(chr(10))}: import failed: PermissionDenied: {denial} (node evil)" in line
        assert "root:" not in server.output()
    finally:
        server.close()


def test_a_module_planted_before_import_cannot_widen_the_read_roots(tmp_path: Path):
    """Read roots come from an explicit list, not from sys.modules (a module can claim any __path__)."""
    plant = "import sys, types\nm = types.ModuleType('planted')\nm.__path__ = ['/']\nsys.modules['planted'] = m\n"
    steal = "\n\nasync def run(ctx, input):\n    return open('/etc/shadow').read()[:5]\n"
    app = write_workflow(tmp_path / "app", {"plant": plant + steal}, node_options={"plant": {"retries": 0}})
    server = ServerProcess.engine(app, f"--allow-read={app}", "--grpc-port", "-1")
    try:
        server.wait_ready()
        lock = json.loads(_get(server.url + "/healthz?verbose")[1])["permission_lock"]
        assert "/" not in lock["read_paths"] and lock["degraded"] is False, lock
        status, body = post_json(server.url + "/run", {})
        assert status == 500
        assert "read of /etc/shadow denied: add it to --allow-read" in body["nodes"]["plant"]["error"]
    finally:
        server.close()
