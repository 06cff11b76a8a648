"""--allow-net rules: parse `host[:port]` entries and decide each lookup and connect against them.

Decisions plus a small memory: when an allowed *name* resolves, its addresses
are remembered so the connect that follows (to an IP) passes. A decision is
None (allowed) or the denial message naming the flag; the sandbox's audit hook
asks for `socket.getaddrinfo`, `socket.connect`, `socket.sendto` … and raises.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
import threading
import time
from typing import Any, Callable, Iterable

Resolver = Callable[..., list]

# Lookups of these never leave the machine (/etc/hosts), and servers bind with them.
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}
_REMEMBERED_LIMIT = 4096
_FALLBACK_TTL = 30.0


@dataclasses.dataclass(frozen=True)
class NetRule:
    """One --allow-net entry: a host name or IP address, and optionally one port."""

    host: str
    port: int | None = None

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        return _ip(self.host)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"


def parse_net_rule(text: str) -> NetRule:
    """`example.com`, `example.com:443`, `10.0.0.1:8080`, `[::1]:80`, `::1`; ValueError otherwise."""
    entry = text.strip()
    if not entry:
        raise ValueError("empty --allow-net entry")
    if "://" in entry or "/" in entry:
        raise ValueError(f"--allow-net takes host[:port], not a URL: {text!r}")
    host, port = entry, None
    if entry.startswith("["):
        close = entry.find("]")
        if close < 0:
            raise ValueError(f"unbalanced [ in --allow-net entry {text!r}")
        host, rest = entry[1:close], entry[close + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"expected [ipv6]:port, got {text!r}")
            port = _port(rest[1:], text)
        if _ip(host) is None:
            raise ValueError(f"not an IPv6 address in brackets: {text!r}")
    elif entry.count(":") == 1:
        host, port_text = entry.split(":")
        port = _port(port_text, text)
    elif entry.count(":") > 1 and _ip(entry) is None:
        raise ValueError(f"not a host[:port] or IPv6 address: {text!r} (write IPv6 with a port as [addr]:port)")
    host = _normalize_host(host)
    if not host:
        raise ValueError(f"missing host in --allow-net entry {text!r}")
    return NetRule(host, port)


def is_abstract_unix(address: Any) -> bool:
    """An AF_UNIX address in the abstract namespace (leading NUL) or an autobind request (empty)."""
    return isinstance(address, (str, bytes)) and address[:1] in ("\0", b"\0", "", b"")


def _port(text: str, entry: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"port must be 1-65535 in --allow-net entry {entry!r}")
    return int(text)


def _normalize_host(host: str) -> str:
    ip = _ip(host)
    if ip is not None:
        return str(ip)
    return host.strip().rstrip(".").lower()


def _ip(host: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return None
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _host_text(host: Any) -> str:
    if isinstance(host, bytes):
        return host.decode("utf-8", "replace")
    return str(host)


def _target(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


def _port_number(port: Any) -> int | None:
    """getaddrinfo's port argument as a number (None: no port or an unknown service name)."""
    if port is None:
        return None
    if isinstance(port, bytes):
        port = port.decode("ascii", "replace")
    if isinstance(port, int):
        return port or None
    text = str(port).strip()
    if text.isdigit():
        return int(text) or None
    try:
        return socket.getservbyname(text)
    except OSError:
        return None


class NetGuard:
    """Decides network actions for one policy; thread-safe (lookups run in executor threads)."""

    def __init__(self, allow_net: Iterable[str] | None, *, resolver: Resolver = socket.getaddrinfo) -> None:
        self.allow_all = allow_net is not None and not tuple(allow_net)
        self.denied_all = allow_net is None
        self.rules = tuple(parse_net_rule(e) for e in allow_net or ())
        self._ip_rules = [(r.ip, r.port) for r in self.rules if r.ip is not None]
        self._name_rules = [r for r in self.rules if r.ip is None]
        self._names = {r.host for r in self._name_rules}
        self._resolver = resolver
        self._lock = threading.Lock()
        self._remembered: dict[Any, set[str]] = {}
        self._fallback: dict[str, tuple[float, frozenset]] = {}

    # -- lookups -------------------------------------------------------------

    def deny_lookup(self, host: Any, port: Any = None) -> str | None:
        """A name lookup (getaddrinfo/gethostbyname): names outside --allow-net never reach DNS."""
        if self.allow_all or host is None:
            return None
        text = _host_text(host)
        if text == "" or _ip(text) is not None:
            return None  # literals and passive (bind) lookups send nothing
        name = _normalize_host(text)
        if name in _LOCAL_NAMES:
            return None
        number = _port_number(port)
        if any(r.host == name and (r.port is None or number is None or r.port == number) for r in self._name_rules):
            return None
        if number is None:
            return f"lookup of {name} denied: add it to --allow-net"
        return f"connect to {_target(name, number)} denied: add it to --allow-net"

    def remember(self, host: Any, infos: Iterable[Any]) -> None:
        """Records the addresses an allowed name resolved to (the result of socket.getaddrinfo)."""
        if self.allow_all or host is None:
            return
        name = _normalize_host(_host_text(host))
        if name not in self._names:
            return
        with self._lock:
            for info in infos:
                try:
                    ip = _ip(info[4][0])
                except (IndexError, TypeError):
                    continue
                if ip is None:
                    continue
                if len(self._remembered) >= _REMEMBERED_LIMIT and ip not in self._remembered:
                    self._remembered.clear()  # crude bound; the fallback re-resolves
                self._remembered.setdefault(ip, set()).add(name)

    # -- connects ------------------------------------------------------------

    def deny_connect(self, family: int, address: Any) -> str | None:
        """A connect/sendto to `address` on a socket of `family`.

        Unix sockets: abstract ones count as network (allowed only with every
        host); path sockets are files, left to the sandbox's file rules.
        """
        if family in (socket.AF_INET, socket.AF_INET6):
            return self._deny_inet(address)
        if family == getattr(socket, "AF_UNIX", None):
            return self._deny_abstract_unix(address)
        if family == getattr(socket, "AF_NETLINK", None) or self.allow_all:
            return None  # netlink talks to the local kernel only
        return f"connect on a socket of family {family} denied: add --allow-net"

    def _deny_inet(self, address: Any) -> str | None:
        if self.allow_all or address is None:
            return None
        try:
            host, port = address[0], int(address[1])
        except (TypeError, IndexError, ValueError):
            return None  # malformed: the socket call itself will refuse it
        text = _host_text(host)
        ip = _ip(text)
        if ip is None:
            # A name in the address tuple: the C code resolves it without an audit event.
            name = _normalize_host(text)
            if any(r.host == name and r.port in (None, port) for r in self._name_rules):
                return None
            if name in _LOCAL_NAMES and any(
                self._ip_allowed(_ip(loopback), port) for loopback in ("127.0.0.1", "::1")
            ):
                return None
            return f"connect to {_target(name, port)} denied: add it to --allow-net"
        if self._ip_allowed(ip, port):
            return None
        return f"connect to {_target(str(ip), port)} denied: add it to --allow-net"

    def _ip_allowed(self, ip: Any, port: int) -> bool:
        if any(rule_ip == ip and rule_port in (None, port) for rule_ip, rule_port in self._ip_rules):
            return True
        with self._lock:
            names = set(self._remembered.get(ip, ()))
        if any(r.host in names and r.port in (None, port) for r in self._name_rules):
            return True
        # The address came from somewhere we did not see (an early-bound getaddrinfo,
        # c-ares): resolve the allowed names that fit this port and compare.
        for rule in self._name_rules:
            if rule.port in (None, port) and ip in self._resolve(rule.host):
                self.remember(rule.host, [(0, 0, 0, "", (str(ip), port))])
                return True
        return False

    def _resolve(self, name: str) -> frozenset:
        now = time.monotonic()
        with self._lock:
            cached = self._fallback.get(name)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            ips = frozenset(ip for info in self._resolver(name, None) if (ip := _ip(info[4][0])) is not None)
        except OSError:
            ips = frozenset()
        with self._lock:
            self._fallback[name] = (now + _FALLBACK_TTL, ips)
        return ips

    def _deny_abstract_unix(self, address: Any) -> str | None:
        if self.allow_all or not is_abstract_unix(address):
            return None
        shown = _host_text(address[1:]) if address else "(autobind)"
        return f"connect to abstract unix socket @{shown} denied: add --allow-net"

    def describe(self) -> str:
        if self.allow_all:
            return "all hosts"
        if self.denied_all:
            return "denied"
        return ",".join(str(r) for r in self.rules)

    def kernel_tcp_ports(self) -> tuple[int, ...] | None:
        """Ports Landlock may restrict TCP connects to; None when the rules are not port-exact.

        --allow-net absent: no port at all. Every entry with a port: those ports
        (plus 53 for the resolver's TCP fallback when an entry is a name).
        """
        if self.allow_all:
            return None
        if self.denied_all:
            return ()
        if any(r.port is None for r in self.rules):
            return None
        ports = {r.port for r in self.rules if r.port is not None}
        if self._name_rules:
            ports.add(53)
        return tuple(sorted(ports))
