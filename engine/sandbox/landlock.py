"""Landlock through ctypes: detect the kernel's ABI and confine this process's file access (and TCP connects).

Landlock restricts the calling thread and every thread or process it creates
later; it never widens access, and it cannot be undone. `restrict_self` is all
the sandbox needs: rules by path, an optional TCP port list, the ABI's scopes.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import os
import platform
import threading
from typing import Iterable

# Same numbers on every architecture (they were added after the syscall tables were unified).
SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446

LANDLOCK_CREATE_RULESET_VERSION = 1 << 0
LANDLOCK_RULE_PATH_BENEATH = 1
LANDLOCK_RULE_NET_PORT = 2
LANDLOCK_RESTRICT_SELF_TSYNC = 1 << 3  # ABI 8: apply to every thread of the process

PR_SET_NO_NEW_PRIVS = 38

# File-system access rights, by the ABI that introduced them.
ACCESS_FS_EXECUTE = 1 << 0
ACCESS_FS_WRITE_FILE = 1 << 1
ACCESS_FS_READ_FILE = 1 << 2
ACCESS_FS_READ_DIR = 1 << 3
ACCESS_FS_REMOVE_DIR = 1 << 4
ACCESS_FS_REMOVE_FILE = 1 << 5
ACCESS_FS_MAKE_CHAR = 1 << 6
ACCESS_FS_MAKE_DIR = 1 << 7
ACCESS_FS_MAKE_REG = 1 << 8
ACCESS_FS_MAKE_SOCK = 1 << 9
ACCESS_FS_MAKE_FIFO = 1 << 10
ACCESS_FS_MAKE_BLOCK = 1 << 11
ACCESS_FS_MAKE_SYM = 1 << 12
ACCESS_FS_REFER = 1 << 13  # ABI 2
ACCESS_FS_TRUNCATE = 1 << 14  # ABI 3
ACCESS_FS_IOCTL_DEV = 1 << 15  # ABI 5

ACCESS_NET_BIND_TCP = 1 << 0  # ABI 4
ACCESS_NET_CONNECT_TCP = 1 << 1  # ABI 4

SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1  # ABI 6

_FS_BY_ABI = {
    1: (1 << 13) - 1,
    2: (1 << 14) - 1,
    3: (1 << 15) - 1,
    4: (1 << 15) - 1,
    5: (1 << 16) - 1,
}

# Rights that make sense on a regular file; the kernel rejects directory rights on one.
_FILE_RIGHTS = ACCESS_FS_EXECUTE | ACCESS_FS_WRITE_FILE | ACCESS_FS_READ_FILE | ACCESS_FS_TRUNCATE | ACCESS_FS_IOCTL_DEV

READ = ACCESS_FS_READ_FILE | ACCESS_FS_READ_DIR
# Everything a scratch directory needs; never device nodes.
WRITE = (
    READ
    | ACCESS_FS_WRITE_FILE
    | ACCESS_FS_REMOVE_DIR
    | ACCESS_FS_REMOVE_FILE
    | ACCESS_FS_MAKE_DIR
    | ACCESS_FS_MAKE_REG
    | ACCESS_FS_MAKE_SOCK
    | ACCESS_FS_MAKE_FIFO
    | ACCESS_FS_MAKE_SYM
    | ACCESS_FS_REFER
    | ACCESS_FS_TRUNCATE
)
# /dev/null and friends: open for reading and writing, nothing else.
DEVICE_RW = ACCESS_FS_READ_FILE | ACCESS_FS_WRITE_FILE | ACCESS_FS_TRUNCATE


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # __attribute__((packed)) in the UAPI header
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _NetPortAttr(ctypes.Structure):
    _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]


class LandlockUnavailable(Exception):
    """The kernel (or the platform) offers no Landlock; the message says why."""


@dataclasses.dataclass(frozen=True)
class PathRule:
    path: str
    access: int


@dataclasses.dataclass(frozen=True)
class LandlockResult:
    abi: int
    handled_fs: int
    handled_net: int
    scoped: int
    rules: tuple[PathRule, ...]
    # Paths that could not carry a rule (missing, unreadable); nothing below them is reachable.
    skipped: tuple[str, ...]
    tcp_ports: tuple[int, ...] | None
    # Threads that were already running: Landlock before ABI 8 does not reach them.
    other_threads: tuple[str, ...]


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    libc.prctl.restype = ctypes.c_int
    libc.prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
    return libc


def abi_version() -> int:
    """The kernel's Landlock ABI (1, 2, …); raises LandlockUnavailable with the reason when there is none."""
    if platform.system() != "Linux":
        raise LandlockUnavailable(f"Landlock is Linux-only (this is {platform.system()})")
    libc = _libc()
    abi = libc.syscall(
        ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET), None, ctypes.c_size_t(0), ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION)
    )
    if abi >= 1:
        return int(abi)
    err = ctypes.get_errno()
    if err == errno.ENOSYS:
        raise LandlockUnavailable("the kernel has no Landlock (ENOSYS: older than 5.13 or built without it, e.g. gVisor)")
    if err == errno.EOPNOTSUPP:
        raise LandlockUnavailable("Landlock is built in but disabled at boot (EOPNOTSUPP: add landlock to the lsm= list)")
    if err == errno.EPERM:
        raise LandlockUnavailable("the Landlock system calls are blocked (EPERM), likely by the container's seccomp profile")
    raise LandlockUnavailable(f"landlock_create_ruleset failed: {os.strerror(err)}")


def _other_threads() -> tuple[str, ...]:
    """Names of this process's threads other than the caller (from /proc)."""
    me = str(threading.get_native_id())
    names = []
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return ()
    for tid in sorted(tasks, key=int):
        if tid == me:
            continue
        try:
            with open(f"/proc/self/task/{tid}/comm") as comm:
                names.append(f"{comm.read().strip()} ({tid})")
        except OSError:
            names.append(tid)
    return tuple(names)


def restrict_self(
    rules: Iterable[PathRule],
    *,
    handle_execute: bool,
    tcp_connect_ports: Iterable[int] | None = None,
    scope_abstract_unix: bool = True,
    scope_signal: bool = True,
) -> LandlockResult:
    """Confines this process: file access only as `rules` grant it; irreversible.

    `handle_execute=False` leaves running programs to other layers (Landlock
    then grants execution everywhere). `tcp_connect_ports` (ABI 4+): None
    leaves TCP connects alone; a list allows only those ports (empty: none).
    Raises LandlockUnavailable when the kernel lacks Landlock, OSError when a
    call fails half-way (nothing is enforced then).
    """
    abi = abi_version()
    libc = _libc()
    handled_fs = _FS_BY_ABI.get(abi, _FS_BY_ABI[5])
    if not handle_execute:
        handled_fs &= ~ACCESS_FS_EXECUTE
    handled_net = 0
    ports: tuple[int, ...] | None = None
    if tcp_connect_ports is not None and abi >= 4:
        handled_net = ACCESS_NET_CONNECT_TCP
        ports = tuple(sorted(set(tcp_connect_ports)))
    scoped = 0
    if abi >= 6:
        scoped = (SCOPE_ABSTRACT_UNIX_SOCKET if scope_abstract_unix else 0) | (SCOPE_SIGNAL if scope_signal else 0)

    attr = _RulesetAttr(handled_fs, handled_net, scoped)
    # Older kernels reject fields they do not know unless we pass the size they know.
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    ruleset = libc.syscall(
        ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET), ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0)
    )
    if ruleset < 0:
        raise _oserror("landlock_create_ruleset")
    applied: list[PathRule] = []
    skipped: list[str] = []
    try:
        merged: dict[str, int] = {}
        for rule in rules:
            merged[rule.path] = merged.get(rule.path, 0) | rule.access
        for path, access in merged.items():
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                skipped.append(path)
                continue
            try:
                is_dir = os.path.isdir(f"/proc/self/fd/{fd}")
                allowed = access & handled_fs & (~0 if is_dir else _FILE_RIGHTS)
                if not allowed:
                    continue
                beneath = _PathBeneathAttr(allowed, fd)
                if libc.syscall(
                    ctypes.c_long(SYS_LANDLOCK_ADD_RULE),
                    ctypes.c_int(ruleset),
                    ctypes.c_int(LANDLOCK_RULE_PATH_BENEATH),
                    ctypes.byref(beneath),
                    ctypes.c_uint32(0),
                ) < 0:
                    raise _oserror(f"landlock_add_rule({path})")
                applied.append(PathRule(path, allowed))
            finally:
                os.close(fd)
        for port in ports or ():
            net = _NetPortAttr(ACCESS_NET_CONNECT_TCP, port)
            if libc.syscall(
                ctypes.c_long(SYS_LANDLOCK_ADD_RULE),
                ctypes.c_int(ruleset),
                ctypes.c_int(LANDLOCK_RULE_NET_PORT),
                ctypes.byref(net),
                ctypes.c_uint32(0),
            ) < 0:
                raise _oserror(f"landlock_add_rule(tcp port {port})")
        # Without no_new_privs (or CAP_SYS_ADMIN) the kernel refuses to restrict.
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise _oserror("prctl(PR_SET_NO_NEW_PRIVS)")
        others = _other_threads()
        flags = LANDLOCK_RESTRICT_SELF_TSYNC if abi >= 8 else 0
        if _restrict(libc, ruleset, flags) < 0:
            if flags and ctypes.get_errno() == errno.EINVAL:
                flags = 0
                if _restrict(libc, ruleset, 0) < 0:
                    raise _oserror("landlock_restrict_self")
            else:
                raise _oserror("landlock_restrict_self")
    finally:
        os.close(ruleset)
    return LandlockResult(
        abi=abi,
        handled_fs=handled_fs,
        handled_net=handled_net,
        scoped=scoped,
        rules=tuple(applied),
        skipped=tuple(skipped),
        tcp_ports=ports,
        other_threads=() if flags else others,
    )


def _restrict(libc: ctypes.CDLL, ruleset: int, flags: int) -> int:
    return libc.syscall(ctypes.c_long(SYS_LANDLOCK_RESTRICT_SELF), ctypes.c_int(ruleset), ctypes.c_uint32(flags))


def _oserror(what: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}")
