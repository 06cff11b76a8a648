"""The audit hook: friendly errors naming the flag, and the host names the kernel cannot see."""

from __future__ import annotations

import errno
import functools
import os
import shutil
import socket
import threading
from typing import Any, Callable

from engine.sandbox import netguard
from engine.sandbox.netguard import NetGuard
from engine.sandbox.policy import PermissionPolicy
from engine.sandbox.roots import O_PATH, Roots, RootSet, realpath


class PermissionDenied(PermissionError):
    """An action outside the policy; the message names the flag that would allow it
    (`flag` is empty for the few actions no flag allows).

    errno is EACCES and strerror the message, so wrappers that quote strerror
    (aiohttp's ClientConnectorError) still show it; str() is the message alone.
    """

    def __init__(self, message: str, flag: str = ""):
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
# Modules that create subinterpreters: a subinterpreter has no audit hook of ours.
_SUBINTERPRETER_MODULES = frozenset({"_xxsubinterpreters", "_interpreters", "interpreters", "concurrent.interpreters"})
_SUBINTERPRETERS_DENIED = "subinterpreters are denied: they would run without the permission lock's checks"
# socket(2) kinds Landlock's TCP rules do not see (seccomp refuses them too; see engine.seccomp).
_RAW_TYPES = {getattr(socket, n): name for n, name in (("SOCK_RAW", "raw"), ("SOCK_PACKET", "packet"), ("SOCK_SEQPACKET", "seqpacket (SCTP)")) if hasattr(socket, n)}
_OTHER_PROTOCOLS = {262: "MPTCP", 132: "SCTP", 1: "ICMP", 58: "ICMPv6"}
_INET = (socket.AF_INET, socket.AF_INET6)
_SOCKET_FAMILIES = {socket.AF_UNIX, socket.AF_INET, socket.AF_INET6, getattr(socket, "AF_NETLINK", -1)}
_NO_DIR_FD = object()  # os.open called other than through the guard's wrapper: directory unknown


class Guard:
    """The audit hook: checks the events that touch files, programs and the network."""

    # How many allowed absolute read paths are remembered (then the memory starts over).
    READ_MEMORY = 4096

    def __init__(self, policy: PermissionPolicy, roots: Roots, net: NetGuard, *, kernel_guards_files: bool = False):
        self.policy = policy
        self.kernel_guards_files = kernel_guards_files
        # With Landlock enforcing files, this hook only words the refusal; so an
        # absolute path it once allowed to be read is allowed again without
        # resolving it (~5 µs per open). Should a symlink on the way change, the
        # kernel still decides; only its plain EACCES would lack the flag's name.
        # Denials are never remembered. Without Landlock every open is resolved.
        self.allowed_reads: set[str] | None = set() if kernel_guards_files else None
        self.read_roots = RootSet(roots.read)
        self.write_roots = RootSet(roots.write)
        self.run_roots = RootSet(roots.run)
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
            "socket.__new__": self._new_socket,
            "import": self._import,
            "cpython.PyInterpreterState_New": self._subinterpreter,
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
            return text, realpath(text)
        head, tail = os.path.split(os.path.normpath(text))
        return text, os.path.join(realpath(head), tail)

    def _open(self, args: tuple) -> None:
        path, mode, flags = args
        if isinstance(flags, int) and flags & O_PATH:
            return
        dir_fd = None
        if mode is None and isinstance(path, (str, bytes)) and not os.path.isabs(os.fsdecode(path)):
            # os.open of a relative path: the event does not carry its dir_fd.
            if self.kernel_guards_files:
                return  # Landlock judges the file the kernel really opens
            dir_fd = getattr(self.local, "open_dir_fd", _NO_DIR_FD)
            if dir_fd is _NO_DIR_FD:
                raise PermissionDenied(
                    f"os.open of relative path {os.fsdecode(path)!r} denied: without Landlock its directory "
                    "cannot be checked; open it by absolute path",
                    "--allow-write" if isinstance(flags, int) and flags & _WRITE_FLAGS else "--allow-read",
                )
        if isinstance(flags, int) and flags & _WRITE_FLAGS:
            self._write(path, dir_fd)
        else:
            self._read(path, dir_fd)

    def guarded_os_open(self, original: Callable[..., int]) -> Callable[..., int]:
        """os.open that tells the hook its dir_fd (the audit event leaves it out); installed when
        Landlock is inactive, so that relative opens (shutil.rmtree, os.fwalk) are judged by
        the file they really open instead of being refused."""
        local = self.local

        @functools.wraps(original)
        def open(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
            previous = getattr(local, "open_dir_fd", _NO_DIR_FD)
            local.open_dir_fd = dir_fd
            try:
                return original(path, flags, mode, dir_fd=dir_fd)
            finally:
                local.open_dir_fd = previous

        return open

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

    def _import(self, args: tuple) -> None:
        if args[0] in _SUBINTERPRETER_MODULES:
            raise PermissionDenied(f"import of {args[0]} denied: {_SUBINTERPRETERS_DENIED}")

    def _subinterpreter(self, args: tuple) -> None:
        raise PermissionDenied(_SUBINTERPRETERS_DENIED)

    # network

    def _new_socket(self, args: tuple) -> None:
        """socket.socket(): the kinds seccomp refuses, refused first with a message."""
        if self.net.allow_all:
            return
        family, kind, protocol = args[1], args[2], args[3]
        if family not in _SOCKET_FAMILIES:
            raise PermissionDenied(f"sockets of address family {family} are denied: add --allow-net (every host)", "--allow-net")
        if family not in _INET:
            return
        kind = kind & 0xF if isinstance(kind, int) else kind
        what = _RAW_TYPES.get(kind) or _OTHER_PROTOCOLS.get(protocol)
        if what is not None:
            raise PermissionDenied(f"{what} sockets are denied: add --allow-net (every host)", "--allow-net")
        if kind == socket.SOCK_DGRAM and self.net.denied_all:
            raise PermissionDenied("UDP sockets are denied: add --allow-net", "--allow-net")

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


def wrap_getaddrinfo(net: NetGuard) -> None:
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
