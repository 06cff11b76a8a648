"""What recording runs costs on POST /run throughput (issue 13: within 5 % of history off):

  python -m bench history [--quick] [--json] [--rounds N] [--seconds S] [--no-control]

Engines run as real processes (`python -m engine`, no permission lock: its cost is
`bench lock`'s business) on chain-10: "off" with `--history 0` (no recording, no node
events), "on" with the default in-memory history (`--history 1000`: a LiveRun and node
events per run, the final result kept, the oldest dropped), and an A/A "control" that is
"off" again, whose "cost" is this run's noise floor. Every round starts fresh processes,
warms each up for a second, then `wrk` loads them in turn, the order rotating every round;
the cost is the median of the per-round on/off ratios (req/s and server CPU per request).
With two or more CPUs the engines run pinned to one CPU and wrk to another.

First, the same comparison in one process, by CPU time: RunGate.run on one Engine with
the history off, on, and off again (A/A), in alternating batches of 300 runs, median of
the paired ratios. CPU time of this process barely depends on what else the machine
runs, so on a shared machine it tells the recording's own cost when wrk's req/s swing.

Loopback only, bounded rounds (default 10 x 2 s per engine); ratios from this one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from bench import dags
from bench.lock import CONNECTIONS, _affinity, cpu_split
from bench.run import PYTHON, _free_port, _Process, _wrk

TARGET = 0.05
BASELINE = "off"
# name → the engine's --history
VARIANTS = {BASELINE: "0", "on": "1000"}
CONTROL = {"control": "0"}


def _engine(directory: Path, history: str) -> tuple[_Process, int]:
    port = _free_port()
    argv = [
        PYTHON, "-m", "engine", "--workflow", str(directory), "--host", "127.0.0.1",
        "--port", str(port), "--grpc-port", "-1", "--log-format", "json", "--history", history,
    ]  # fmt: skip
    return _Process(argv), port


def _history_on(port: int) -> bool:
    """Whether the engine answers GET /runs (history on) or 404 (off): the flag took."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/runs?limit=1", timeout=5) as response:
            return response.status == 200
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return False
        raise


def measure(directory: Path, seconds: int, rounds: int, variants: dict[str, str], pin: bool = True) -> dict:
    split = cpu_split() if pin else None
    samples: dict[str, list[dict]] = {name: [] for name in variants}
    names = list(variants)
    for round_ in range(rounds):
        servers: dict[str, tuple[_Process, int]] = {}
        try:
            with _affinity(split[0] if split else None):
                for name, history in variants.items():
                    servers[name] = _engine(directory, history)
            with _affinity(split[1] if split else None):
                for process, port in servers.values():
                    process.wait_http(f"http://127.0.0.1:{port}/readyz")
                for name, (_, port) in servers.items():
                    if _history_on(port) != (variants[name] != "0"):
                        raise RuntimeError(f"{name} engine: history is not {'on' if variants[name] != '0' else 'off'}")
                    _wrk(f"http://127.0.0.1:{port}/run", 1, CONNECTIONS)  # warm-up: not kept
                shift = round_ % len(names)
                for name in names[shift:] + names[:shift]:
                    process, port = servers[name]
                    cpu = process.cpu_seconds()
                    sample = _wrk(f"http://127.0.0.1:{port}/run", seconds, CONNECTIONS)
                    sample["cpu_us_per_req"] = (process.cpu_seconds() - cpu) / max(sample["requests"], 1) * 1e6
                    if sample["non_2xx"] or not sample["requests"]:
                        raise RuntimeError(f"{name} engine: {sample['non_2xx']} non-2xx of {sample['requests']}: {process.output()[-2000:]}")
                    samples[name].append(sample)
        finally:
            for process, _ in servers.values():
                process.stop()
    return _summarise(samples) | {"cpus": None if split is None else [sorted(c) for c in split]}


def _summarise(samples: dict[str, list[dict]]) -> dict:
    out: dict = {"rounds": len(samples[BASELINE]), "engines": {}, "costs": {}}
    for name, found in samples.items():
        out["engines"][name] = {
            "req_per_s_median": statistics.median(s["req_per_s"] for s in found),
            "p99_ms_median": statistics.median(s["p99_ms"] for s in found),
            "cpu_us_per_req_median": statistics.median(s["cpu_us_per_req"] for s in found),
            "requests": sum(s["requests"] for s in found),
        }
    base = samples[BASELINE]
    for name, found in samples.items():
        if name == BASELINE:
            continue
        rps = [a["req_per_s"] / b["req_per_s"] for a, b in zip(found, base)]
        cpu = [a["cpu_us_per_req"] / b["cpu_us_per_req"] for a, b in zip(found, base)]
        cost = {
            "throughput": 1 - statistics.median(rps),  # positive: slower than history off
            "throughput_range": [1 - max(rps), 1 - min(rps)],
            "ratio_median": statistics.median(rps),
            "cpu_per_request": statistics.median(cpu) - 1,
        }
        if len(rps) >= 4:
            low, _, high = statistics.quantiles(rps, n=4)
            cost["throughput_iqr"] = [1 - high, 1 - low]
        out["costs"][name] = cost
    return out


def gate_cost(directory: Path, batches: int = 20, runs: int = 300) -> dict:
    """CPU µs per RunGate.run, history off / on / off again, alternating batches; median paired ratios."""
    import asyncio
    import io
    import time

    from engine.runtime import Engine
    from engine.serve.admission import RunGate
    from engine.serve.history import MemoryHistory
    from engine.serve.metrics import EngineMetrics

    async def measure_gates() -> dict:
        engine = await Engine.start(directory, secrets_mount=None, log_stream=io.StringIO())
        try:
            gates = {
                name: RunGate(engine, EngineMetrics(name), workflow=name, version="1", max_concurrent_runs=64,
                              history=MemoryHistory(int(flag)) if flag != "0" else None)  # fmt: skip
                for name, flag in {**VARIANTS, **CONTROL}.items()
            }

            async def batch(gate: RunGate, count: int) -> float:
                started = time.process_time()
                for _ in range(count):
                    await gate.run({})
                return (time.process_time() - started) / count * 1e6

            for gate in gates.values():  # warm-up, and the history filled to its bound
                await batch(gate, 1200)
            found: dict[str, list[float]] = {name: [] for name in gates}
            names = list(gates)
            for index in range(batches):
                shift = index % len(names)
                for name in names[shift:] + names[:shift]:
                    found[name].append(await batch(gates[name], runs))
        finally:
            await engine.close()
        return {
            "cpu_us_per_run_median": {name: statistics.median(v) for name, v in found.items()},
            "ratio_median": {name: statistics.median(a / b for a, b in zip(v, found[BASELINE])) for name, v in found.items() if name != BASELINE},
            "batches": batches,
            "runs_per_batch": runs,
        }

    return asyncio.run(measure_gates())


def _pct(value: float) -> str:
    return f"{value * 100:+.1f} %"


def _report(figures: dict, seconds: int) -> str:
    gate = figures["gate"]
    cpu = gate["cpu_us_per_run_median"]
    on, control = gate["ratio_median"]["on"], gate["ratio_median"]["control"]
    lines = [
        f"run history cost in RunGate.run, chain-10, CPU time of one process, {gate['batches']} alternating batches of "
        f"{gate['runs_per_batch']} runs:",
        f"  off {cpu['off']:.0f} µs/run, on {cpu['on']:.0f} µs/run, control {cpu['control']:.0f} µs/run: "
        f"on/off {on:.3f} ({_pct(on - 1)} CPU; {'ok' if on - 1 < TARGET else 'MISS'}, target < 5 %), A/A control/off {control:.3f}",
        "",
    ]
    lines += [
        f"run history cost on POST /run, chain-10: wrk -t1 -c{CONNECTIONS}, {figures['rounds']} rounds x {seconds} s per engine, "
        f"order rotating ({os.cpu_count()} CPUs, Python {sys.version.split()[0]})",
        f"  {'engine':<9} {'--history':>9} {'req/s med':>10} {'p99 med':>10} {'CPU/req med':>12}",
    ]
    flags = {**VARIANTS, **CONTROL}
    for name, row in figures["engines"].items():
        lines.append(f"  {name:<9} {flags[name]:>9} {row['req_per_s_median']:>10.0f} {row['p99_ms_median']:>7.1f} ms "
                     f"{row['cpu_us_per_req_median']:>9.0f} µs")  # fmt: skip
    for name, cost in figures["costs"].items():
        low, high = cost.get("throughput_iqr", cost["throughput_range"])
        verdict = ("ok  " if cost["throughput"] < TARGET else "MISS") if name == "on" else "    "
        what = "history on vs off" if name == "on" else "A/A control vs off (the noise floor)"
        lines.append(
            f"  {verdict} {what}: req/s ratio {cost['ratio_median']:.3f} ({_pct(cost['throughput'])} cost; target < 5 %), "
            f"middle of paired rounds {_pct(low)} … {_pct(high)}; CPU per request {_pct(cost['cpu_per_request'])}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench history", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds (a smoke run, noisier figures)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON document")
    parser.add_argument("--no-control", dest="control", action="store_false", help="skip the A/A control engine")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin the engines and wrk to separate CPUs")
    parser.add_argument("--rounds", type=int, help="measured rounds per engine (default: 10; --quick: 3)")
    parser.add_argument("--seconds", type=int, help="wrk seconds per round (default: 2; --quick: 1)")
    args = parser.parse_args(argv)
    rounds = max(1, min(args.rounds or (3 if args.quick else 10), 50))
    seconds = max(1, min(args.seconds or (1 if args.quick else 2), 60))
    variants = {**VARIANTS, **(CONTROL if args.control else {})}
    with tempfile.TemporaryDirectory(prefix="pipedreamer-bench-history-") as tmp:
        directory = dags.chain(Path(tmp))
        print("bench history: in one process, RunGate.run with the history off / on …", file=sys.stderr, flush=True)
        gate = gate_cost(directory, batches=6 if args.quick else 20)
        print(f"bench history: chain-10, {rounds} rounds x {seconds} s x {len(variants)} engines …", file=sys.stderr, flush=True)
        figures = measure(directory, seconds, rounds, variants, pin=args.pin) | {"gate": gate}
    print(json.dumps(figures, indent=2) if args.json else _report(figures, seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
