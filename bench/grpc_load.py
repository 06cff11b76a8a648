"""A gRPC load generator: `python -m bench.grpc_load ADDRESS SECONDS CONCURRENCY` prints
{"calls_per_s": …, "calls": …, "p99_ms": …, "errors": …} as JSON."""

from __future__ import annotations

import asyncio
import json
import sys
import time

import grpc

from proto.pipedreamer.v1 import execution_pb2, execution_pb2_grpc


async def load(address: str, seconds: float, concurrency: int) -> dict:
    latencies: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(address) as channel:
        stub = execution_pb2_grpc.WorkflowServiceStub(channel)
        request = execution_pb2.RunRequest()
        for _ in range(50):  # warm-up
            await stub.Run(request)
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    await stub.Run(request)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else float("nan")
    return {"calls_per_s": len(latencies) / elapsed, "calls": len(latencies) + errors, "p99_ms": p99 * 1000, "errors": errors}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(load(sys.argv[1], float(sys.argv[2]), int(sys.argv[3])))))
