"""Run history in NATS JetStream key-value buckets, shared by every replica of a workflow (`config.history: nats`).

Bucket `pipedreamer-runs-<workflow>`: key = run id, value = the redacted
`ExecutionResult` as proto3 JSON, one revision kept, entries expire after
`config.history_ttl` (default 7 days). Runs in flight are written as RUNNING
snapshots as their nodes finish, so `GET /runs` on any replica sees them.
Bucket `pipedreamer-keys-<workflow>`: idempotency key (its SHA-256) → run id,
kept 24 h; `create` is atomic, so replicas agree on who ran first.

Writes never block a run: `record` queues the latest state of each run and one
writer task puts them in order. The connection uses the queue triggers'
settings (`config.nats_url`, `secrets.nats.token`, `secrets.nats.ca`) and
reconnects forever; reads wait a few seconds for it, then fail with a message.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import itertools
import logging
import ssl
from typing import TYPE_CHECKING, Any, Callable

from engine.serve.history import (
    IDEMPOTENCY_WINDOW,
    HistoryUnavailable,
    matches,
    started_key,
)
from engine.results import FinishedRun
from engine.serve.queue_triggers import only_over_tls
from engine.values import result_from_json, result_to_json
from proto.pipedreamer.v1 import execution_pb2

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js.kv import KeyValue

log = logging.getLogger("pipedreamer.history")

DEFAULT_TTL = 7 * 24 * 3600.0
# Run states waiting to be written; past this the oldest are dropped (NATS is down for long).
MAX_PENDING = 10_000
READ_WAIT = 5.0  # seconds a read waits for the store to be connected


def runs_bucket(workflow: str) -> str:
    return f"pipedreamer-runs-{workflow}"


def keys_bucket(workflow: str) -> str:
    return f"pipedreamer-keys-{workflow}"


def key_name(key: str) -> str:
    """An idempotency key as a KV key: any text a caller sends becomes 64 hex characters."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class NatsHistory:
    """`RunHistory` on JetStream KV; `open()` connects in the background."""

    shared = True

    def __init__(
        self,
        workflow: str,
        url: str,
        token: str,
        *,
        tls: ssl.SSLContext | None = None,
        ttl: float = DEFAULT_TTL,
        redact: Callable[[str], str] = lambda text: text,
    ) -> None:
        self.workflow = workflow
        self.url = url
        self.token = token
        self.tls = tls
        self.ttl = ttl
        self.redact = redact
        self.client: Client | None = None
        self.runs: KeyValue | None = None
        self.keys: KeyValue | None = None
        self._ready = asyncio.Event()
        # run id → (its newest state, a stamp): a run's progress may come in while its last state is being written.
        self._pending: collections.OrderedDict[str, tuple[Any, int]] = collections.OrderedDict()
        self._stamps = itertools.count()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: list[asyncio.Task] = []
        self._last_error = ""

    # -- lifecycle -------------------------------------------------------------

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._connect()), loop.create_task(self._write_loop())]

    async def _connect(self) -> None:
        import nats
        from nats.js.api import KeyValueConfig

        display = self.redact(self.url)
        client = nats.NATS()
        try:
            await client.connect(
                self.url,
                # Under TLS the token goes out only on an encrypted connection, as for queue triggers.
                token=self.token if self.tls is None else only_over_tls(client, self.token, display),
                tls=self.tls,
                name=f"pipedreamer-{self.workflow}-history",
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=1.0,
                connect_timeout=2,
                error_cb=self._on_error,
            )
        except Exception as exc:  # noqa: BLE001 - settings that can never work
            log.error("run history: cannot connect to NATS at %s: %s", display, self._describe(exc))
            return
        self.client = client
        js = client.jetstream()
        while True:
            try:
                self.runs = await self._bucket(js, KeyValueConfig(
                    bucket=runs_bucket(self.workflow), history=1, ttl=self.ttl,
                    description=f"pipedreamer run history of {self.workflow}",
                ))  # fmt: skip
                self.keys = await self._bucket(js, KeyValueConfig(
                    bucket=keys_bucket(self.workflow), history=1, ttl=IDEMPOTENCY_WINDOW,
                    description=f"pipedreamer idempotency keys of {self.workflow}",
                ))  # fmt: skip
                break
            except Exception as exc:  # noqa: BLE001 - JetStream off, or not reachable yet
                await self._on_error(exc, hint=" (is JetStream enabled? nats-server -js)")
                await asyncio.sleep(1.0)
        log.info("run history: JetStream KV bucket %s on %s", runs_bucket(self.workflow), display)
        self._ready.set()

    @staticmethod
    async def _bucket(js: Any, config: Any) -> KeyValue:
        from nats.js.errors import BadRequestError

        try:
            return await js.create_key_value(config)
        except BadRequestError as exc:
            # The bucket exists with other settings (an older history_ttl): use it as it is.
            log.warning("run history: bucket %s exists with other settings (%s); using it as it is", config.bucket, exc)
            return await js.key_value(config.bucket)

    async def close(self, timeout: float = 5.0) -> None:
        if self._pending and self._ready.is_set():
            try:
                await asyncio.wait_for(self._idle.wait(), timeout)
            except TimeoutError:
                log.warning("run history: %d run(s) not written before shutdown", len(self._pending))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        client, self.client = self.client, None
        if client is not None and not client.is_closed:
            await client.close()

    # -- writes ----------------------------------------------------------------

    def record(self, result: Any) -> None:
        if isinstance(result, execution_pb2.ExecutionResult):
            result = FinishedRun.of(result)
        pending = self._pending
        run_id = result.run_id
        pending.pop(run_id, None)  # the newest state goes to the back of the queue
        pending[run_id] = (result, next(self._stamps))
        if len(pending) > MAX_PENDING:
            dropped, _ = pending.popitem(last=False)
            log.warning("run history: NATS is behind; run %s not recorded", dropped)
        self._idle.clear()
        self._wake.set()

    async def _write_loop(self) -> None:
        await self._ready.wait()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                run_id, entry = next(iter(self._pending.items()))
                item = entry[0]
                try:
                    await self._put(item if isinstance(item, FinishedRun) else FinishedRun.of(item.snapshot()))
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - NATS away: keep it and retry
                    await self._on_error(exc)
                    await asyncio.sleep(1.0)
                    continue
                # Only if nothing newer arrived for this run while we wrote.
                if self._pending.get(run_id) is entry:
                    del self._pending[run_id]
            self._idle.set()

    async def _put(self, finished: FinishedRun) -> None:
        assert self.runs is not None and self.client is not None
        data = finished.json()
        limit = self.client.max_payload - 1024
        if len(data) > limit:
            # Outputs too big for one NATS message: keep the run's shape and status without them.
            result = finished.snapshot()
            brief = execution_pb2.ExecutionResult()
            brief.CopyFrom(result)
            brief.ClearField("output")
            for node in brief.nodes.values():
                node.ClearField("output")
            data = result_to_json(brief).encode()
            log.warning("run history: run %s recorded without its outputs (%d bytes; NATS takes %d)", result.run_id, len(data), limit)
        await self.runs.put(finished.run_id, data)

    async def wait_written(self, run_id: str, timeout: float) -> bool:
        """True once nothing of `run_id` waits to be written; False after `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while run_id in self._pending:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    # -- reads -----------------------------------------------------------------

    async def _wait_ready(self) -> None:
        try:
            await asyncio.wait_for(self._ready.wait(), READ_WAIT)
        except TimeoutError:
            detail = f": {self._last_error}" if self._last_error else ""
            raise HistoryUnavailable(
                f"run history store (NATS JetStream at {self.redact(self.url)}) is not reachable{detail}"
            ) from None

    async def get(self, run_id: str) -> execution_pb2.ExecutionResult | None:
        from nats.js.errors import KeyNotFoundError

        waiting = self._pending.get(run_id, (None, 0))[0]
        if isinstance(waiting, FinishedRun):
            return waiting.snapshot()
        await self._wait_ready()
        assert self.runs is not None
        try:
            entry = await self.runs.get(run_id)
        except KeyNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - NATS away, invalid key …
            if "invalid key" in str(exc).lower():
                return None
            raise HistoryUnavailable(f"run history store: {self._describe(exc)}") from None
        return self._decode(entry.value)

    async def list(self, *, limit: int, status: int = 0, trigger: str | None = None) -> list[execution_pb2.ExecutionResult]:
        await self._wait_ready()
        assert self.runs is not None and self.client is not None
        found: dict[str, execution_pb2.ExecutionResult] = {}
        try:
            for result in await self._stored():
                found[result.run_id] = result
        except Exception as exc:  # noqa: BLE001
            raise HistoryUnavailable(f"run history store: {self._describe(exc)}") from None
        for item, _ in list(self._pending.values()):
            if isinstance(item, FinishedRun):
                found[item.run_id] = item.snapshot()
        runs = [r for r in found.values() if matches(r, status, trigger)]
        runs.sort(key=started_key, reverse=True)
        return runs[:limit]

    async def _stored(self) -> list[execution_pb2.ExecutionResult]:
        """Every run in the bucket: its keys from the stream's subjects, then each key's value.

        Not kv.watchall(): nats-py's watcher decides that the replay is over from
        per-message pending counts, which under concurrent writes ends it early or
        never (nats-io/nats.py#842), and a replica lists while the others write."""
        from nats.js.errors import KeyDeletedError, KeyNotFoundError

        assert self.runs is not None and self.client is not None
        stream = f"KV_{runs_bucket(self.workflow)}"
        prefix = f"$KV.{runs_bucket(self.workflow)}."
        info = await self.client.jetstream().stream_info(stream, subjects_filter=prefix + ">")
        keys = [subject[len(prefix):] for subject in (info.state.subjects or {})]

        async def value(key: str) -> execution_pb2.ExecutionResult | None:
            try:
                return self._decode((await self.runs.get(key)).value)
            except (KeyNotFoundError, KeyDeletedError):  # expired or deleted since the listing
                return None

        results = await asyncio.gather(*(value(key) for key in keys))
        return [r for r in results if r is not None]

    def _decode(self, data: bytes | None) -> execution_pb2.ExecutionResult | None:
        if not data:
            return None
        try:
            return result_from_json(data)
        except ValueError as exc:
            log.warning("run history: skipping an entry that is not a run result: %s", exc)
            return None

    async def claim(self, key: str, run_id: str) -> str | None:
        from nats.js.errors import KeyWrongLastSequenceError

        await self._wait_ready()
        assert self.keys is not None
        name = key_name(key)
        try:
            await self.keys.create(name, run_id.encode())
            return None
        except KeyWrongLastSequenceError:
            entry = await self.keys.get(name)
            return (entry.value or b"").decode() or None
        except Exception as exc:  # noqa: BLE001
            raise HistoryUnavailable(f"run history store: {self._describe(exc)}") from None

    # -- errors ----------------------------------------------------------------

    async def _on_error(self, exc: Exception, hint: str = "") -> None:
        message = self._describe(exc) + hint
        if message != self._last_error:
            self._last_error = message
            log.warning("run history: NATS: %s", message)

    def _describe(self, exc: BaseException) -> str:
        return self.redact(f"{type(exc).__name__}: {exc}".rstrip(": "))


def nats_history_for(spec: Any, secrets: Any, redact: Callable[[str], str]) -> NatsHistory:
    """The store `config.history: nats` asks for; ValueError naming the setting that is missing or wrong."""
    from engine.serve.queue_triggers import nats_settings, nats_tls
    from engine.spec import config_to_dict, parse_duration

    config = config_to_dict(spec.config)
    url, token, missing = nats_settings(spec, secrets)
    if missing:
        raise ValueError(f"config.history: nats needs {' and '.join(missing)}")
    ttl = DEFAULT_TTL
    if "history_ttl" in config:
        try:
            ttl = parse_duration(config["history_ttl"])
        except ValueError as exc:
            raise ValueError(f"config.history_ttl: {exc} (default 168h, 7 days)") from None
    try:
        tls = nats_tls(url, secrets)
    except ValueError as exc:
        raise ValueError(f"config.history: nats: {exc}") from None
    return NatsHistory(spec.name, url, token, tls=tls, ttl=ttl, redact=redact)
