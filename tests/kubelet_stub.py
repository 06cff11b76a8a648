"""A stand-in kubelet for the API server's pod log requests (GET /containerLogs/...).

The test cluster has no kubelet. Pointing a Node's address and kubelet port at
this HTTPS server lets `pipedreamer logs` travel the real path: CLI → API
server (pods/log) → "kubelet". Without --kubelet-certificate-authority the API
server does not verify the kubelet's serving certificate, so a self-signed
one will do.
"""

from __future__ import annotations

import http.server
import ssl
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Callable


class KubeletStub:
    """Serves `logs[(namespace, pod, container)]` (lines, or a callable giving them at request
    time, e.g. a real container's output); with follow=true, then `follow_more` slowly, then closes."""

    def __init__(self, directory: Path):
        self.logs: dict[tuple[str, str, str], list[str] | Callable[[], list[str]]] = {}
        self.follow_more: dict[tuple[str, str, str], list[str]] = {}
        self.requests: list[str] = []
        key, cert = directory / "kubelet.key", directory / "kubelet.crt"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-noenc",
             "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=stub-kubelet",
             "-addext", "subjectAltName=IP:127.0.0.1"],
            check=True, capture_output=True,
        )  # fmt: skip
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):  # http.server's naming
                stub.requests.append(self.path)
                url = urllib.parse.urlsplit(self.path)
                parts = url.path.strip("/").split("/")
                query = urllib.parse.parse_qs(url.query)
                if len(parts) != 4 or parts[0] != "containerLogs":
                    self.send_error(404)
                    return
                key = (parts[1], parts[2], parts[3])
                source = stub.logs.get(key, [])
                lines = list(source() if callable(source) else source)
                if "tailLines" in query:
                    lines = lines[-int(query["tailLines"][0]):] if int(query["tailLines"][0]) else []
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                for line in lines:
                    self.wfile.write(line.encode() + b"\n")
                self.wfile.flush()
                if query.get("follow") == ["true"]:
                    for line in stub.follow_more.get(key, []):
                        time.sleep(0.2)
                        self.wfile.write(line.encode() + b"\n")
                        self.wfile.flush()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def node(self, name: str) -> dict:
        """A Node whose kubelet is this stub (create it, then its status)."""
        return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}

    def node_status(self) -> dict:
        return {
            "status": {
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
            }
        }

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
