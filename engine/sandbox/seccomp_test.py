"""Tests for the seccomp layer: libseccomp found without ldconfig, the deny list resolves on this
architecture, and the filter on the real kernel (in child processes: it cannot be undone)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

from engine.sandbox import seccomp

REPO = Path(__file__).resolve().parents[1]


def in_child(body: str) -> dict:
    script = f"import json, os, sys\nsys.path.insert(0, {str(REPO)!r})\nfrom engine.sandbox import seccomp\n{textwrap.dedent(body)}\nprint(json.dumps(result))"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_libseccomp_loads_without_ldconfig_or_a_compiler():
    """Distroless has no /sbin/ldconfig and no gcc: ctypes.util.find_library would find nothing."""
    result = in_child(
        """
        import ctypes.util
        ctypes.util.find_library = lambda name: None
        module = seccomp.load_pyseccomp()
        result = {"library": module._libseccomp_path, "api": module.get_api()}
        """
    )
    assert result["library"] == "libseccomp.so.2"
    assert result["api"] >= 3  # TSYNC needs API level 2+, ERRNO on bad arch 3+


def test_the_deny_list_resolves_on_this_architecture():
    module = seccomp.load_pyseccomp()
    missing = [name for name in (*seccomp.DENIED_SYSCALLS, *seccomp.EXEC_SYSCALLS) if module.resolve_syscall(module.Arch.NATIVE, name) < 0]
    if platform.machine() == "x86_64":
        # Only calls x86_64 never had (32-bit leftovers) may be missing.
        assert set(missing) <= {"umount", "stime", "nfsservctl", "create_module", "get_kernel_syms", "query_module"}, missing
    for name in ("ptrace", "mount", "bpf", "keyctl", "unshare", "setns", "init_module", "kexec_load", "perf_event_open", "userfaultfd"):
        assert name in seccomp.DENIED_SYSCALLS


def test_filter_denies_exec_and_namespaces_but_keeps_threads():
    result = in_child(
        """
        import ctypes, errno, threading
        r = seccomp.install_filter(allow_exec=False)
        libc = ctypes.CDLL(None, use_errno=True)
        def err(rc):
            return "ok" if rc == 0 else errno.errorcode[ctypes.get_errno()]
        argv = (ctypes.c_char_p * 2)(b"/bin/true", None)
        box = []
        t = threading.Thread(target=lambda: box.append(err(libc.unshare(0x10000000))))  # CLONE_NEWUSER
        t.start(); t.join()
        result = {
            "denied": list(r.denied),
            "execve": err(libc.execve(b"/bin/true", argv, None)),
            "clone_newns": err(libc.unshare(0x00020000)),
            "thread_unshare": box[0],
            "status": [l for l in open("/proc/self/status").read().splitlines() if l.startswith("Seccomp:")][0],
        }
        """
    )
    assert "execve" in result["denied"] and "clone(CLONE_NEW*)" in result["denied"]
    assert result["execve"] == "EPERM"
    assert result["clone_newns"] == "EPERM"
    assert result["thread_unshare"] == "EPERM"  # threads started after the filter inherit it
    assert result["status"].split() == ["Seccomp:", "2"]  # filter mode


def test_filter_reaches_threads_started_before_it():
    result = in_child(
        """
        import ctypes, errno, threading
        libc = ctypes.CDLL(None, use_errno=True)
        go, done = threading.Event(), []
        def later():
            go.wait()
            argv = (ctypes.c_char_p * 2)(b"/bin/true", None)
            libc.execve(b"/bin/true", argv, None)
            done.append(errno.errorcode[ctypes.get_errno()])
        t = threading.Thread(target=later)
        t.start()
        seccomp.install_filter(allow_exec=False)
        go.set(); t.join()
        result = {"early_thread_execve": done[0]}
        """
    )
    assert result["early_thread_execve"] == "EPERM"  # TSYNC


def test_allow_exec_keeps_execve_and_still_denies_the_rest():
    result = in_child(
        """
        import ctypes, errno, subprocess
        r = seccomp.install_filter(allow_exec=True)
        libc = ctypes.CDLL(None, use_errno=True)
        result = {
            "exec_allowed": r.exec_allowed,
            "run": subprocess.run(["true"]).returncode,
            "ptrace": errno.errorcode[ctypes.get_errno()] if libc.ptrace(0, 0, None, None) != 0 else "ok",
        }
        """
    )
    assert result == {"exec_allowed": True, "run": 0, "ptrace": "EPERM"}
