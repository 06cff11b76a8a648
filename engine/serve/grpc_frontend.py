"""The gRPC face of a serving engine (grpc.aio): `WorkflowService` (Run, Submit, GetRun,
ListRuns, Watch), `grpc.health.v1` and server reflection (grpcurl and GUI clients need no .proto files).

Runs on the same event loop as the HTTP server and shares its `RunGate`: a
draining engine answers UNAVAILABLE (and health NOT_SERVING), a full one
RESOURCE_EXHAUSTED. A failed run is still an OK call whose result says FAILED.
A request protobuf cannot decode (an input nested too deeply, for one), or
whose input JSON could not hold (NaN, an infinity), is INVALID_ARGUMENT. An
unknown run is NOT_FOUND, a run that cannot be resumed FAILED_PRECONDITION,
history off (--history 0) FAILED_PRECONDITION, its store unreachable UNAVAILABLE.
"""

from __future__ import annotations

import dataclasses
import logging

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from engine.serve.admission import AtCapacity, Draining, RunConflict, RunGate, RunNotFound
from engine.serve.history import DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT, HistoryError, HistoryOff
from engine.values import json_problem, value_to_python
from proto.pipedreamer.v1 import execution_pb2, execution_pb2_grpc

log = logging.getLogger("pipedreamer.grpc")

SERVICE_NAME = execution_pb2.DESCRIPTOR.services_by_name["WorkflowService"].full_name
MAX_IDEMPOTENCY_KEY = 255


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

    async def _input(self, request: execution_pb2.RunRequest | UndecodableRequest, context: grpc.aio.ServicerContext) -> object:
        if isinstance(request, UndecodableRequest):
            self.gate.metrics.rejected("bad_request")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid RunRequest: {request.reason}")
        payload = value_to_python(request.input) if request.HasField("input") else {}
        # A Value can hold what JSON cannot (NaN, infinities); the HTTP and NATS inputs are JSON.
        if problem := json_problem(payload, "input"):
            self.gate.metrics.rejected("bad_request")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid input: {problem}")
        if len(request.idempotency_key) > MAX_IDEMPOTENCY_KEY:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"idempotency_key is {len(request.idempotency_key)} characters long; at most {MAX_IDEMPOTENCY_KEY} are accepted",
            )
        return payload

    @staticmethod
    def _options(request: execution_pb2.RunRequest) -> dict:
        return {
            "trigger": request.trigger,
            "idempotency_key": request.idempotency_key,
            "resume_from": request.resume_from,
            "input_given": request.HasField("input"),
        }

    async def Run(
        self,
        request: execution_pb2.RunRequest | UndecodableRequest,
        context: grpc.aio.ServicerContext,
    ) -> execution_pb2.ExecutionResult:
        payload = await self._input(request, context)
        try:
            return await self.gate.run(payload, **self._options(request))
        except Exception as exc:  # noqa: BLE001 - each becomes a status
            await self._abort(exc, context)
        raise AssertionError("unreachable: context.abort raises")

    async def Submit(
        self,
        request: execution_pb2.RunRequest | UndecodableRequest,
        context: grpc.aio.ServicerContext,
    ) -> execution_pb2.SubmitResponse:
        payload = await self._input(request, context)
        try:
            return execution_pb2.SubmitResponse(run_id=await self.gate.submit(payload, **self._options(request)))
        except Exception as exc:  # noqa: BLE001 - each becomes a status
            await self._abort(exc, context)
        raise AssertionError("unreachable: context.abort raises")

    async def GetRun(self, request: execution_pb2.GetRunRequest, context: grpc.aio.ServicerContext) -> execution_pb2.ExecutionResult:
        try:
            return await self.gate.get_run(request.run_id)
        except Exception as exc:  # noqa: BLE001 - each becomes a status
            await self._abort(exc, context)
        raise AssertionError("unreachable: context.abort raises")

    async def ListRuns(self, request: execution_pb2.ListRunsRequest, context: grpc.aio.ServicerContext) -> execution_pb2.ListRunsResponse:
        limit = request.limit or DEFAULT_LIST_LIMIT
        if not 1 <= limit <= MAX_LIST_LIMIT:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"limit: expected 1 to {MAX_LIST_LIMIT} (0: {DEFAULT_LIST_LIMIT}), got {request.limit}")
        try:
            runs = await self.gate.list_runs(limit=limit, status=request.status, trigger=request.trigger or None)
        except Exception as exc:  # noqa: BLE001 - each becomes a status
            await self._abort(exc, context)
        return execution_pb2.ListRunsResponse(runs=runs)

    async def Watch(self, request: execution_pb2.WatchRequest, context: grpc.aio.ServicerContext):
        try:
            async for event in self.gate.watch(request.run_id):
                yield event
        except Exception as exc:  # noqa: BLE001 - each becomes a status
            await self._abort(exc, context)

    async def _abort(self, exc: Exception, context: grpc.aio.ServicerContext) -> None:
        if isinstance(exc, AtCapacity):
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        if isinstance(exc, Draining):
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        if isinstance(exc, RunNotFound):
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        if isinstance(exc, (RunConflict, HistoryOff)):
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        if isinstance(exc, HistoryError):
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        await context.abort(grpc.StatusCode.INTERNAL, self.gate.internal_error(exc))


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
        reflection.enable_server_reflection((SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                                             reflection.SERVICE_NAME), self.server)  # fmt: skip
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
        "Submit": grpc.unary_unary_rpc_method_handler(
            servicer.Submit,
            request_deserializer=parse_run_request,
            response_serializer=execution_pb2.SubmitResponse.SerializeToString,
        ),
        "GetRun": grpc.unary_unary_rpc_method_handler(
            servicer.GetRun,
            request_deserializer=execution_pb2.GetRunRequest.FromString,
            response_serializer=execution_pb2.ExecutionResult.SerializeToString,
        ),
        "ListRuns": grpc.unary_unary_rpc_method_handler(
            servicer.ListRuns,
            request_deserializer=execution_pb2.ListRunsRequest.FromString,
            response_serializer=execution_pb2.ListRunsResponse.SerializeToString,
        ),
        "Watch": grpc.unary_stream_rpc_method_handler(
            servicer.Watch,
            request_deserializer=execution_pb2.WatchRequest.FromString,
            response_serializer=execution_pb2.RunEvent.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
