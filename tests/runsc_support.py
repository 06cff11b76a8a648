"""gVisor for tests: the pinned `runsc`, a network namespace of the test's own, and a
container of a built image run under runsc shaped like the pod.

Network: the bundle names a namespace of the test's (a veth pair with a private
/30, `tests/netns_host.py`) and runsc runs with `--network=host`, which in
gVisor means "the kernel network stack of the namespace the sandbox is in".
gVisor's own netstack (`--network=sandbox`) cannot start on this kernel with
Debian 13's runsc (0.0~20240729): it decides whether it is in the root
namespace by looking for /proc/sys/net/core/rmem_default, which Linux ≥ 6.11
shows in every namespace (google/gvisor#10704, fixed upstream after that
snapshot).

Nothing here skips: when runsc cannot be fetched or run, the caller fails with the reason.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest
import requests

from builder.errors import BuildError
from tests.image_support import prepare_bundle, require
from tests.netns_host import NetnsHost, can_create_netns
from tools.gvisor.fetch_runsc import fetch_runsc


def runsc_binary() -> Path:
    """The pinned runsc from Debian 13, fetched into the cache on first use; fails the test with the reason."""
    started = time.monotonic()
    try:
        path = fetch_runsc()
    except BuildError as err:
        pytest.fail(f"cannot get gVisor's runsc: {err}")
    version = subprocess.run([str(path), "--version"], capture_output=True, text=True)
    if version.returncode != 0:
        pytest.fail(f"{path} --version failed ({version.returncode}): {version.stderr.strip()}")
    print(f"\nrunsc: {path} ({version.stdout.splitlines()[0]}), ready in {time.monotonic() - started:.1f}s")
    return path


@contextlib.contextmanager
def fresh_netns() -> Iterator[NetnsHost]:
    """A network namespace of our own with a veth pair on a free private /30; removed afterwards."""
    reason = can_create_netns()
    if reason:
        pytest.fail(f"runsc's network namespace: {reason}")
    taken = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    for _ in range(50):
        third, fourth = random.randrange(64, 128), random.randrange(0, 256, 4)
        prefix = f"10.213.{third}."
        if f"{prefix}{fourth + 1}/" not in taken and f"{prefix}{fourth + 2}/" not in taken:
            break
    host = NetnsHost(name=f"pdgv{uuid.uuid4().hex[:6]}", host_ip=f"{prefix}{fourth + 1}", ip=f"{prefix}{fourth + 2}")
    try:
        yield host
    finally:
        host.close()


class RunscContainer:
    """One container of `layout:tag` under runsc, in `netns`, shaped like the pod; its output goes to `log`."""

    def __init__(self, runsc: Path, layout: Path, tag: str, workdir: Path, netns: NetnsHost, *,
                 read_only_mounts: dict[str, Path] | None = None) -> None:  # fmt: skip
        require("umoci")
        self.runsc = runsc
        self.netns = netns
        self.workdir = workdir
        self.bundle = prepare_bundle(layout, tag, workdir, read_only_mounts=read_only_mounts)
        config_path = self.bundle / "config.json"
        config = json.loads(config_path.read_text())
        namespaces = [n for n in config["linux"]["namespaces"] if n["type"] != "network"]
        config["linux"]["namespaces"] = namespaces + [{"type": "network", "path": f"/run/netns/{netns.name}"}]
        config_path.write_text(json.dumps(config))
        self.args = config["process"]["args"]
        self.name = f"pd-gv-{uuid.uuid4().hex[:10]}"
        self.state = workdir / f"runsc-state-{self.name}"
        self.debug = workdir / f"runsc-debug-{self.name}"
        self.log = workdir / f"{self.name}.log"
        self.process: subprocess.Popen | None = None
        self.url = f"http://{netns.ip}:8080"

    def runsc_command(self, *args: str) -> list[str]:
        return [str(self.runsc), "--root", str(self.state), "--network=host", f"--debug-log={self.debug}/", *args]

    def start(self, timeout: float = 90) -> float:
        """Starts the container and waits for /readyz; returns the seconds that took."""
        self.state.mkdir()
        self.debug.mkdir()
        started = time.monotonic()
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(self.runsc_command("run", self.name), cwd=self.bundle,
                                            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        deadline = started + timeout
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"runsc run exited with {self.process.returncode} before /readyz answered\n{self.diagnostics()}")
            try:
                if requests.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return time.monotonic() - started
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{self.url}/readyz not 200 within {timeout:g}s under runsc\n{self.diagnostics()}")
            time.sleep(0.2)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM to the engine (as the kubelet sends it); the container's exit code."""
        assert self.process is not None
        kill = subprocess.run(self.runsc_command("kill", self.name, "TERM"), capture_output=True, text=True)
        assert kill.returncode == 0, f"runsc kill TERM: {kill.stderr}\n{self.diagnostics()}"
        return self.process.wait(timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def diagnostics(self) -> str:
        """The engine's output and the tail of runsc's own logs (boot = the sandbox kernel)."""
        parts = [f"--- engine/runsc output ({self.log}):\n{self.output()[-4000:]}"]
        for path in sorted(self.debug.glob("*")) if self.debug.exists() else ():
            lines = path.read_text(errors="replace").splitlines()
            interesting = [line for line in lines if line[:1] in "WEF"]
            if interesting:
                parts.append(f"--- {path.name} (warnings/errors, last 15):\n" + "\n".join(interesting[-15:]))
        return "\n".join(parts)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            subprocess.run(self.runsc_command("kill", self.name, "KILL"), capture_output=True)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        subprocess.run(self.runsc_command("delete", "-force", self.name), capture_output=True)
        shutil.rmtree(self.bundle, ignore_errors=True)
        shutil.rmtree(self.state, ignore_errors=True)


def image_tag(layout: Path) -> str:
    """The tag of the one image in an OCI layout (its org.opencontainers.image.ref.name)."""
    index = json.loads((layout / "index.json").read_text())
    return index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
