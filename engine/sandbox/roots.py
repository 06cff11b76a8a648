"""Where each kind of access may go: the read, write and run roots of a policy, as real paths.

Read roots come from an explicit list (the interpreter's stdlib and
site-packages, the engine's own packages, the system's libraries and
certificates, the policy's paths), never from mutable interpreter state.
"""

from __future__ import annotations

import dataclasses
import os
import site
import sys
import sysconfig
from typing import Iterable

from engine.sandbox.policy import PermissionPolicy

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


O_PATH = getattr(os, "O_PATH", 0)
os_open = os.open  # the real one: the lock may wrap os.open (see audit.Guard.guarded_os_open)


def real(path: str) -> str:
    return os.path.realpath(os.path.abspath(path))


# The engine's own packages, beside this one; fixed when this module is imported
# (before any node code), never looked up in sys.modules.
_SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENGINE_PACKAGES: tuple[str, ...] = ("engine", "proto")
# sys.path entries that hold installed packages (a venv's or an image's site-packages,
# Bazel's per-wheel runfiles directories, zipped stdlib).
_PACKAGE_DIR_SUFFIXES = (".zip", "site-packages", "dist-packages", "lib-dynload")


def interpreter_read_paths() -> tuple[str, ...]:
    """Python's own files, from an explicit list: the stdlib (with lib-dynload), the
    site-packages of the interpreter and its virtualenv, and the engine's own packages.

    Never taken from `sys.modules` (a module object can claim any `__path__`): what
    the lock lets the process read does not depend on what code imported before it.
    """
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
    paths.update(entry for entry in sys.path if entry and entry.endswith(_PACKAGE_DIR_SUFFIXES))
    paths.update(os.path.join(_SOURCE_ROOT, package) for package in ENGINE_PACKAGES)
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
class Roots:
    """Where each kind of access is allowed, as real paths (symlinks resolved), minimal."""

    read: tuple[str, ...]
    write: tuple[str, ...]
    run: tuple[str, ...]  # executables may come from here (only with --allow-run)


def _program_dirs() -> list[str]:
    dirs = [p for p in os.environ.get("PATH", os.defpath).split(os.pathsep) if p]
    dirs += list(SYSTEM_PROGRAM_PATHS)
    dirs += [os.path.dirname(sys.executable), os.path.dirname(real(sys.executable))]
    # A virtualenv's interpreter reads pyvenv.cfg at start-up.
    dirs.append(os.path.join(sys.prefix, "pyvenv.cfg"))
    return dirs


def effective_roots(policy: PermissionPolicy, extra_read: Iterable[str]) -> Roots:
    write = [real(p) for p in (*policy.allow_write, *SYSTEM_WRITE_PATHS)]
    interpreter = interpreter_read_paths()
    read = [real(p) for p in (*policy.allow_read, *extra_read, *SYSTEM_READ_PATHS, *interpreter)]
    run: list[str] = []
    if policy.allow_run:
        # Programs run from system and read-only places, never from a writable
        # one: a file a node just wrote cannot be executed.
        programs = [real(p) for p in _program_dirs()]
        run = [real(p) for p in (*policy.allow_read, *extra_read, *SYSTEM_LIBRARY_PATHS, *interpreter)] + programs
        read += programs
    return Roots(read=tuple(minimal(read + write)), write=tuple(minimal(write)), run=tuple(minimal(run)))


def minimal(paths: Iterable[str]) -> list[str]:
    """Existing paths with those inside another listed path dropped."""
    result: list[str] = []
    for path in sorted(set(paths), key=lambda p: (p.count("/"), p)):
        if not os.path.exists(path):
            continue
        if any(inside(path, root) for root in result):
            continue
        result.append(path)
    return sorted(result)


def inside(path: str, root: str) -> bool:
    return root == "/" or path == root or path.startswith(root + "/")


class RootSet:
    """Allowed roots, matched by looking up each ancestor of a path in a set.

    A path of depth d costs d set lookups however many roots there are; a loop of
    `inside` over ~30 roots was a third of the hook's cost on every open().
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


def realpath(path: str) -> str:
    """os.path.realpath in three system calls: the kernel resolves the path once (O_PATH)
    and /proc/self/fd names the result; falls back to the per-component walk
    for paths that do not exist yet, are not reachable, or have no plain name."""
    if not O_PATH:
        return os.path.realpath(path)
    try:
        fd = os_open(path, O_PATH | os.O_CLOEXEC)
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
