"""A test host in a network namespace of our own, reached from the host over a veth pair.

The API server proxies to pod IPs, and refuses loopback ones in EndpointSlices;
a namespace with its own address gives a workflow engine a pod-like address
on this machine without touching any other network.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class NetnsHost:
    """Namespace `name`; the host side of the link is `host_ip`, the namespace side `ip` (a /30)."""

    def __init__(self, name: str = "pdtest", host_ip: str = "10.213.7.1", ip: str = "10.213.7.2"):
        self.name, self.host_ip, self.ip = name, host_ip, ip
        self.veth = f"{name}0"
        self.processes: list[subprocess.Popen] = []
        self._cleanup()
        _ip("netns", "add", name)
        _ip("link", "add", self.veth, "type", "veth", "peer", "name", "eth0", "netns", name)
        _ip("addr", "add", f"{host_ip}/30", "dev", self.veth)
        _ip("link", "set", self.veth, "up")
        _ip("-n", name, "addr", "add", f"{ip}/30", "dev", "eth0")
        _ip("-n", name, "link", "set", "eth0", "up")
        _ip("-n", name, "link", "set", "lo", "up")

    def _cleanup(self) -> None:
        subprocess.run(["ip", "link", "del", self.veth], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)

    def start(self, argv: list[str], log: Path, **kwargs) -> subprocess.Popen:
        """Run `argv` inside the namespace, output to `log`."""
        with open(log, "wb") as out:
            proc = subprocess.Popen(["ip", "netns", "exec", self.name, *argv], stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, **kwargs)  # fmt: skip
        self.processes.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._cleanup()


def can_create_netns() -> str:
    """'' when this process may create network namespaces, else why not."""
    if os.geteuid() != 0:
        return "creating a network namespace needs root"
    if not any(Path(p, "ip").exists() for p in os.environ.get("PATH", "").split(os.pathsep)):
        return "the ip command (iproute2) is not installed"
    return ""


def wait_http(url: str, timeout: float = 60.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError as exc:
            last = str(exc)
        time.sleep(0.3)
    raise AssertionError(f"{url} not ready within {timeout:g}s ({last})")
