"""The gRPC face of a serving engine (grpc.aio): `WorkflowService/Run` and `grpc.health.v1`.

Runs on the same event loop as the HTTP server and shares its `RunGate`: a
draining engine answers UNAVAILABLE (and health NOT_SERVING), a full one
RESOURCE_EXHAUSTED. A failed run is still an OK call whose result says FAILED.
A request protobuf cannot decode (an input nested too deeply, for one), or
whose input JSON could not hold (NaN, an infinity), is INVALID_ARGUMENT.
"""

from __future__ import annotations

import dataclasses
import logging

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from engine.values import json_problem
from engine.serve.admission import AtCapacity, Draining, RunGate
from engine.values import value_to_python
from proto.pipedreamer.v1 import execution_pb2, execution_pb2_grpc

log = logging.getLogger("pipedreamer.grpc")

SERVICE_NAME = execution_pb2.DESCRIPTOR.services_by_name["WorkflowService"].full_name


@dataclasses.dataclass(frozen=True)
class UndecodableRequest:
    """What the deserializer hands `Run` instead of raising, so the call can answer INVALID_ARGUMENT."""

    reason: str


def parse_run_request(data: bytes) -> execution_pb2.RunRequest | UndecodableRequest:
    """A RunRequest from the wire; a DecodeError (grpc would answer UNKNOWN) becomes an `UndecodableRequest`."""
    try:
        return execution_pb2.RunRequest.FromString(data)
    except (DecodeError, RecursionError) as exc:
        text = str(exc)
        # upb says "Exceeded upb_DecodeOptions_MaxDepth", the pure-Python decoder "too many levels of nesting".
        deep = isinstance(exc, RecursionError) or "depth" in text.lower() or "nesting" in text.lower()
        return UndecodableRequest("input nested too deeply" if deep else text)


class WorkflowServicer(execution_pb2_grpc.WorkflowServiceServicer):
    def __init__(self, gate: RunGate) -> None:
        self.gate = gate

    async def Run(
        self,
        request: execution_pb2.RunRequest | UndecodableRequest,
        context: grpc.aio.ServicerContext,
    ) -> execution_pb2.ExecutionResult:
        if isinstance(request, UndecodableRequest):
            self.gate.metrics.rejected("bad_request")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid RunRequest: {request.reason}")
        payload = value_to_python(request.input) if request.HasField("input") else {}
        # A Value can hold what JSON cannot (NaN, infinities); the HTTP and NATS inputs are JSON.
        if problem := json_problem(payload, "input"):
            self.gate.metrics.rejected("bad_request")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid input: {problem}")
        try:
            return await self.gate.run(payload, trigger=request.trigger)
        except AtCapacity as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except Draining as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except Exception as exc:  # report, do not crash the call
            message = self.gate.engine.redact(f"{type(exc).__name__}: {exc}")
            log.exception("run failed inside the engine: %s", message)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {message}")
        raise AssertionError("unreachable: context.abort raises")


class GrpcFrontend:
    """A grpc.aio server with the workflow and health services, bound but not yet started."""

    def __init__(self, gate: RunGate, *, max_message: int) -> None:
        self.gate = gate
        self.health = HealthServicer()
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", max_message),
                ("grpc.max_send_message_length", -1),
                ("grpc.so_reuseport", 0),
            ]
        )
        _add_workflow_service(WorkflowServicer(gate), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.port = 0

    def bind(self, host: str, port: int) -> int:
        """Binds the port now (before the permission lock); returns the port actually bound."""
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            self.port = self.server.add_insecure_port(address)
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {address} for gRPC: {exc}") from None
        if not self.port:
            raise OSError(f"cannot listen on {address} for gRPC")
        return self.port

    async def start(self) -> None:
        await self.server.start()
        for service in ("", SERVICE_NAME):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)

    async def drain(self) -> None:
        """Health goes NOT_SERVING; calls in flight go on."""
        await self.health.enter_graceful_shutdown()

    async def stop(self, grace: float) -> None:
        await self.server.stop(grace)


def _add_workflow_service(servicer: WorkflowServicer, server: grpc.aio.Server) -> None:
    """The generated `add_WorkflowServiceServicer_to_server`, with `parse_run_request` as the deserializer."""
    handlers = {
        "Run": grpc.unary_unary_rpc_method_handler(
            servicer.Run,
            request_deserializer=parse_run_request,
            response_serializer=execution_pb2.ExecutionResult.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
