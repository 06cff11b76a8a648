"""The built image, run as the pod runs it: umoci + runc, read-only root, uid 65534, no capabilities.

The engine serves on the host network (runc without a network namespace) and
`POST /run` must succeed; its startup log must report the permission lock.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests

from builder.build import build_image
from tests.image_support import REPO, prepare_bundle, real_base, shared_cache
from tests.support import free_port


def test_hello_image_serves_post_run_under_runc(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    base = real_base(tmp_path_factory)
    result = build_image(REPO / "examples" / "hello", base, tmp_path / "image", cache=shared_cache(tmp_path_factory))
    secrets = tmp_path / "secrets"
    (secrets / "github").mkdir(parents=True)
    (secrets / "github" / "token").write_text("not-a-real-token")
    http_port, grpc_port = free_port(), free_port()
    config = json.loads((tmp_path / "image" / "index.json").read_text())
    tag = config["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
    bundle = prepare_bundle(tmp_path / "image", tag, tmp_path, host_network=True,
                            read_only_mounts={"/app/secrets": secrets})  # fmt: skip
    runtime = json.loads((bundle / "config.json").read_text())
    runtime["process"]["args"] += ["--host", "127.0.0.1", "--port", str(http_port), "--grpc-port", str(grpc_port)]
    (bundle / "config.json").write_text(json.dumps(runtime))
    assert runtime["process"]["args"][:3] == ["/usr/bin/python3", "-m", "engine"]

    name = f"pd-run-{uuid.uuid4().hex[:10]}"
    log = tmp_path / "engine.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(["runc", "run", name], cwd=bundle, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"the image exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if requests.get(f"http://127.0.0.1:{http_port}/readyz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"/readyz not 200 within 60 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        response = requests.post(f"http://127.0.0.1:{http_port}/run", json={"name": "pod"}, timeout=30)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "RUN_STATUS_SUCCEEDED"
        # The first scrape imports prometheus_client, under the lock, from the image's site-packages.
        metrics = requests.get(f"http://127.0.0.1:{http_port}/metrics", timeout=30)
        assert metrics.status_code == 200, metrics.text
        assert 'pipedreamer_runs_total{status="succeeded",workflow="hello"} 1.0' in metrics.text
        subprocess.run(["runc", "kill", name, "TERM"], capture_output=True)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            subprocess.run(["runc", "kill", name, "KILL"], capture_output=True)
            process.wait(10)
        subprocess.run(["runc", "delete", "--force", name], capture_output=True)
        shutil.rmtree(bundle, ignore_errors=True)
    text = log.read_text()
    assert "permission lock:" in text, text
    assert "not-a-real-token" not in text
    assert result.image == "hello:1.0.0"
