"""Durable queue triggers (`durable: true`): JetStream instead of core NATS, so no message is lost.

Stream `PIPEDREAMER_<WORKFLOW>` (work-queue retention, file storage) takes the
subjects of the workflow's durable triggers: a message published while no
engine runs waits in it. The durable pull consumer `pipedreamer-<workflow>` is
shared by every replica, so each message goes to one of them (queue semantics).

A message is acknowledged only once its run's result is recorded in the run
history. Its ack wait is the longest the workflow can run (node timeouts and
retries along the critical path) plus a margin, so a message whose engine died
mid-run is redelivered to another engine after that. A run that FAILED is not
redelivered: the message and its result go to `pipedreamer.dlq.<workflow>` at
once (kept in stream `PIPEDREAMER_<WORKFLOW>_DLQ`) and the message is
terminated. A message delivered more than the trigger's `max_deliver` times
(default 3: every engine that took it stopped before its run ended) goes there
too, without running again. A run cancelled by a shutdown is given back
(nak) for another replica. `Nats-Msg-Id` deduplicates within the stream's
duplicate window. JetStream answers a plain request itself (its PubAck), so a
caller that wants the run's result names a subject in `Pipedreamer-Reply-To`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from typing import TYPE_CHECKING, Any, Mapping

from engine.executor import backoff_delay, node_policies
from engine.serve.admission import RunConflict, RunGate, RunRejected
from engine.serve.history import HistoryError
from engine.spec import DEFAULT_MAX_DELIVER
from engine.values import parse_input, result_to_dict, result_to_json
from proto.pipedreamer.v1 import execution_pb2, workflow_pb2

if TYPE_CHECKING:
    from engine.compiler import CompiledDAG
    from nats.aio.client import Client
    from nats.aio.msg import Msg

log = logging.getLogger("pipedreamer.jetstream")

REPLY_HEADER = "Pipedreamer-Reply-To"
# JetStream's own default: long enough for a publisher's retries after a lost PubAck.
DUPLICATE_WINDOW = 120.0
# Added to the longest run for the ack wait: time to record the result and acknowledge.
ACK_MARGIN = 5.0
# How long one pull waits for a message; also how soon a stop takes effect.
FETCH_WAIT = 1.0
RETRY_WAIT = 1.0
# Status calls made for `GET /triggers`.
INFO_TIMEOUT = 2.0
HISTORY_WAIT = 5.0

SUCCEEDED = execution_pb2.RUN_STATUS_SUCCEEDED
CANCELLED = execution_pb2.RUN_STATUS_CANCELLED
FAILED = execution_pb2.RUN_STATUS_FAILED


def stream_name(workflow: str) -> str:
    """`PIPEDREAMER_<WORKFLOW>`: the name upper-cased, `-` as `_` (a workflow name has no `_`, so no two collide)."""
    return "PIPEDREAMER_" + workflow.upper().replace("-", "_")


def dead_letter_stream(workflow: str) -> str:
    return stream_name(workflow) + "_DLQ"


def consumer_name(workflow: str) -> str:
    return f"pipedreamer-{workflow}"


def dead_letter_subject(workflow: str) -> str:
    return f"pipedreamer.dlq.{workflow}"


def durable_triggers(spec: workflow_pb2.WorkflowSpec) -> list[workflow_pb2.Trigger]:
    return [t for t in spec.triggers if t.type == workflow_pb2.Trigger.TYPE_QUEUE and t.durable]


def trigger_name(trigger: workflow_pb2.Trigger) -> str:
    """What a run records as its trigger: the trigger's name, else `queue:<subject>` (as core queue triggers do)."""
    return trigger.name or f"queue:{trigger.subject}"


def longest_run_seconds(dag: CompiledDAG) -> float:
    """The longest a run can take: along the slowest path, each node's timeout × attempts plus its retry backoffs."""
    policies = node_policies(dag)
    finish: dict[str, float] = {}
    for node in dag.order:
        policy = policies[node]
        own = policy.timeout * (policy.retries + 1) + sum(backoff_delay(n) for n in range(1, policy.retries + 1))
        finish[node] = own + max((finish[d] for d in dag.dependencies[node]), default=0.0)
    return max(finish.values(), default=0.0)


def ack_wait_seconds(dag: CompiledDAG) -> float:
    """The consumer's ack wait: the longest run plus a margin (10%, at least ACK_MARGIN)."""
    longest = longest_run_seconds(dag)
    return round(longest + max(ACK_MARGIN, longest * 0.1), 3)


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` is one token, a final `>` one or more."""
    wanted, got = pattern.split("."), subject.split(".")
    for index, token in enumerate(wanted):
        if token == ">":
            return len(got) > index
        if index >= len(got) or (token != "*" and token != got[index]):
            return False
    return len(wanted) == len(got)


def dead_letter(
    workflow: str, trigger: str, msg_subject: str, data: bytes, headers: Mapping[str, str] | None,
    stream: str, sequence: int, deliveries: int, result: execution_pb2.ExecutionResult, limit: int,
) -> bytes:
    """The dead letter's body: the message (payload as text, or base64 when it is not UTF-8), where it
    came from, and the last result (without node outputs if the whole would pass `limit` bytes)."""
    envelope: dict[str, Any] = {
        "workflow": workflow,
        "trigger": trigger,
        "subject": msg_subject,
        "stream": stream,
        "sequence": sequence,
        "deliveries": deliveries,
        "headers": dict(headers or {}),
    }
    try:
        envelope["payload"] = data.decode("utf-8")
    except UnicodeDecodeError:
        envelope["payloadBase64"] = base64.b64encode(data).decode()
    envelope["result"] = result_to_dict(result)
    body = json.dumps(envelope, ensure_ascii=False).encode()
    if len(body) > limit:
        brief = execution_pb2.ExecutionResult()
        brief.CopyFrom(result)
        brief.ClearField("output")
        for node in brief.nodes.values():
            node.ClearField("output")
        envelope["result"] = result_to_dict(brief)
        envelope["resultTruncated"] = True
        body = json.dumps(envelope, ensure_ascii=False).encode()
    return body


class DurableQueues:
    """The JetStream side of a serving engine's queue triggers (those with `durable: true`)."""

    def __init__(self, gate: RunGate, engine: Any, triggers: list[workflow_pb2.Trigger], *, concurrency: int) -> None:
        self.gate = gate
        self.engine = engine
        self.triggers = triggers
        workflow = engine.spec.name
        self.workflow = workflow
        self.stream = stream_name(workflow)
        self.consumer = consumer_name(workflow)
        self.dlq_subject = dead_letter_subject(workflow)
        self.dlq_stream = dead_letter_stream(workflow)
        self.ack_wait = ack_wait_seconds(engine.dag)
        self.ready = asyncio.Event()
        self.client: Client | None = None
        self._js: Any = None
        self._slots = asyncio.Semaphore(concurrency)
        self._task: asyncio.Task | None = None
        self._handlers: set[asyncio.Task] = set()
        self._stopping = False
        self._last_error = ""

    @property
    def subjects(self) -> list[str]:
        return sorted({t.subject for t in self.triggers})

    def start(self, client: Client) -> None:
        """Sets up the streams and the consumer (retrying while JetStream is not there), then consumes."""
        self.client = client
        self._js = client.jetstream()
        self._task = asyncio.get_running_loop().create_task(self._consume())

    # -- set-up ----------------------------------------------------------------

    async def _consume(self) -> None:
        js = self._js
        while not self._stopping:
            try:
                await self._ensure(js)
                subscription = await js.pull_subscribe_bind(durable=self.consumer, stream=self.stream)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - JetStream off or away: say so once, keep trying
                self._error("cannot set up", exc, " (is JetStream enabled? nats-server -js)")
                await asyncio.sleep(RETRY_WAIT)
        else:
            return
        self._last_error = ""
        log.info(
            "JetStream: durable consumer %s on stream %s (%s), ack wait %gs; dead letters on %s",
            self.consumer, self.stream, ", ".join(self.subjects), self.ack_wait, self.dlq_subject,
        )  # fmt: skip
        self.ready.set()
        try:
            await self._fetch_loop(subscription)
        finally:
            try:
                await subscription.unsubscribe()
            except Exception:  # noqa: BLE001 - the connection may be gone already
                pass

    async def _ensure(self, js: Any) -> None:
        """The work stream (subjects added when triggers were added), the dead-letter stream and the consumer.

        Settings of existing streams are left as an operator may have tuned them; the consumer's
        ack wait follows the workflow's timeouts.
        """
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType, StreamConfig
        from nats.js.errors import BadRequestError, NotFoundError

        subjects = self.subjects
        try:
            info = await js.stream_info(self.stream)
        except NotFoundError:
            await js.add_stream(StreamConfig(
                name=self.stream, subjects=subjects, retention=RetentionPolicy.WORK_QUEUE, storage=StorageType.FILE,
                duplicate_window=DUPLICATE_WINDOW, description=f"pipedreamer: durable queue triggers of {self.workflow}",
            ))  # fmt: skip
        else:
            have = list(info.config.subjects or [])
            if any(s not in have for s in subjects):
                info.config.subjects = have + [s for s in subjects if s not in have]
                await js.update_stream(info.config)
        try:
            await js.stream_info(self.dlq_stream)
        except NotFoundError:
            try:
                await js.add_stream(StreamConfig(
                    name=self.dlq_stream, subjects=[self.dlq_subject], retention=RetentionPolicy.LIMITS,
                    storage=StorageType.FILE, duplicate_window=DUPLICATE_WINDOW,
                    description=f"pipedreamer: dead letters of {self.workflow}",
                ))  # fmt: skip
            except BadRequestError as exc:
                # Another stream already takes the subject (pipedreamer.dlq.> for all workflows, say): it keeps them.
                log.warning("JetStream: dead-letter stream %s not created (%s); %s goes to whichever stream takes it",
                            self.dlq_stream, exc.description, self.dlq_subject)  # fmt: skip
        config = ConsumerConfig(
            name=self.consumer,
            durable_name=self.consumer,
            description=f"pipedreamer: replicas of {self.workflow}",
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            # The engine counts deliveries itself, so the last one lands in the dead-letter stream
            # instead of staying unacknowledged in the work queue.
            max_deliver=-1,
        )
        try:
            existing = await js.consumer_info(self.stream, self.consumer)
        except NotFoundError:
            await js.add_consumer(self.stream, config)
            return
        if existing.config.ack_wait != self.ack_wait:
            try:
                await js.add_consumer(self.stream, config)  # an update since nats-server 2.9
            except BadRequestError as exc:
                log.warning("JetStream: consumer %s keeps ack wait %gs (cannot update it to %gs: %s)",
                            self.consumer, existing.config.ack_wait, self.ack_wait, exc.description)  # fmt: skip

    # -- consuming -------------------------------------------------------------

    async def _fetch_loop(self, subscription: Any) -> None:
        import nats.errors

        loop = asyncio.get_running_loop()
        while not self._stopping:
            # One message per free slot: what this replica cannot start yet stays with the other replicas.
            await self._slots.acquire()
            try:
                messages = await subscription.fetch(1, timeout=FETCH_WAIT)
            except nats.errors.TimeoutError:
                self._slots.release()
                continue
            except asyncio.CancelledError:
                self._slots.release()
                raise
            except Exception as exc:  # noqa: BLE001 - NATS away: the client reconnects, we try again
                self._slots.release()
                self._error("fetch failed", exc)
                await asyncio.sleep(RETRY_WAIT)
                continue
            for message in messages:
                task = loop.create_task(self._handle(message))
                self._handlers.add(task)
                task.add_done_callback(self._handler_done)

    def _handler_done(self, task: asyncio.Task) -> None:
        self._handlers.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("JetStream: a message's handling failed: %s", self.engine.redact(f"{type(exc).__name__}: {exc}"))

    def _trigger_for(self, subject: str) -> workflow_pb2.Trigger:
        for trigger in self.triggers:
            if subject_matches(trigger.subject, subject):
                return trigger
        return self.triggers[0]

    async def _handle(self, msg: Msg) -> None:
        gate = self.gate
        trigger = self._trigger_for(msg.subject)
        name = trigger_name(trigger)
        limit = trigger.max_deliver or DEFAULT_MAX_DELIVER
        meta = msg.metadata
        deliveries = meta.num_delivered
        where = f"message {meta.sequence.stream} on {msg.subject}"
        if deliveries > limit:
            result = gate.synthetic_result(
                FAILED,
                f"delivered {deliveries} times, more than max_deliver {limit}: every engine that took it stopped "
                f"before its run ended (crash, kill, shutdown); the runs of earlier deliveries are in the run "
                f"history under trigger {name}",
                name,
            )
            await self._dead_letter(msg, name, result)
            return
        keep_alive = asyncio.get_running_loop().create_task(self._keep_alive(msg))
        try:
            try:
                payload = parse_input(msg.data)
            except ValueError as exc:
                gate.metrics.rejected("bad_json")
                log.warning("%s: invalid JSON payload: %s", where, exc)
                result = gate.synthetic_result(FAILED, f"invalid JSON payload: {exc}", name)
            else:
                try:
                    result = await gate.run(payload, trigger=name, wait_for_slot=True, while_draining=True)
                except (RunRejected, RunConflict, HistoryError) as exc:
                    result = gate.synthetic_result(FAILED, str(exc), name)
                except Exception as exc:  # noqa: BLE001 - one bad message must not stop the consumer
                    result = gate.synthetic_result(FAILED, gate.internal_error(exc, where), name)
        finally:
            keep_alive.cancel()
        if result.status == SUCCEEDED:
            if not await gate.wait_recorded(result.run_id, HISTORY_WAIT):
                log.warning("%s: run %s not yet written to the run history after %gs; acknowledging anyway",
                            where, result.run_id, HISTORY_WAIT)  # fmt: skip
            await self._settle(msg, "ack")
            await self._reply(msg, result)
        elif result.status == CANCELLED:
            # The engine is stopping, not the message failing: another replica takes it.
            log.info("%s: run %s cancelled by the shutdown; returned to stream %s", where, result.run_id, self.stream)
            await self._settle(msg, "nak")
        else:
            await self._dead_letter(msg, name, result)

    async def _keep_alive(self, msg: Msg) -> None:
        """Restarts the ack wait now and then while this engine is alive (a run waiting for a slot included)."""
        while True:
            await self._settle(msg, "in_progress")
            await asyncio.sleep(max(self.ack_wait / 3, 0.5))

    async def _dead_letter(self, msg: Msg, trigger: str, result: execution_pb2.ExecutionResult) -> None:
        """The message and its result to the dead-letter subject, then the message terminated (never redelivered)."""
        from nats.js.errors import NoStreamResponseError

        assert self.client is not None
        meta = msg.metadata
        body = dead_letter(
            self.workflow, trigger, msg.subject, msg.data, msg.headers, meta.stream, meta.sequence.stream,
            meta.num_delivered, result, self.client.max_payload - 4096,
        )  # fmt: skip
        headers = {
            # A dead letter published twice (this engine died before terminating the message) is stored once.
            "Nats-Msg-Id": f"{meta.stream}:{meta.sequence.stream}",
            "Pipedreamer-Workflow": self.workflow,
            "Pipedreamer-Trigger": trigger,
            "Pipedreamer-Subject": msg.subject,
            "Pipedreamer-Status": execution_pb2.RunStatus.Name(result.status),
        }
        if result.run_id:
            headers["Pipedreamer-Run-Id"] = result.run_id
        try:
            try:
                await self._js.publish(self.dlq_subject, body, headers=headers, timeout=5)
            except NoStreamResponseError:
                # No stream keeps dead letters (it could not be created): subscribers still get it.
                await self.client.publish(self.dlq_subject, body, headers=headers)
                log.warning("JetStream: no stream stores %s; the dead letter was published, not kept", self.dlq_subject)
        except Exception as exc:  # noqa: BLE001 - NATS away: the message stays in the work queue
            self._error(f"cannot publish the dead letter of message {meta.sequence.stream}", exc)
            await self._settle(msg, "nak")
            return
        log.warning(
            "message %d on %s (delivery %d): %s; sent to %s",
            meta.sequence.stream, msg.subject, meta.num_delivered, self.engine.redact(result.error or "run failed"),
            self.dlq_subject,
        )  # fmt: skip
        await self._settle(msg, "term")
        await self._reply(msg, result)

    async def _settle(self, msg: Msg, how: str) -> None:
        try:
            if how == "ack":
                await msg.ack_sync(timeout=5)
            else:
                await getattr(msg, how)()
        except Exception as exc:  # noqa: BLE001 - not settled: JetStream redelivers after the ack wait
            self._error(f"cannot {how.replace('_', '-')} message {msg.metadata.sequence.stream}", exc)

    async def _reply(self, msg: Msg, result: execution_pb2.ExecutionResult) -> None:
        reply_to = (msg.headers or {}).get(REPLY_HEADER)
        if not reply_to or self.client is None:
            return
        try:
            await self.client.publish(reply_to, result_to_json(result).encode())
        except Exception as exc:  # noqa: BLE001 - the requester is gone or NATS is down
            log.warning("cannot reply on %s: %s", reply_to, self._describe(exc))

    # -- stopping --------------------------------------------------------------

    async def stop_receiving(self) -> None:
        """No more fetches (the one waiting ends within FETCH_WAIT); messages already taken still run."""
        self._stopping = True
        task = self._task
        if task is None or task.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), FETCH_WAIT + 2)
        except (TimeoutError, asyncio.TimeoutError):
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        except Exception:  # noqa: BLE001 - reported by the task itself
            pass

    async def wait_handled(self, timeout: float) -> None:
        """Waits for messages in hand to be acknowledged, given back or dead-lettered."""
        if self._handlers:
            await asyncio.wait(set(self._handlers), timeout=timeout)

    # -- status ----------------------------------------------------------------

    async def report(self) -> dict[str, Any]:
        """The streams and the consumer as JetStream has them: for `GET /triggers`, `status` and `cluster check`."""
        report: dict[str, Any] = {
            "stream": self.stream,
            "subjects": self.subjects,
            "consumer": self.consumer,
            "ack_wait_seconds": self.ack_wait,
            "dead_letter_subject": self.dlq_subject,
            "dead_letter_stream": self.dlq_stream,
            "ready": self.ready.is_set(),
        }
        js = self._js
        if js is not None:
            from nats.js.errors import NotFoundError

            try:
                info = await asyncio.wait_for(js.stream_info(self.stream), INFO_TIMEOUT)
                report.update(stream_exists=True, stream_messages=info.state.messages)
                consumer = await asyncio.wait_for(js.consumer_info(self.stream, self.consumer), INFO_TIMEOUT)
                report.update(
                    pending=consumer.num_pending,
                    in_progress=consumer.num_ack_pending,
                    redelivered=consumer.num_redelivered,
                )
            except NotFoundError as exc:
                report.setdefault("stream_exists", False)
                report["error"] = self._describe(exc)
            except Exception as exc:  # noqa: BLE001
                report["error"] = self._describe(exc)
            try:
                dlq = await asyncio.wait_for(js.stream_info(self.dlq_stream), INFO_TIMEOUT)
                report["dead_letters"] = dlq.state.messages
            except Exception:  # noqa: BLE001 - no stream of ours keeps them (see the start-up log)
                report["dead_letters"] = None
        if self._last_error and (not self.ready.is_set() or "error" not in report):
            report["error"] = self._last_error  # why it is not consuming says more than a failed probe
        return report

    # -- errors ----------------------------------------------------------------

    def _error(self, what: str, exc: BaseException, hint: str = "") -> None:
        message = f"{what}: {self._describe(exc)}{hint}"
        if message != self._last_error:
            self._last_error = message
            log.warning("JetStream %s: %s", self.stream, message)

    def _describe(self, exc: BaseException) -> str:
        from nats.errors import NoRespondersError
        from nats.js.errors import ServiceUnavailableError

        if getattr(exc, "description", None):
            return self.engine.redact(str(exc.description))  # type: ignore[attr-defined]
        if isinstance(exc, (ServiceUnavailableError, NoRespondersError)):
            return "the server's JetStream API does not answer"
        return self.engine.redact(f"{type(exc).__name__}: {exc}".rstrip(": "))
