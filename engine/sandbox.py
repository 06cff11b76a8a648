"""The permission lock: Deno's `--allow-read/--allow-write/--allow-net/--allow-run`, done for Python.

`apply_policy` confines the whole engine process once, after it has loaded its
modules and before the first node runs. Three layers, each reported:

* landlock   – the kernel limits file access (and TCP connects, ABI 4+) to the policy;
* seccomp    – the kernel refuses execve/execveat without --allow-run, and the
               syscalls no workflow needs (ptrace, mount, bpf, keyctl, unshare …);
* audit_hook – a `sys.addaudithook` hook raises `PermissionDenied` naming the
               flag that would allow the action, before the kernel answers with
               a bare EACCES/EPERM; it is also the only layer that knows host names.

`PIPEDREAMER_SANDBOX_DISABLE=landlock,seccomp,audit` switches layers off to
simulate a kernel without them (tests of the fallback path).
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import functools
import logging
import os
import shutil
import site
import socket
import sys
import sysconfig
import threading
from typing import Any, Callable, Iterable, Sequence

from engine import landlock, netguard
from engine import seccomp as seccomp_filter
from engine.netguard import NetGuard

__all__ = [
    "DISABLE_ENV",
    "LayerStatus",
    "LockReport",
    "PermissionDenied",
    "PermissionPolicy",
    "add_permission_flags",
    "apply_policy",
    "current_report",
    "policy_from_args",
]

log = logging.getLogger("pipedreamer.sandbox")

DISABLE_ENV = "PIPEDREAMER_SANDBOX_DISABLE"
_DISABLE_NAMES = {"landlock": "landlock", "seccomp": "seccomp", "audit": "audit_hook", "audit_hook": "audit_hook"}

# What the interpreter itself reads after the lock: shared libraries, certificates,
# time zones, name resolution, its own /proc entries. Missing paths are skipped.
SYSTEM_READ_PATHS: tuple[str, ...] = (
    "/usr/lib", "/usr/lib64", "/usr/local/lib", "/lib", "/lib64",
    "/etc/ld.so.cache",
    "/etc/ssl", "/etc/pki", "/etc/ca-certificates", "/usr/share/ca-certificates", "/usr/local/share/ca-certificates",
    "/usr/share/zoneinfo", "/etc/localtime", "/etc/timezone",
    "/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/gai.conf", "/etc/host.conf",
    "/etc/services", "/etc/protocols", "/etc/mime.types",
    "/proc/self", "/sys/devices/system/cpu",
    "/dev/urandom", "/dev/random", "/dev/zero",
)  # fmt: skip
# Writable by everyone under the lock.
SYSTEM_WRITE_PATHS: tuple[str, ...] = ("/dev/null",)
# With --allow-run: where programs, their ELF loader and libraries come from.
SYSTEM_PROGRAM_PATHS: tuple[str, ...] = ("/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin")
SYSTEM_LIBRARY_PATHS: tuple[str, ...] = ("/usr/lib", "/usr/lib64", "/usr/local/lib", "/lib", "/lib64")


# -- policy -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PermissionPolicy:
    """What the engine's nodes may do; the default denies everything.

    `allow_net`: None = no network, () = every host, else `host[:port]` entries.
    `allow_read`/`allow_write` of ("/",) is the bare flag: everything.
    """

    allow_read: tuple[str, ...] = ()
    allow_write: tuple[str, ...] = ()
    allow_net: tuple[str, ...] | None = None
    allow_run: bool = False

    def __post_init__(self) -> None:
        for name in ("allow_read", "allow_write", "allow_net"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)):
                raise TypeError(f"{name} takes a sequence of strings, not one string: {value!r}")
            if value is not None and not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))  # lists are fine; the policy stays hashable
        for entry in self.allow_net or ():
            netguard.parse_net_rule(entry)  # ValueError on a bad entry
        for path in (*self.allow_read, *self.allow_write):
            if not path:
                raise ValueError("empty path in --allow-read/--allow-write")

    def to_flags(self) -> list[str]:
        """The command-line flags that give this policy back (for a child engine or an entrypoint)."""
        flags = []
        if self.allow_read:
            flags.append("--allow-read" if self.allow_read == ("/",) else f"--allow-read={','.join(self.allow_read)}")
        if self.allow_write:
            flags.append("--allow-write" if self.allow_write == ("/",) else f"--allow-write={','.join(self.allow_write)}")
        if self.allow_net is not None:
            flags.append(f"--allow-net={','.join(self.allow_net)}" if self.allow_net else "--allow-net")
        if self.allow_run:
            flags.append("--allow-run")
        return flags

    def to_dict(self) -> dict[str, Any]:
        return {
            "allow_read": list(self.allow_read),
            "allow_write": list(self.allow_write),
            "allow_net": None if self.allow_net is None else list(self.allow_net),
            "allow_run": self.allow_run,
        }

    def describe(self) -> str:
        net = "denied" if self.allow_net is None else ",".join(self.allow_net) or "all hosts"
        return (
            f"read={','.join(self.allow_read) or '-'} write={','.join(self.allow_write) or '-'} "
            f"net={net} run={'allowed' if self.allow_run else 'denied'}"
        )


_ALL = "\0all"  # argparse const for a bare flag


class _ExtendPaths(argparse.Action):
    """`--allow-read=/a,/b` (repeatable, values add up); bare `--allow-read` allows everything."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: Any = None) -> None:
        current = list(getattr(namespace, self.dest) or [])
        if values in (_ALL, None):
            current.append(_ALL)
        else:
            items = [v.strip() for v in str(values).split(",")]
            if not any(items):
                parser.error(f"{option} needs a value (or no '=' at all to allow everything)")
            if self.dest == "allow_net":
                for item in filter(None, items):
                    try:
                        netguard.parse_net_rule(item)
                    except ValueError as exc:
                        parser.error(f"{option}: {exc}")
            current.extend(v for v in items if v)
        setattr(namespace, self.dest, current)


_BARE_FLAGS = ("--allow-read", "--allow-write", "--allow-net")


def add_permission_flags(parser: argparse.ArgumentParser) -> None:
    """Adds --allow-read, --allow-write, --allow-net, --allow-run (shared by the engine and `pipedreamer dev`).

    As in Deno, a value needs `=`: `--allow-net example.com` is the bare flag
    followed by a positional argument, so `pipedreamer dev --allow-net DIR`
    means what it says.
    """
    group = parser.add_argument_group("permissions (deny by default, like Deno)")
    group.add_argument(
        "--allow-read", dest="allow_read", metavar="PATHS", nargs="?", const=_ALL, default=None, action=_ExtendPaths,
        help="comma-separated paths nodes may read (bare: everything)",
    )  # fmt: skip
    group.add_argument(
        "--allow-write", dest="allow_write", metavar="PATHS", nargs="?", const=_ALL, default=None, action=_ExtendPaths,
        help="comma-separated paths nodes may write, and read (bare: everything)",
    )  # fmt: skip
    group.add_argument(
        "--allow-net", dest="allow_net", metavar="HOST[:PORT],...", nargs="?", const=_ALL, default=None,
        action=_ExtendPaths, help="hosts nodes may connect to (bare: every host)",
    )  # fmt: skip
    group.add_argument("--allow-run", dest="allow_run", action="store_true", help="allow running programs")
    _require_equals(parser)


def _require_equals(parser: argparse.ArgumentParser) -> None:
    """Makes a bare --allow-* flag never swallow the next argument (argparse has no require_equals)."""
    if getattr(parser, "_pipedreamer_require_equals", False):
        return
    original = parser.parse_known_args

    def parse_known_args(args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        rewritten: list[str] = []
        for index, arg in enumerate(argv):
            if arg == "--":
                rewritten.extend(argv[index:])
                break
            rewritten.append(f"{arg}={_ALL}" if arg in _BARE_FLAGS else arg)
        return original(rewritten, namespace)

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]
    parser._pipedreamer_require_equals = True  # type: ignore[attr-defined]


def policy_from_args(ns: argparse.Namespace) -> PermissionPolicy:
    """The policy the flags of `add_permission_flags` describe; ValueError on a bad --allow-net entry."""

    def paths(values: Sequence[str] | None) -> tuple[str, ...]:
        if not values:
            return ()
        if _ALL in values:
            return ("/",)
        return tuple(dict.fromkeys(os.path.abspath(os.path.expanduser(v)) for v in values))

    net_values = getattr(ns, "allow_net", None)
    if net_values is None:
        allow_net = None
    elif _ALL in net_values:
        allow_net = ()
    else:
        allow_net = tuple(dict.fromkeys(net_values))
    return PermissionPolicy(
        allow_read=paths(getattr(ns, "allow_read", None)),
        allow_write=paths(getattr(ns, "allow_write", None)),
        allow_net=allow_net,
        allow_run=bool(getattr(ns, "allow_run", False)),
    )


# -- report -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LayerStatus:
    name: str
    active: bool
    detail: str  # what it enforces, or why it is not active
    abi: int | None = None  # Landlock only

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"active": self.active, "detail": self.detail}
        if self.name == "landlock":
            out["abi"] = self.abi
        return out


@dataclasses.dataclass(frozen=True)
class LockReport:
    """Which layers hold, for `/healthz?verbose` and the startup log line."""

    policy: PermissionPolicy
    layers: tuple[LayerStatus, ...]
    read_paths: tuple[str, ...]
    write_paths: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    run_paths: tuple[str, ...] = ()  # where programs may come from (--allow-run only)

    def layer(self, name: str) -> LayerStatus:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    @property
    def degraded(self) -> bool:
        return not all(layer.active for layer in self.layers)

    def to_dict(self) -> dict[str, Any]:
        return {
            "applied": True,
            "degraded": self.degraded,
            "policy": self.policy.to_dict(),
            "layers": {layer.name: layer.to_dict() for layer in self.layers},
            "read_paths": list(self.read_paths),
            "write_paths": list(self.write_paths),
            "run_paths": list(self.run_paths),
            "warnings": list(self.warnings),
        }

    def summary(self) -> str:
        parts = []
        for layer in self.layers:
            state = "active" if layer.active else "INACTIVE"
            if layer.abi is not None and layer.active:
                state += f" (ABI {layer.abi})"
            parts.append(f"{layer.name} {state}")
        return f"permission lock: {', '.join(parts)}; {self.policy.describe()}"


_report: LockReport | None = None
_apply_lock = threading.Lock()


def current_report() -> LockReport | None:
    """The report of the lock applied in this process, or None."""
    return _report


# -- paths --------------------------------------------------------------------


def _real(path: str) -> str:
    return os.path.realpath(os.path.abspath(path))


def interpreter_read_paths() -> tuple[str, ...]:
    """Python's own files: stdlib, lib-dynload, site-packages, and every top-level package already imported."""
    paths: set[str] = set()
    for scheme_vars in ({}, {"base": sys.base_prefix, "platbase": sys.base_exec_prefix}):
        values = sysconfig.get_paths(vars=scheme_vars or None)
        for key in ("stdlib", "platstdlib", "purelib", "platlib"):
            if values.get(key):
                paths.add(values[key])
    try:
        paths.update(site.getsitepackages())
    except AttributeError:  # some embedded interpreters lack it
        pass
    for entry in sys.path:
        if entry and (entry.endswith((".zip", "site-packages", "dist-packages", "lib-dynload"))):
            paths.add(entry)
    # The engine's own source and any first-party package it imported: lazy
    # imports inside them keep working (e.g. engine/, proto/).
    for name, module in list(sys.modules.items()):
        if "." in name or module is None:
            continue
        package_path = getattr(module, "__path__", None)
        if package_path is not None:
            try:
                paths.update(str(p) for p in package_path)
            except TypeError:
                pass
            continue
        file = getattr(module, "__file__", None)
        if isinstance(file, str):
            paths.add(file)
    for path in list(paths):
        if _RUNFILES_MARK in path:
            paths.update(_symlink_tree_targets(path))
    return tuple(sorted(p for p in paths if os.path.exists(p)))


# Bazel (`bazel run`, `bazel test`) runs Python from a runfiles tree: real
# directories holding one symlink per file, to the source tree, bazel-out or an
# external repository. The kernel (Landlock) and the audit hook see the resolved
# files, so the directories they resolve into are allowed too.
_RUNFILES_MARK = ".runfiles/"


def _symlink_tree_targets(root: str) -> set[str]:
    """For each symlinked file root/REL resolving to T/REL: T, else T's directory."""
    targets: set[str] = set()
    if os.path.isfile(root):
        return {os.path.dirname(os.path.realpath(root))}
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            link = os.path.join(dirpath, name)
            if not os.path.islink(link):
                continue
            real = os.path.realpath(link)
            rel = os.path.relpath(link, root)
            targets.add(real[: -len(rel) - 1] if real.endswith("/" + rel) else os.path.dirname(real))
    return targets


@dataclasses.dataclass(frozen=True)
class _Roots:
    """Where each kind of access is allowed, as real paths (symlinks resolved), minimal."""

    read: tuple[str, ...]
    write: tuple[str, ...]
    run: tuple[str, ...]  # executables may come from here (only with --allow-run)


def _program_dirs() -> list[str]:
    dirs = [p for p in os.environ.get("PATH", os.defpath).split(os.pathsep) if p]
    dirs += list(SYSTEM_PROGRAM_PATHS)
    dirs += [os.path.dirname(sys.executable), os.path.dirname(_real(sys.executable))]
    # A virtualenv's interpreter reads pyvenv.cfg at start-up.
    dirs.append(os.path.join(sys.prefix, "pyvenv.cfg"))
    return dirs


def _effective_roots(policy: PermissionPolicy, extra_read: Iterable[str]) -> _Roots:
    write = [_real(p) for p in (*policy.allow_write, *SYSTEM_WRITE_PATHS)]
    interpreter = interpreter_read_paths()
    read = [_real(p) for p in (*policy.allow_read, *extra_read, *SYSTEM_READ_PATHS, *interpreter)]
    run: list[str] = []
    if policy.allow_run:
        # Programs run from system and read-only places, never from a writable
        # one: a file a node just wrote cannot be executed.
        programs = [_real(p) for p in _program_dirs()]
        run = [_real(p) for p in (*policy.allow_read, *extra_read, *SYSTEM_LIBRARY_PATHS, *interpreter)] + programs
        read += programs
    return _Roots(read=tuple(_minimal(read + write)), write=tuple(_minimal(write)), run=tuple(_minimal(run)))


def _minimal(paths: Iterable[str]) -> list[str]:
    """Existing paths with those inside another listed path dropped."""
    result: list[str] = []
    for path in sorted(set(paths), key=lambda p: (p.count("/"), p)):
        if not os.path.exists(path):
            continue
        if any(_inside(path, root) for root in result):
            continue
        result.append(path)
    return sorted(result)


def _inside(path: str, root: str) -> bool:
    return root == "/" or path == root or path.startswith(root + "/")


class _RootSet:
    """Allowed roots, matched by looking up each ancestor of a path in a set.

    A path of depth d costs d set lookups however many roots there are; a loop of
    `_inside` over ~30 roots was a third of the hook's cost on every open().
    """

    def __init__(self, roots: Iterable[str]):
        self.roots = frozenset(roots)
        self.everything = "/" in self.roots

    def covers(self, path: str) -> bool:
        roots = self.roots
        if self.everything or path in roots:
            return True
        end = len(path)
        while (end := path.rfind("/", 0, end)) > 0:
            if path[:end] in roots:
                return True
        return False


def _realpath(path: str) -> str:
    """os.path.realpath in three system calls: the kernel resolves the path once (O_PATH)
    and /proc/self/fd names the result; falls back to the per-component walk
    for paths that do not exist yet, are not reachable, or have no plain name."""
    if not _O_PATH:
        return os.path.realpath(path)
    try:
        fd = os.open(path, _O_PATH | os.O_CLOEXEC)
    except (OSError, ValueError):
        return os.path.realpath(path)
    try:
        real = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        real = ""
    finally:
        os.close(fd)
    if real.startswith("/") and not real.endswith(" (deleted)"):
        return real
    return os.path.realpath(path)


# -- the audit hook (friendly errors, and the host names the kernel cannot see) --


class PermissionDenied(PermissionError):
    """An action outside the policy; the message names the flag that would allow it.

    errno is EACCES and strerror the message, so wrappers that quote strerror
    (aiohttp's ClientConnectorError) still show it; str() is the message alone.
    """

    def __init__(self, message: str, flag: str):
        super().__init__(message)
        self.errno = errno.EACCES
        self.strerror = message
        self.flag = flag

    def __str__(self) -> str:
        return str(self.args[0])

    def __reduce__(self) -> tuple:
        return (type(self), (str(self.args[0]), self.flag))


# libc functions that start programs or processes, refused by name when looked up through ctypes.
_PROCESS_SYMBOLS = frozenset({
    "execv", "execve", "execvp", "execvpe", "execl", "execle", "execlp", "fexecve", "execveat",
    "system", "popen", "posix_spawn", "posix_spawnp", "fork", "vfork", "_Fork", "forkpty",
})  # fmt: skip
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_O_PATH = getattr(os, "O_PATH", 0)


class _Guard:
    """The audit hook: checks the events that touch files, programs and the network."""

    # How many allowed absolute read paths are remembered (then the memory starts over).
    READ_MEMORY = 4096

    def __init__(self, policy: PermissionPolicy, roots: _Roots, net: NetGuard, *, kernel_guards_files: bool = False):
        self.policy = policy
        # With Landlock enforcing files, this hook only words the refusal; so an
        # absolute path it once allowed to be read is allowed again without
        # resolving it (~5 µs per open). Should a symlink on the way change, the
        # kernel still decides; only its plain EACCES would lack the flag's name.
        # Denials are never remembered. Without Landlock every open is resolved.
        self.allowed_reads: set[str] | None = set() if kernel_guards_files else None
        self.read_roots = _RootSet(roots.read)
        self.write_roots = _RootSet(roots.write)
        self.run_roots = _RootSet(roots.run)
        self.net = net
        self.pid = os.getpid()
        self.local = threading.local()
        handlers: dict[str, Callable[[tuple], None]] = {
            "open": self._open,
            "os.listdir": self._listdir,
            "os.scandir": self._listdir,
            "os.mkdir": lambda a: self._write(a[0], a[2], follow=False),
            "os.rmdir": lambda a: self._write(a[0], a[1], follow=False),
            "os.remove": lambda a: self._write(a[0], a[1], follow=False),
            "os.rename": lambda a: (self._write(a[0], a[2], follow=False), self._write(a[1], a[3], follow=False)),
            "os.link": lambda a: self._write(a[1], a[3], follow=False),
            "os.symlink": lambda a: self._write(a[1], a[2], follow=False),
            "os.truncate": lambda a: self._write(a[0], None),
            "os.chmod": lambda a: self._write(a[0], a[2]),
            "os.chown": lambda a: self._write(a[0], a[3]),
            "os.utime": lambda a: self._write(a[0], a[3]),
            "os.setxattr": lambda a: self._write(a[0], None),
            "os.removexattr": lambda a: self._write(a[0], None),
            "socket.getaddrinfo": lambda a: self._net(self.net.deny_lookup(a[0], a[1])),
            "socket.gethostbyname": lambda a: self._net(self.net.deny_lookup(a[0])),
            "socket.connect": self._connect,
            "socket.sendto": self._connect,
            "socket.sendmsg": self._connect,
        }
        if policy.allow_run:
            handlers["subprocess.Popen"] = lambda a: self._run_program(a[0], a[3])
            handlers["os.exec"] = handlers["os.posix_spawn"] = lambda a: self._run_program(a[0], a[2])
        else:
            for event in ("os.system", "subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn", "pty.spawn"):
                handlers[event] = self._run
            for event in ("os.fork", "os.forkpty"):
                handlers[event] = self._fork
            handlers["os.kill"] = handlers["os.killpg"] = self._kill
            handlers["ctypes.dlsym"] = self._native_symbol
        self.handlers = handlers

    def __call__(self, event: str, args: tuple) -> None:
        handler = self.handlers.get(event)
        if handler is None:
            return
        local = self.local
        if getattr(local, "busy", False):
            return  # our own lookups and path resolution
        local.busy = True
        try:
            handler(args)
        except PermissionDenied:
            raise
        except Exception:  # noqa: BLE001 - an odd argument must not break the program; the kernel still decides
            pass
        finally:
            local.busy = False

    # files

    def _resolve(self, path: Any, dir_fd: Any, *, follow: bool = True) -> tuple[str, str] | None:
        """(as shown, real path) for a path argument; None when it is a descriptor or cannot be placed."""
        if path is None or isinstance(path, int):
            return None
        text = os.fsdecode(os.fspath(path))
        if not os.path.isabs(text):
            if isinstance(dir_fd, int) and dir_fd >= 0:
                base = os.readlink(f"/proc/self/fd/{dir_fd}")
            else:
                base = os.getcwd()
            text = os.path.join(base, text)
        if follow:
            # The kernel resolves "..", "." and symlinks as open() will; the
            # lexical normpath is only for the message (see _show).
            return text, _realpath(text)
        head, tail = os.path.split(os.path.normpath(text))
        return text, os.path.join(_realpath(head), tail)

    def _open(self, args: tuple) -> None:
        path, mode, flags = args
        if isinstance(flags, int) and flags & _O_PATH:
            return
        if mode is None and isinstance(path, (str, bytes)) and not os.path.isabs(os.fsdecode(path)):
            return  # os.open relative to a dir_fd the event does not carry: Landlock decides
        if isinstance(flags, int) and flags & _WRITE_FLAGS:
            self._write(path, None)
        else:
            self._read(path, None)

    def _listdir(self, args: tuple) -> None:
        self._read("." if args[0] is None else args[0], None)

    def _read(self, path: Any, dir_fd: Any) -> None:
        memory = self.allowed_reads
        if memory is not None and type(path) is str and path in memory:
            return
        where = self._resolve(path, dir_fd)
        if where is None:
            return
        if self.read_roots.covers(where[1]):
            if memory is not None and type(path) is str and path.startswith("/"):
                if len(memory) >= self.READ_MEMORY:
                    memory.clear()
                memory.add(path)
            return
        raise PermissionDenied(f"read of {_show(where)} denied: add it to --allow-read", "--allow-read")

    def _write(self, path: Any, dir_fd: Any, *, follow: bool = True) -> None:
        where = self._resolve(path, dir_fd, follow=follow)
        if where is None or self.write_roots.covers(where[1]):
            return
        raise PermissionDenied(f"write to {_show(where)} denied: add it to --allow-write", "--allow-write")

    # programs

    def _run(self, args: tuple) -> None:
        raise PermissionDenied("running programs is denied: add --allow-run", "--allow-run")

    def _run_program(self, program: Any, env: Any) -> None:
        """With --allow-run: a program must come from a read-only allowed place (Landlock's rule, said first)."""
        if program is None or isinstance(program, int):
            return
        text = os.fsdecode(os.fspath(program))
        if os.sep not in text:
            search = None
            if isinstance(env, dict):
                search = env.get("PATH", env.get(b"PATH"))
                search = os.fsdecode(search) if search is not None else None
            found = shutil.which(text, path=search)
            if found is None:
                return  # let the exec report "not found"
            text = found
        where = self._resolve(text, None)
        if where is None or self.run_roots.covers(where[1]):
            return
        raise PermissionDenied(
            f"running {_show(where)} denied: programs run only from read-only paths; add its directory to --allow-read",
            "--allow-read",
        )

    def _native_symbol(self, args: tuple) -> None:
        """libc's exec/spawn/fork family looked up through ctypes: said by name here;
        seccomp still refuses the system call itself (e.g. through libc's `syscall`)."""
        name = args[1] if len(args) > 1 else None
        if isinstance(name, bytes):
            name = name.decode(errors="replace")
        if name in _PROCESS_SYMBOLS:
            raise PermissionDenied(f"running programs is denied: add --allow-run (ctypes lookup of {name})", "--allow-run")

    def _fork(self, args: tuple) -> None:
        raise PermissionDenied("starting processes (fork) is denied: add --allow-run", "--allow-run")

    def _kill(self, args: tuple) -> None:
        target = args[0]
        if target in (self.pid, os.getpid()):
            return
        raise PermissionDenied(f"signalling process {target} is denied: add --allow-run", "--allow-run")

    # network

    def _connect(self, args: tuple) -> None:
        sock, address = args[0], args[1]
        family = getattr(sock, "family", None)
        if family == getattr(socket, "AF_UNIX", None) and not netguard.is_abstract_unix(address):
            # A path socket is a file: connecting to it needs --allow-write, as in Deno.
            where = self._resolve(address, None)
            if where is not None and not self.write_roots.covers(where[1]):
                raise PermissionDenied(f"connect to unix socket {_show(where)} denied: add it to --allow-write", "--allow-write")
            return
        self._net(self.net.deny_connect(int(family) if family is not None else -1, address))

    @staticmethod
    def _net(denial: str | None) -> None:
        if denial is not None:
            raise PermissionDenied(denial, "--allow-net")


def _show(where: tuple[str, str]) -> str:
    shown, real = os.path.normpath(where[0]), where[1]
    return shown if shown == real else f"{shown} (resolves to {real})"


def _wrap_getaddrinfo(net: NetGuard) -> None:
    """socket.getaddrinfo that remembers what allowed names resolved to (asyncio/aiohttp call it by attribute)."""
    original = socket.getaddrinfo
    if getattr(original, "__pipedreamer_netguard__", False):
        return

    @functools.wraps(original)
    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list:
        infos = original(host, port, *args, **kwargs)
        net.remember(host, infos)
        return infos

    getaddrinfo.__pipedreamer_netguard__ = True  # type: ignore[attr-defined]
    socket.getaddrinfo = getaddrinfo


# -- applying -----------------------------------------------------------------


def disabled_layers(environ: dict[str, str] | None = None) -> tuple[frozenset[str], list[str]]:
    """Layers named in PIPEDREAMER_SANDBOX_DISABLE, and warnings for names it does not know."""
    raw = (environ if environ is not None else os.environ).get(DISABLE_ENV, "")
    disabled: set[str] = set()
    warnings: list[str] = []
    for name in (n.strip().lower() for n in raw.split(",")):
        if not name:
            continue
        if name in _DISABLE_NAMES:
            disabled.add(_DISABLE_NAMES[name])
        else:
            warnings.append(f"{DISABLE_ENV}: unknown layer {name!r} ignored (known: landlock, seccomp, audit)")
    return frozenset(disabled), warnings


def apply_policy(policy: PermissionPolicy, *, extra_read: Iterable[str] = ()) -> LockReport:
    """Locks this process to `policy`; once per process, irreversible.

    Call it from the main thread after the engine imported its modules and
    before the first node runs (and, while Landlock lacks TSYNC, before any
    thread that will run node code is started). A layer the kernel lacks is
    reported inactive, with a loud warning; the others still apply.
    `extra_read`: more paths the engine itself must read (never written).
    """
    global _report
    with _apply_lock:
        if _report is not None:
            raise RuntimeError("the permission lock is already applied in this process")
        disabled, warnings = disabled_layers()
        net = NetGuard(policy.allow_net)
        roots = _effective_roots(policy, extra_read)
        if "seccomp" not in disabled:
            _preload_seccomp()  # before Landlock: finding the library reads outside the policy
        landlock_layer = _apply_landlock(policy, net, roots, disabled, warnings)
        layers = [
            landlock_layer,
            _apply_seccomp(policy, disabled),
            _apply_audit_hook(policy, net, roots, disabled, kernel_guards_files=landlock_layer.active),
        ]
        for layer in layers:
            if not layer.active:
                warnings.append(f"PERMISSION LOCK DEGRADED: {layer.name} is not active: {layer.detail}")
        report = LockReport(
            policy=policy,
            layers=tuple(layers),
            read_paths=roots.read,
            write_paths=roots.write,
            warnings=tuple(warnings),
            run_paths=roots.run,
        )
        for warning in warnings:
            log.warning("%s", warning)
        log.info("%s", report.summary())
        _report = report
        return report


def _preload_seccomp() -> None:
    try:
        seccomp_filter.load_pyseccomp()
    except seccomp_filter.SeccompUnavailable:
        pass  # reported by _apply_seccomp


def _apply_landlock(
    policy: PermissionPolicy, net: NetGuard, roots: _Roots, disabled: frozenset[str], warnings: list[str]
) -> LayerStatus:
    if "landlock" in disabled:
        return LayerStatus("landlock", False, f"disabled by {DISABLE_ENV}")
    devices = {_real(p) for p in SYSTEM_WRITE_PATHS}
    rules = [landlock.PathRule(p, landlock.READ) for p in roots.read]
    rules += [landlock.PathRule(p, landlock.DEVICE_RW if p in devices else landlock.WRITE) for p in roots.write]
    rules += [landlock.PathRule(p, landlock.READ | landlock.ACCESS_FS_EXECUTE) for p in roots.run]
    try:
        result = landlock.restrict_self(
            rules,
            handle_execute=True,
            tcp_connect_ports=net.kernel_tcp_ports(),
            scope_abstract_unix=not net.allow_all,
            scope_signal=True,
        )
    except landlock.LandlockUnavailable as exc:
        return LayerStatus("landlock", False, str(exc))
    except OSError as exc:
        return LayerStatus("landlock", False, f"could not be applied: {exc}")
    detail = [f"reads under {len(roots.read)} paths, writes under {len(roots.write)}"]
    if policy.allow_run:
        detail.append(f"executes only from {len(roots.run)} read-only paths")
    else:
        detail.append("execution denied")
    if result.handled_net:
        detail.append(f"TCP connect only to ports {list(result.tcp_ports or ())}" if result.tcp_ports else "TCP connect denied")
    elif result.abi < 4:
        detail.append("no TCP rules before ABI 4")
    scopes = [name for bit, name in ((landlock.SCOPE_SIGNAL, "signals"), (landlock.SCOPE_ABSTRACT_UNIX_SOCKET, "abstract unix sockets")) if result.scoped & bit]
    if scopes:
        detail.append(f"{' and '.join(scopes)} scoped to the sandbox")
    if result.skipped:
        detail.append(f"skipped (cannot open): {', '.join(result.skipped)}")
    if result.other_threads:
        warnings.append(
            f"landlock: {len(result.other_threads)} thread(s) started before the lock are not confined by Landlock "
            f"(ABI {result.abi} has no TSYNC): {', '.join(result.other_threads)}; seccomp and the audit hook still cover them"
        )
        detail.append(f"{len(result.other_threads)} earlier thread(s) unconfined")
    return LayerStatus("landlock", True, "; ".join(detail), abi=result.abi)


def _apply_seccomp(policy: PermissionPolicy, disabled: frozenset[str]) -> LayerStatus:
    if "seccomp" in disabled:
        return LayerStatus("seccomp", False, f"disabled by {DISABLE_ENV}")
    try:
        result = seccomp_filter.install_filter(allow_exec=policy.allow_run)
    except seccomp_filter.SeccompUnavailable as exc:
        return LayerStatus("seccomp", False, str(exc))
    except OSError as exc:
        return LayerStatus("seccomp", False, f"could not be applied: {exc}")
    run = "execve allowed (--allow-run)" if result.exec_allowed else "execve/execveat denied"
    return LayerStatus(
        "seccomp",
        True,
        f"{run}; {len(result.denied)} syscalls answer EPERM, {', '.join(result.enosys) or 'none'} ENOSYS; "
        f"other architectures ENOSYS; all threads (TSYNC)",
    )


def _apply_audit_hook(
    policy: PermissionPolicy, net: NetGuard, roots: _Roots, disabled: frozenset[str], *, kernel_guards_files: bool
) -> LayerStatus:
    if "audit_hook" in disabled:
        return LayerStatus("audit_hook", False, f"disabled by {DISABLE_ENV}")
    _wrap_getaddrinfo(net)
    sys.addaudithook(_Guard(policy, roots, net, kernel_guards_files=kernel_guards_files))
    return LayerStatus(
        "audit_hook",
        True,
        f"files, programs and network checked in Python with messages naming the flag; net: {net.describe()}",
    )
