"""Tests for the ctypes Landlock layer: UAPI layouts, ABI detection, and rules on the real kernel
(each restriction runs in a child process: it cannot be undone)."""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
import textwrap
from pathlib import Path

from engine.sandbox import landlock

REPO = Path(__file__).resolve().parents[1]


def in_child(body: str) -> dict:
    """Runs `body` (which sets `result`) in a fresh interpreter; returns `result`."""
    script = f"import json, os, sys\nsys.path.insert(0, {str(REPO)!r})\nfrom engine.sandbox import landlock\n{textwrap.dedent(body)}\nprint(json.dumps(result))"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_uapi_struct_layouts():
    assert ctypes.sizeof(landlock._PathBeneathAttr) == 12  # packed
    assert ctypes.sizeof(landlock._RulesetAttr) == 24
    assert ctypes.sizeof(landlock._NetPortAttr) == 16


def test_access_rights_per_abi():
    assert landlock._FS_BY_ABI[1] == (1 << 13) - 1
    assert landlock._FS_BY_ABI[2] & landlock.ACCESS_FS_REFER
    assert not landlock._FS_BY_ABI[2] & landlock.ACCESS_FS_TRUNCATE
    assert landlock._FS_BY_ABI[3] & landlock.ACCESS_FS_TRUNCATE
    assert not landlock._FS_BY_ABI[4] & landlock.ACCESS_FS_IOCTL_DEV
    assert landlock._FS_BY_ABI[5] & landlock.ACCESS_FS_IOCTL_DEV
    assert not landlock.WRITE & (landlock.ACCESS_FS_EXECUTE | landlock.ACCESS_FS_MAKE_CHAR | landlock.ACCESS_FS_MAKE_BLOCK)


def test_this_kernel_has_landlock():
    """The CI machine's kernel must offer Landlock; if not, every lock here runs degraded."""
    assert landlock.abi_version() >= 1


def test_rules_on_directories_and_single_files(tmp_path: Path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "a").write_text("a")
    (tmp_path / "one").write_text("one")
    (tmp_path / "other").write_text("other")
    result = in_child(
        f"""
        base = {str(tmp_path)!r}
        r = landlock.restrict_self(
            [landlock.PathRule(base + "/dir", landlock.WRITE), landlock.PathRule(base + "/one", landlock.READ),
             landlock.PathRule(base + "/missing", landlock.READ)],
            handle_execute=True,
        )
        def attempt(f):
            try:
                return f()
            except OSError as e:
                return e.errno
        result = {{
            "abi": r.abi,
            "skipped": r.skipped,
            "file_rule_access": [x.access for x in r.rules if x.path.endswith("/one")][0],
            "read_one": attempt(lambda: open(base + "/one").read()),
            "read_other": attempt(lambda: open(base + "/other").read()),
            "write_dir": attempt(lambda: open(base + "/dir/new", "w").write("x")),
            "rename_in_dir": attempt(lambda: os.rename(base + "/dir/a", base + "/dir/b")),
            "write_one": attempt(lambda: open(base + "/one", "w")),
        }}
        """
    )
    assert result["abi"] >= 1
    assert result["skipped"] == [str(tmp_path / "missing")]
    assert result["file_rule_access"] == landlock.ACCESS_FS_READ_FILE  # READ_DIR dropped on a file
    assert result["read_one"] == "one"
    assert result["read_other"] == 13
    assert result["write_dir"] == 1
    assert result["rename_in_dir"] is None
    assert result["write_one"] == 13


def test_tcp_connect_ports(tmp_path: Path):
    result = in_child(
        """
        import socket
        servers = [socket.socket() for _ in range(2)]
        for s in servers:
            s.bind(("127.0.0.1", 0)); s.listen()
        allowed, other = [s.getsockname()[1] for s in servers]
        r = landlock.restrict_self([], handle_execute=False, tcp_connect_ports=[allowed])
        def attempt(port):
            try:
                # Plain connect: create_connection would lazily import encodings.idna, unreadable here.
                socket.socket().connect(("127.0.0.1", port))
                return "ok"
            except OSError as e:
                return e.errno
        result = {"abi": r.abi, "ports": r.tcp_ports, "allowed": attempt(allowed), "other": attempt(other)}
        """
    )
    if result["abi"] < 4:
        assert result["ports"] is None and result["other"] == "ok"  # no TCP rules before ABI 4
    else:
        assert (result["allowed"], result["other"]) == ("ok", 13)


def test_threads_running_before_the_lock_are_reported():
    result = in_child(
        """
        import threading
        gate = threading.Event()
        t = threading.Thread(target=gate.wait, name="early")
        t.start()
        r = landlock.restrict_self([], handle_execute=False)
        gate.set(); t.join()
        result = {"abi": r.abi, "others": list(r.other_threads)}
        """
    )
    if result["abi"] < 8:
        assert len(result["others"]) == 1
    else:
        assert result["others"] == []  # TSYNC covered it
