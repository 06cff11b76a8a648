"""Queue triggers against a real nats-server: request/reply, bad payloads, queue groups,
a server restart mid-stream, missing settings, and drain on shutdown."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from pathlib import Path
from unittest import mock

import nats
import pytest
from nats.errors import NoRespondersError, TimeoutError as NatsTimeoutError

from tests.serve_harness import NatsServer, ServerProcess, TlsNatsServer, post_json, serving
from tests.support import wait_for_async, write_workflow

NODES = {
    "work": """
        import asyncio

        async def run(ctx, input):
            if isinstance(input, dict):
                await asyncio.sleep(input.get("sleep", 0))
            return {"got": input}
    """,
}
SUBJECT = "jobs.digest"


@pytest.fixture
def nats_server():
    server = NatsServer()
    server.start()
    yield server
    server.close()


def _workflow(tmp_path: Path, server: NatsServer | None, *, url: bool = True, token: bool = True, name: str = "queue-flow") -> Path:
    config = {"nats_url": server.url} if (server and url) else {}
    secrets = {"nats": {"token": server.token}} if (server and token) else {}
    return write_workflow(
        tmp_path / name,
        NODES,
        name=name,
        triggers=[{"type": "manual"}, {"type": "queue", "subject": SUBJECT, "name": "digest-queue"}],
        config=config,
        secrets=secrets,
    )


async def _client(server: NatsServer) -> nats.NATS:
    return await nats.connect(server.url, token=server.token, max_reconnect_attempts=-1, reconnect_time_wait=0.2)


async def test_a_message_runs_the_workflow_and_the_reply_is_the_canonical_result(tmp_path: Path, nats_server: NatsServer):
    async with serving(_workflow(tmp_path, nats_server)) as server:
        await asyncio.wait_for(server.queues.subscribed.wait(), 10)
        client = await _client(nats_server)
        try:
            reply = await client.request(SUBJECT, json.dumps({"n": 1}).encode(), timeout=10)
            result = json.loads(reply.data)
            assert result["status"] == "RUN_STATUS_SUCCEEDED"
            assert result["output"] == {"got": {"n": 1}}
            assert result["trigger"] == "digest-queue"
            assert result["workflow"] == "queue-flow"
            empty = json.loads((await client.request(SUBJECT, b"", timeout=10)).data)
            assert empty["output"] == {"got": {}}
            listed = json.loads((await client.request(SUBJECT, b"[1, 2]", timeout=10)).data)
            assert listed["output"] == {"got": [1, 2]}
        finally:
            await client.close()


async def test_bad_json_gets_an_error_result_and_the_subscription_goes_on(tmp_path: Path, nats_server: NatsServer, capfd):
    async with serving(_workflow(tmp_path, nats_server)) as server:
        await asyncio.wait_for(server.queues.subscribed.wait(), 10)
        client = await _client(nats_server)
        try:
            bad = json.loads((await client.request(SUBJECT, b"{nope", timeout=10)).data)
            assert bad["status"] == "RUN_STATUS_FAILED"
            assert bad["error"].startswith("invalid JSON payload:")
            assert "nodes" not in bad
            good = json.loads((await client.request(SUBJECT, b"{}", timeout=10)).data)
            assert good["status"] == "RUN_STATUS_SUCCEEDED"
            # Published without a reply subject: runs, nothing to answer, nothing breaks.
            await client.publish(SUBJECT, b"{}")
            await client.flush()
            await wait_for_async("two succeeded runs in the metrics", lambda: server.metrics.render().count(b'status="succeeded"') and
                                 b'pipedreamer_runs_total{status="succeeded",workflow="queue-flow"} 2.0' in server.metrics.render())
        finally:
            await client.close()
    assert "invalid JSON payload" in capfd.readouterr().err


async def test_a_deeply_nested_payload_gets_the_invalid_json_result_and_the_subscription_goes_on(
    tmp_path: Path, nats_server: NatsServer, capfd
):
    async with serving(_workflow(tmp_path, nats_server)) as server:
        await asyncio.wait_for(server.queues.subscribed.wait(), 10)
        client = await _client(nats_server)
        try:
            deep = json.loads((await client.request(SUBJECT, b"[" * 100_000 + b"]" * 100_000, timeout=10)).data)
            assert deep["status"] == "RUN_STATUS_FAILED"
            assert deep["error"] == "invalid JSON payload: nested too deeply"
            assert "nodes" not in deep
            good = json.loads((await client.request(SUBJECT, b"{}", timeout=10)).data)
            assert good["status"] == "RUN_STATUS_SUCCEEDED"
        finally:
            await client.close()
    err = capfd.readouterr().err
    assert "invalid JSON payload: nested too deeply" in err and "Traceback" not in err


async def test_replicas_share_the_work_through_the_queue_group(tmp_path: Path, nats_server: NatsServer):
    flow = _workflow(tmp_path, nats_server)
    async with serving(flow) as first, serving(flow) as second:
        await asyncio.wait_for(first.queues.subscribed.wait(), 10)
        await asyncio.wait_for(second.queues.subscribed.wait(), 10)
        client = await _client(nats_server)
        try:
            replies = await asyncio.gather(*(client.request(SUBJECT, b"{}", timeout=10) for _ in range(40)))
        finally:
            await client.close()
        assert all(json.loads(r.data)["status"] == "RUN_STATUS_SUCCEEDED" for r in replies)

        def runs(serving_engine) -> int:
            for line in serving_engine.metrics.render().decode().splitlines():
                if line.startswith('pipedreamer_runs_total{status="succeeded"'):
                    return int(float(line.split()[-1]))
            return 0

        assert runs(first) + runs(second) == 40  # each message ran exactly once
        assert runs(first) > 0 and runs(second) > 0


async def test_the_engine_reconnects_when_nats_restarts_mid_stream(tmp_path: Path, nats_server: NatsServer, capfd):
    async with serving(_workflow(tmp_path, nats_server)) as server:
        await asyncio.wait_for(server.queues.subscribed.wait(), 10)
        client = await _client(nats_server)
        answered: list[int] = []
        failed: list[int] = []

        async def stream() -> None:
            for i in range(1000):
                try:
                    reply = await client.request(SUBJECT, json.dumps({"i": i}).encode(), timeout=0.5)
                    assert json.loads(reply.data)["output"] == {"got": {"i": i}}
                    answered.append(i)
                except (NatsTimeoutError, NoRespondersError, nats.errors.ConnectionReconnectingError):
                    failed.append(i)
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.01)

        streaming = asyncio.create_task(stream())
        try:
            await wait_for_async("10 answers", lambda: len(answered) >= 10, timeout=10)
            nats_server.stop()  # the server goes away mid-stream…
            await asyncio.sleep(1.5)
            before_restart = len(answered)
            nats_server.start()  # …and comes back on the same port
            await wait_for_async("20 more answers after the restart", lambda: len(answered) >= before_restart + 20, timeout=20)
        finally:
            streaming.cancel()
            await asyncio.gather(streaming, return_exceptions=True)
            await client.close()
        err = capfd.readouterr().err
        assert "NATS disconnected; reconnecting" in err
        assert "NATS reconnected to" in err
        assert failed  # requests during the outage were not answered, the later ones were


async def test_missing_url_or_token_warns_and_skips_the_trigger(tmp_path: Path, nats_server: NatsServer, capfd):
    for url, token, missing in ((False, True, "config.nats_url"), (True, False, "secrets.nats.token"), (False, False, "config.nats_url and secrets.nats.token")):
        flow = _workflow(tmp_path, nats_server, url=url, token=token, name=f"skip-{int(url)}{int(token)}")
        async with serving(flow) as server:
            assert server.queues.client is None and not server.queues.subscriptions
            import aiohttp

            async with aiohttp.ClientSession() as session, session.post(server.http_address + "/run", json={}) as response:
                assert response.status == 200  # HTTP serving is unaffected
        err = capfd.readouterr().err
        assert f"queue trigger(s) on {SUBJECT} skipped: {missing} not set" in err


async def test_shutdown_drains_a_message_in_flight_and_unsubscribes(tmp_path: Path, nats_server: NatsServer):
    async with serving(_workflow(tmp_path, nats_server)) as server:
        await asyncio.wait_for(server.queues.subscribed.wait(), 10)
        client = await _client(nats_server)
        try:
            pending = asyncio.ensure_future(client.request(SUBJECT, json.dumps({"sleep": 0.5}).encode(), timeout=10))
            await wait_for_async("a run in flight", lambda: server.gate.in_flight == 1)
            await server.shutdown(timeout=5)
            result = json.loads((await pending).data)
            assert result["status"] == "RUN_STATUS_SUCCEEDED"
            assert server.queues.client is None
            with pytest.raises((NoRespondersError, NatsTimeoutError)):
                await client.request(SUBJECT, b"{}", timeout=0.5)
        finally:
            await client.close()


async def test_an_unreachable_server_at_start_is_retried_until_it_comes_up(tmp_path: Path, nats_server: NatsServer, capfd):
    nats_server.stop()
    async with serving(_workflow(tmp_path, nats_server)) as server:
        await asyncio.sleep(0.8)
        assert not server.queues.subscribed.is_set()
        nats_server.start()
        await asyncio.wait_for(server.queues.subscribed.wait(), 15)
        client = await _client(nats_server)
        try:
            reply = json.loads((await client.request(SUBJECT, b"{}", timeout=10)).data)
            assert reply["status"] == "RUN_STATUS_SUCCEEDED"
        finally:
            await client.close()
    err = capfd.readouterr().err
    assert "WARN  [nats] NATS: " in err and "Connect call failed" in err
    assert err.count("Connect call failed") == 1  # said once, not once per retry


def test_the_engine_process_serves_nats_under_the_permission_lock(tmp_path: Path, nats_server: NatsServer):
    """Nodes get no network (no --allow-net), yet the engine's own NATS server stays reachable."""
    flow = _workflow(tmp_path, nats_server)
    server = ServerProcess.engine(flow, f"--allow-read={flow}")
    try:
        server.wait_ready()

        async def request() -> dict:
            client = await _client(nats_server)
            try:
                for _ in range(100):  # the process subscribes shortly after it is ready
                    try:
                        return json.loads((await client.request(SUBJECT, b'{"via": "nats"}', timeout=0.5)).data)
                    except (NoRespondersError, NatsTimeoutError):
                        await asyncio.sleep(0.1)
                raise AssertionError(f"no reply:\n{server.output()}")
            finally:
                await client.close()

        result = asyncio.run(request())
        assert result["status"] == "RUN_STATUS_SUCCEEDED" and result["output"] == {"got": {"via": "nats"}}
        assert post_json(server.url + "/run", {})[0] == 200
        server.signal(signal.SIGTERM)
        assert server.wait(15) == 0
        assert "s3cret-nats-token" not in server.output()
    finally:
        server.close()


@pytest.fixture
def tls_nats_server(tmp_path: Path):
    server = TlsNatsServer(tmp_path / "tls")
    server.start()
    yield server
    server.close()


def _tls_workflow(tmp_path: Path, server: TlsNatsServer, *, ca: str | None) -> Path:
    secrets = {"nats": {"token": server.token, **({"ca": ca} if ca is not None else {})}}
    return write_workflow(
        tmp_path / "tls-flow",
        NODES,
        name="tls-flow",
        triggers=[{"type": "queue", "subject": SUBJECT}],
        config={"nats_url": server.url},
        secrets=secrets,
    )


async def test_tls_with_a_private_ca_from_the_secrets(tmp_path: Path, tls_nats_server: TlsNatsServer):
    assert tls_nats_server.url.startswith("tls://127.0.0.1:")
    flow = _tls_workflow(tmp_path, tls_nats_server, ca=tls_nats_server.ca.read_text())
    async with serving(flow) as server:
        await asyncio.wait_for(server.queues.subscribed.wait(), 10)
        client = await nats.connect(tls_nats_server.url, token=tls_nats_server.token, tls=tls_nats_server.client_tls())
        try:
            reply = json.loads((await client.request(SUBJECT, json.dumps({"n": 1}).encode(), timeout=10)).data)
        finally:
            await client.close()
        assert reply["status"] == "RUN_STATUS_SUCCEEDED" and reply["output"] == {"got": {"n": 1}}
    # The server demands TLS of every client, so the engine's subscription was encrypted.
    with socket.create_connection(("127.0.0.1", tls_nats_server.port), timeout=5) as sock:
        info = json.loads(sock.recv(4096).decode().removeprefix("INFO ").strip())
    assert info["tls_required"] is True and info["auth_required"] is True


async def test_tls_without_the_ca_logs_a_verification_failure_and_http_keeps_serving(
    tmp_path: Path, tls_nats_server: TlsNatsServer, capfd
):
    err = ""

    def logged() -> bool:
        nonlocal err
        err += capfd.readouterr().err
        return "TLS certificate verification failed" in err

    async with serving(_tls_workflow(tmp_path, tls_nats_server, ca=None)) as server:
        await wait_for_async("the warning in the log", logged)
        assert not server.queues.subscribed.is_set()
        assert await asyncio.to_thread(post_json, server.http_address + "/run", {}) == (200, mock.ANY)
    err += capfd.readouterr().err
    line = next(line for line in err.splitlines() if "TLS certificate verification failed" in line)
    assert "ERROR [nats] NATS: TLS certificate verification failed for tls://127.0.0.1:" in line
    assert "unable to get local issuer certificate" in line and "secrets.nats.ca" in line
    assert "Traceback" not in err and tls_nats_server.token not in err


async def test_a_ca_that_is_not_pem_disables_the_triggers_with_a_message(tmp_path: Path, tls_nats_server: TlsNatsServer, capfd):
    async with serving(_tls_workflow(tmp_path, tls_nats_server, ca="not a certificate")) as server:
        assert server.queues.client is None
        assert await asyncio.to_thread(post_json, server.http_address + "/run", {}) == (200, mock.ANY)
    err = capfd.readouterr().err
    assert f"queue trigger(s) on {SUBJECT} disabled: secrets.nats.ca must be PEM text" in err


async def test_a_tls_url_to_a_server_without_tls_never_sends_the_token(tmp_path: Path, capfd):
    # A plain nats-server (or anyone in the path stripping tls_required from INFO):
    # nats-py would carry on unencrypted; the engine withholds the token instead.
    plain = NatsServer()
    plain.extra_args = ("-V",)  # trace every protocol line the server receives
    plain.start()
    try:
        flow = write_workflow(
            tmp_path / "downgrade-flow",
            NODES,
            name="downgrade-flow",
            triggers=[{"type": "queue", "subject": SUBJECT}],
            config={"nats_url": f"tls://127.0.0.1:{plain.port}"},
            secrets={"nats": {"token": plain.token}},
        )
        err = ""

        def logged() -> bool:
            nonlocal err
            err += capfd.readouterr().err
            return "did not start TLS" in err

        async with serving(flow) as server:
            await wait_for_async("the warning in the log", logged)
            assert not server.queues.subscribed.is_set()
            assert await asyncio.to_thread(post_json, server.http_address + "/run", {}) == (200, mock.ANY)
        err += capfd.readouterr().err
        line = next(line for line in err.splitlines() if "did not start TLS" in line)
        assert f"ERROR [nats] NATS: the NATS server at tls://127.0.0.1:{plain.port} did not start TLS" in line
        assert "Traceback" not in err and plain.token not in err
        trace = plain.log_path.read_text()
        assert "CONNECT" not in trace and plain.token not in trace, trace  # nothing past INFO was sent
    finally:
        plain.close()
