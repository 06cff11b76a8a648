"""Bare servers for comparison: `python -m bench.bare KIND PORT DIR`.

KIND `http` / `grpc`: a bare aiohttp handler / grpc.aio unary handler running the
DAG with the floor scheduler (the end-to-end floor). `http-engine` / `grpc-engine`:
the same bare handlers calling `Engine.run` and answering the same result as the
engine's servers, so the difference is the serving layer alone (limits, run cap,
draining, metrics, logging).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import grpc
from aiohttp import web

from bench.floor import FloorDAG
from engine.values import result_to_json
from engine.values import to_value
from engine.runtime import Engine
from engine.values import value_to_python
from proto.pipedreamer.v1 import execution_pb2, execution_pb2_grpc


async def serve_http(port: int, directory: Path, with_engine: bool) -> None:
    if with_engine:
        engine = await Engine.start(directory, secrets_mount=None)

        async def run(request: web.Request) -> web.Response:
            body = await request.read()
            result = await engine.run(json.loads(body) if body.strip() else {})
            return web.Response(text=result_to_json(result), content_type="application/json")

    else:
        dag = FloorDAG(directory)

        async def run(request: web.Request) -> web.Response:
            body = await request.read()
            output = await dag.run(json.loads(body) if body.strip() else {})
            return web.Response(text=json.dumps({"output": output}), content_type="application/json")

    async def ready(request: web.Request) -> web.Response:
        return web.json_response({"status": "ready"})

    app = web.Application()
    app.router.add_post("/run", run)
    app.router.add_get("/readyz", ready)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await _until_signal()
    await runner.cleanup()


class _FloorServicer(execution_pb2_grpc.WorkflowServiceServicer):
    def __init__(self, dag: FloorDAG):
        self.dag = dag

    async def Run(self, request, context):
        output = await self.dag.run(value_to_python(request.input) if request.HasField("input") else {})
        return execution_pb2.ExecutionResult(status=execution_pb2.RUN_STATUS_SUCCEEDED, output=to_value(output))


class _EngineServicer(execution_pb2_grpc.WorkflowServiceServicer):
    def __init__(self, engine: Engine):
        self.engine = engine

    async def Run(self, request, context):
        return await self.engine.run(value_to_python(request.input) if request.HasField("input") else {}, trigger=request.trigger)


async def serve_grpc(port: int, directory: Path, with_engine: bool) -> None:
    server = grpc.aio.server()
    if with_engine:
        servicer = _EngineServicer(await Engine.start(directory, secrets_mount=None))
    else:
        servicer = _FloorServicer(FloorDAG(directory))
    execution_pb2_grpc.add_WorkflowServiceServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await _until_signal()
    await server.stop(0)


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


def main() -> None:
    kind, port, directory = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    with_engine = kind.endswith("-engine")
    serve = serve_http if kind.startswith("http") else serve_grpc
    asyncio.run(serve(port, directory, with_engine))


if __name__ == "__main__":
    main()
