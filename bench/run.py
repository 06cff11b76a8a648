"""Runs every benchmark once and prints the figures with their targets:

  python -m bench [--quick] [--json] [--rounds N] [--no-pin]

The baseline is the floor: bench/floor.py's minimal asyncio scheduler over the same
nodes, served bare (bench/bare.py: aiohttp answering `{"output": …}`, grpc.aio the same
message). The engine runs as `python -m engine` with its permission lock on (checked on
/healthz?verbose). Server and floor are up at once and loaded in alternating rounds
(the order flips every round); each round gives an engine/floor ratio, and the figure
is the median of those ratios, never an absolute time. With two CPUs the servers run
on one and wrk / the gRPC load generator on the other.

* engine overhead per node (chain-10, fan-out 1→50→1, layered 200) vs the floor scheduler;
* latency of a DAG of sleeping nodes vs its critical path;
* HTTP /run on a 3-node chain under `wrk` (64 connections): req/s and p99 vs the floor;
* gRPC Run calls/s on the same chain vs the floor;
* cold start (process spawn) to the first 200 of /readyz, engine and floor server, both with
  their bytecode cached (one uncounted start of each writes a cache of this run's own).

Everything runs on loopback, in bounded loops, in this one run.

Separate commands (each with --help): `python -m bench lock` (the permission lock's
cost on /run throughput) and `python -m bench image` (image build speed and size).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator

from bench import dags
from bench.floor import FloorDAG
from engine.runtime import Engine

REPO = Path(__file__).resolve().parents[1]
# The load: 64 connections on a 3-node chain.
CONNECTIONS = 64
PYTHON = sys.executable


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- in-process: scheduler overhead and latency --------------------------------------------


async def _time_runs(run, count: int) -> float:
    """Seconds per run, over `count` sequential runs."""
    started = time.perf_counter()
    for _ in range(count):
        await run({})
    return (time.perf_counter() - started) / count


async def overhead(directory: Path, runs: int, rounds: int = 5) -> dict:
    engine = await Engine.start(directory, secrets_mount=None, log_stream=io.StringIO())
    floor = FloorDAG(directory)
    nodes = len(engine.dag.order)
    result = await engine.run({})
    assert result.status == 1, result  # SUCCEEDED
    await _time_runs(engine.run, max(20, runs // 10))
    await _time_runs(floor.run, max(20, runs // 10))
    engine_best, floor_best = float("inf"), float("inf")
    for _ in range(rounds):  # interleaved, best of: the least disturbed measurement
        engine_best = min(engine_best, await _time_runs(engine.run, runs))
        floor_best = min(floor_best, await _time_runs(floor.run, runs))
    await engine.close()
    return {
        "nodes": nodes,
        "engine_us_per_node": engine_best / nodes * 1e6,
        "floor_us_per_node": floor_best / nodes * 1e6,
        "ratio": engine_best / floor_best,
    }


async def sleeping_latency(directory: Path, runs: int) -> dict:
    engine = await Engine.start(directory, secrets_mount=None, log_stream=io.StringIO())
    floor = FloorDAG(directory)
    over_engine, over_floor = [], []
    for _ in range(runs):
        started = time.perf_counter()
        result = await engine.run({})
        over_engine.append(time.perf_counter() - started - dags.SLEEPING_CRITICAL_PATH)
        assert result.status == 1
        started = time.perf_counter()
        await floor.run({})
        over_floor.append(time.perf_counter() - started - dags.SLEEPING_CRITICAL_PATH)
    await engine.close()
    over_engine.sort()
    over_floor.sort()
    return {
        "critical_path_ms": dags.SLEEPING_CRITICAL_PATH * 1000,
        "engine_over_median_ms": statistics.median(over_engine) * 1000,
        "engine_over_p95_ms": over_engine[int(len(over_engine) * 0.95) - 1] * 1000,
        "floor_over_median_ms": statistics.median(over_floor) * 1000,
    }


# -- processes: HTTP, gRPC, cold start ------------------------------------------------------


class _Process:
    def __init__(self, argv: list[str], env: dict[str, str | None] | None = None):
        """`env`: variables to set on top of ours (a None value removes the variable)."""
        env = {k: v for k, v in {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}.items() if v is not None}
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.started = time.perf_counter()

    def wait_http(self, url: str, timeout: float = 20) -> float:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited {self.proc.returncode}: {self.output()}")
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return time.perf_counter() - self.started
            except OSError:
                pass
            time.sleep(0.005)
        raise RuntimeError(f"not ready: {self.output()}")

    def wait_grpc(self, address: str, timeout: float = 20) -> None:
        import grpc

        with grpc.insecure_channel(address) as channel:
            grpc.channel_ready_future(channel).result(timeout=timeout)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far (all its threads)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def _engine(directory: Path, port: int, grpc_port: int, env: dict[str, str | None] | None = None) -> _Process:
    return _Process([
        PYTHON, "-m", "engine", "--workflow", str(directory), "--host", "127.0.0.1",
        "--port", str(port), "--grpc-port", str(grpc_port), f"--allow-read={directory}", "--log-format", "json",
    ], env)  # fmt: skip


_WRK_SCRIPT = 'wrk.method = "POST"\nwrk.body = "{}"\nwrk.headers["Content-Type"] = "application/json"\n'


def _wrk(url: str, seconds: int, connections: int) -> dict:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed (apt-get install -y wrk)")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_WRK_SCRIPT)
    try:
        out = subprocess.run(
            [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script.name, url],
            capture_output=True, text=True, check=True, timeout=seconds + 30,
        ).stdout  # fmt: skip
    finally:
        os.unlink(script.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99_ms = float(p99.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    return {"req_per_s": rps, "p99_ms": p99_ms, "requests": requests, "non_2xx": int(non2xx.group(1)) if non2xx else 0}


def cpu_split() -> tuple[set[int], set[int]] | None:
    """(the servers' CPU, the load generator's CPU) when there are two or more: the server (one
    thread) and the load generator then never compete, which halves the spread of paired rounds."""
    available = sorted(os.sched_getaffinity(0))
    return ({available[-1]}, {available[0]}) if len(available) >= 2 else None


@contextlib.contextmanager
def _affinity(cpus: set[int] | None) -> Iterator[None]:
    """Runs this process (and so the children it starts meanwhile) on `cpus`."""
    if cpus is None:
        yield
        return
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, saved)


def _lock_applied(port: int) -> dict:
    """The engine's permission lock as /healthz?verbose reports it; raises unless it is applied."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz?verbose", timeout=5) as response:
        lock = json.load(response).get("permission_lock") or {}
    if not lock.get("applied"):
        raise RuntimeError(f"the engine runs without its permission lock: {lock}")
    return lock


def _paired(samples: dict[str, list[dict]], rate: str) -> dict:
    """Per round: engine / floor throughput and p99; the medians of those ratios (rounds alternate
    and rotate their order, so drift in the machine's load hits both alike)."""
    engine, floor = samples["engine"], samples["floor"]
    rates = [e[rate] / f[rate] for e, f in zip(engine, floor)]
    p99s = [e["p99_ms"] / f["p99_ms"] for e, f in zip(engine, floor)]
    out: dict = {"rounds": len(rates), "ratio": statistics.median(rates), "p99_ratio": statistics.median(p99s),
                 "ratios": rates, "p99_ratios": p99s}  # fmt: skip
    for name, found in samples.items():
        out[name] = {
            "failed": sum(s["failed"] for s in found),
            rate: statistics.median(s[rate] for s in found),
            "p99_ms": statistics.median(s["p99_ms"] for s in found),
            "cpu_us_per_req": statistics.median(s["cpu_us_per_req"] for s in found),
        }
    return out


def _servers(directory: Path, grpc: bool) -> tuple[dict[str, tuple[_Process, int]], int]:
    """The engine (`python -m engine`, permission lock on) and the floor (bench.bare: aiohttp or
    grpc.aio running bench.floor's minimal scheduler); the ports to load; the engine's HTTP port."""
    port, grpc_port, bare_port = _free_port(), _free_port(), _free_port()
    engine = _engine(directory, port, grpc_port)
    floor = _Process([PYTHON, "-m", "bench.bare", "grpc" if grpc else "http", str(bare_port), str(directory)])
    return {"engine": (engine, grpc_port if grpc else port), "floor": (floor, bare_port)}, port


def http_load(directory: Path, seconds: int, connections: int, rounds: int, pin: bool = True) -> dict:
    """POST /run under wrk: the engine against the floor, alternating rounds, medians of the ratios."""
    return _load_rounds(directory, seconds, connections, rounds, pin, grpc=False)


def grpc_load(directory: Path, seconds: int, concurrency: int, rounds: int, pin: bool = True) -> dict:
    """gRPC Run calls: the engine against the floor, alternating rounds, medians of the ratios."""
    return _load_rounds(directory, seconds, concurrency, rounds, pin, grpc=True)


def _load_rounds(directory: Path, seconds: int, connections: int, rounds: int, pin: bool, grpc: bool) -> dict:
    split = cpu_split() if pin else None
    servers: dict[str, tuple[_Process, int]] = {}
    samples: dict[str, list[dict]] = {"engine": [], "floor": []}
    rate = "calls_per_s" if grpc else "req_per_s"
    try:
        with _affinity(split[0] if split else None):  # the servers inherit the servers' CPU
            servers, http_port = _servers(directory, grpc)
        with _affinity(split[1] if split else None):  # the load generators inherit the load CPU
            servers["engine"][0].wait_http(f"http://127.0.0.1:{http_port}/readyz")
            lock = _lock_applied(http_port)
            for process, port in servers.values():
                if grpc:
                    process.wait_grpc(f"127.0.0.1:{port}")
                else:
                    process.wait_http(f"http://127.0.0.1:{port}/readyz")
            names = list(servers)
            for round_ in range(rounds + 1):
                order = names if round_ % 2 else names[::-1]
                for name in order:
                    process, port = servers[name]
                    cpu = process.cpu_seconds()
                    if grpc:
                        sample = _grpc_load(f"127.0.0.1:{port}", 1 if round_ == 0 else seconds, connections)
                        failed = sample["errors"]
                        count = sample["calls"]
                    else:
                        sample = _wrk(f"http://127.0.0.1:{port}/run", 1 if round_ == 0 else seconds, connections)
                        failed = sample["non_2xx"]
                        count = sample["requests"]
                    if failed > count // 100 or not count:  # a stray failure is counted, not fatal
                        raise RuntimeError(f"{name}: {failed} failures of {count}: {process.output()[-2000:]}")
                    sample["failed"] = failed
                    sample["cpu_us_per_req"] = (process.cpu_seconds() - cpu) / count * 1e6
                    if round_:  # round 0 warms both up
                        samples[name].append(sample)
    finally:
        for process, _ in servers.values():
            process.stop()
    return _paired(samples, rate) | {"lock": lock.get("summary") or _lock_summary(lock), "pinned": split is not None}


def _lock_summary(lock: dict) -> str:
    layers = lock.get("layers") or {}
    return ", ".join(f"{name} {'on' if layer.get('active') else 'off'}" for name, layer in layers.items())


def _grpc_load(address: str, seconds: int, concurrency: int) -> dict:
    out = subprocess.run(
        [PYTHON, "-m", "bench.grpc_load", address, str(seconds), str(concurrency)],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, check=True, timeout=seconds + 60,
    ).stdout  # fmt: skip
    return json.loads(out)


def cold_start(directory: Path, times: int) -> dict:
    """Process spawn to the first 200 of /readyz: the engine (lock on) and the bare aiohttp floor
    server, alternating; medians.

    Both start with their bytecode cached, as on a machine that has run them once (and so even
    where PYTHONDONTWRITEBYTECODE is set, as on our CI machines): a cache of this run's own,
    written by one start of each that is not counted."""
    samples: dict[str, list[float]] = {"engine": [], "floor": []}
    with tempfile.TemporaryDirectory(prefix="pipedreamer-bench-pyc-") as cache:
        env: dict[str, str | None] = {"PYTHONPYCACHEPREFIX": cache, "PYTHONDONTWRITEBYTECODE": None}
        for round_ in range(-1, times):
            for name in ("engine", "floor") if round_ % 2 else ("floor", "engine"):
                port = _free_port()
                if name == "engine":
                    process = _engine(directory, port, _free_port(), env)
                else:
                    process = _Process([PYTHON, "-m", "bench.bare", "http", str(port), str(directory)], env)
                try:
                    took = process.wait_http(f"http://127.0.0.1:{port}/readyz")
                finally:
                    process.stop()
                if round_ >= 0:  # round -1 writes the cache
                    samples[name].append(took)
    return {
        "median_s": statistics.median(samples["engine"]),
        "max_s": max(samples["engine"]),
        "floor_median_s": statistics.median(samples["floor"]),
        "ratio": statistics.median(samples["engine"]) / statistics.median(samples["floor"]),
    }


# -- report ---------------------------------------------------------------------------------


def _load(sample: dict, unit: str) -> str:
    rate = sample.get("req_per_s", sample.get("calls_per_s"))
    failed = f", {sample['failed']} failed" if sample.get("failed") else ""
    return f"{rate:.0f} {unit} p99 {sample['p99_ms']:.1f} ms ({sample['cpu_us_per_req']:.0f} µs CPU each{failed})"


def _ratios(values: list[float]) -> str:
    return " ".join(f"{value:.2f}" for value in values)


def _verdict(ok: bool) -> str:
    return "ok  " if ok else "MISS"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter loops (a smoke run, noisier figures)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON document")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the servers and the load generators to separate CPUs")
    parser.add_argument("--rounds", type=int, help="alternating rounds of the HTTP and gRPC loads (default 5; --quick 2)")
    args = parser.parse_args(argv)
    scale = 0.2 if args.quick else 1.0
    seconds = 2 if args.quick else 3
    rounds = args.rounds or (2 if args.quick else 5)
    figures: dict[str, object] = {}
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="pipedreamer-bench-") as tmp:
        root = Path(tmp)
        chain, fan, layered, sleepy = dags.chain(root), dags.fan_out(root), dags.layered(root), dags.sleeping(root)
        chain3 = dags.chain(root, 3)

        for name, directory, runs in (("chain-10", chain, 3000), ("fan-out 1→50→1", fan, 600), ("layered-200", layered, 150)):
            data = asyncio.run(overhead(directory, max(10, int(runs * scale))))
            figures[f"overhead {name}"] = data
            lines.append(
                f"{_verdict(data['ratio'] <= 2)} overhead {name:<16} engine {data['engine_us_per_node']:6.1f} µs/node, "
                f"floor {data['floor_us_per_node']:6.1f} µs/node: {data['ratio']:.2f}× (target ≤ 2×)"
            )
        data = asyncio.run(sleeping_latency(sleepy, max(10, int(100 * scale))))
        figures["sleeping DAG latency"] = data
        lines.append(
            f"{_verdict(data['engine_over_median_ms'] <= 2)} sleeping DAG              critical path {data['critical_path_ms']:.0f} ms "
            f"+ {data['engine_over_median_ms']:.2f} ms median (p95 +{data['engine_over_p95_ms']:.2f} ms; floor +{data['floor_over_median_ms']:.2f} ms) "
            f"(target + ≤ 2 ms)"
        )
        data = http_load(chain3, seconds, CONNECTIONS, rounds, pin=not args.no_pin)
        figures["http /run chain-3"] = data
        lines.append(
            f"{_verdict(data['ratio'] >= 0.7)} HTTP /run chain-3 (wrk)    engine {_load(data['engine'], 'req/s')}; "
            f"floor {_load(data['floor'], 'req/s')}: {data['ratio']:.2f} of the floor (target ≥ 0.70)"
        )
        lines.append(
            f"{_verdict(data['p99_ratio'] <= 2)} HTTP /run p99             {data['p99_ratio']:.2f}× the floor's (target ≤ 2×); "
            f"per-round ratios {_ratios(data['ratios'])}, p99 {_ratios(data['p99_ratios'])}"
        )
        data = grpc_load(chain3, seconds, CONNECTIONS, rounds, pin=not args.no_pin)
        figures["grpc Run chain-3"] = data
        lines.append(
            f"{_verdict(data['ratio'] >= 0.7)} gRPC Run chain-3          engine {_load(data['engine'], 'calls/s')}; "
            f"floor {_load(data['floor'], 'calls/s')}: {data['ratio']:.2f} of the floor (target ≥ 0.70); "
            f"per-round {_ratios(data['ratios'])}"
        )
        data = cold_start(chain3, 3 if args.quick else 5)
        figures["cold start"] = data
        lines.append(
            f"{_verdict(data['median_s'] < 0.6)} cold start to /readyz     engine median {data['median_s'] * 1000:.0f} ms "
            f"(max {data['max_s'] * 1000:.0f} ms), floor server {data['floor_median_s'] * 1000:.0f} ms: "
            f"{data['ratio']:.2f}× (target < 600 ms)"
        )
        lines.append(f"     permission lock (engine)  {figures['http /run chain-3']['lock']}; "
                     f"servers and load {'on separate CPUs' if figures['http /run chain-3']['pinned'] else 'unpinned'}, "
                     f"{rounds} alternating rounds of {seconds} s, {CONNECTIONS} connections, medians of per-round ratios")  # fmt: skip
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"pipedreamer bench ({os.cpu_count()} CPUs, Python {sys.version.split()[0]})")
        print("\n".join(lines))
    return 0
