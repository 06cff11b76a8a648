"""Queue triggers: one NATS subscription per `queue` trigger, payload in, result to the reply subject.

Replicas share work through the queue group `pipedreamer.<workflow>`. The
connection uses `config.nats_url` (TLS when it is `tls://…`) and the token in
`secrets.nats.token`; without either the triggers are skipped with a warning.
`secrets.nats.ca` (PEM) is the CA trusted for the server's certificate instead
of the system roots, for servers whose certificate a private CA signed.
It reconnects forever when the server goes away, and drains on shutdown:
messages already delivered to this replica still run and get their reply.
A message's `Nats-Msg-Id` header is its idempotency key (with the run history on).
Triggers with `durable: true` consume from JetStream instead, over the same
connection (engine/serve/durable_queues.py).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import urllib.parse
from typing import TYPE_CHECKING, Any, Callable, Mapping

from engine.serve.admission import RunConflict, RunGate, RunRejected
from engine.serve.durable_queues import DurableQueues
from engine.serve.history import HistoryError
from engine.values import parse_input
from engine.values import result_to_json
from engine.spec import DEFAULT_MAX_DELIVER, config_to_dict
from proto.pipedreamer.v1 import execution_pb2, workflow_pb2

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

log = logging.getLogger("pipedreamer.nats")

# Messages of one subscription handled at once when no --max-concurrent-runs is set.
DEFAULT_CONCURRENCY = 256
DEFAULT_PORT = 4222
_RECONNECT_WAIT = 1.0


def queue_group(workflow: str) -> str:
    return f"pipedreamer.{workflow}"


def queue_triggers(spec: workflow_pb2.WorkflowSpec) -> list[workflow_pb2.Trigger]:
    return [t for t in spec.triggers if t.type == workflow_pb2.Trigger.TYPE_QUEUE]


def _nats_secret(secrets: Mapping[str, Any], key: str) -> Any:
    """`secrets.nats.<key>`, or None."""
    entry = secrets.get("nats") if isinstance(secrets, Mapping) else None
    return entry.get(key) if isinstance(entry, Mapping) else None


def nats_settings(spec: workflow_pb2.WorkflowSpec, secrets: Mapping[str, Any]) -> tuple[str, str, list[str]]:
    """(url, token, what is missing) from `config.nats_url` and `secrets.nats.token`."""
    url = config_to_dict(spec.config).get("nats_url")
    token = _nats_secret(secrets, "token")
    missing = []
    if not isinstance(url, str) or not url.strip():
        missing.append("config.nats_url")
    if not isinstance(token, str) or not token:
        missing.append("secrets.nats.token")
    return (url or "").strip() if isinstance(url, str) else "", token if isinstance(token, str) else "", missing


def nats_tls(url: str, secrets: Mapping[str, Any]) -> ssl.SSLContext | None:
    """The client's TLS context: for a `tls://` URL or when `secrets.nats.ca` is set, else None.

    With `secrets.nats.ca` (PEM text, one or more certificates) only those CAs
    are trusted; otherwise the system roots. Raises ValueError for a CA that is
    not PEM certificates.
    """
    ca = _nats_secret(secrets, "ca")
    if ca is None or (isinstance(ca, str) and not ca.strip()):
        return ssl.create_default_context() if url.startswith("tls://") else None
    if not isinstance(ca, str) or "-----BEGIN CERTIFICATE-----" not in ca:
        raise ValueError("secrets.nats.ca must be PEM text (-----BEGIN CERTIFICATE----- …)")
    try:
        # The default context with `load_verify_locations(cadata=ca)` in place of the system roots.
        return ssl.create_default_context(cadata=ca)
    except ssl.SSLError as exc:
        raise ValueError(f"secrets.nats.ca is not a valid PEM certificate: {exc.reason or exc}") from None


class TLSNotStarted(ConnectionError):
    """TLS is configured but the server did not start it: the token is withheld."""


def only_over_tls(client: Any, token: str, display: str) -> Callable[[], str]:
    """nats-py's token callback, called as it writes CONNECT: the token, once the
    connection is TLS; otherwise TLSNotStarted, so nothing secret crosses plain TCP."""

    def token_if_encrypted() -> str:
        writer = getattr(getattr(client, "_transport", None), "_io_writer", None)
        if writer is None or writer.get_extra_info("ssl_object") is None:
            raise TLSNotStarted(
                f"the NATS server at {display} did not start TLS (its INFO lacks tls_required); "
                "the token is not sent over an unencrypted connection: enable TLS on the server "
                "or use a nats:// URL"
            )
        return token

    return token_if_encrypted


def parse_payload(data: bytes) -> Any:
    """A message payload as the run's input, parsed as /run parses a body (`{}` when empty)."""
    return parse_input(data)


def uses_nats_history(spec: workflow_pb2.WorkflowSpec) -> bool:
    return config_to_dict(spec.config).get("history") == "nats"


def nats_server_address(spec: workflow_pb2.WorkflowSpec, secrets: Mapping[str, Any]) -> str | None:
    """`host:port` of the NATS server the workflow's queue triggers or run history use, or None when there is nothing to connect to."""
    if not queue_triggers(spec) and not uses_nats_history(spec):
        return None
    url, _, missing = nats_settings(spec, secrets)
    if "config.nats_url" in missing:
        return None
    parsed = urllib.parse.urlsplit(url if "://" in url else f"nats://{url}")
    if not parsed.hostname:
        return None
    host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
    return f"{host}:{parsed.port or DEFAULT_PORT}"


class QueueTriggers:
    """The NATS side of a serving engine; does nothing when the workflow has no queue trigger."""

    def __init__(self, gate: RunGate, engine: Any, *, secrets: Mapping[str, Any] | None = None) -> None:
        self.gate = gate
        self.engine = engine
        self._secrets = secrets
        self.client: Client | None = None
        self.subscriptions: list[Subscription] = []
        self._connector: asyncio.Task | None = None
        self._handlers: set[asyncio.Task] = set()
        self._slots: asyncio.Semaphore | None = None
        self.subscribed = asyncio.Event()
        # The `durable: true` triggers, once start() found some.
        self.durable: DurableQueues | None = None
        self._last_error = ""
        self._display = ""  # the server URL as logs show it

    def server_address(self) -> str | None:
        """`host:port` of the NATS server the triggers will use, or None when there is nothing to connect to."""
        return nats_server_address(self.engine.spec, self._all_secrets())

    def _all_secrets(self) -> Mapping[str, Any]:
        return self._secrets if self._secrets is not None else getattr(self.engine, "secrets", {}) or {}

    async def start(self) -> None:
        """Connects and subscribes in the background (a NATS outage must not stop HTTP serving)."""
        triggers = queue_triggers(self.engine.spec)
        if not triggers:
            return
        url, token, missing = nats_settings(self.engine.spec, self._all_secrets())
        subjects = ", ".join(t.subject for t in triggers)
        if missing:
            log.warning("queue trigger(s) on %s skipped: %s not set", subjects, " and ".join(missing))
            return
        try:
            tls = nats_tls(url, self._all_secrets())
        except ValueError as exc:
            log.error("queue trigger(s) on %s disabled: %s", subjects, exc)
            return
        concurrency = self.gate.max_concurrent_runs or DEFAULT_CONCURRENCY
        self._slots = asyncio.Semaphore(concurrency)
        durable = [t for t in triggers if t.durable]
        if durable:
            self.durable = DurableQueues(self.gate, self.engine, durable, concurrency=concurrency)
        self._connector = asyncio.get_running_loop().create_task(
            self._connect(url, token, tls, [t for t in triggers if not t.durable])
        )

    async def _connect(self, url: str, token: str, tls: ssl.SSLContext | None, triggers: list[workflow_pb2.Trigger]) -> None:
        import nats  # only workflows with queue triggers pay for it

        display = self._display = self.engine.redact(url)
        try:
            # With max_reconnect_attempts=-1 nats-py keeps trying until the
            # server is up (reporting each failure to _on_error): only settings
            # that can never work end up here.
            client = nats.NATS()
            await client.connect(
                url,
                # With TLS configured the token goes out only once the connection
                # is encrypted: nats-py upgrades only when the server's INFO says
                # tls_required, which an attacker in the path can strip.
                token=token if tls is None else only_over_tls(client, token, display),
                tls=tls,
                name=f"pipedreamer-{self.engine.spec.name}",
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=_RECONNECT_WAIT,
                connect_timeout=2,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
            )
        except Exception as exc:  # noqa: BLE001 - a bad URL: the triggers cannot work, HTTP still can
            log.error("queue triggers disabled: cannot connect to NATS at %s: %s", display, self._describe(exc))
            return
        self.client = client
        if self.durable is not None:
            self.durable.start(client)
        if not triggers:
            return
        group = queue_group(self.engine.spec.name)
        for trigger in triggers:
            name = trigger.name or f"queue:{trigger.subject}"

            async def on_message(msg: Msg, trigger_name: str = name) -> None:
                await self._dispatch(msg, trigger_name)

            self.subscriptions.append(await self.client.subscribe(trigger.subject, queue=group, cb=on_message))
        await self.client.flush()
        log.info("NATS %s: subscribed to %s (queue group %s)", display, ", ".join(t.subject for t in triggers), group)
        self.subscribed.set()

    async def _dispatch(self, msg: Msg, trigger: str) -> None:
        # Waiting for a slot here holds back this subscription's deliveries:
        # nats-py buffers them (and its slow-consumer limit applies).
        assert self._slots is not None
        await self._slots.acquire()
        task = asyncio.get_running_loop().create_task(self._handle(msg, trigger))
        self._handlers.add(task)
        task.add_done_callback(self._handler_done)

    def _handler_done(self, task: asyncio.Task) -> None:
        self._handlers.discard(task)
        assert self._slots is not None
        self._slots.release()

    async def _handle(self, msg: Msg, trigger: str) -> None:
        gate = self.gate
        try:
            payload = parse_payload(msg.data)
        except ValueError as exc:
            gate.metrics.rejected("bad_json")
            log.warning("message on %s: invalid JSON payload: %s", msg.subject, exc)
            result = gate.synthetic_result(execution_pb2.RUN_STATUS_FAILED, f"invalid JSON payload: {exc}", trigger)
        else:
            # A publisher's Nats-Msg-Id is its idempotency key: a redelivery or retry answers the first run's result.
            key = (msg.headers or {}).get("Nats-Msg-Id", "") if gate.history is not None else ""
            try:
                result = await gate.run(payload, trigger=trigger, wait_for_slot=True, while_draining=True, idempotency_key=key)
            except (RunRejected, RunConflict, HistoryError) as exc:
                result = gate.synthetic_result(execution_pb2.RUN_STATUS_FAILED, str(exc), trigger)
            except Exception as exc:  # noqa: BLE001 - one bad message must not stop the subscription
                error = gate.internal_error(exc, f"message on {msg.subject}")
                result = gate.synthetic_result(execution_pb2.RUN_STATUS_FAILED, error, trigger)
        if msg.reply and self.client is not None:
            try:
                await self.client.publish(msg.reply, result_to_json(result).encode())
            except Exception as exc:  # noqa: BLE001 - the requester is gone or NATS is down
                log.warning("cannot reply on %s: %s", msg.reply, self._describe(exc))

    async def stop_receiving(self) -> None:
        """No new messages; those already delivered to this replica are handed to runs."""
        if self._connector is not None and not self._connector.done():
            self._connector.cancel()
            await asyncio.gather(self._connector, return_exceptions=True)
        if self.durable is not None:
            await self.durable.stop_receiving()
        for subscription in self.subscriptions:
            try:
                await subscription.drain()
            except Exception as exc:  # noqa: BLE001 - best effort while the server may be gone
                log.warning("cannot drain subscription %s: %s", subscription.subject, self._describe(exc))
        self.subscriptions.clear()

    async def close(self, timeout: float = 5.0) -> None:
        """Waits for replies still being sent, then drains and closes the connection."""
        if self._handlers:
            await asyncio.wait(set(self._handlers), timeout=timeout)
        if self.durable is not None:
            await self.durable.wait_handled(timeout)
        client, self.client = self.client, None
        if client is None or client.is_closed:
            return
        try:
            await asyncio.wait_for(client.drain(), timeout)
        except Exception:  # noqa: BLE001 - drain failed (server gone): just close
            await client.close()

    async def report(self) -> list[dict[str, Any]]:
        """What `GET /triggers` says about each queue trigger (durable ones with their stream's state)."""
        triggers = queue_triggers(self.engine.spec)
        if not triggers:
            return []
        connected = self.client is not None and self.client.is_connected
        _, _, missing = nats_settings(self.engine.spec, self._all_secrets())
        stream = await self.durable.report() if self.durable is not None else {}
        entries = []
        for trigger in triggers:
            entry: dict[str, Any] = {
                "type": "queue",
                "name": trigger.name or f"queue:{trigger.subject}",
                "subject": trigger.subject,
                "durable": trigger.durable,
                "nats": self._display or None,
                "connected": connected,
            }
            if missing:
                entry["error"] = f"skipped: {' and '.join(missing)} not set"
            elif trigger.durable:
                entry["max_deliver"] = trigger.max_deliver or DEFAULT_MAX_DELIVER
                entry["jetstream"] = stream
            else:
                entry["queue_group"] = queue_group(self.engine.spec.name)
            if self._last_error and "error" not in entry and not connected:
                entry["error"] = self._last_error
            entries.append(entry)
        return entries

    async def _on_error(self, exc: Exception) -> None:
        # While the server is down the same error comes back every second: say it once.
        if isinstance(exc, TLSNotStarted):
            message, level = str(exc), logging.ERROR
        elif isinstance(exc, ssl.SSLCertVerificationError):
            # Retrying cannot help until the certificate or secrets.nats.ca changes: say what to fix.
            message = (
                f"TLS certificate verification failed for {self._display}: {exc.verify_message} "
                "(secrets.nats.ca sets the CA, in PEM, trusted for the server's certificate)"
            )
            level = logging.ERROR
        else:
            message, level = self._describe(exc), logging.WARNING
        if message != self._last_error:
            self._last_error = message
            log.log(level, "NATS: %s", message)

    async def _on_disconnected(self) -> None:
        log.warning("NATS disconnected; reconnecting")

    async def _on_reconnected(self) -> None:
        self._last_error = ""
        url = self.client.connected_url.netloc if self.client and self.client.connected_url else "?"
        log.info("NATS reconnected to %s", url)

    def _describe(self, exc: BaseException) -> str:
        return self.engine.redact(f"{type(exc).__name__}: {exc}".rstrip(": "))
