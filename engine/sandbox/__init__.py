"""The permission lock: Deno's `--allow-read/--allow-write/--allow-net/--allow-run`, done for Python.

`apply_policy` confines the whole engine process once, before the first node
module is imported. Three layers, each reported:

* landlock   – the kernel limits file access (and TCP connects, ABI 4+) to the policy;
* seccomp    – the kernel refuses execve/execveat without --allow-run, and the
               syscalls no workflow needs (ptrace, mount, bpf, keyctl, unshare …);
* audit_hook – a `sys.addaudithook` hook raises `PermissionDenied` naming the
               flag that would allow the action, before the kernel answers with
               a bare EACCES/EPERM; it is also the only layer that knows host names.

`PIPEDREAMER_SANDBOX_DISABLE=landlock,seccomp,audit` switches layers off to
simulate a kernel without them (tests of the fallback path).

Modules: `policy` (the flags and what they allow), `roots` (the paths each
kind of access may reach), `audit` (the Python-level hook), `lock` (applying
the layers, the report), the kernel bindings `landlock` and `seccomp`, and
`netguard` (the --allow-net rules).
"""

from engine.sandbox.audit import PermissionDenied
from engine.sandbox.lock import DISABLE_ENV, apply_policy, current_report, disabled_layers
from engine.sandbox.policy import PermissionPolicy, add_permission_flags, policy_from_args, with_default_flags
from engine.sandbox.report import LayerStatus, LockReport

__all__ = [
    "DISABLE_ENV",
    "LayerStatus",
    "LockReport",
    "PermissionDenied",
    "PermissionPolicy",
    "add_permission_flags",
    "apply_policy",
    "current_report",
    "disabled_layers",
    "policy_from_args",
    "with_default_flags",
]
