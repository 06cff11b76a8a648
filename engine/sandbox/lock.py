"""Applying the lock: each layer in turn, once per process, and the report of what holds."""

from __future__ import annotations

import logging
import os
import posix
import stat
import sys
import threading
from typing import Iterable

from engine.sandbox import landlock
from engine.sandbox import seccomp as seccomp_filter
from engine.sandbox.audit import Guard, wrap_getaddrinfo
from engine.sandbox.netguard import NetGuard
from engine.sandbox.policy import PermissionPolicy
from engine.sandbox.report import LayerStatus, LockReport
from engine.sandbox.roots import SYSTEM_WRITE_PATHS, Roots, RootSet, effective_roots, os_open, real

log = logging.getLogger("pipedreamer.sandbox")

DISABLE_ENV = "PIPEDREAMER_SANDBOX_DISABLE"
_DISABLE_NAMES = {"landlock": "landlock", "seccomp": "seccomp", "audit": "audit_hook", "audit_hook": "audit_hook"}

_report: LockReport | None = None
_apply_lock = threading.Lock()


def current_report() -> LockReport | None:
    """The report of the lock applied in this process, or None."""
    return _report


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
        roots = effective_roots(policy, extra_read)
        closed = _close_descriptors_outside(roots)
        if closed:
            warnings.append(
                f"closed {len(closed)} descriptor(s) opened before the lock on files outside the policy: {', '.join(closed)}"
            )
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


def _close_descriptors_outside(roots: Roots) -> list[str]:
    """Closes descriptors (past stdin/stdout/stderr) of files and directories the policy would
    not let the process open: nothing opened before the lock reaches node code through them."""
    readable, writable = RootSet(roots.read), RootSet(roots.write)
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return []
    closed = []
    for name in names:
        fd = int(name)
        if fd <= 2:
            continue
        try:
            kind = os.fstat(fd).st_mode
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the listing's own descriptor, gone by now
        if not (stat.S_ISREG(kind) or stat.S_ISDIR(kind)) or readable.covers(target) or writable.covers(target):
            continue
        os.close(fd)
        closed.append(f"{fd} ({target})")
    return closed


def _preload_seccomp() -> None:
    try:
        seccomp_filter.load_pyseccomp()
    except seccomp_filter.SeccompUnavailable:
        pass  # reported by _apply_seccomp


def _apply_landlock(
    policy: PermissionPolicy, net: NetGuard, roots: Roots, disabled: frozenset[str], warnings: list[str]
) -> LayerStatus:
    if "landlock" in disabled:
        return LayerStatus("landlock", False, f"disabled by {DISABLE_ENV}")
    devices = {real(p) for p in SYSTEM_WRITE_PATHS}
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
        result = seccomp_filter.install_filter(allow_exec=policy.allow_run, sockets=_socket_mode(policy))
    except seccomp_filter.SeccompUnavailable as exc:
        return LayerStatus("seccomp", False, str(exc))
    except OSError as exc:
        return LayerStatus("seccomp", False, f"could not be applied: {exc}")
    run = "execve allowed (--allow-run)" if result.exec_allowed else "execve/execveat denied"
    sockets = {
        "all": "every socket kind (--allow-net for all hosts)",
        "tcp+udp": "sockets: TCP, UDP, unix and netlink only",
        "tcp": "sockets: TCP, unix and netlink only",
    }[result.sockets]
    return LayerStatus(
        "seccomp",
        True,
        f"{run}; {sockets}; {len(result.denied)} syscalls answer EPERM, {', '.join(result.enosys) or 'none'} ENOSYS; "
        f"other architectures ENOSYS; all threads (TSYNC)",
    )


def _socket_mode(policy: PermissionPolicy) -> str:
    """What seccomp leaves of socket(2): Landlock's network rules see TCP only."""
    if policy.allow_net == ():
        return "all"
    return "tcp" if policy.allow_net is None else "tcp+udp"


def _apply_audit_hook(
    policy: PermissionPolicy, net: NetGuard, roots: Roots, disabled: frozenset[str], *, kernel_guards_files: bool
) -> LayerStatus:
    if "audit_hook" in disabled:
        return LayerStatus("audit_hook", False, f"disabled by {DISABLE_ENV}")
    wrap_getaddrinfo(net)
    guard = Guard(policy, roots, net, kernel_guards_files=kernel_guards_files)
    sys.addaudithook(guard)
    if not kernel_guards_files:
        # os and posix share the function; both names get the wrapper.
        os.open = posix.open = guard.guarded_os_open(os_open)
    return LayerStatus(
        "audit_hook",
        True,
        f"files, programs and network checked in Python with messages naming the flag; net: {net.describe()}",
    )
