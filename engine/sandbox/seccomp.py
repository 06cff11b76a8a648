"""A seccomp filter for the engine process: no program execution without --allow-run, and none of the
system calls a workflow never needs (ptrace, mount, bpf, keyctl, namespaces, kernel modules …).

Built with libseccomp (through `pyseccomp`, a ctypes binding): libseccomp owns
the per-architecture syscall tables and the BPF generation, including the
x32 and 32-bit-compat checks a hand-written filter tends to get wrong.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import errno
import platform
import sys
import types
from typing import Any

# Always refused with EPERM: debugging other processes, mounts and namespaces,
# eBPF, the kernel keyring, kernel modules and kexec, swap, reboot, clock and
# host-name changes, perf, userfaultfd, io_uring (it bypasses seccomp for its
# operations), handle-based opens (the classic container escape), raw I/O ports.
DENIED_SYSCALLS: tuple[str, ...] = (
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp",
    "mount", "umount", "umount2", "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount", "fspick",
    "mount_setattr", "pivot_root", "chroot",
    "unshare", "setns",
    "bpf", "perf_event_open", "userfaultfd", "fanotify_init",
    "keyctl", "add_key", "request_key",
    "init_module", "finit_module", "delete_module", "create_module", "get_kernel_syms", "query_module",
    "kexec_load", "kexec_file_load",
    "swapon", "swapoff", "reboot", "acct", "quotactl", "quotactl_fd", "nfsservctl", "_sysctl", "uselib",
    "settimeofday", "stime", "clock_settime", "clock_adjtime", "sethostname", "setdomainname", "vhangup",
    "syslog", "lookup_dcookie", "open_by_handle_at", "name_to_handle_at",
    "iopl", "ioperm", "modify_ldt",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
)  # fmt: skip

EXEC_SYSCALLS: tuple[str, ...] = ("execve", "execveat")

# clone(2) flags that create namespaces (user namespaces are the big kernel attack surface).
CLONE_NAMESPACE_FLAGS = {
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}
# Architectures where clone's flags are its first argument (s390 swaps the first two).
_CLONE_FLAGS_FIRST = {"x86_64", "aarch64", "arm64", "armv7l", "i686", "riscv64", "ppc64le"}

# socket(2) when --allow-net does not allow every host: Landlock's network rules see
# TCP only, so every other way out is refused here. Address families beyond unix,
# IPv4, IPv6 and netlink (packet, vsock, XDP, bluetooth …) get EAFNOSUPPORT; on
# IPv4/IPv6, raw and legacy packet sockets, SCTP (seqpacket or its protocol
# number), MPTCP and ICMP "ping" sockets get EPERM. With no --allow-net at all,
# UDP is refused too (nothing legitimate needs it: there is no name to look up).
AF_UNIX, AF_INET, AF_INET6, AF_NETLINK = 1, 2, 10, 16
SOCKET_FAMILIES_ALLOWED = (AF_UNIX, AF_INET, AF_INET6, AF_NETLINK)
SOCK_DGRAM, SOCK_RAW, SOCK_SEQPACKET, SOCK_PACKET = 2, 3, 5, 10
SOCK_TYPE_MASK = 0xF  # the type argument also carries SOCK_NONBLOCK/SOCK_CLOEXEC
IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_MPTCP = 1, 58, 132, 262
_INT = 0xFFFFFFFF  # the kernel reads these arguments as int: compare the low 32 bits only

# Sonames to try before ctypes.util.find_library, which shells out to ldconfig/gcc
# (absent from a distroless image) and would come back empty.
_SONAMES = {"c": "libc.so.6", "seccomp": "libseccomp.so.2"}


class SeccompUnavailable(Exception):
    """No seccomp filter can be installed here; the message says why."""


@dataclasses.dataclass(frozen=True)
class SeccompResult:
    denied: tuple[str, ...]  # syscalls answered with EPERM (execve/execveat included unless allowed)
    enosys: tuple[str, ...]  # answered ENOSYS so libc falls back to a call the filter can inspect
    exec_allowed: bool
    sockets: str  # "all", "tcp+udp" or "tcp": which socket kinds the filter leaves open
    unknown: tuple[str, ...]  # names this architecture does not have
    library: str


def load_pyseccomp() -> types.ModuleType:
    """Imports pyseccomp, finding libseccomp by soname so no subprocess is needed."""
    if "pyseccomp" in sys.modules:
        return sys.modules["pyseccomp"]
    if platform.system() != "Linux":
        raise SeccompUnavailable(f"seccomp is Linux-only (this is {platform.system()})")
    real = ctypes.util.find_library

    def find_library(name: str) -> str | None:
        soname = _SONAMES.get(name)
        if soname is not None:
            try:
                ctypes.CDLL(soname)
                return soname
            except OSError:
                pass
        return real(name)

    ctypes.util.find_library = find_library
    try:
        import pyseccomp
    except ImportError:
        raise SeccompUnavailable("the pyseccomp package is not installed") from None
    except (RuntimeError, OSError) as exc:
        raise SeccompUnavailable(f"libseccomp cannot be loaded ({exc}); install libseccomp2") from None
    finally:
        ctypes.util.find_library = real
    return pyseccomp


def install_filter(*, allow_exec: bool, sockets: str = "all") -> SeccompResult:
    """Loads the filter into every thread of this process (TSYNC); irreversible.

    `sockets`: "all" leaves socket(2) alone (--allow-net for every host);
    "tcp+udp" refuses the kinds Landlock cannot see (see SOCKET_FAMILIES_ALLOWED);
    "tcp" refuses UDP as well (no --allow-net).

    Default action ALLOW with a deny list: CPython and arbitrary C extensions
    need hundreds of syscalls, and an allow list that misses one crashes the
    engine in production. Non-native architectures (32-bit int 0x80, x32)
    get ENOSYS, so the deny list cannot be sidestepped through another ABI.
    """
    seccomp = load_pyseccomp()
    try:
        flt = seccomp.SyscallFilter(seccomp.ALLOW)
        flt.set_attr(seccomp.Attr.ACT_BADARCH, seccomp.ERRNO(errno.ENOSYS))
        flt.set_attr(seccomp.Attr.CTL_NNP, 1)
        flt.set_attr(seccomp.Attr.CTL_TSYNC, 1)
    except OSError as exc:
        raise SeccompUnavailable(f"libseccomp refused the filter attributes: {exc}") from None
    names = DENIED_SYSCALLS + (() if allow_exec else EXEC_SYSCALLS)
    denied: list[str] = []
    unknown: list[str] = []
    eperm = seccomp.ERRNO(errno.EPERM)
    for name in names:
        number = seccomp.resolve_syscall(seccomp.Arch.NATIVE, name)
        if number < 0:  # not a syscall on this architecture
            unknown.append(name)
            continue
        flt.add_rule(eperm, number)
        denied.append(name)
    enosys: list[str] = []
    if platform.machine() in _CLONE_FLAGS_FIRST:
        clone = seccomp.resolve_syscall(seccomp.Arch.NATIVE, "clone")
        for flag in CLONE_NAMESPACE_FLAGS.values():
            flt.add_rule(eperm, clone, seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
        denied.append("clone(CLONE_NEW*)")
        # clone3 passes its flags in memory, out of the filter's reach: ENOSYS makes
        # glibc fall back to clone(2), whose flags the rules above do see.
        clone3 = seccomp.resolve_syscall(seccomp.Arch.NATIVE, "clone3")
        if clone3 >= 0:
            flt.add_rule(seccomp.ERRNO(errno.ENOSYS), clone3)
            enosys.append("clone3")
    if sockets != "all":
        _restrict_sockets(seccomp, flt, allow_udp=sockets == "tcp+udp")
    try:
        flt.load()
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            raise SeccompUnavailable("the kernel rejected the filter (EINVAL: no seccomp filter mode?)") from None
        if exc.errno in (errno.ENOSYS, errno.EOPNOTSUPP):
            raise SeccompUnavailable(f"the kernel has no seccomp ({exc.strerror})") from None
        raise
    return SeccompResult(
        denied=tuple(denied),
        enosys=tuple(enosys),
        exec_allowed=allow_exec,
        sockets=sockets,
        unknown=tuple(unknown),
        library=getattr(seccomp, "_libseccomp_path", "libseccomp"),
    )


def _restrict_sockets(seccomp: types.ModuleType, flt: Any, *, allow_udp: bool) -> None:
    """Adds the socket(2) rules (see SOCKET_FAMILIES_ALLOWED)."""
    number = seccomp.resolve_syscall(seccomp.Arch.NATIVE, "socket")
    if number < 0:
        return
    eperm = seccomp.ERRNO(errno.EPERM)
    no_family = seccomp.ERRNO(errno.EAFNOSUPPORT)
    # Anything above netlink, including garbage in the upper 32 bits (fails closed).
    flt.add_rule(no_family, number, seccomp.Arg(0, seccomp.GT, AF_NETLINK))
    for family in range(AF_NETLINK):
        if family not in SOCKET_FAMILIES_ALLOWED:
            flt.add_rule(no_family, number, seccomp.Arg(0, seccomp.MASKED_EQ, _INT, family))
    kinds = [SOCK_RAW, SOCK_PACKET, SOCK_SEQPACKET] + ([] if allow_udp else [SOCK_DGRAM])
    for family in (AF_INET, AF_INET6):
        on_inet = seccomp.Arg(0, seccomp.MASKED_EQ, _INT, family)
        for kind in kinds:
            flt.add_rule(eperm, number, on_inet, seccomp.Arg(1, seccomp.MASKED_EQ, SOCK_TYPE_MASK, kind))
        for protocol in (IPPROTO_MPTCP, IPPROTO_SCTP):
            flt.add_rule(eperm, number, on_inet, seccomp.Arg(2, seccomp.MASKED_EQ, _INT, protocol))
        for protocol in (IPPROTO_ICMP, IPPROTO_ICMPV6):
            flt.add_rule(
                eperm,
                number,
                on_inet,
                seccomp.Arg(1, seccomp.MASKED_EQ, SOCK_TYPE_MASK, SOCK_DGRAM),
                seccomp.Arg(2, seccomp.MASKED_EQ, _INT, protocol),
            )
