"""Bearer-token auth against a real `docker-registry` configured for token auth.

The token server is the test's own (a thread on loopback): it checks basic
credentials and signs a JWT with a key whose certificate the registry trusts,
as a Docker Hub / Harbor / Zot-with-OIDC token service would.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from builder.errors import BuildError
from builder.registry import Credentials, push_image
from tests.registry_server import Registry, make_layout

USER, PASSWORD = "bob", "builder"
SERVICE, ISSUER = "pipedreamer-test-registry", "pipedreamer-test-issuer"
IDENTITY_TOKEN = "identity-t0ken-for-bob"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenIssuer:
    def __init__(self, workdir: Path) -> None:
        self.key = workdir / "token.key"
        self.cert = workdir / "token.crt"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(self.key), "-out",
             str(self.cert), "-days", "2", "-subj", "/CN=pipedreamer-test-token"],
            check=True, capture_output=True,
        )  # fmt: skip
        der = subprocess.run(["openssl", "x509", "-in", str(self.cert), "-outform", "DER"], check=True,
                             capture_output=True).stdout  # fmt: skip
        self.x5c = base64.b64encode(der).decode()
        self.requests: list[dict] = []

    def sign(self, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"alg": "RS256", "typ": "JWT", "x5c": [self.x5c]}
        claims = {"iss": ISSUER, "sub": USER, "aud": SERVICE, "exp": now + 300, "nbf": now - 10, "iat": now,
                  "jti": uuid.uuid4().hex, "access": access}  # fmt: skip
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)], input=signing_input.encode(),
                                   check=True, capture_output=True).stdout  # fmt: skip
        return f"{signing_input}.{b64url(signature)}"


@pytest.fixture
def token_registry(tmp_path: Path):
    issuer = TokenIssuer(tmp_path)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # http.server's name
            query = parse_qs(urlsplit(self.path).query)
            issuer.requests.append(query)
            expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.end_headers()
                return
            body = json.dumps({"token": issuer.sign(query.get("scope", []))}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # http.server's name
            # OAuth2 refresh-token grant: how a docker identity token becomes an access token.
            length = int(self.headers.get("Content-Length", "0"))
            form = parse_qs(self.rfile.read(length).decode())
            issuer.requests.append(form)
            if form.get("grant_type") != ["refresh_token"] or form.get("refresh_token") != [IDENTITY_TOKEN]:
                self.send_response(401)
                self.end_headers()
                return
            body = json.dumps({"access_token": issuer.sign(form.get("scope", [""])[0].split())}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    registry = Registry(tmp_path / "registry", token_auth={
        "realm": f"http://127.0.0.1:{server.server_port}/token",
        "service": SERVICE, "issuer": ISSUER, "rootcertbundle": str(issuer.cert),
    })  # fmt: skip
    yield registry, issuer
    registry.stop()
    server.shutdown()
    server.server_close()


def test_bearer_token_flow(tmp_path: Path, token_registry, monkeypatch: pytest.MonkeyPatch) -> None:
    registry, issuer = token_registry
    monkeypatch.setenv("PIPEDREAMER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "none"))
    layout = make_layout(tmp_path / "image")
    with pytest.raises(BuildError, match="refused the credentials"):
        push_image(layout, f"{registry.host}/secure/flow:1.0.0", credentials=Credentials(USER, "nope"))
    result = push_image(layout, f"{registry.host}/secure/flow:1.0.0", credentials=Credentials(USER, PASSWORD))
    assert result.uploaded == 3
    assert any("repository:secure/flow:pull,push" in q.get("scope", []) for q in issuer.requests)
    assert all(q.get("service") == [SERVICE] for q in issuer.requests)
    token = issuer.sign(["repository:secure/flow:pull"])
    got = requests.get(f"http://{registry.host}/v2/secure/flow/manifests/1.0.0",
                       headers={"Authorization": f"Bearer {token}",
                                "Accept": "application/vnd.oci.image.manifest.v1+json"}, timeout=10)  # fmt: skip
    assert got.status_code == 200
    assert got.headers["Docker-Content-Digest"] == result.digest


def install_helper(bin_dir: Path, username: str, secret: str) -> None:
    """`docker-credential-pdtest`: a stand-in for a keychain helper, answering the docker protocol."""
    bin_dir.mkdir(exist_ok=True)
    helper = bin_dir / "docker-credential-pdtest"
    helper.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        "server = sys.stdin.read()\n"
        f"print(json.dumps({{'ServerURL': server, 'Username': {username!r}, 'Secret': {secret!r}}}))\n"
    )
    helper.chmod(0o755)


@pytest.mark.parametrize("username,secret", [(USER, PASSWORD), ("<token>", IDENTITY_TOKEN)])
def test_credentials_from_a_docker_credential_helper(
    tmp_path: Path, token_registry, monkeypatch: pytest.MonkeyPatch, username: str, secret: str
) -> None:
    registry, issuer = token_registry
    monkeypatch.setenv("PIPEDREAMER_CACHE", str(tmp_path / "cache"))
    docker_config = tmp_path / "docker"
    docker_config.mkdir()
    (docker_config / "config.json").write_text(json.dumps({"credsStore": "missing-store",
                                                           "credHelpers": {registry.host: "pdtest"}}))  # fmt: skip
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config))
    install_helper(tmp_path / "bin", username, secret)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    result = push_image(make_layout(tmp_path / "image"), f"{registry.host}/secure/flow:1.0.0")
    assert result.uploaded == 3
    grants = [q.get("grant_type") for q in issuer.requests]
    assert (["refresh_token"] in grants) == (username == "<token>")
