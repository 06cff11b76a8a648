"""Tests for the permission lock's pure parts: flags, policy, report, and the audit hook's decisions.

Nothing here locks the test process (the lock is irreversible); the real
kernel layers are exercised in tests/sandbox_lock_test.py and sandbox_engine_test.py.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path

import pytest

from engine import sandbox
from engine.netguard import NetGuard
from engine.sandbox import LayerStatus, LockReport, PermissionDenied, PermissionPolicy


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sandbox.add_permission_flags(parser)
    parser.add_argument("rest", nargs="*")
    return parser.parse_args(list(argv))


def policy(*argv: str) -> PermissionPolicy:
    return sandbox.policy_from_args(parse(*argv))


# -- flags --------------------------------------------------------------------


def test_deny_by_default():
    assert policy() == PermissionPolicy(allow_read=(), allow_write=(), allow_net=None, allow_run=False)


def test_the_images_flags():
    got = policy("--allow-read=/app", "--allow-write=/tmp", "--allow-net")
    assert got == PermissionPolicy(allow_read=("/app",), allow_write=("/tmp",), allow_net=(), allow_run=False)


def test_lists_repeats_and_relative_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    got = policy("--allow-read=/a,b", "--allow-read=/c,/a", "--allow-net=x.com,y.com:443", "--allow-net=x.com", "--allow-run")
    assert got.allow_read == ("/a", str(tmp_path / "b"), "/c")
    assert got.allow_net == ("x.com", "y.com:443")
    assert got.allow_run is True


def test_bare_flags_allow_everything_and_never_swallow_the_next_argument():
    ns = parse("--allow-net", "flowdir", "--allow-read", "--allow-write")
    assert ns.rest == ["flowdir"]
    got = sandbox.policy_from_args(ns)
    assert got == PermissionPolicy(allow_read=("/",), allow_write=("/",), allow_net=(), allow_run=False)
    # A bare flag wins over listed values of the same flag.
    assert policy("--allow-net=x.com", "--allow-net").allow_net == ()
    # After "--" nothing is a flag.
    assert parse("--", "--allow-net").rest == ["--allow-net"]


def test_flags_work_in_a_subcommand_parser():
    top = argparse.ArgumentParser()
    sub = top.add_subparsers(dest="command")
    dev = sub.add_parser("dev")
    dev.add_argument("dir")
    sandbox.add_permission_flags(dev)
    ns = top.parse_args(["dev", "--allow-net", "./flow"])
    assert ns.dir == "./flow" and sandbox.policy_from_args(ns).allow_net == ()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--allow-net="], "--allow-net needs a value"),
        (["--allow-read=,"], "--allow-read needs a value"),
        (["--allow-net=https://example.com"], "not a URL"),
        (["--allow-net=example.com:99999"], "port must be 1-65535"),
    ],
)
def test_bad_flag_values_are_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit) as exc:
        parse(*argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_policy_validates_net_entries():
    with pytest.raises(ValueError, match="port must be"):
        PermissionPolicy(allow_net=("example.com:0",))


@pytest.mark.parametrize(
    "value",
    [
        PermissionPolicy(),
        PermissionPolicy(allow_read=("/app",), allow_write=("/tmp",), allow_net=()),
        PermissionPolicy(allow_read=("/",), allow_write=("/",), allow_net=("a.com", "[::1]:80"), allow_run=True),
    ],
)
def test_to_flags_round_trips(value: PermissionPolicy):
    assert policy(*value.to_flags()) == value


def test_describe():
    assert PermissionPolicy().describe() == "read=- write=- net=denied run=denied"
    assert PermissionPolicy(("/app",), ("/tmp",), (), True).describe() == "read=/app write=/tmp net=all hosts run=allowed"


# -- report -------------------------------------------------------------------


def make_report(*active: bool) -> LockReport:
    names = ("landlock", "seccomp", "audit_hook")
    layers = tuple(
        LayerStatus(name, on, "ok" if on else "missing", abi=7 if name == "landlock" and on else None)
        for name, on in zip(names, active)
    )
    return LockReport(PermissionPolicy(allow_read=("/app",)), layers, ("/app",), ("/dev/null",), ("careful",))


def test_report_dict_is_json_and_keyed_by_layer():
    data = make_report(True, True, True).to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["applied"] is True and data["degraded"] is False
    assert data["layers"]["landlock"] == {"active": True, "detail": "ok", "abi": 7}
    assert data["layers"]["seccomp"] == {"active": True, "detail": "ok"}
    assert data["policy"]["allow_net"] is None
    assert data["warnings"] == ["careful"]


def test_report_summary_and_degraded():
    report = make_report(False, True, True)
    assert report.degraded and report.to_dict()["layers"]["landlock"]["abi"] is None
    assert report.summary() == (
        "permission lock: landlock INACTIVE, seccomp active, audit_hook active; read=/app write=- net=denied run=denied"
    )
    assert make_report(True, True, True).summary().startswith("permission lock: landlock active (ABI 7), seccomp active")
    assert report.layer("seccomp").active and pytest.raises(KeyError, report.layer, "nope")


def test_disabled_layers_parsing():
    assert sandbox.disabled_layers({}) == (frozenset(), [])
    disabled, warnings = sandbox.disabled_layers({"PIPEDREAMER_SANDBOX_DISABLE": " Landlock, seccomp,audit ,,"})
    assert disabled == {"landlock", "seccomp", "audit_hook"} and warnings == []
    disabled, warnings = sandbox.disabled_layers({"PIPEDREAMER_SANDBOX_DISABLE": "landlok"})
    assert disabled == frozenset() and "unknown layer 'landlok'" in warnings[0]


# -- paths --------------------------------------------------------------------


def test_interpreter_paths_cover_stdlib_site_packages_and_the_engine():
    paths = sandbox.interpreter_read_paths()
    engine_dir = str(Path(sandbox.__file__).resolve().parent)
    assert any(engine_dir == p or engine_dir.startswith(p + "/") for p in paths)
    assert any(os.path.dirname(os.__file__).startswith(p) for p in paths)
    import pytest as loaded  # a third-party package already imported

    assert any(os.path.dirname(loaded.__file__).startswith(p) for p in paths)


def test_roots_are_real_minimal_and_keep_writable_out_of_execution(tmp_path: Path):
    app, scratch = tmp_path / "app", tmp_path / "scratch"
    (app / "sub").mkdir(parents=True)
    scratch.mkdir()
    link = tmp_path / "link"
    link.symlink_to(app)
    roots = sandbox._effective_roots(PermissionPolicy(allow_read=(str(link), str(app / "sub")), allow_write=(str(scratch),)), ())
    assert str(app) in roots.read and str(app / "sub") not in roots.read and str(link) not in roots.read
    assert roots.write == tuple(sorted((str(scratch), os.path.realpath("/dev/null"))))
    assert roots.run == ()
    with_run = sandbox._effective_roots(
        PermissionPolicy(allow_read=(str(app),), allow_write=(str(scratch),), allow_run=True), ()
    )
    assert any(sandbox._inside(os.path.realpath("/usr/bin/true"), r) for r in with_run.run)
    assert any(sandbox._inside(str(app), r) for r in with_run.run)
    assert not any(sandbox._inside(str(scratch), r) for r in with_run.run)


def test_root_set_matches_whole_path_components_only():
    roots = sandbox._RootSet(["/app", "/usr/lib", "/dev/null"])
    assert roots.covers("/app") and roots.covers("/app/nodes/x.py") and roots.covers("/usr/lib/python3.13/os.py")
    assert roots.covers("/dev/null")
    assert not roots.covers("/application/x") and not roots.covers("/usr") and not roots.covers("/")
    assert not roots.covers("/dev/nullx") and not roots.covers("/etc/shadow")
    assert sandbox._RootSet(["/"]).covers("/etc/shadow")
    assert not sandbox._RootSet([]).covers("/app")


def test_realpath_agrees_with_os_path_realpath(tmp_path: Path):
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "real" / "sub" / "f").write_text("x")
    (tmp_path / "hop").symlink_to(tmp_path / "real")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere" / "f")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    cases = [
        tmp_path / "hop" / "sub" / "f",  # through a symlinked directory
        tmp_path / "hop" / "sub" / "new-file",  # does not exist yet: the slow walk
        tmp_path / "dangling",
        fifo,  # O_PATH never blocks on a FIFO
        Path("/etc/passwd"),
        Path("/proc/self/fd/0"),  # a magic link: whatever fd 0 is, the answer matches
    ]
    for path in cases:
        assert sandbox._realpath(str(path)) == os.path.realpath(path), path


# -- the audit hook's decisions (called directly, never installed here) ------


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    out = {name: tmp_path / name for name in ("app", "scratch", "outside")}
    for path in out.values():
        path.mkdir()
    (out["app"] / "node.py").write_text("x")
    (out["outside"] / "secret").write_text("s")
    return out


def guard_for(dirs: dict[str, Path], *, kernel_guards_files: bool = False, **policy_fields) -> sandbox._Guard:
    value = PermissionPolicy(allow_read=(str(dirs["app"]),), allow_write=(str(dirs["scratch"]),), **policy_fields)
    roots = sandbox._Roots(
        read=(str(dirs["app"]), str(dirs["scratch"])), write=(str(dirs["scratch"]),), run=(str(dirs["app"]), "/usr")
    )
    return sandbox._Guard(value, roots, NetGuard(value.allow_net), kernel_guards_files=kernel_guards_files)


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


def test_apply_policy_is_once_per_process(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(sandbox, "_report", make_report(True, True, True))
    with pytest.raises(RuntimeError, match="already applied"):
        sandbox.apply_policy(PermissionPolicy())
    assert sandbox.current_report() is sandbox._report


def test_the_lock_is_not_applied_in_this_test_process():
    assert sandbox.current_report() is None
    assert "Seccomp:\t0" in Path("/proc/self/status").read_text() or sys.platform != "linux"


def test_policy_accepts_lists_and_refuses_a_bare_string():
    assert PermissionPolicy(allow_read=["/app"], allow_net=["a.com"]) == PermissionPolicy(allow_read=("/app",), allow_net=("a.com",))
    with pytest.raises(TypeError, match="not one string"):
        PermissionPolicy(allow_read="/app")
