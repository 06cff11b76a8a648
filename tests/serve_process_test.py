"""The serving process as users and Kubernetes see it: `python -m engine` and
`./pipedreamer dev` spawned for real, driven over sockets and signals."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import shutil
import signal
import threading
import time
from pathlib import Path

import grpc
import pytest
from aiohttp import web
from google.protobuf import struct_pb2

from engine.values import result_to_dict
from proto.pipedreamer.v1 import execution_pb2, execution_pb2_grpc
from tests.serve_harness import ServerProcess, post_json
from tests.support import REPO, SLEEPING_NODE, wait_for, write_workflow

SLOW = {"slow": SLEEPING_NODE}


def _post_in_background(url: str, body: object) -> concurrent.futures.Future:
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    future = pool.submit(post_json, url, body)
    pool.shutdown(wait=False)
    return future


def _wait_in_flight(server: ServerProcess, count: int = 1, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        import urllib.request

        with urllib.request.urlopen(server.url + "/healthz?verbose", timeout=2) as response:
            if json.loads(response.read())["in_flight"] >= count:
                return
        time.sleep(0.02)
    raise AssertionError(f"no run in flight after {timeout}s:\n{server.output()}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_engine_finishes_the_run_in_flight_on_a_signal_and_exits_0(tmp_path: Path, signum):
    flow = write_workflow(tmp_path / "flow", SLOW)
    server = ServerProcess.engine(flow, f"--allow-read={flow}")
    try:
        server.wait_ready()
        run = _post_in_background(server.url + "/run", {"sleep": 1.0})
        _wait_in_flight(server)
        server.signal(signum)
        wait_for("/readyz to answer 503 (draining)", lambda: _request(server.url + "/readyz", method="GET")[0] == 503)
        status, body = post_json(server.url + "/run", {})  # still listening, but draining
        assert status == 503 and "shutting down" in body["error"]
        status, body = run.result(10)
        assert status == 200 and body["status"] == "RUN_STATUS_SUCCEEDED", body
        assert server.wait(15) == 0, server.output()
        output = server.output()
        assert f"received {signal.Signals(signum).name}" in output
        assert "shutting down: 1 run(s) in flight" in output
        assert "stopped" in output
    finally:
        server.close()


def test_shutdown_timeout_bounds_the_wait_and_still_exits_0(tmp_path: Path):
    flow = write_workflow(tmp_path / "flow", SLOW)
    server = ServerProcess.engine(flow, f"--allow-read={flow}", "--shutdown-timeout", "500ms")
    try:
        server.wait_ready()
        run = _post_in_background(server.url + "/run", {"sleep": 60})
        _wait_in_flight(server)
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        status, body = run.result(10)
        assert status == 503 and body["status"] == "RUN_STATUS_CANCELLED"
        assert "--shutdown-timeout 0.5s" in body["error"]
        assert server.wait(10) == 0
        assert time.monotonic() - started < 5
        assert "cancelled 1 run(s) in flight" in server.output()
    finally:
        server.close()


def test_a_module_that_fails_to_import_at_start_exits_1_with_the_file(tmp_path: Path):
    flow = write_workflow(tmp_path / "flow", {"broken": "import no_such_module_xyz\n\nasync def run(ctx, input):\n    return 1\n"})
    server = ServerProcess.engine(flow)
    try:
        assert server.wait(20) == 1
        output = server.output()
        assert "error:" in output and "nodes/broken.py" in output and "no_such_module_xyz" in output
        assert "Traceback" not in output
    finally:
        server.close()


def test_bad_workflow_yaml_exits_1_listing_the_problems(tmp_path: Path):
    flow = tmp_path / "flow"
    flow.mkdir()
    (flow / "workflow.yaml").write_text("name: Not_Valid\nversion: x\nnodes: {}\n")
    server = ServerProcess.engine(flow)
    try:
        assert server.wait(20) == 1
        output = server.output()
        assert "workflow.yaml" in output and "name" in output and "version" in output
    finally:
        server.close()


def test_a_port_in_use_exits_1_naming_it(tmp_path: Path):
    flow = write_workflow(tmp_path / "flow", SLOW)
    first = ServerProcess.engine(flow)
    try:
        first.wait_ready()
        second = ServerProcess.engine(flow, "--port", str(first.port))
        argv = second.proc.args
        second.close()
        # Same HTTP port as the first server (ServerProcess picked the rest).
        port_index = argv.index("--port")
        argv = [*argv[: port_index + 1], str(first.port), *argv[port_index + 2 :]]
        clash = ServerProcess(argv, port=first.port, grpc_port=0)
        try:
            assert clash.wait(20) == 1
            assert f"cannot listen on 127.0.0.1:{first.port} for HTTP" in clash.output()
        finally:
            clash.close()
    finally:
        first.close()


def test_watch_reloads_and_a_broken_reload_keeps_serving_the_old_code(tmp_path: Path):
    flow = write_workflow(tmp_path / "flow", {"node": "async def run(ctx, input):\n    return 'v1'\n"})
    server = ServerProcess.engine(flow, "--watch", f"--allow-read={flow}")
    node = flow / "nodes" / "node.py"
    try:
        server.wait_ready()
        assert post_json(server.url + "/run", {})[1]["output"] == "v1"
        node.write_text("async def run(ctx, input):\n    return 'v2' +\n")  # syntax error
        _wait_for_output(server, "reload failed")
        status, body = post_json(server.url + "/run", {})
        assert status == 200 and body["output"] == "v1"
        node.write_text("async def run(ctx, input):\n    return 'v2'\n")
        _wait_until(lambda: post_json(server.url + "/run", {})[1]["output"] == "v2", server)
        server.signal(signal.SIGTERM)
        assert server.wait(15) == 0
    finally:
        server.close()


def _wait_for_output(server: ServerProcess, text: str, timeout: float = 10.0) -> None:
    _wait_until(lambda: text in server.output(), server, timeout)


def _wait_until(predicate, server: ServerProcess, timeout: float = 10.0) -> None:
    try:
        wait_for("the condition", predicate, timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}:\n{server.output()}") from None


def test_a_node_denied_by_the_permission_lock_fails_its_run_naming_the_flag(tmp_path: Path):
    flow = write_workflow(tmp_path / "flow", {"peek": "async def run(ctx, input):\n    return open('/etc/passwd').read()[:10]\n"})
    server = ServerProcess.engine(flow, f"--allow-read={flow}")
    try:
        server.wait_ready()
        status, body = post_json(server.url + "/run", {})
        assert status == 500
        assert "--allow-read" in body["nodes"]["peek"]["error"]
        assert post_json(server.url + "/run", {})[0] == 500  # and it keeps serving
    finally:
        server.close()


def test_healthz_verbose_reports_the_permission_lock_layers(tmp_path: Path):
    import urllib.request

    flow = write_workflow(tmp_path / "flow", SLOW)
    server = ServerProcess.engine(flow, f"--allow-read={flow}", "--log-format", "json")
    try:
        server.wait_ready()
        with urllib.request.urlopen(server.url + "/healthz?verbose", timeout=5) as response:
            lock = json.loads(response.read())["permission_lock"]
        assert lock["applied"] is True
        assert set(lock["layers"]) == {"landlock", "seccomp", "audit_hook"}
        lines = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
        started = [line for line in lines if line.get("message", "").startswith("serving test-flow")]
        assert started and started[0]["http"] == server.url
        assert started[0]["grpc"] == f"127.0.0.1:{server.grpc_port}"
        assert started[0]["permission_lock"]["layers"]["landlock"]
    finally:
        server.close()


# --- pipedreamer dev ---------------------------------------------------------


class _FakeApis:
    """GitHub and a Slack webhook, on loopback, for the github-digest example."""

    def __init__(self) -> None:
        self.posted: list[object] = []
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(10)

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)

        async def repos(request: web.Request) -> web.Response:
            return web.json_response([
                {"name": "alpha", "full_name": "me/alpha", "stargazers_count": 5, "open_issues_count": 1,
                 "pushed_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z", "description": "a",
                 "html_url": "https://example.invalid/alpha", "language": "Python", "forks_count": 0},
            ])

        async def webhook(request: web.Request) -> web.Response:
            self.posted.append(await request.json())
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", repos)
        app.router.add_route("POST", "/{tail:.*}", webhook)
        runner = web.AppRunner(app)
        self.loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = runner.addresses[0][1]
        ready.set()
        self.loop.run_forever()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def _grpc_run(address: str, value: dict) -> execution_pb2.ExecutionResult:
    with grpc.insecure_channel(address) as channel:
        message = struct_pb2.Value()
        message.struct_value.update(value)
        return execution_pb2_grpc.WorkflowServiceStub(channel).Run(execution_pb2.RunRequest(input=message), timeout=120)


def test_dev_serves_github_digest_over_http_and_grpc_and_stops_on_sigint(tmp_path: Path):
    apis = _FakeApis()
    flow = tmp_path / "github-digest"
    shutil.copytree(REPO / "examples" / "github-digest", flow, ignore=shutil.ignore_patterns(".secrets*"))
    text = (flow / "workflow.yaml").read_text()
    text = text.replace("https://api.github.com", f"http://127.0.0.1:{apis.port}")
    text = text.replace("https://hooks.slack.com", f"http://127.0.0.1:{apis.port}")
    (flow / "workflow.yaml").write_text(text)
    (flow / ".secrets.yaml").write_text("github:\n  token: ghp_testtoken\nslack:\n  webhook_path: /services/T/B/X\n")
    server = ServerProcess.dev(flow)
    try:
        server.wait_ready()
        status, body = post_json(server.url + "/run", {})
        assert body["workflow"] == "github-digest"
        assert status == 200, json.dumps(body, indent=2)
        assert body["status"] == "RUN_STATUS_SUCCEEDED"
        assert body["output"]["sent"] is True and "me/alpha" in apis.posted[0]["text"]
        result = _grpc_run(f"127.0.0.1:{server.grpc_port}", {})
        assert result.status == execution_pb2.RUN_STATUS_SUCCEEDED, result_to_dict(result)
        output = server.output()
        assert f"HTTP http://127.0.0.1:{server.port}, gRPC 127.0.0.1:{server.grpc_port}" in output
        assert "landlock active" in output and f"read={flow}" in output and "write=/tmp" in output
        server.signal(signal.SIGINT)
        assert server.wait(15) == 0
    finally:
        server.close()
        apis.close()


def test_dev_on_the_example_as_is_answers_with_a_result(tmp_path: Path):
    """No network here: the run fails at fetch-repos, but the answer is a full result with HTTP 500."""
    server = ServerProcess.dev(REPO / "examples" / "github-digest")
    try:
        server.wait_ready()
        status, body = post_json(server.url + "/run", {}, timeout=120)
        assert status in (200, 500)
        assert body["workflow"] == "github-digest" and set(body["nodes"]) == {"fetch-repos", "summarize", "notify"}
        result = _grpc_run(f"127.0.0.1:{server.grpc_port}", {})
        assert result.workflow == "github-digest"
        server.signal(signal.SIGTERM)
        assert server.wait(15) == 0
    finally:
        server.close()


def test_dev_sigterm_mid_run_completes_the_run(tmp_path: Path):
    flow = write_workflow(tmp_path / "flow", SLOW)
    server = ServerProcess.dev(flow, "--no-watch")
    try:
        server.wait_ready()
        run = _post_in_background(server.url + "/run", {"sleep": 1.0})
        _wait_in_flight(server)
        server.signal(signal.SIGTERM)
        status, body = run.result(10)
        assert status == 200 and body["output"] == {"slept": 1.0}
        assert server.wait(15) == 0
    finally:
        server.close()


def test_dev_reports_a_broken_workflow_and_exits_1(tmp_path: Path):
    flow = write_workflow(tmp_path / "flow", {"bad": "def run(ctx, input):\n    return 1\n"})
    server = ServerProcess.dev(flow)
    try:
        assert server.wait(20) == 1
        output = server.output()
        assert "error:" in output and "nodes/bad.py" in output and "async def run" in output
    finally:
        server.close()


def test_cold_start_reaches_ready(tmp_path: Path):
    # How fast is measured by `python -m bench` (cold start to /readyz), not here.
    flow = write_workflow(tmp_path / "flow", SLOW)
    server = ServerProcess.engine(flow, f"--allow-read={flow}")
    try:
        server.wait_ready()
        status, body = post_json(server.url + "/run", {})
        assert status == 200 and body["status"] == "RUN_STATUS_SUCCEEDED", body
    finally:
        server.close()


# -- who may call the engine ---------------------------------------------------------


def _request(url: str, *, method: str = "POST", body: bytes = b"{}", headers: dict[str, str] | None = None) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body if method == "POST" else None, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _runs_total(server: ServerProcess) -> float:
    import urllib.request

    with urllib.request.urlopen(server.url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("pipedreamer_runs_total{"))


def test_a_web_page_cannot_drive_the_dev_server_but_curl_can(tmp_path: Path):
    """Cross-site POST (text/plain, no preflight), DNS rebinding and a cross-site GET are refused
    before anything runs; a client without Origin (curl -d) and the engine's own origin work."""
    flow = write_workflow(tmp_path / "flow", SLOW)
    server = ServerProcess.dev(flow, "--no-watch")
    try:
        server.wait_ready()
        run = server.url + "/run"
        refusals = [
            ({"Origin": "http://attacker.example", "Content-Type": "text/plain"}, "POST",
             "cross-origin request refused: Origin http://attacker.example is not this engine"),
            ({"Origin": "null"}, "POST", "cross-origin request refused: Origin null"),
            ({"Host": f"attacker.example:{server.port}"}, "POST",
             f"Host attacker.example:{server.port} refused: this engine listens on loopback only"),
            ({"Sec-Fetch-Site": "cross-site"}, "GET", "cross-site request refused (Sec-Fetch-Site: cross-site)"),
        ]  # fmt: skip
        for headers, method, message in refusals:
            status, body = _request(run, method=method, headers=headers)
            assert status == 403 and body["error"].startswith(message), (headers, body)
        status, body = _request(server.url + "/metrics", method="GET", headers={"Origin": "http://attacker.example"})
        assert status == 403
        assert _runs_total(server) == 0  # nothing ran
        assert _request(run)[0] == 200  # curl -d
        assert _request(run, headers={"Origin": server.url, "Sec-Fetch-Site": "same-origin"})[0] == 200
        assert _request(run, headers={"Host": f"localhost:{server.port}"})[0] == 200
        assert _runs_total(server) == 3
    finally:
        server.close()


def test_a_caller_that_hangs_up_cancels_its_run(tmp_path: Path):
    flow = write_workflow(tmp_path / "flow", SLOW)
    server = ServerProcess.engine(flow, f"--allow-read={flow}")
    try:
        server.wait_ready()
        import socket as socket_module

        body = json.dumps({"sleep": 30}).encode()
        with socket_module.create_connection(("127.0.0.1", server.port)) as conn:
            conn.sendall(
                b"POST /run HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
            )
            _wait_in_flight(server)
        wait_for("the run to be cancelled", lambda: _request(server.url + "/healthz?verbose", method="GET")[1]["in_flight"] == 0, 10)
        import urllib.request

        with urllib.request.urlopen(server.url + "/metrics", timeout=5) as response:
            assert 'pipedreamer_runs_total{status="cancelled",workflow="test-flow"} 1.0' in response.read().decode()
    finally:
        server.close()


def test_runs_in_flight_are_bounded_by_default(tmp_path: Path):
    flow = write_workflow(tmp_path / "flow", SLOW)
    server = ServerProcess.engine(flow, f"--allow-read={flow}")
    try:
        server.wait_ready()
        status, health = _request(server.url + "/healthz?verbose", method="GET")
        assert health["max_concurrent_runs"] == 64
    finally:
        server.close()


def test_a_node_output_past_max_output_fails_the_node_and_the_engine_keeps_serving(tmp_path: Path):
    big = "async def run(ctx, input):\n    return 'x' * input['mib'] * 1024 * 1024\n"
    flow = write_workflow(tmp_path / "flow", {"big": big}, node_options={"big": {"retries": 0}})
    server = ServerProcess.engine(flow, f"--allow-read={flow}", "--grpc-port", "-1")
    try:
        server.wait_ready()
        status, body = post_json(server.url + "/run", {"mib": 20})
        assert status == 500, body
        assert body["nodes"]["big"]["error"] == "output of node big is larger than 16 MiB as JSON (--max-output)"
        status, body = post_json(server.url + "/run", {"mib": 1})
        assert status == 200 and len(body["output"]) == 1024 * 1024
    finally:
        server.close()
    server = ServerProcess.engine(flow, f"--allow-read={flow}", "--grpc-port", "-1", "--max-output", "512KiB")
    try:
        server.wait_ready()
        status, body = post_json(server.url + "/run", {"mib": 1})
        assert status == 500 and "larger than 524288 bytes as JSON (--max-output)" in body["nodes"]["big"]["error"]
    finally:
        server.close()
