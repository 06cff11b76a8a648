"""Webhook triggers: `POST <path>` per `webhook` trigger, the sender's signature checked before anything runs.

A delivery that passes goes through the admission gate like any run: its JSON
body is the input, the trigger's name is recorded, and the sender's delivery id
(`X-GitHub-Delivery`, `webhook-id`) is the idempotency key, so a repeated
delivery answers the first one's result and runs nothing. A refused one is 401
and never reaches the gate. A sender that hangs up (GitHub waits 10 s) does not
cancel the run: it finishes and is recorded, and a redelivery gets its result.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
import urllib.parse
from typing import Any, Callable, Iterable, Mapping

from engine.errors import PipedreamerError
from engine.serve.admission import AtCapacity, Draining, RunConflict, RunGate
from engine.serve.history import HistoryError
from engine.serve.signatures import (
    GITHUB_EVENT,
    NONE,
    SignatureRefused,
    key_bytes,
    key_problems,
    scheme_name,
    verify,
    webhook_key,
    webhook_triggers,
)
from engine.values import parse_input, result_to_json
from proto.pipedreamer.v1 import execution_pb2, workflow_pb2

log = logging.getLogger("pipedreamer.webhooks")

_STATUS_CODES = {
    execution_pb2.RUN_STATUS_SUCCEEDED: 200,
    execution_pb2.RUN_STATUS_FAILED: 500,
    execution_pb2.RUN_STATUS_CANCELLED: 503,
}
_FORM = "application/x-www-form-urlencoded"


class WebhookKeyError(PipedreamerError):
    """Signed webhooks without a usable key: the engine does not start with a hole in it."""

    def __init__(self, problems: Iterable[Any]):
        super().__init__(problems=problems)


@dataclasses.dataclass(frozen=True)
class WebhookRoute:
    name: str
    path: str
    signature: int
    key: bytes | None = dataclasses.field(default=None, repr=False)

    @property
    def signed(self) -> bool:
        return self.signature != NONE


@dataclasses.dataclass(frozen=True)
class Answer:
    """What the HTTP side sends back: a status and a JSON body."""

    status: int
    body: bytes
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Answer:
    return Answer(status, json.dumps({"error": message}).encode(), dict(headers or {}))


def parse_webhook_body(body: bytes, content_type: str) -> Any:
    """The run's input: the JSON body, or the `payload` field of a form-encoded one (GitHub's other
    content type). An empty body is `{}`. Raises ValueError as /run's parser does."""
    if content_type.split(";")[0].strip().lower() == _FORM:
        try:
            fields = urllib.parse.parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise ValueError("the form body is not UTF-8") from None
        if "payload" not in fields:
            raise ValueError("a form-encoded webhook body needs a payload field holding the JSON")
        return parse_input(fields["payload"][0].encode())
    return parse_input(body)


class Webhooks:
    """The webhook routes of one serving engine, over its RunGate."""

    def __init__(self, gate: RunGate, routes: Iterable[WebhookRoute], *, clock: Callable[[], float] = time.time) -> None:
        self.gate = gate
        self.routes = {route.path: route for route in routes}
        self.clock = clock
        self._shielded: set[asyncio.Task] = set()
        # Repeated deliveries are recognised through the gate's idempotency keys, which live in the history.
        self.dedupe = gate.history is not None

    @classmethod
    def for_spec(cls, gate: RunGate, spec: workflow_pb2.WorkflowSpec, secrets: Mapping[str, Any], **kwargs: Any) -> "Webhooks":
        """Routes for the spec's webhook triggers; WebhookKeyError when a signed one has no usable key."""
        problems = key_problems(spec, secrets)
        if problems:
            raise WebhookKeyError(problems)
        routes = []
        for trigger in webhook_triggers(spec):
            key = webhook_key(secrets, trigger.name)
            signed = trigger.signature != NONE
            routes.append(WebhookRoute(trigger.name, trigger.path, trigger.signature, key_bytes(key, trigger.signature) if signed and key else None))
        return cls(gate, routes, **kwargs)

    @property
    def paths(self) -> list[str]:
        return list(self.routes)

    @property
    def signed_paths(self) -> frozenset[str]:
        """Paths whose callers prove themselves with a signature (the loopback Host rule is not needed there)."""
        return frozenset(path for path, route in self.routes.items() if route.signed)

    async def deliver(self, path: str, body: bytes, headers: Mapping[str, str], content_type: str = "") -> Answer:
        """Verifies, parses and runs one delivery; `headers` must look names up case-insensitively."""
        route = self.routes[path]
        gate = self.gate
        try:
            verified = verify(route.signature, route.key, body, headers, self.clock())
        except SignatureRefused as exc:
            gate.metrics.rejected("bad_signature")
            log.warning("webhook %s: POST %s refused: %s", route.name, path, exc)
            return _error(401, f"webhook {route.name}: {exc}")
        if headers.get(GITHUB_EVENT) == "ping":
            # GitHub's hello when a webhook is created or tested: answered, nothing runs.
            return Answer(200, json.dumps({"pong": True, "webhook": route.name}).encode())
        try:
            payload = parse_webhook_body(body, content_type)
        except ValueError as exc:
            gate.metrics.rejected("bad_json")
            return _error(400, f"invalid JSON body: {exc}")
        key = f"webhook:{route.name}:{verified.delivery_id}" if verified.delivery_id and self.dedupe else ""
        # Shielded: a sender that hangs up (GitHub after 10 s) must not cancel the run it started.
        task = asyncio.ensure_future(gate.run(payload, trigger=route.name, idempotency_key=key))
        self._shielded.add(task)
        task.add_done_callback(self._run_done)
        try:
            result = await asyncio.shield(task)
        except AtCapacity as exc:
            return _error(429, str(exc), {"Retry-After": "1"})
        except Draining as exc:
            return _error(503, str(exc))
        except RunConflict as exc:
            return _error(409, str(exc))
        except HistoryError as exc:
            return _error(503, str(exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug in the engine must not kill the connection
            return _error(500, gate.internal_error(exc, f"webhook {route.name}"))
        return Answer(_STATUS_CODES.get(result.status, 500), result_to_json(result).encode())

    def _run_done(self, task: asyncio.Task) -> None:
        self._shielded.discard(task)
        if not task.cancelled():
            # Marked as retrieved: when the sender hung up nobody awaits it (deliver() answered it otherwise).
            task.exception()

    def report(self) -> list[dict[str, Any]]:
        """What `GET /triggers` says about each webhook (never its key)."""
        return [
            {"type": "webhook", "name": r.name, "path": r.path, "signature": scheme_name_of(r.signature), "key_set": r.key is not None}
            for r in self.routes.values()
        ]


def scheme_name_of(signature: int) -> str:
    return scheme_name(workflow_pb2.Trigger(signature=signature))
