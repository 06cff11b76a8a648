"""The HTTP server through real sockets: /run status codes, limits, faults, health, metrics."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import pytest

from engine.serve.options import HttpOptions
from tests.serve_harness import serving
from tests.support import wait_for_async, write_workflow

NODES = {
    "echo": """
        async def run(ctx, input):
            return {"echo": input}
    """,
    "slow": """
        import asyncio

        async def run(ctx, input):
            asked = input.get("echo") if isinstance(input, dict) else None
            delay = asked.get("sleep", 0) if isinstance(asked, dict) else 0
            await asyncio.sleep(delay)
            return {"slept": delay, "got": input}
    """,
}


@pytest.fixture
def workflow(tmp_path: Path) -> Path:
    return write_workflow(tmp_path / "flow", NODES, [("echo", "slow")])


async def _post(session: aiohttp.ClientSession, url: str, body: object = None, **kwargs):
    data = kwargs.pop("data", None)
    if data is None and body is not None:
        data = json.dumps(body)
    async with session.post(url, data=data, **kwargs) as response:
        return response.status, await response.json(content_type=None)


async def test_post_run_returns_the_canonical_json_result(workflow: Path):
    async with serving(workflow) as server, aiohttp.ClientSession() as session:
        status, body = await _post(session, server.http_address + "/run", {"who": "me"})
        assert status == 200
        assert body["status"] == "RUN_STATUS_SUCCEEDED"
        assert body["workflow"] == "test-flow" and body["version"] == "1.0.0"
        assert body["output"] == {"slept": 0, "got": {"echo": {"who": "me"}}}
        assert set(body["nodes"]) == {"echo", "slow"}
        assert body["nodes"]["echo"]["status"] == "NODE_STATUS_SUCCEEDED"
        assert body["runId"] and body["duration"].endswith("s")


async def test_get_and_empty_body_mean_empty_object_and_trigger_is_passed(workflow: Path):
    async with serving(workflow) as server, aiohttp.ClientSession() as session:
        async with session.get(server.http_address + "/run?trigger=daily") as response:
            body = await response.json()
            assert response.status == 200
            assert body["output"]["got"] == {"echo": {}}
            assert body["trigger"] == "daily"
        status, body = await _post(session, server.http_address + "/run", data=b"")
        assert status == 200 and body["output"]["got"] == {"echo": {}}
        status, body = await _post(session, server.http_address + "/run", data=b"  \n")
        assert status == 200 and body["output"]["got"] == {"echo": {}}


@pytest.mark.parametrize("payload", [[1, 2], "x", 3.5, None, True])
async def test_any_json_value_is_accepted_as_input(workflow: Path, payload):
    async with serving(workflow) as server, aiohttp.ClientSession() as session:
        status, body = await _post(session, server.http_address + "/run", data=json.dumps(payload))
        assert status == 200, body
        assert body["output"]["got"] == {"echo": payload}


@pytest.mark.parametrize(
    "data, fragment",
    [
        (b"{bad", "invalid JSON body: Expecting property name"),
        (b'{"a": 1} trailing', "invalid JSON body: Extra data"),
        (b'{"a": NaN}', "NaN is not valid JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
    ],
)
async def test_bad_json_is_400_with_a_message_and_the_server_keeps_serving(workflow: Path, data, fragment):
    async with serving(workflow) as server, aiohttp.ClientSession() as session:
        status, body = await _post(session, server.http_address + "/run", data=data)
        assert status == 400
        assert fragment in body["error"]
        status, _ = await _post(session, server.http_address + "/run", {})
        assert status == 200


async def test_deeply_nested_json_is_400_not_a_crash_and_the_server_keeps_serving(workflow: Path, capfd):
    async with serving(workflow) as server, aiohttp.ClientSession() as session:
        for deep in (b"[" * 100_000 + b"]" * 100_000, b'{"a": ' * 100_000 + b"1" + b"}" * 100_000):
            async with session.post(server.http_address + "/run", data=deep) as response:
                assert response.status == 400
                assert response.content_type == "application/json"
                assert await response.json() == {"error": "invalid JSON body: nested too deeply"}
        # Deep enough to pass the decoder, too deep for a result: refused at the door too.
        async with session.post(server.http_address + "/run", data=b"[" * 400 + b"]" * 400) as response:
            assert response.status == 400
            assert await response.json() == {"error": "invalid JSON body: nested too deeply (more than 100 levels)"}
        status, body = await _post(session, server.http_address + "/run", {"still": "here"})
        assert status == 200 and body["output"]["got"] == {"echo": {"still": "here"}}
        text = server.metrics.render().decode()
        assert 'pipedreamer_runs_rejected_total{reason="bad_json",workflow="test-flow"} 3.0' in text
    err = capfd.readouterr().err
    assert "Traceback" not in err and "RecursionError" not in err


async def test_body_over_the_limit_is_413_by_content_length_and_when_chunked(workflow: Path):
    async with serving(workflow, http=HttpOptions(max_body=1024)) as server, aiohttp.ClientSession() as session:
        big = json.dumps({"blob": "x" * 5000}).encode()
        status, body = await _post(session, server.http_address + "/run", data=big)
        assert status == 413 and "limit is 1024 bytes" in body["error"]

        async def chunks():
            for _ in range(10):
                yield b" " * 512  # no Content-Length: counted as it streams

        status, body = await _post(session, server.http_address + "/run", data=chunks())
        assert status == 413 and "exceeds the limit of 1024 bytes" in body["error"]
        small = json.dumps({"blob": "x" * 500})
        status, _ = await _post(session, server.http_address + "/run", data=small)
        assert status == 200


async def test_huge_declared_body_is_refused_before_it_is_sent(workflow: Path):
    async with serving(workflow) as server:
        host, port = server.http_address.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /run HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n{")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 413")
        assert b"Connection: close" in head
        writer.close()


async def test_default_body_limit_is_ten_mebibytes(workflow: Path):
    async with serving(workflow) as server, aiohttp.ClientSession() as session:
        ok = json.dumps({"blob": "x" * (10 * 1024 * 1024 - 100)})
        status, _ = await _post(session, server.http_address + "/run", data=ok)
        assert status == 200
        status, _ = await _post(session, server.http_address + "/run", data=ok + " " * 200)
        assert status == 413


async def test_slowloris_headers_cannot_hold_the_engine(workflow: Path):
    """Connections that never finish their headers are closed after --idle-timeout; others are served meanwhile."""
    options = HttpOptions(idle_timeout=2.0, body_timeout=2.0)
    async with serving(workflow, http=options) as server, aiohttp.ClientSession() as session:
        host, port = server.http_address.removeprefix("http://").split(":")
        slow = []
        for _ in range(50):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"POST /run HTTP/1.1\r\nHost: localhost\r\n")
            slow.append((reader, writer))
        started = time.monotonic()
        for _ in range(3):  # trickle: a header line now and then, never the end
            for _, writer in slow:
                writer.write(b"X-Slow: 1\r\n")
            status, _ = await _post(session, server.http_address + "/run", {})
            assert status == 200
            await asyncio.sleep(0.1)
        # Served while all 50 were still connected (before the idle timeout).
        assert time.monotonic() - started < options.idle_timeout
        assert not any(reader.at_eof() for reader, _ in slow)
        closed = await asyncio.gather(*(asyncio.wait_for(r.read(), 10) for r, _ in slow))
        assert all(data == b"" for data in closed)  # the server hung up on each
        assert time.monotonic() - started < options.idle_timeout + 5
        for _, writer in slow:
            writer.close()
        status, _ = await _post(session, server.http_address + "/run", {})
        assert status == 200


async def test_slow_body_gets_408_and_the_connection_is_closed(workflow: Path):
    async with serving(workflow, http=HttpOptions(body_timeout=0.5)) as server, aiohttp.ClientSession() as session:
        host, port = server.http_address.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /run HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n{")
        await writer.drain()
        started = time.monotonic()
        response = await asyncio.wait_for(reader.read(), 5)
        assert response.startswith(b"HTTP/1.1 408")
        assert b"not received within 0.5 s" in response
        assert time.monotonic() - started < 3
        writer.close()
        status, _ = await _post(session, server.http_address + "/run", {})
        assert status == 200


async def test_runs_past_the_cap_get_429_with_a_clear_message(workflow: Path):
    async with serving(workflow, max_concurrent_runs=2) as server, aiohttp.ClientSession() as session:
        url = server.http_address + "/run"
        slow = [asyncio.create_task(_post(session, url, {"sleep": 0.5})) for _ in range(2)]
        await wait_for_async("two runs in flight", lambda: server.gate.in_flight == 2)
        async with session.post(url, json={}) as response:
            assert response.status == 429
            assert response.headers["Retry-After"] == "1"
            body = await response.json()
        assert "too many runs in flight: the limit is 2 (--max-concurrent-runs)" in body["error"]
        assert [status for status, _ in await asyncio.gather(*slow)] == [200, 200]
        status, _ = await _post(session, url, {})
        assert status == 200
        async with session.get(server.http_address + "/metrics") as response:
            text = await response.text()
        assert 'pipedreamer_runs_rejected_total{reason="at_capacity",workflow="test-flow"} 1.0' in text


async def test_draining_answers_503_on_run_and_readyz_while_runs_in_flight_finish(workflow: Path):
    async with serving(workflow) as server, aiohttp.ClientSession() as session:
        url = server.http_address
        async with session.get(url + "/readyz") as response:
            assert response.status == 200 and (await response.json())["status"] == "ready"
        slow = asyncio.create_task(_post(session, url + "/run", {"sleep": 0.6}))
        await wait_for_async("a run in flight", lambda: server.gate.in_flight == 1)
        shutdown = asyncio.create_task(server.shutdown(timeout=5))
        await wait_for_async("the engine draining", lambda: server.gate.draining)
        async with aiohttp.ClientSession() as other:
            async with other.get(url + "/readyz") as response:
                assert response.status == 503 and (await response.json())["status"] == "draining"
            status, body = await _post(other, url + "/run", {})
            assert status == 503 and "shutting down" in body["error"]
        status, body = await slow
        assert status == 200 and body["status"] == "RUN_STATUS_SUCCEEDED"
        await shutdown


async def test_shutdown_deadline_cancels_runs_and_answers_them(workflow: Path):
    async with serving(workflow) as server, aiohttp.ClientSession() as session:
        slow = asyncio.create_task(_post(session, server.http_address + "/run", {"sleep": 30}))
        await wait_for_async("a run in flight", lambda: server.gate.in_flight == 1)
        started = time.monotonic()
        await server.shutdown(timeout=0.3)
        status, body = await slow
        assert time.monotonic() - started < 3
        assert status == 503
        assert body["status"] == "RUN_STATUS_CANCELLED"
        assert "--shutdown-timeout 0.3s" in body["error"]


async def test_healthz_readyz_and_verbose_health(workflow: Path):
    async with serving(workflow, max_concurrent_runs=7) as server, aiohttp.ClientSession() as session:
        async with session.get(server.http_address + "/healthz") as response:
            assert response.status == 200 and await response.json() == {"status": "ok"}
        async with session.get(server.http_address + "/healthz?verbose") as response:
            body = await response.json()
        assert body["status"] == "ok"
        assert body["workflow"] == "test-flow" and body["version"] == "1.0.0"
        assert body["nodes"] == ["echo", "slow"]
        assert body["in_flight"] == 0 and body["max_concurrent_runs"] == 7
        assert body["permission_lock"] == {"applied": False}


async def test_metrics_count_runs_by_status_and_time_nodes(tmp_path: Path):
    flow = write_workflow(tmp_path / "m", {"ok": "async def run(ctx, input):\n    if input.get('fail'):\n        raise ValueError('no')\n    return 1\n"})
    async with serving(flow) as server, aiohttp.ClientSession() as session:
        for body in ({}, {}, {"fail": True}):
            await _post(session, server.http_address + "/run", body)
        async with session.get(server.http_address + "/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            text = await response.text()
    assert 'pipedreamer_runs_total{status="succeeded",workflow="test-flow"} 2.0' in text
    assert 'pipedreamer_runs_total{status="failed",workflow="test-flow"} 1.0' in text
    assert 'pipedreamer_node_duration_seconds_count{node="ok",status="succeeded",workflow="test-flow"} 2.0' in text
    assert 'pipedreamer_node_duration_seconds_count{node="ok",status="failed",workflow="test-flow"} 1.0' in text
    assert 'pipedreamer_runs_in_flight{workflow="test-flow"} 0.0' in text


async def test_unknown_routes_and_methods_answer_json(workflow: Path):
    async with serving(workflow) as server, aiohttp.ClientSession() as session:
        async with session.get(server.http_address + "/nope") as response:
            assert response.status == 404 and (await response.json())["error"] == "Not Found"
        async with session.put(server.http_address + "/run") as response:
            assert response.status == 405 and "POST" in response.headers["Allow"]


FAULTS = {
    "raises": """
        async def run(ctx, input):
            raise RuntimeError("node exploded")
    """,
    "hangs": """
        import asyncio

        async def run(ctx, input):
            await asyncio.sleep(3600)
    """,
    "nonjson": """
        async def run(ctx, input):
            return {"when": object()}
    """,
    "blocks": """
        import time

        async def run(ctx, input):
            time.sleep(0.6)
            return {"slept": True}
    """,
}


@pytest.mark.parametrize(
    "node, node_status, fragment",
    [
        ("raises", "NODE_STATUS_FAILED", "RuntimeError: node exploded (at nodes/raises.py:3)"),
        ("hangs", "NODE_STATUS_TIMED_OUT", "timed out after 300 ms"),
        ("nonjson", "NODE_STATUS_FAILED", "not JSON-serialisable"),
        ("blocks", "NODE_STATUS_TIMED_OUT", "blocked the event loop"),
    ],
)
async def test_faulty_nodes_fail_the_run_with_500_and_the_server_keeps_serving(tmp_path: Path, node, node_status, fragment):
    flow = write_workflow(
        tmp_path / "faults",
        {node: FAULTS[node], "ok": "async def run(ctx, input):\n    return 'fine'\n"},
        node_options={node: {"timeout": "300ms"}},
    )
    async with serving(flow) as server, aiohttp.ClientSession() as session:
        status, body = await _post(session, server.http_address + "/run", {})
        assert status == 500
        assert body["status"] == "RUN_STATUS_FAILED"
        assert body["nodes"][node]["status"] == node_status
        assert fragment in body["nodes"][node]["error"]
        assert fragment in body["error"]
        async with session.get(server.http_address + "/healthz") as response:
            assert response.status == 200
        async with session.get(server.http_address + "/readyz") as response:
            assert response.status == 200


async def test_a_blocking_node_stalls_but_does_not_break_other_requests(tmp_path: Path):
    """time.sleep blocks the one event loop: requests wait for it, then all are answered."""
    flow = write_workflow(tmp_path / "blocking", {"blocks": FAULTS["blocks"]}, node_options={"blocks": {"timeout": "5s"}})
    async with serving(flow) as server, aiohttp.ClientSession() as session:
        run = asyncio.create_task(_post(session, server.http_address + "/run", {}))
        # No state to wait on here: while the node blocks, this coroutine (same loop) cannot run.
        await asyncio.sleep(0.1)
        async with session.get(server.http_address + "/healthz") as response:
            assert response.status == 200
        status, body = await run
        assert status == 200 and body["output"] == {"slept": True}


async def test_secret_values_never_reach_http_answers(tmp_path: Path):
    flow = write_workflow(
        tmp_path / "secret",
        {"leak": "async def run(ctx, input):\n    raise ValueError('token is ' + ctx.secrets['svc']['token'])\n"},
        secrets={"svc": {"token": "hunter2-very-secret"}},
    )
    async with serving(flow) as server, aiohttp.ClientSession() as session:
        async with session.post(server.http_address + "/run", json={}) as response:
            text = await response.text()
    assert response.status == 500
    assert "hunter2-very-secret" not in text and "token is ***" in text
