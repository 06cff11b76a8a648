"""Tests for builder.registry without a server: references, credentials, retries, auth."""

from __future__ import annotations

import base64
import json
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
