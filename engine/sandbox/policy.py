"""--allow-read/--allow-write/--allow-net/--allow-run: the flags, and the `PermissionPolicy` they describe."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any, Sequence

from engine.sandbox import netguard


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


def with_default_flags(args: argparse.Namespace, flags: Sequence[str]) -> argparse.Namespace:
    """`args` with `flags` (e.g. `["--allow-write=/tmp"]`) as its permission flags when the user
    gave none of their own; any `--allow-*` flag replaces these defaults as a whole."""
    probe = argparse.ArgumentParser(add_help=False)
    add_permission_flags(probe)
    untouched = vars(probe.parse_args([]))
    if any(getattr(args, key, value) != value for key, value in untouched.items()):
        return args
    defaults = probe.parse_args(list(flags))
    merged = argparse.Namespace(**vars(args))
    for key in untouched:
        setattr(merged, key, getattr(defaults, key))
    return merged


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
