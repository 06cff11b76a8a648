"""Helpers for tests that serve workflows: write a workflow, serve it in-process
or as a real `python -m engine` / `./pipedreamer dev` process, run a real nats-server.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, AsyncIterator, Mapping

from tests.support import REPO, free_port
from tools.pytest import child_python


@contextlib.asynccontextmanager
async def serving(workflow: Path, **overrides: Any) -> AsyncIterator[Any]:
    """The real ServingEngine on loopback, free ports, no permission lock (it is per process)."""
    from engine.serve.process import ServingEngine
    from engine.serve.options import HttpOptions, ServeOptions

    http = overrides.pop("http", None) or HttpOptions()
    options = ServeOptions(workflow=workflow, host="127.0.0.1", port=0, grpc_port=0, http=http, **overrides)
    engine = await ServingEngine.start(options)
    try:
        yield engine
    finally:
        if not engine.gate.draining:
            await engine.shutdown(timeout=overrides.get("shutdown_timeout", 5.0))


def _get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class ServerProcess:
    """A real serving process (`python -m engine …` or `./pipedreamer dev …`), output captured to a file."""

    def __init__(self, argv: list[str], *, port: int, grpc_port: int, env: Mapping[str, str] | None = None, cwd: Path = REPO):
        self.port = port
        self.grpc_port = grpc_port
        self.log_path = Path(tempfile.mkstemp(prefix="pipedreamer-serve-", suffix=".log")[1])
        self._log = self.log_path.open("wb")
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = child_python.pythonpath(REPO)
        full_env.update(env or {})
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, cwd=cwd, env=full_env, stdout=self._log, stderr=subprocess.STDOUT)

    @classmethod
    def engine(cls, workflow: Path, *extra: str, env: Mapping[str, str] | None = None) -> "ServerProcess":
        port, grpc_port = free_port(), free_port()
        argv = [sys.executable, "-m", "engine", "--workflow", str(workflow), "--host", "127.0.0.1",
                "--port", str(port), "--grpc-port", str(grpc_port), *extra]
        return cls(argv, port=port, grpc_port=grpc_port, env=env)

    @classmethod
    def dev(cls, workflow: Path, *extra: str) -> "ServerProcess":
        port, grpc_port = free_port(), free_port()
        argv = [*child_python.cli_command(REPO), "dev", str(workflow), "--port", str(port), "--grpc-port", str(grpc_port), *extra]
        return cls(argv, port=port, grpc_port=grpc_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 20.0) -> float:
        """Seconds from spawn to the first /readyz 200; fails with the process output."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode} before it was ready:\n{self.output()}")
            try:
                status, _ = _get(self.url + "/readyz", timeout=0.5)
                if status == 200:
                    return time.monotonic() - self.started
            except OSError:
                pass
            time.sleep(0.02)
        raise AssertionError(f"server not ready within {timeout}s:\n{self.output()}")

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"server still running after {timeout}s:\n{self.output()}") from None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()
        self.log_path.unlink(missing_ok=True)


def post_json(url: str, body: Any = None, *, data: bytes | None = None, timeout: float = 30.0) -> tuple[int, Any]:
    payload = data if data is not None else json.dumps({} if body is None else body).encode()
    request = urllib.request.Request(url, data=payload, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


class NatsServer:
    """A real nats-server on a free loopback port with token auth; restartable on the same port."""

    # More nats-server flags (TlsNatsServer adds its TLS ones).
    extra_args: tuple[str, ...] = ()

    def __init__(self, token: str = "s3cret-nats-token", host: str = "127.0.0.1"):
        binary = shutil.which("nats-server")
        if binary is None:
            raise AssertionError("nats-server is not installed (apt-get install -y nats-server; .ci/run installs it)")
        self.binary = binary
        self.token = token
        self.host = host
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log_path = Path(tempfile.mkstemp(prefix="nats-server-", suffix=".log")[1])

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [self.binary, "-a", self.host, "-p", str(self.port), "--auth", self.token, *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"nats-server exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=0.2) as sock:
                if sock.recv(4096).startswith(b"INFO"):
                    return
            time.sleep(0.05)
        raise AssertionError(f"nats-server did not listen on {self.port} within {timeout}s:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def close(self) -> None:
        self.stop()
        self.log_path.unlink(missing_ok=True)


def make_tls_files(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for `host` it signed, made with the openssl CLI: (ca.pem, server.pem, server.key)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    cert, key, request = directory / "server.pem", directory / "server.key", directory / "server.csr"
    extensions = directory / "server.ext"
    extensions.write_text(
        f"subjectAltName=IP:{host}\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-noenc"]
    for argv in (
        # A CA as Python 3.13's strict X.509 verification (the image's Python) wants it: with key usage.
        ["openssl", "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca), "-days", "1", "-subj", "/CN=pipedreamer test CA",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["openssl", "req", *ec, "-keyout", str(key), "-out", str(request), "-subj", f"/CN={host}"],
        ["openssl", "x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key), "-set_serial", "2",
         "-days", "1", "-extfile", str(extensions), "-out", str(cert)],
    ):
        subprocess.run(argv, check=True, capture_output=True)
    return ca, cert, key


class TlsNatsServer(NatsServer):
    """A NatsServer that requires TLS (`--tls --tlscert --tlskey`), its certificate for 127.0.0.1 signed by a throwaway CA."""

    def __init__(self, directory: Path, token: str = "s3cret-nats-token"):
        super().__init__(token)
        self.ca, cert, key = make_tls_files(directory)
        self.extra_args = ("--tls", "--tlscert", str(cert), "--tlskey", str(key))

    @property
    def url(self) -> str:
        return f"tls://127.0.0.1:{self.port}"

    def client_tls(self) -> ssl.SSLContext:
        """A client context that trusts this server's CA."""
        return ssl.create_default_context(cafile=str(self.ca))


class JetStreamNatsServer(NatsServer):
    """A NatsServer with JetStream on (`-js`), its store in a directory of its own (key-value buckets live there)."""

    def __init__(self, directory: Path, token: str = "s3cret-nats-token", host: str = "127.0.0.1"):
        super().__init__(token, host)
        directory.mkdir(parents=True, exist_ok=True)
        self.extra_args = ("-js", "-sd", str(directory))

