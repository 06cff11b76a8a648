"""Tests for builder.registry without a server: references, credentials, retries, auth."""

from __future__ import annotations

import base64
import json
import os
import sys
import textwrap
from pathlib import Path

import pytest
import requests

from builder.errors import BuildError
from builder.registry import Credentials, RegistryClient, docker_config_credentials, is_loopback, parse_reference


def test_parse_reference() -> None:
    ref = parse_reference("localhost:5000/team/flow:1.0.0")
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == ("localhost:5000", "team/flow", "1.0.0", "")
    pinned = parse_reference("zot.example.com/bases/python@sha256:" + "a" * 64)
    assert pinned.digest == "sha256:" + "a" * 64 and pinned.tag == ""
    assert str(pinned) == "zot.example.com/bases/python@sha256:" + "a" * 64
    for bad in ("flow:1.0", "localhost:5000/Flow", "localhost:5000/flow@sha256:abc", "localhost:5000/flow:bad tag"):
        with pytest.raises(BuildError):
            parse_reference(bad)


def test_loopback_hosts_use_http() -> None:
    assert is_loopback("localhost:5000") and is_loopback("127.0.0.1:5000") and is_loopback("[::1]:5000")
    assert not is_loopback("zot.example.com") and not is_loopback("10.0.0.1:5000")
    assert RegistryClient("127.0.0.1:5000").base_url == "http://127.0.0.1:5000"
    assert RegistryClient("zot.example.com").base_url == "https://zot.example.com"
    assert RegistryClient("zot.example.com", insecure=True).base_url == "http://zot.example.com"


def test_docker_config_credentials(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"auths": {
        "https://zot.example.com": {"auth": base64.b64encode(b"alice:pa:ss").decode()},
        "localhost:5000": {"username": "bob", "password": "pw"},
        "tok.example.com": {"registrytoken": "t0k"},
    }}))  # fmt: skip
    assert docker_config_credentials("zot.example.com", config) == Credentials("alice", "pa:ss")
    assert docker_config_credentials("localhost:5000", config) == Credentials("bob", "pw")
    assert docker_config_credentials("tok.example.com", config) == Credentials(token="t0k")
    assert docker_config_credentials("other.example.com", config) is None
    assert docker_config_credentials("x", tmp_path / "missing.json") is None
    assert "pa:ss" not in repr(docker_config_credentials("zot.example.com", config))


class FakeResponse:
    def __init__(self, status: int, headers: dict | None = None, body: bytes = b"") -> None:
        self.status_code = status
        self.headers = headers or {}
        self.content = body
        self.text = body.decode()
        self.reason = ""
        self.url = ""  # requests sets the final URL; "" means the one requested

    def json(self) -> dict:
        return json.loads(self.content)

    def close(self) -> None:
        pass


class FakeSession:
    """Answers from a script: a list of responses or exceptions, in order."""

    def __init__(self, script: list) -> None:
        self.script = list(script)
        self.sent: list[tuple[str, str, dict]] = []
        self.trust_env = True

    def request(self, method: str, url: str, headers: dict | None = None, **_: object) -> FakeResponse:
        self.sent.append((method, url, dict(headers or {})))
        answer = self.script.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def get(self, url: str, auth: tuple | None = None, **_: object) -> FakeResponse:
        self.sent.append(("GET", url, {"auth": auth}))
        return self.script.pop(0)


def client(script: list, **kw: object) -> tuple[RegistryClient, FakeSession, list[float]]:
    session = FakeSession(script)
    sleeps: list[float] = []
    return RegistryClient("zot.example.com", session=session, sleep=sleeps.append, **kw), session, sleeps  # type: ignore[arg-type]


def test_retries_5xx_and_resets_with_exponential_backoff() -> None:
    c, session, sleeps = client([
        FakeResponse(503), requests.ConnectionError("connection reset by peer"), FakeResponse(502), FakeResponse(200),
    ], backoff=0.1)  # fmt: skip
    assert c.blob_exists("flow", "sha256:" + "a" * 64)
    assert sleeps == [0.1, 0.2, 0.4]
    assert len(session.sent) == 4


def test_gives_up_after_the_retries_with_the_reason() -> None:
    c, _, sleeps = client([FakeResponse(500)] * 3, retries=3, backoff=1)
    with pytest.raises(BuildError, match=r"HEAD /v2/flow/blobs/sha256:a+ failed after 3 attempt\(s\): HTTP 500"):
        c.blob_exists("flow", "sha256:" + "a" * 64)
    assert sleeps == [1, 2]


def test_bearer_challenge_fetches_a_token_with_scope_and_credentials() -> None:
    challenge = 'Bearer realm="https://auth.example.com/token",service="zot",scope="repository:flow:pull"'
    c, session, _ = client([
        FakeResponse(401, {"WWW-Authenticate": challenge}),
        FakeResponse(200, body=json.dumps({"token": "abc"}).encode()),
        FakeResponse(404),
    ], credentials=Credentials("alice", "pw"))  # fmt: skip
    assert not c.blob_exists("flow", "sha256:" + "b" * 64)
    token_call = session.sent[1]
    assert token_call[1].startswith("https://auth.example.com/token?service=zot&scope=repository%3Aflow%3Apull")
    assert token_call[2]["auth"] == ("alice", "pw")
    assert session.sent[2][2]["Authorization"] == "Bearer abc"


def test_basic_challenge_without_credentials_says_how_to_give_them() -> None:
    c, _, _ = client([FakeResponse(401, {"WWW-Authenticate": 'Basic realm="zot"'})])
    with pytest.raises(BuildError, match="requires credentials.*docker/config.json"):
        c.blob_exists("flow", "sha256:" + "c" * 64)


def test_refused_token_request() -> None:
    challenge = 'Bearer realm="https://auth.example.com/token",service="zot"'
    c, _, _ = client([FakeResponse(401, {"WWW-Authenticate": challenge}), FakeResponse(401)],
                     credentials=Credentials("alice", "wrong"))  # fmt: skip
    with pytest.raises(BuildError, match="refused the credentials"):
        c.blob_exists("flow", "sha256:" + "d" * 64)


def test_upload_restarts_after_a_dropped_put(tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(b"data")
    c, session, _ = client([
        FakeResponse(202, {"Location": "/v2/flow/blobs/uploads/1"}),
        requests.ConnectionError("reset"),
        FakeResponse(202, {"Location": "/v2/flow/blobs/uploads/2?state=x"}),
        FakeResponse(201),
    ], backoff=0)  # fmt: skip
    c.upload_blob("flow", "sha256:" + "e" * 64, 4, blob)
    assert [m for m, _, _ in session.sent] == ["POST", "PUT", "POST", "PUT"]
    assert session.sent[3][1] == "https://zot.example.com/v2/flow/blobs/uploads/2?state=x&digest=sha256%3A" + "e" * 64


def test_manifest_digest_mismatch_is_an_error() -> None:
    c, _, _ = client([FakeResponse(201, {"Docker-Content-Digest": "sha256:" + "0" * 64})])
    with pytest.raises(BuildError, match="expected sha256:"):
        c.put_manifest("flow", "1.0.0", b"{}", "application/vnd.oci.image.manifest.v1+json")


# -- docker credential helpers ------------------------------------------------


@pytest.fixture
def helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory on PATH for stand-in `docker-credential-*` programs; they log what they were asked."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("HELPER_LOG", str(tmp_path / "helper.log"))
    return bin_dir


def write_helper(bin_dir: Path, name: str, body: str) -> None:
    """`docker-credential-<name>`: a Python script; `body` sees `server` (its stdin) and `sys.argv`."""
    script = bin_dir / f"docker-credential-{name}"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "server = sys.stdin.read()\n"
        "with open(os.environ['HELPER_LOG'], 'a') as log:\n"
        f"    log.write(json.dumps([{name!r}, sys.argv[1:], server]) + '\\n')\n"
        + textwrap.dedent(body)
    )
    script.chmod(0o755)


def helper_calls(tmp_path: Path) -> list[list]:
    log = tmp_path / "helper.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


STORE = """
creds = {"zot.example.com": ("alice", "s3cret-from-store"), "https://index.docker.io/v1/": ("hub", "hub-pw"),
         "acr.example.com": ("<token>", "refresh-t0ken")}
if server not in creds:
    print("credentials not found in native keychain")
    sys.exit(1)
user, secret = creds[server]
print(json.dumps({"ServerURL": server, "Username": user, "Secret": secret}))
"""


def test_creds_store_is_asked_for_the_registry_host(tmp_path: Path, helpers: Path) -> None:
    write_helper(helpers, "store", STORE)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"credsStore": "store", "auths": {"zot.example.com": {}}}))
    found = docker_config_credentials("zot.example.com", config)
    assert found == Credentials("alice", "s3cret-from-store")
    assert "s3cret" not in repr(found)
    assert helper_calls(tmp_path) == [["store", ["get"], "zot.example.com"]]  # the host, no newline, as docker does
    assert docker_config_credentials("docker.io", config) == Credentials("hub", "hub-pw")
    assert helper_calls(tmp_path)[-1][2] == "https://index.docker.io/v1/"


def test_cred_helpers_entry_wins_over_creds_store(tmp_path: Path, helpers: Path) -> None:
    write_helper(helpers, "store", STORE)
    write_helper(helpers, "ecr", 'print(json.dumps({"ServerURL": server, "Username": "AWS", "Secret": "ecr-pw"}))')
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"credsStore": "store", "credHelpers": {"123.dkr.ecr.example.com": "ecr"}}))
    assert docker_config_credentials("123.dkr.ecr.example.com", config) == Credentials("AWS", "ecr-pw")
    assert [call[0] for call in helper_calls(tmp_path)] == ["ecr"]
    assert docker_config_credentials("zot.example.com", config) == Credentials("alice", "s3cret-from-store")


def test_token_username_means_an_identity_token(tmp_path: Path, helpers: Path) -> None:
    write_helper(helpers, "store", STORE)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"credsStore": "store"}))
    found = docker_config_credentials("acr.example.com", config)
    assert found == Credentials(identity_token="refresh-t0ken")
    assert "refresh-t0ken" not in repr(found)
    config.write_text(json.dumps({"auths": {"acr.example.com": {"identitytoken": "from-file"}}}))
    assert docker_config_credentials("acr.example.com", config) == Credentials(identity_token="from-file")


def test_helper_without_an_entry_falls_back_to_auths(tmp_path: Path, helpers: Path) -> None:
    write_helper(helpers, "store", STORE)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"credsStore": "store", "auths": {
        "localhost:5000": {"auth": base64.b64encode(b"bob:pw").decode()}}}))  # fmt: skip
    assert docker_config_credentials("localhost:5000", config) == Credentials("bob", "pw")
    assert docker_config_credentials("other.example.com", config) is None
    assert len(helper_calls(tmp_path)) == 2


def test_missing_helper_names_the_helper_and_the_host(tmp_path: Path, helpers: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"credsStore": "desktop"}))
    with pytest.raises(BuildError, match=r"docker-credential-desktop \(from .*credsStore\): not found on PATH.*"
                                         r"zot\.example\.com.*--username with --password-stdin"):  # fmt: skip
        docker_config_credentials("zot.example.com", config)


def test_failing_helper_names_the_helper_and_the_host_but_never_a_secret(tmp_path: Path, helpers: Path) -> None:
    write_helper(helpers, "broken", """
print(json.dumps({"ServerURL": server, "Username": "u", "Secret": "half-written-s3cret"}))
sys.stderr.write("keychain is locked\\n")
sys.exit(3)
""")
    write_helper(helpers, "garbled", 'print("Secret: plain-s3cret")')
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"credHelpers": {"zot.example.com": "broken", "q.example.com": "garbled"}}))
    with pytest.raises(BuildError) as failed:
        docker_config_credentials("zot.example.com", config)
    message = str(failed.value)
    assert "docker-credential-broken" in message and "credHelpers.zot.example.com" in message
    assert "zot.example.com failed (exit 3): keychain is locked" in message
    assert "s3cret" not in message
    with pytest.raises(BuildError, match="docker-credential-garbled .*q.example.com did not print credentials JSON") as garbled:
        docker_config_credentials("q.example.com", config)
    assert "s3cret" not in str(garbled.value)


class TokenSession(FakeSession):
    def post(self, url: str, data: dict | None = None, **_: object) -> FakeResponse:
        self.sent.append(("POST", url, {"data": dict(data or {})}))
        return self.script.pop(0)


def test_identity_token_is_exchanged_with_the_refresh_token_grant() -> None:
    challenge = 'Bearer realm="https://auth.example.com/oauth2/token",service="acr",scope="repository:flow:pull"'
    session = TokenSession([
        FakeResponse(401, {"WWW-Authenticate": challenge}),
        FakeResponse(200, body=json.dumps({"access_token": "acc"}).encode()),
        FakeResponse(200),
    ])  # fmt: skip
    c = RegistryClient("acr.example.com", session=session, credentials=Credentials(identity_token="refresh-t0ken"))  # type: ignore[arg-type]
    assert c.blob_exists("flow", "sha256:" + "f" * 64)
    method, url, sent = session.sent[1]
    assert (method, url) == ("POST", "https://auth.example.com/oauth2/token")
    assert sent["data"] == {"grant_type": "refresh_token", "refresh_token": "refresh-t0ken", "client_id": "pipedreamer",
                            "scope": "repository:flow:pull", "service": "acr"}  # fmt: skip
    assert session.sent[2][2]["Authorization"] == "Bearer acc"


def test_identity_token_cannot_answer_a_basic_challenge() -> None:
    c, _, _ = client([FakeResponse(401, {"WWW-Authenticate": 'Basic realm="zot"'})],
                     credentials=Credentials(identity_token="refresh-t0ken"))  # fmt: skip
    with pytest.raises(BuildError, match="identity token") as failed:
        c.blob_exists("flow", "sha256:" + "c" * 64)
    assert "refresh-t0ken" not in str(failed.value)


def test_docker_config_is_read_only_when_the_registry_asks() -> None:
    asked: list[str] = []

    def find() -> Credentials:
        asked.append("x")
        return Credentials("alice", "pw")

    c, session, _ = client([FakeResponse(200), FakeResponse(401, {"WWW-Authenticate": 'Basic realm="zot"'}),
                            FakeResponse(200), FakeResponse(200)], find_credentials=find)  # fmt: skip
    assert c.blob_exists("open", "sha256:" + "a" * 64) and asked == []
    assert c.blob_exists("closed", "sha256:" + "a" * 64) and c.blob_exists("closed", "sha256:" + "b" * 64)
    assert asked == ["x"]
    assert session.sent[2][2]["Authorization"] == "Basic " + base64.b64encode(b"alice:pw").decode()


def test_messages_name_the_real_flags() -> None:
    c, _, _ = client([FakeResponse(401, {"WWW-Authenticate": 'Basic realm="zot"'}), FakeResponse(401)],
                     credentials=Credentials("alice", "wrong"))  # fmt: skip
    with pytest.raises(BuildError) as refused:
        c.blob_exists("flow", "sha256:" + "c" * 64)
    assert "--username and --password-stdin" in str(refused.value) and "--username/--password " not in str(refused.value)
    c, _, _ = client([FakeResponse(401, {"WWW-Authenticate": 'Basic realm="zot"'})])
    with pytest.raises(BuildError, match=r"--username with --password-stdin, or `docker login zot.example.com`"):
        c.blob_exists("flow", "sha256:" + "c" * 64)
