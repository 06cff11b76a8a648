"""The audit hook's decisions, called directly (never installed in the test process: the lock is
irreversible); the real kernel layers are exercised in tests/sandbox_lock_test.py and sandbox_engine_test.py."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from engine.sandbox import PermissionDenied, PermissionPolicy, audit
from engine.sandbox.roots import Roots
from engine.sandbox.netguard import NetGuard


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    out = {name: tmp_path / name for name in ("app", "scratch", "outside")}
    for path in out.values():
        path.mkdir()
    (out["app"] / "node.py").write_text("x")
    (out["outside"] / "secret").write_text("s")
    return out


def guard_for(dirs: dict[str, Path], *, kernel_guards_files: bool = False, **policy_fields) -> audit.Guard:
    value = PermissionPolicy(allow_read=(str(dirs["app"]),), allow_write=(str(dirs["scratch"]),), **policy_fields)
    roots = Roots(
        read=(str(dirs["app"]), str(dirs["scratch"])), write=(str(dirs["scratch"]),), run=(str(dirs["app"]), "/usr")
    )
    return audit.Guard(value, roots, NetGuard(value.allow_net), kernel_guards_files=kernel_guards_files)


def refused(guard, event: str, args: tuple) -> str:
    with pytest.raises(PermissionDenied) as exc:
        guard(event, args)
    assert exc.value.errno == 13 and str(exc.value) == exc.value.strerror
    return str(exc.value)


def test_open_read_and_write_modes(dirs):
    guard = guard_for(dirs)
    node, secret = dirs["app"] / "node.py", dirs["outside"] / "secret"
    guard("open", (str(node), "r", os.O_RDONLY))
    guard("open", (node, "rb", os.O_RDONLY))  # PathLike
    assert refused(guard, "open", (str(secret), "r", os.O_RDONLY)) == f"read of {secret} denied: add it to --allow-read"
    assert refused(guard, "open", (str(node), "r+", os.O_RDWR)) == f"write to {node} denied: add it to --allow-write"
    assert refused(guard, "open", (str(node), None, os.O_WRONLY | os.O_CREAT)).startswith("write to")
    guard("open", (str(dirs["scratch"] / "new"), "w", os.O_WRONLY | os.O_CREAT | os.O_TRUNC))
    guard("open", (3, "r", os.O_RDONLY))  # a descriptor: nothing to check
    guard("open", (str(secret), None, os.O_PATH))  # O_PATH reads nothing
    # os.open(dir_fd=…): the event lacks the dir_fd. Without Landlock only the guard's own
    # os.open wrapper can tell it; a call that bypassed the wrapper is refused.
    assert refused(guard, "open", ("relative-to-a-dir-fd", None, os.O_RDONLY)).startswith(
        "os.open of relative path 'relative-to-a-dir-fd' denied: without Landlock"
    )
    guard_for(dirs, kernel_guards_files=True)("open", ("relative-to-a-dir-fd", None, os.O_RDONLY))  # Landlock decides


def test_allowed_reads_are_remembered_only_while_landlock_guards_files(dirs):
    link, secret = dirs["app"] / "link", dirs["outside"] / "secret"
    link.symlink_to(dirs["app"] / "node.py")
    remembering, strict = guard_for(dirs, kernel_guards_files=True), guard_for(dirs)
    for guard in (remembering, strict):
        guard("open", (str(link), "r", os.O_RDONLY))
    link.unlink()
    link.symlink_to(secret)  # the same name now leads outside
    remembering("open", (str(link), "r", os.O_RDONLY))  # allowed before: Landlock answers this one
    assert refused(strict, "open", (str(link), "r", os.O_RDONLY)) == f"read of {link} (resolves to {secret}) denied: add it to --allow-read"
    for _ in range(2):  # denials are never remembered
        assert refused(remembering, "open", (str(secret), "r", os.O_RDONLY)).startswith(f"read of {secret} denied")
    assert str(secret) not in remembering.allowed_reads and strict.allowed_reads is None
    remembering.READ_MEMORY = 2
    for name in ("a", "b", "c"):
        (dirs["app"] / name).write_text(name)
        remembering("open", (str(dirs["app"] / name), "r", os.O_RDONLY))
    assert len(remembering.allowed_reads) <= 2  # bounded


def test_relative_paths_use_the_cwd_and_dir_fds(dirs, monkeypatch: pytest.MonkeyPatch):
    guard = guard_for(dirs)
    monkeypatch.chdir(dirs["outside"])
    assert refused(guard, "open", ("secret", "r", os.O_RDONLY)) == f"read of {dirs['outside'] / 'secret'} denied: add it to --allow-read"
    fd = os.open(dirs["scratch"], os.O_RDONLY)
    try:
        guard("os.remove", ("file", fd))  # shutil.rmtree's style
        other = os.open(dirs["app"], os.O_RDONLY)
        try:
            assert refused(guard, "os.remove", ("node.py", other)) == f"write to {dirs['app'] / 'node.py'} denied: add it to --allow-write"
        finally:
            os.close(other)
    finally:
        os.close(fd)


def test_file_changing_events(dirs):
    guard = guard_for(dirs)
    app, scratch = dirs["app"], dirs["scratch"]
    for event, args in [
        ("os.mkdir", (str(app / "d"), 0o777, -1)),
        ("os.rmdir", (str(app), -1)),
        ("os.rename", (str(scratch / "a"), str(app / "b"), -1, -1)),
        ("os.rename", (str(app / "node.py"), str(scratch / "b"), -1, -1)),
        ("os.symlink", ("/etc/passwd", str(app / "l"), -1)),
        ("os.link", (str(scratch / "a"), str(app / "l"), -1, -1)),
        ("os.truncate", (str(app / "node.py"), 0)),
        ("os.chmod", (str(app / "node.py"), 0o777, -1)),
        ("os.chown", (str(app / "node.py"), 0, 0, -1)),
        ("os.utime", (str(app / "node.py"), None, None, -1)),
        ("os.setxattr", (str(app / "node.py"), "user.x", b"1", 0)),
        ("os.removexattr", (str(app / "node.py"), "user.x")),
    ]:
        assert refused(guard, event, args).endswith("denied: add it to --allow-write"), event
    guard("os.rename", (str(scratch / "a"), str(scratch / "b"), -1, -1))
    guard("os.mkdir", (str(scratch / "d"), 0o777, -1))
    guard("os.truncate", (5, 0))  # ftruncate on a descriptor


def test_symlinks_are_judged_by_their_target_but_removed_as_links(dirs):
    guard = guard_for(dirs)
    link = dirs["app"] / "escape"
    link.symlink_to(dirs["outside"] / "secret")
    message = refused(guard, "open", (str(link), "r", os.O_RDONLY))
    assert message == f"read of {link} (resolves to {dirs['outside'] / 'secret'}) denied: add it to --allow-read"
    inside = dirs["scratch"] / "to-outside"
    inside.symlink_to(dirs["outside"] / "secret")
    guard("os.remove", (str(inside), -1))  # removing the link touches scratch only


def test_listing_directories(dirs):
    guard = guard_for(dirs)
    guard("os.scandir", (str(dirs["app"]),))
    guard("os.scandir", (7,))
    assert refused(guard, "os.listdir", (str(dirs["outside"]),)) == f"read of {dirs['outside']} denied: add it to --allow-read"


def test_programs_without_allow_run(dirs):
    guard = guard_for(dirs)
    for event, args in [
        ("subprocess.Popen", ("true", ["true"], None, None)),
        ("os.system", (b"true",)),
        ("os.exec", ("/bin/true", ["true"], None)),
        ("os.posix_spawn", ("/bin/true", ["true"], {})),
    ]:
        assert refused(guard, event, args) == "running programs is denied: add --allow-run"
    assert refused(guard, "os.fork", ()) == "starting processes (fork) is denied: add --allow-run"
    assert refused(guard, "os.kill", (1, 15)) == "signalling process 1 is denied: add --allow-run"
    guard("os.kill", (os.getpid(), 0))
    libc = object()  # the CDLL the event names; only the symbol matters
    for symbol in ("execve", b"system", "posix_spawn", "fork"):
        name = symbol.decode() if isinstance(symbol, bytes) else symbol
        expected = f"running programs is denied: add --allow-run (ctypes lookup of {name})"
        assert refused(guard, "ctypes.dlsym", (libc, symbol)) == expected
    guard("ctypes.dlsym", (libc, "getpid"))  # the rest of libc stays usable
    guard("ctypes.dlsym", (libc, 42))  # by ordinal: nothing to name


def test_programs_with_allow_run_come_from_read_only_places(dirs):
    guard = guard_for(dirs, allow_run=True)
    guard("subprocess.Popen", ("true", ["true"], None, None))
    guard("os.system", (b"true",))
    guard("os.fork", ())
    guard("ctypes.dlsym", (object(), "execve"))
    written = dirs["scratch"] / "tool"
    written.write_text("#!/bin/sh\n")
    written.chmod(0o755)
    message = refused(guard, "os.exec", (str(written), ["tool"], None))
    assert message == f"running {written} denied: programs run only from read-only paths; add its directory to --allow-read"
    assert refused(guard, "subprocess.Popen", ("tool", ["tool"], None, {"PATH": str(dirs["scratch"])})).startswith("running")
    guard("subprocess.Popen", ("no-such-program", ["x"], None, None))  # exec itself reports "not found"


def test_network_events(dirs):
    guard = guard_for(dirs, allow_net=("127.0.0.1",))
    tcp = socket.socket()
    unix = socket.socket(socket.AF_UNIX)
    try:
        guard("socket.connect", (tcp, ("127.0.0.1", 80)))
        assert refused(guard, "socket.connect", (tcp, ("127.0.0.2", 80))) == "connect to 127.0.0.2:80 denied: add it to --allow-net"
        assert refused(guard, "socket.sendto", (tcp, ("127.0.0.2", 53))).startswith("connect to 127.0.0.2:53")
        assert refused(guard, "socket.getaddrinfo", ("example.com", 443, 0, 0, 0)).startswith("connect to example.com:443")
        assert refused(guard, "socket.gethostbyname", ("example.com",)) == "lookup of example.com denied: add it to --allow-net"
        guard("socket.getaddrinfo", (None, 8080, 0, 0, 0))
        guard("socket.connect", (unix, str(dirs["scratch"] / "s.sock")))
        sock_path = dirs["outside"] / "s.sock"
        assert refused(guard, "socket.connect", (unix, str(sock_path))) == f"connect to unix socket {sock_path} denied: add it to --allow-write"
        assert refused(guard, "socket.connect", (unix, "\0bus")).startswith("connect to abstract unix socket @bus")
    finally:
        tcp.close()
        unix.close()


def test_odd_event_arguments_never_break_the_program(dirs):
    guard = guard_for(dirs)
    guard("open", (object(), "r", 0))
    with socket.socket() as tcp:
        guard("socket.connect", (tcp, "not an address"))  # the socket call itself refuses it
    guard("some.other.event", ())
