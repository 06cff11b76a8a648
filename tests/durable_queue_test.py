"""Durable queue triggers against a real nats-server with JetStream (`-js`): messages wait for an engine,
survive an engine killed mid-run, failed runs and exhausted ones go to the dead-letter subject, and
Nats-Msg-Id deduplicates."""

from __future__ import annotations

import asyncio
import json
import signal
import urllib.request
from pathlib import Path

import nats
import pytest

from engine.serve.durable_queues import REPLY_HEADER
from proto.pipedreamer.v1 import execution_pb2
from tests.serve_harness import JetStreamNatsServer, ServerProcess, serving
from tests.support import wait_for, wait_for_async, write_workflow

SUCCEEDED = execution_pb2.RUN_STATUS_SUCCEEDED
CANCELLED = execution_pb2.RUN_STATUS_CANCELLED
SUBJECT = "orders.new"
STREAM = "PIPEDREAMER_ORDER_FLOW"
CONSUMER = "pipedreamer-order-flow"
DLQ_SUBJECT = "pipedreamer.dlq.order-flow"
DLQ_STREAM = "PIPEDREAMER_ORDER_FLOW_DLQ"
NODES = {
    "take": """
        import asyncio

        async def run(ctx, input):
            if input.get("fail"):
                raise ValueError(f"order {input.get('id')} is not valid")
            await asyncio.sleep(input.get("sleep", 0))
            return {"taken": input.get("id")}
    """,
}


@pytest.fixture
def js_server(tmp_path: Path):
    server = JetStreamNatsServer(tmp_path / "jetstream")
    server.start()
    yield server
    server.close()


def _flow(tmp_path: Path, server: JetStreamNatsServer, **config) -> Path:
    return write_workflow(
        tmp_path / "order-flow",
        NODES,
        name="order-flow",
        triggers=[{"type": "queue", "subject": SUBJECT, "name": "orders", "durable": True}],
        # A 2 s timeout keeps the ack wait (and so a dead engine's redelivery) at 7 s.
        config={"nats_url": server.url, "timeout": "2s", **config},
        secrets={"nats": {"token": server.token}},
    )


async def _client(server: JetStreamNatsServer) -> nats.NATS:
    return await nats.connect(server.url, token=server.token)


async def _ready(engine) -> None:
    await asyncio.wait_for(engine.queues.durable.ready.wait(), 20)


async def _dead_letters(js, count: int, timeout: float = 10) -> list[dict]:
    subscription = await js.pull_subscribe(DLQ_SUBJECT, stream=DLQ_STREAM)
    letters: list = []
    try:
        while len(letters) < count:
            letters += await subscription.fetch(count - len(letters), timeout=timeout)
    finally:
        await subscription.unsubscribe()
    # The dead letter's own NATS headers beside its body (whose "headers" are the message's).
    return [{**json.loads(m.data), "nats_headers": m.headers} for m in letters]


async def test_a_message_published_while_no_engine_runs_is_processed_when_one_starts(tmp_path: Path, js_server):
    flow = _flow(tmp_path, js_server)
    async with serving(flow) as engine:  # the first start creates the stream and the consumer
        await _ready(engine)
    client = await _client(js_server)
    try:
        js = client.jetstream()
        ack = await js.publish(SUBJECT, b'{"id": 1}')  # no engine up: JetStream keeps it
        assert ack.stream == STREAM
        async with serving(flow) as engine:
            await _ready(engine)

            async def acknowledged():
                return (await js.stream_info(STREAM)).state.messages == 0  # gone from the work queue

            await wait_for_async("the waiting message to run and be acknowledged", acknowledged, timeout=20)
            runs = await engine.gate.list_runs(limit=10)
            assert [(r.trigger, r.status) for r in runs] == [("orders", SUCCEEDED)]
            info = await js.consumer_info(STREAM, CONSUMER)
            assert (info.num_pending, info.num_ack_pending) == (0, 0)
    finally:
        await client.close()


async def test_a_failed_run_goes_to_the_dead_letter_subject_at_once_with_its_result(tmp_path: Path, js_server):
    flow = _flow(tmp_path, js_server)
    async with serving(flow) as engine:
        await _ready(engine)
        client = await _client(js_server)
        try:
            js = client.jetstream()
            await js.publish(SUBJECT, b'{"id": 7, "fail": true}', headers={"Nats-Msg-Id": "order-7"})
            [letter] = await _dead_letters(js, 1)
            assert letter["nats_headers"]["Pipedreamer-Status"] == "RUN_STATUS_FAILED"
            assert letter["nats_headers"]["Pipedreamer-Trigger"] == "orders"
            assert letter["headers"] == {"Nats-Msg-Id": "order-7"}
            assert letter["payload"] == '{"id": 7, "fail": true}'
            assert letter["subject"] == SUBJECT and letter["deliveries"] == 1
            assert letter["nats_headers"]["Nats-Msg-Id"] == f"{STREAM}:1"
            result = letter["result"]
            assert result["status"] == "RUN_STATUS_FAILED" and result["trigger"] == "orders"
            assert "order 7 is not valid" in result["nodes"]["take"]["error"]
            # Not redelivered: terminated (just after its dead letter is published), and the one run is the one recorded.
            async def terminated():
                info = await js.consumer_info(STREAM, CONSUMER)
                return info if (info.num_pending, info.num_ack_pending) == (0, 0) else None

            info = await wait_for_async("the message to be terminated", terminated)
            assert info.num_redelivered == 0
            assert [r.run_id for r in await engine.gate.list_runs(limit=10)] == [result["runId"]]
            report = await engine.queues.report()
            assert report[0]["jetstream"]["dead_letters"] == 1
        finally:
            await client.close()


async def test_a_duplicate_nats_msg_id_runs_once_and_replies_reach_the_requester(tmp_path: Path, js_server):
    flow = _flow(tmp_path, js_server)
    async with serving(flow) as engine:
        await _ready(engine)
        client = await _client(js_server)
        try:
            js = client.jetstream()
            inbox = client.new_inbox()
            replies = await client.subscribe(inbox)
            headers = {"Nats-Msg-Id": "order-42", REPLY_HEADER: inbox}
            first = await js.publish(SUBJECT, b'{"id": 42}', headers=headers)
            again = await js.publish(SUBJECT, b'{"id": 42}', headers=headers)
            assert again.duplicate and again.seq == first.seq
            reply = json.loads((await replies.next_msg(timeout=20)).data)
            assert reply["status"] == "RUN_STATUS_SUCCEEDED" and reply["output"] == {"taken": 42}
            with pytest.raises(nats.errors.TimeoutError):
                await replies.next_msg(timeout=1)  # no second run, no second reply
            assert len(await engine.gate.list_runs(limit=10)) == 1
            # A plain request is answered by JetStream itself: the message is stored, that is its answer.
            stored = json.loads((await client.request(SUBJECT, b'{"id": 43}', timeout=5)).data)
            assert stored["stream"] == STREAM
        finally:
            await client.close()


async def test_a_message_delivered_max_deliver_times_goes_to_the_dead_letters_without_running(tmp_path: Path, js_server):
    flow = _flow(tmp_path, js_server)
    async with serving(flow) as engine:
        await _ready(engine)
    client = await _client(js_server)
    try:
        js = client.jetstream()
        await js.publish(SUBJECT, b'{"id": 9}')
        # Three engines took it and never finished (here: a bare consumer that gives it back each time).
        taker = await js.pull_subscribe_bind(durable=CONSUMER, stream=STREAM)
        for delivery in (1, 2, 3):
            [msg] = await taker.fetch(1, timeout=5)
            assert msg.metadata.num_delivered == delivery
            await msg.nak()
        await taker.unsubscribe()
        async with serving(flow) as engine:
            await _ready(engine)
            [letter] = await _dead_letters(js, 1)
            assert letter["deliveries"] == 4
            assert letter["result"]["error"].startswith("delivered 4 times, more than max_deliver 3")
            assert await engine.gate.list_runs(limit=10) == []  # it did not run a fourth time
    finally:
        await client.close()


async def test_a_run_cancelled_by_a_shutdown_is_given_back_to_another_replica(tmp_path: Path, js_server):
    flow = _flow(tmp_path, js_server)
    async with serving(flow) as other:
        await _ready(other)
        client = await _client(js_server)
        try:
            js = client.jetstream()
            async with serving(flow, shutdown_timeout=0.3) as leaving:
                await _ready(leaving)
                # Only `leaving` fetches while `other` is busy with a long message of its own.
                await other.queues.durable.stop_receiving()
                await js.publish(SUBJECT, json.dumps({"id": 5, "sleep": 1.5}).encode())
                await wait_for_async("the run in flight", lambda: leaving.gate.in_flight == 1)
                await leaving.shutdown(timeout=0.3)
                [cancelled] = await leaving.gate.list_runs(limit=5)
                assert cancelled.status == CANCELLED
            # Given back at once (nak), not after the ack wait: a new replica takes it.
            async with serving(flow) as taker:
                await _ready(taker)

                async def done():
                    runs = await taker.gate.list_runs(limit=5)
                    return runs and runs[0].status == SUCCEEDED

                await wait_for_async("the message to finish on the new replica", done, timeout=6)
        finally:
            await client.close()


def _runs(server: ServerProcess) -> list[dict]:
    with urllib.request.urlopen(server.url + "/runs?limit=50", timeout=10) as response:
        return json.loads(response.read())["runs"]


def test_an_engine_killed_mid_run_loses_nothing_a_second_engine_finishes_it_once(tmp_path: Path, js_server):
    """Real engine processes sharing the run history in JetStream KV: SIGKILL the one running the message,
    start another; JetStream redelivers after the ack wait and exactly one success is recorded."""
    flow = _flow(tmp_path, js_server, history="nats")

    def engine() -> ServerProcess:
        process = ServerProcess.engine(flow, f"--allow-read={flow}", "--allow-write=/tmp", "--allow-net=127.0.0.1")
        process.wait_ready()
        wait_for("the durable consumer", lambda: "JetStream: durable consumer pipedreamer-order-flow" in process.output(), timeout=20)
        return process

    first = engine()
    try:
        async def publish() -> None:
            client = await _client(js_server)
            try:
                await client.jetstream().publish(SUBJECT, json.dumps({"id": 11, "sleep": 1.5}).encode(), headers={"Nats-Msg-Id": "order-11"})
            finally:
                await client.close()

        asyncio.run(publish())
        wait_for("the first engine to be running it", lambda: [r for r in _runs(first) if r["status"] == "RUN_STATUS_RUNNING"], timeout=20)
        first.signal(signal.SIGKILL)
        first.wait(10)
    finally:
        first.close()
    second = engine()
    try:
        def succeeded():
            return [r for r in _runs(second) if r["status"] == "RUN_STATUS_SUCCEEDED"]

        # The ack wait is 7 s (2 s timeout + 5 s margin), counted from the first engine's last word.
        [success] = wait_for("the second engine to finish it", succeeded, timeout=30)
        assert success["trigger"] == "orders"
        # The killed engine's run stays as it was last recorded (RUNNING): the one success is the second's.
        statuses = sorted(r["status"] for r in _runs(second))
        assert statuses == ["RUN_STATUS_RUNNING", "RUN_STATUS_SUCCEEDED"]
        with urllib.request.urlopen(second.url + "/triggers", timeout=10) as response:
            [queue] = json.loads(response.read())["triggers"]
        state = queue["jetstream"]
        assert state["stream"] == STREAM and state["stream_exists"] is True
        assert (state["pending"], state["in_progress"], state["dead_letters"]) == (0, 0, 0)
        assert state["redelivered"] == 0  # acknowledged; the redelivery is history
    finally:
        second.close()


async def test_jetstream_off_is_reported_and_http_still_serves(tmp_path: Path, capfd):
    from tests.serve_harness import NatsServer

    plain = NatsServer()
    plain.start()
    try:
        flow = _flow(tmp_path, plain)  # type: ignore[arg-type]
        async with serving(flow) as engine:
            await wait_for_async("the set-up error", lambda: "is JetStream enabled?" in capfd.readouterr().err or None, timeout=10)
            report = await engine.queues.report()
            assert "is JetStream enabled? nats-server -js" in report[0]["jetstream"]["error"]
            assert not engine.queues.durable.ready.is_set()
    finally:
        plain.close()

