"""The permission lock on the real kernel: every case is a fresh Python process that locks itself and
tries one thing, refused with the message naming the flag — and allowed once that flag is given.

The policy mirrors the image's: `--allow-read=<workflow dir> --allow-write=<scratch dir>
--allow-net=127.0.0.1` (loopback only: 127.0.0.2 stands in for "a host not allowed").
PIPEDREAMER_SANDBOX_DISABLE=audit takes the Python layer away to show what the kernel alone refuses.
"""

from __future__ import annotations

import errno
import http.server
import json
import os
import platform
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

PROBE = textwrap.dedent(
    r"""
    import argparse, ctypes, errno, json, os, socket, sys
    sys.path.insert(0, REPO)
    from engine import sandbox

    parser = argparse.ArgumentParser()
    sandbox.add_permission_flags(parser)
    parser.add_argument("action")
    parser.add_argument("arg", nargs="?")
    ns = parser.parse_args()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long

    def argv(*items):
        return (ctypes.c_char_p * (len(items) + 1))(*[i.encode() for i in items], None)

    def errname(rc):
        return "ok" if rc == 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))

    def hostport(text):
        host, port = text.rsplit(":", 1)
        return host, int(port)

    def read(path):
        with open(path) as f:
            return f.read()

    def write(path):
        with open(path, "w") as f:
            f.write("written")
        return "written"

    def ctypes_connect(arg):
        host, port = hostport(arg)
        s = socket.socket()
        class sockaddr_in(ctypes.Structure):
            _fields_ = [("family", ctypes.c_ushort), ("port", ctypes.c_uint16), ("addr", ctypes.c_uint32), ("zero", ctypes.c_char * 8)]
        addr = sockaddr_in(socket.AF_INET, socket.htons(port), int.from_bytes(socket.inet_aton(host), "little"))
        return errname(libc.connect(s.fileno(), ctypes.byref(addr), ctypes.sizeof(addr)))

    def aiohttp_get(url):
        import asyncio, aiohttp
        async def main():
            async with aiohttp.ClientSession() as session:
                async with session.get(url) as response:
                    return await response.text()
        return asyncio.run(main())

    def in_thread(path):
        import threading
        box = {}
        def body():
            try:
                box["value"] = read(path)
            except BaseException as exc:
                box["exc"] = exc
        t = threading.Thread(target=body)
        t.start(); t.join()
        if "exc" in box:
            raise box["exc"]
        return box["value"]

    def run_written(directory):
        import shutil, subprocess
        target = os.path.join(directory, "mytrue")
        shutil.copy("/bin/true", target)
        os.chmod(target, 0o755)
        return subprocess.run([target]).returncode

    def i386_execve(_):
        import mmap
        # push rbx; mov eax, 11 (i386 execve); xor ebx/ecx/edx; int 0x80; pop rbx; ret
        code = bytes([0x53, 0xB8, 0x0B, 0, 0, 0, 0x31, 0xDB, 0x31, 0xC9, 0x31, 0xD2, 0xCD, 0x80, 0x5B, 0xC3])
        buf = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        buf.write(code)
        function = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(buf)))
        return errno.errorcode.get(-function(), "ran")

    def ctypes_socket(arg):
        family, kind, proto = (int(x) for x in arg.split(","))
        fd = libc.socket(family, kind, proto)
        if fd >= 0:
            os.close(fd)
            return "ok"
        return errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))

    def mptcp_connect(arg):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
        s.settimeout(5)
        s.connect(hostport(arg))
        return "connected"

    def dir_fd_read(path):
        directory, name = os.path.split(path)
        base = os.open(directory, os.O_PATH)
        fd = os.open(name, os.O_RDONLY, dir_fd=base)
        return os.read(fd, 100).decode()

    def dir_fd_write(path):
        directory, name = os.path.split(path)
        base = os.open(directory, os.O_PATH)
        fd = os.open(name, os.O_WRONLY | os.O_CREAT, dir_fd=base)
        os.write(fd, b"written")
        return "written"

    def chdir_read(path):
        directory, name = os.path.split(path)
        os.chdir(directory)
        return os.read(os.open(name, os.O_RDONLY), 100).decode()

    def rmtree(directory):
        import shutil
        tree = os.path.join(directory, "tree")
        os.makedirs(os.path.join(tree, "a", "b"))
        with open(os.path.join(tree, "a", "b", "f"), "w") as f:
            f.write("x")
        shutil.rmtree(tree)
        return os.path.exists(tree)

    def subinterpreter(_):
        try:
            import _interpreters as interpreters  # 3.13
        except ImportError:
            import _xxsubinterpreters as interpreters
        return interpreters.create()

    PREOPENED = os.open(os.environ["PROBE_PREOPEN"], os.O_RDONLY) if os.environ.get("PROBE_PREOPEN") else None
    if os.environ.get("PROBE_PLANT"):
        import types
        planted = types.ModuleType("planted")
        planted.__path__ = ["/"]
        sys.modules["planted"] = planted

    ACTIONS = {
        "read": read,
        "ctypes_socket": ctypes_socket,
        "mptcp_connect": mptcp_connect,
        "raw_socket": lambda _: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close(),
        "packet_socket": lambda _: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close(),
        "dir_fd_read": dir_fd_read,
        "dir_fd_write": dir_fd_write,
        "chdir_read": chdir_read,
        "rmtree": rmtree,
        "subinterpreter": subinterpreter,
        "read_preopened": lambda _: os.read(PREOPENED, 100).decode(),
        "write": write,
        "listdir": lambda p: sorted(os.listdir(p)),
        "subprocess": lambda _: __import__("subprocess").run(["true"]).returncode,
        "system": lambda _: os.system("true"),
        "execv": lambda _: os.execv("/bin/echo", ["echo", "EXECUTED"]),
        "ctypes_execve": lambda _: errname(libc.execve(b"/bin/echo", argv("echo", "EXECUTED"), None)),
        "syscall_execve": lambda _: errname(libc.syscall(ctypes.c_long({"x86_64": 59, "aarch64": 221}[os.uname().machine]),
                                                         b"/bin/echo", argv("echo", "EXECUTED"), None)),
        "ctypes_execveat": lambda _: errname(libc.syscall(ctypes.c_long(322), -100, b"/bin/echo", argv("echo", "EXECUTED"), None, 0)),
        "x32_execve": lambda _: errname(libc.syscall(ctypes.c_long(0x40000000 | 520), b"/bin/echo", argv("echo", "EXECUTED"), None)),
        "i386_execve": i386_execve,
        "connect": lambda a: socket.create_connection(hostport(a), timeout=5).close() or "connected",
        "ctypes_connect": ctypes_connect,
        "sendto": lambda a: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", hostport(a)),
        "getaddrinfo": lambda a: len(socket.getaddrinfo(*hostport(a))),
        "aiohttp": aiohttp_get,
        "ptrace": lambda _: errname(libc.ptrace(0, 0, None, None)),  # PTRACE_TRACEME
        "unshare_user": lambda _: errname(libc.unshare(0x10000000)),  # CLONE_NEWUSER
        "mount": lambda _: errname(libc.mount(b"none", b"/mnt", b"tmpfs", 0, None)),
        "bpf": lambda _: errname(libc.syscall(ctypes.c_long(321), 0, None, 0)),
        "keyctl": lambda _: errname(libc.syscall(ctypes.c_long(250), 0, 0, 0, 0, 0)),
        "clone3": lambda _: errname(libc.syscall(ctypes.c_long(435), None, 0)),
        "fork": lambda _: (lambda pid: os._exit(0) if pid == 0 else os.waitpid(pid, 0)[1])(os.fork()),
        "thread_read": in_thread,
        "run_written": run_written,
        "import_late": lambda _: [__import__(m).__name__ for m in ("sqlite3", "xml.dom.minidom", "zoneinfo", "ssl")],
        "nothing": lambda _: None,
    }

    report = sandbox.apply_policy(sandbox.policy_from_args(ns))
    try:
        value = ACTIONS[ns.action](ns.arg)
        outcome = {"ok": True, "value": value}
    except Exception as exc:
        outcome = {"ok": False, "type": type(exc).__name__, "errno": getattr(exc, "errno", None),
                   "message": str(exc), "flag": getattr(exc, "flag", None)}
        if getattr(exc, "os_error", None) is not None:  # aiohttp wraps the OSError
            outcome["os_error"] = str(exc.os_error)
    outcome["report"] = report.to_dict()
    print("PROBE " + json.dumps(outcome, default=str), flush=True)
    """
).replace("REPO", repr(str(REPO)))


def probe(*args: str, env: dict[str, str] | None = None, timeout: float = 60, expect_report: bool = True) -> dict:
    """Runs the probe; returns its outcome dict plus `stdout`, `stderr`, `returncode`."""
    full_env = {k: v for k, v in os.environ.items() if k != "PIPEDREAMER_SANDBOX_DISABLE"}
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=full_env, timeout=timeout
    )
    outcome: dict = {}
    for line in proc.stdout.splitlines():
        if line.startswith("PROBE "):
            outcome = json.loads(line[len("PROBE ") :])
    outcome.update(stdout=proc.stdout, stderr=proc.stderr, returncode=proc.returncode)
    if expect_report and not outcome.get("report") and "EXECUTED" not in proc.stdout:
        raise AssertionError(f"probe {args} failed to report (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return outcome


KERNEL_ONLY = {"PIPEDREAMER_SANDBOX_DISABLE": "audit"}


@pytest.fixture
def workflow(tmp_path: Path) -> Path:
    directory = tmp_path / "app"
    (directory / "nodes").mkdir(parents=True)
    (directory / "nodes" / "hello.py").write_text("async def run(ctx, input):\n    return 'v1'\n")
    return directory


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    directory = tmp_path / "scratch"
    directory.mkdir()
    return directory


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    directory = tmp_path / "outside"
    directory.mkdir()
    (directory / "secret.txt").write_text("top secret")
    return directory


@pytest.fixture
def image_flags(workflow: Path, scratch: Path) -> list[str]:
    """The image's entrypoint policy, on temporary directories."""
    return [f"--allow-read={workflow}", f"--allow-write={scratch}", "--allow-net=127.0.0.1"]


@pytest.fixture
def listeners():
    """Listening sockets on 127.0.0.1 and 127.0.0.2 (connects complete in the backlog; nothing leaves lo)."""
    socks = {}
    for host in ("127.0.0.1", "127.0.0.2"):
        sock = socket.socket()
        sock.bind((host, 0))
        sock.listen(16)
        socks[host] = sock
    yield {host: f"{host}:{sock.getsockname()[1]}" for host, sock in socks.items()}
    for sock in socks.values():
        sock.close()


def denied(outcome: dict, message: str, flag: str) -> None:
    assert outcome["ok"] is False, outcome
    assert outcome["type"] == "PermissionDenied", outcome
    assert outcome["message"] == message, outcome
    assert outcome["flag"] == flag
    assert outcome["errno"] == errno.EACCES


def all_layers_active(outcome: dict) -> None:
    layers = outcome["report"]["layers"]
    assert all(layer["active"] for layer in layers.values()), layers


# -- files --------------------------------------------------------------------


def test_read_etc_shadow_is_denied_then_allowed(image_flags: list[str]):
    out = probe(*image_flags, "read", "/etc/shadow")
    all_layers_active(out)
    denied(out, "read of /etc/shadow denied: add it to --allow-read", "--allow-read")
    allowed = probe(*image_flags, "--allow-read=/etc/shadow", "read", "/etc/shadow")
    if os.geteuid() == 0:
        assert allowed["ok"] is True  # as root only the lock stood in the way
    else:
        assert allowed["type"] == "PermissionError"  # file permissions refuse, the lock no longer does


def test_read_etc_shadow_is_refused_by_landlock_without_the_audit_hook(image_flags: list[str]):
    out = probe(*image_flags, "read", "/etc/shadow", env=KERNEL_ONLY)
    assert out["report"]["layers"]["audit_hook"]["active"] is False
    assert (out["ok"], out["type"], out["errno"]) == (False, "PermissionError", errno.EACCES)


def test_read_outside_the_workflow_dir(image_flags: list[str], outside: Path, workflow: Path):
    secret = outside / "secret.txt"
    denied(probe(*image_flags, "read", str(secret)), f"read of {secret} denied: add it to --allow-read", "--allow-read")
    assert probe(*image_flags, "read", str(secret), env=KERNEL_ONLY)["errno"] == errno.EACCES
    assert probe(*image_flags, f"--allow-read={outside}", "read", str(secret))["value"] == "top secret"
    assert probe(*image_flags, "read", str(workflow / "nodes" / "hello.py"))["ok"] is True


def test_listing_a_directory_outside_the_policy(image_flags: list[str], outside: Path):
    denied(probe(*image_flags, "listdir", str(outside)), f"read of {outside} denied: add it to --allow-read", "--allow-read")
    assert probe(*image_flags, "listdir", str(outside), env=KERNEL_ONLY)["errno"] == errno.EACCES


def test_symlink_out_of_the_workflow_dir_is_judged_by_its_target(image_flags: list[str], workflow: Path, outside: Path):
    link = workflow / "escape.txt"
    link.symlink_to(outside / "secret.txt")
    out = probe(*image_flags, "read", str(link))
    denied(out, f"read of {link} (resolves to {outside / 'secret.txt'}) denied: add it to --allow-read", "--allow-read")
    assert probe(*image_flags, "read", str(link), env=KERNEL_ONLY)["errno"] == errno.EACCES


def test_write_under_the_workflow_dir_is_denied_then_allowed(image_flags: list[str], workflow: Path):
    target = workflow / "out.txt"
    denied(probe(*image_flags, "write", str(target)), f"write to {target} denied: add it to --allow-write", "--allow-write")
    assert probe(*image_flags, "write", str(target), env=KERNEL_ONLY)["errno"] == errno.EACCES
    assert not target.exists()
    assert probe(*image_flags, f"--allow-write={workflow}", "write", str(target))["ok"] is True
    assert target.read_text() == "written"


def test_write_outside_the_scratch_dir(image_flags: list[str], scratch: Path, outside: Path):
    target = outside / "new.txt"
    denied(probe(*image_flags, "write", str(target)), f"write to {target} denied: add it to --allow-write", "--allow-write")
    assert probe(*image_flags, "write", str(target), env=KERNEL_ONLY)["errno"] == errno.EACCES
    assert probe(*image_flags, "write", str(scratch / "ok.txt"))["ok"] is True
    assert (scratch / "ok.txt").read_text() == "written"


def test_threads_started_after_the_lock_are_confined(image_flags: list[str]):
    denied(probe(*image_flags, "thread_read", "/etc/shadow"), "read of /etc/shadow denied: add it to --allow-read", "--allow-read")
    assert probe(*image_flags, "thread_read", "/etc/shadow", env=KERNEL_ONLY)["errno"] == errno.EACCES


def test_modules_imported_after_the_lock_still_load(image_flags: list[str]):
    """Stdlib, C extensions and their shared libraries stay readable (lazy imports, hot reload)."""
    out = probe(*image_flags, "import_late")
    assert out["ok"] is True, out
    assert out["value"] == ["sqlite3", "xml", "zoneinfo", "ssl"]


# -- programs -----------------------------------------------------------------


@pytest.mark.parametrize("action", ["subprocess", "system", "execv"])
def test_running_programs_is_denied_then_allowed(image_flags: list[str], action: str):
    out = probe(*image_flags, action)
    denied(out, "running programs is denied: add --allow-run", "--allow-run")
    assert "EXECUTED" not in out["stdout"]
    allowed = probe(*image_flags, "--allow-run", action)
    assert allowed["returncode"] == 0
    if action == "execv":
        assert allowed["stdout"].strip() == "EXECUTED"  # the process image was replaced
    else:
        assert allowed["ok"] is True and allowed["value"] == 0, allowed


def test_subprocess_without_the_audit_hook_gets_eperm_from_seccomp(image_flags: list[str]):
    out = probe(*image_flags, "subprocess", env=KERNEL_ONLY)
    assert (out["type"], out["errno"]) == ("PermissionError", errno.EPERM), out


def test_ctypes_lookup_of_execve_names_the_flag(image_flags: list[str]):
    denied(probe(*image_flags, "ctypes_execve"),
           "running programs is denied: add --allow-run (ctypes lookup of execve)", "--allow-run")  # fmt: skip
    allowed = probe(*image_flags, "--allow-run", "ctypes_execve")
    assert allowed["stdout"].strip() == "EXECUTED" and allowed["returncode"] == 0


def test_execve_bypassing_python_gets_eperm_from_seccomp(image_flags: list[str]):
    # libc's generic syscall(): no audit event names the program, the kernel decides.
    out = probe(*image_flags, "syscall_execve")
    assert out["ok"] is True and out["value"] == "EPERM", out
    assert "EXECUTED" not in out["stdout"]
    assert probe(*image_flags, "ctypes_execveat")["value"] == "EPERM"
    allowed = probe(*image_flags, "--allow-run", "syscall_execve")
    assert allowed["stdout"].strip() == "EXECUTED" and allowed["returncode"] == 0


def test_execve_without_seccomp_is_still_refused_by_landlock(image_flags: list[str]):
    out = probe(*image_flags, "syscall_execve", env={"PIPEDREAMER_SANDBOX_DISABLE": "seccomp"})
    assert out["report"]["layers"]["seccomp"]["active"] is False
    assert out["value"] == "EACCES", out


def test_execve_runs_when_both_kernel_layers_are_off(image_flags: list[str]):
    """The control experiment: the refusals above really come from seccomp and Landlock."""
    out = probe(*image_flags, "syscall_execve", env={"PIPEDREAMER_SANDBOX_DISABLE": "landlock,seccomp"})
    assert out["stdout"].strip() == "EXECUTED"


@pytest.mark.skipif(platform.machine() != "x86_64", reason="x32 and int 0x80 exist on x86_64 only")
def test_other_syscall_abis_cannot_sidestep_the_filter(image_flags: list[str]):
    assert probe(*image_flags, "x32_execve")["value"] in ("ENOSYS", "EPERM")
    # 32-bit execve via int 0x80: EFAULT (it reached the kernel) without the filter, ENOSYS with it.
    control = probe(*image_flags, "i386_execve", env={"PIPEDREAMER_SANDBOX_DISABLE": "seccomp"}, expect_report=False)
    locked = probe(*image_flags, "i386_execve", expect_report=False)
    if control["returncode"] == -11:  # a kernel without IA-32 emulation: int 0x80 faults before any filter
        assert locked["returncode"] == -11
    else:
        assert (control["value"], locked["value"]) == ("EFAULT", "ENOSYS")


def test_programs_written_by_the_sandbox_cannot_run_even_with_allow_run(image_flags: list[str], scratch: Path):
    out = probe(*image_flags, "--allow-run", "run_written", str(scratch))
    denied(
        out,
        f"running {scratch / 'mytrue'} denied: programs run only from read-only paths; add its directory to --allow-read",
        "--allow-read",
    )
    kernel = probe(*image_flags, "--allow-run", "run_written", str(scratch), env=KERNEL_ONLY)
    assert (kernel["type"], kernel["errno"]) == ("PermissionError", errno.EACCES), kernel


def test_fork_needs_allow_run(image_flags: list[str]):
    denied(probe(*image_flags, "fork"), "starting processes (fork) is denied: add --allow-run", "--allow-run")
    assert probe(*image_flags, "--allow-run", "fork")["value"] == 0


@pytest.mark.parametrize(
    "action, expected",
    [("ptrace", "EPERM"), ("unshare_user", "EPERM"), ("mount", "EPERM"), ("bpf", "EPERM"), ("keyctl", "EPERM"), ("clone3", "ENOSYS")],
)
def test_syscalls_no_workflow_needs_are_refused_even_with_allow_run(image_flags: list[str], action: str, expected: str):
    assert probe(*image_flags, "--allow-run", action)["value"] == expected


def test_threads_still_start_with_clone3_refused(image_flags: list[str], workflow: Path):
    out = probe(*image_flags, "thread_read", str(workflow / "nodes" / "hello.py"))
    assert out["ok"] is True and "v1" in out["value"]


# -- network ------------------------------------------------------------------


def test_connect_to_a_host_not_in_allow_net(image_flags: list[str], listeners: dict[str, str]):
    other = listeners["127.0.0.2"]
    denied(probe(*image_flags, "connect", other), f"connect to {other} denied: add it to --allow-net", "--allow-net")
    assert probe(*image_flags, "connect", listeners["127.0.0.1"])["value"] == "connected"
    assert probe(*image_flags, "--allow-net=127.0.0.2", "connect", other)["value"] == "connected"
    assert probe(*image_flags, "--allow-net", "connect", other)["value"] == "connected"


def test_allow_net_ports_are_exact(image_flags: list[str], listeners: dict[str, str]):
    host, port = listeners["127.0.0.1"].split(":")
    flags = [f for f in image_flags if not f.startswith("--allow-net")] + [f"--allow-net=127.0.0.1:{int(port) + 1}"]
    denied(probe(*flags, "connect", f"{host}:{port}"), f"connect to {host}:{port} denied: add it to --allow-net", "--allow-net")
    # Every entry has a port, so Landlock (ABI 4+) enforces the port list even without the audit hook.
    kernel = probe(*flags, "connect", f"{host}:{port}", env=KERNEL_ONLY)
    assert kernel["errno"] == errno.EACCES, kernel


def test_udp_sendto_is_checked_too(image_flags: list[str]):
    denied(probe(*image_flags, "sendto", "127.0.0.2:9"), "connect to 127.0.0.2:9 denied: add it to --allow-net", "--allow-net")
    assert probe(*image_flags, "sendto", "127.0.0.1:9")["ok"] is True


def test_names_outside_allow_net_never_reach_the_resolver(image_flags: list[str]):
    out = probe(*image_flags, "getaddrinfo", "pipedreamer-test.invalid:443")
    denied(out, "connect to pipedreamer-test.invalid:443 denied: add it to --allow-net", "--allow-net")


def test_no_allow_net_means_no_tcp_even_through_ctypes(workflow: Path, listeners: dict[str, str]):
    flags = [f"--allow-read={workflow}"]
    target = listeners["127.0.0.1"]
    denied(probe(*flags, "connect", target), f"connect to {target} denied: add it to --allow-net", "--allow-net")
    out = probe(*flags, "ctypes_connect", target)
    assert out["value"] == "EACCES", out  # Landlock ABI 4+: no TCP port is allowed
    assert probe(*flags, "--allow-net", "ctypes_connect", target)["value"] == "ok"


@pytest.fixture
def http_servers():
    """Tiny HTTP servers on 127.0.0.1 and 127.0.0.2, answering "hi"; their base URLs."""

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"hi")

        def log_message(self, *args: object) -> None:
            pass

    servers = [http.server.ThreadingHTTPServer((host, 0), Hello) for host in ("127.0.0.1", "127.0.0.2")]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield [f"http://{server.server_address[0]}:{server.server_address[1]}/" for server in servers]
    for server in servers:
        server.shutdown()
        server.server_close()


def test_aiohttp_client_is_checked_at_connect_and_lookup(image_flags: list[str], http_servers: list[str]):
    """aiohttp connects with loop.sock_connect: the socket.connect audit event fires for it."""
    allowed, other = http_servers
    assert probe(*image_flags, "aiohttp", allowed)["value"] == "hi"
    out = probe(*image_flags, "aiohttp", other)
    target = other.removeprefix("http://").rstrip("/")
    assert out["ok"] is False and out["type"] == "ClientConnectorError", out
    assert out["os_error"] == f"connect to {target} denied: add it to --allow-net"
    assert f"[connect to {target} denied: add it to --allow-net]" in out["message"]
    # A name in --allow-net: allowed at lookup, the addresses it resolved to pass at connect.
    by_name = allowed.replace("127.0.0.1", "localhost")
    flags = [f for f in image_flags if not f.startswith("--allow-net")] + ["--allow-net=localhost"]
    assert probe(*flags, "aiohttp", by_name)["value"] == "hi"
    out = probe(*image_flags, "aiohttp", "http://pipedreamer-test.invalid/")
    assert out["os_error"] == "connect to pipedreamer-test.invalid:80 denied: add it to --allow-net", out


# -- report and fallback ------------------------------------------------------


def test_report_lists_each_layer_with_the_landlock_abi(image_flags: list[str]):
    report = probe(*image_flags, "nothing")["report"]
    assert set(report["layers"]) == {"landlock", "seccomp", "audit_hook"}
    assert report["layers"]["landlock"]["abi"] >= 1
    assert report["degraded"] is False and report["warnings"] == []
    assert report["policy"]["allow_net"] == ["127.0.0.1"] and report["policy"]["allow_run"] is False
    json.dumps(report)


@pytest.mark.parametrize("disable", ["landlock", "seccomp", "landlock,seccomp"])
def test_fallback_reports_inactive_layers_loudly_and_keeps_the_rest(image_flags: list[str], disable: str):
    out = probe(*image_flags, "read", "/etc/shadow", env={"PIPEDREAMER_SANDBOX_DISABLE": disable})
    report = out["report"]
    off = set(disable.split(","))
    for name, layer in report["layers"].items():
        assert layer["active"] is (name not in off), report
        if name in off:
            assert layer["detail"] == "disabled by PIPEDREAMER_SANDBOX_DISABLE"
    assert report["degraded"] is True
    for name in off:
        assert f"PERMISSION LOCK DEGRADED: {name} is not active" in out["stderr"]
    # The remaining layers still refuse, with the friendly message.
    denied(out, "read of /etc/shadow denied: add it to --allow-read", "--allow-read")


def test_unknown_names_in_the_disable_variable_are_warned_about(image_flags: list[str]):
    out = probe(*image_flags, "nothing", env={"PIPEDREAMER_SANDBOX_DISABLE": "landlok"})
    assert out["report"]["degraded"] is False
    assert "unknown layer 'landlok'" in out["stderr"]


# -- socket kinds Landlock cannot see (MPTCP, raw, packet, ping, UDP) ----------

AF_INET, AF_PACKET, SOCK_STREAM, SOCK_DGRAM, SOCK_RAW = 2, 17, 1, 2, 3


def test_mptcp_cannot_sidestep_the_network_lock(image_flags: list[str], listeners: dict[str, str]):
    """Landlock's TCP rules do not cover MPTCP: seccomp refuses the socket itself."""
    other = listeners["127.0.0.2"]
    denied(probe(*image_flags, "mptcp_connect", other), "MPTCP sockets are denied: add --allow-net (every host)", "--allow-net")
    kernel = probe(*image_flags, "mptcp_connect", other, env=KERNEL_ONLY)
    assert (kernel["type"], kernel["errno"]) == ("PermissionError", errno.EPERM), kernel
    assert probe(*image_flags, "ctypes_socket", f"{AF_INET},{SOCK_STREAM},262")["value"] == "EPERM"
    # Every host allowed: nothing to sidestep, MPTCP works.
    flags = [f for f in image_flags if not f.startswith("--allow-net")] + ["--allow-net"]
    assert probe(*flags, "mptcp_connect", other)["value"] == "connected"


@pytest.mark.parametrize(
    "action, message, ctypes_args, kernel_errno",
    [
        ("raw_socket", "raw sockets are denied: add --allow-net (every host)", f"{AF_INET},{SOCK_RAW},1", "EPERM"),
        ("packet_socket", "sockets of address family 17 are denied: add --allow-net (every host)",
         f"{AF_PACKET},{SOCK_RAW},0", "EAFNOSUPPORT"),
    ],
)  # fmt: skip
def test_raw_and_packet_sockets_are_refused_even_as_root(image_flags, action, message, ctypes_args, kernel_errno):
    denied(probe(*image_flags, action), message, "--allow-net")
    assert probe(*image_flags, "ctypes_socket", ctypes_args)["value"] == kernel_errno
    # A ping socket (ICMP over datagrams) reaches any host too.
    assert probe(*image_flags, "ctypes_socket", f"{AF_INET},{SOCK_DGRAM},1")["value"] == "EPERM"
    if os.geteuid() == 0:  # the control: only the lock refused it
        flags = [f for f in image_flags if not f.startswith("--allow-net")] + ["--allow-net"]
        assert probe(*flags, "ctypes_socket", ctypes_args)["value"] == "ok"


def test_without_allow_net_udp_sockets_are_refused_by_the_kernel_too(workflow: Path):
    flags = [f"--allow-read={workflow}"]
    assert probe(*flags, "ctypes_socket", f"{AF_INET},{SOCK_DGRAM},0")["value"] == "EPERM"
    denied(probe(*flags, "sendto", "127.0.0.1:9"), "UDP sockets are denied: add --allow-net", "--allow-net")
    # With a host list, UDP stays (name lookups need it); the audit hook judges each destination.
    assert probe(*flags, "--allow-net=127.0.0.1", "ctypes_socket", f"{AF_INET},{SOCK_DGRAM},0")["value"] == "ok"


# -- without Landlock (gVisor): relative opens are judged by the file they open --

NO_LANDLOCK = {"PIPEDREAMER_SANDBOX_DISABLE": "landlock"}


@pytest.mark.parametrize("action", ["dir_fd_read", "chdir_read"])
def test_relative_opens_are_resolved_against_their_directory_without_landlock(image_flags, action):
    out = probe(*image_flags, action, "/etc/shadow", env=NO_LANDLOCK)
    assert out["report"]["layers"]["landlock"]["active"] is False
    denied(out, "read of /etc/shadow denied: add it to --allow-read", "--allow-read")
    if os.geteuid() == 0:
        assert probe(*image_flags, "--allow-read=/etc/shadow", action, "/etc/shadow", env=NO_LANDLOCK)["ok"] is True


def test_writes_through_a_dir_fd_are_judged_without_landlock(image_flags: list[str], outside: Path, scratch: Path):
    target = outside / "new.txt"
    out = probe(*image_flags, "dir_fd_write", str(target), env=NO_LANDLOCK)
    denied(out, f"write to {target} denied: add it to --allow-write", "--allow-write")
    assert not target.exists()
    assert probe(*image_flags, "dir_fd_write", str(scratch / "ok.txt"), env=NO_LANDLOCK)["value"] == "written"


def test_relative_removal_of_a_scratch_tree_still_works_without_landlock(image_flags: list[str], scratch: Path):
    """shutil.rmtree (and TemporaryDirectory) open relative to directory descriptors."""
    out = probe(*image_flags, "rmtree", str(scratch), env=NO_LANDLOCK)
    assert out["ok"] is True and out["value"] is False, out


# -- the rest ------------------------------------------------------------------


def test_subinterpreters_are_refused_cleanly(image_flags: list[str]):
    """A subinterpreter would run without the audit hook; creating one once aborted the engine."""
    out = probe(*image_flags, "subinterpreter")
    assert out["returncode"] == 0, out
    assert out["ok"] is False and out["type"] == "PermissionDenied", out
    assert "subinterpreters are denied: they would run without the permission lock's checks" in out["message"]


def test_descriptors_opened_before_the_lock_do_not_survive_it(image_flags: list[str], outside: Path):
    secret = outside / "secret.txt"
    out = probe(*image_flags, "read_preopened", env={"PROBE_PREOPEN": str(secret)})
    assert out["ok"] is False and out["errno"] == errno.EBADF, out
    assert any("closed 1 descriptor(s) opened before the lock" in w and str(secret) in w for w in out["report"]["warnings"])


def test_read_roots_do_not_come_from_sys_modules(image_flags: list[str]):
    out = probe(*image_flags, "read", "/etc/shadow", env={"PROBE_PLANT": "1"})
    assert "/" not in out["report"]["read_paths"]
    denied(out, "read of /etc/shadow denied: add it to --allow-read", "--allow-read")
