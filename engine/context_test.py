"""Context: URL resolution, auth injection, logging formats and redaction, the response object."""

from __future__ import annotations

import io
import json

import pytest

from engine.context import Context, LogSink, NodeLogger, Response, RunScope, auth_headers, service_url
from engine.secrets import Redactor


@pytest.mark.parametrize(
    "service, path, config, url",
    [
        ("github", "/user/repos", {}, "https://api.github.com/user/repos"),
        ("stripe", "charges", {}, "https://api.stripe.com/charges"),
        ("github", "/x?y=1", {"services": {"github": {"base_url": "http://127.0.0.1:9/"}}}, "http://127.0.0.1:9/x?y=1"),
        ("hn", "/v0/top.json", {"services": {"hn": {"base_url": "https://hacker-news.firebaseio.com"}}}, "https://hacker-news.firebaseio.com/v0/top.json"),
        ("other", "/a", {"services": {"github": {"base_url": "http://x"}}}, "https://api.other.com/a"),
        ("bad", "/a", {"services": "not a mapping"}, "https://api.bad.com/a"),
    ],
)
def test_service_url(service, path, config, url):
    assert service_url(service, path, config) == url


def test_auth_headers_prefer_token_then_api_key():
    secrets = {"github": {"token": "ghp"}, "stripe": {"api_key": "sk"}, "both": {"token": "t", "api_key": "k"}, "plain": {"value": "v"}}
    assert auth_headers("github", secrets) == {"Authorization": "Bearer ghp"}
    assert auth_headers("stripe", secrets) == {"X-API-Key": "sk"}
    assert auth_headers("both", secrets) == {"Authorization": "Bearer t"}
    assert auth_headers("plain", secrets) == {}
    assert auth_headers("missing", secrets) == {}


def test_text_log_lines_carry_node_and_run_on_every_line_and_hide_secrets():
    stream = io.StringIO()
    sink = LogSink("text", stream, "info", Redactor(["hunter2"]))
    log = NodeLogger(sink, "fetch", "run-1")
    log.debug("hidden at info level")
    log.info("fetched", 3, "items")
    log.warn("password is hunter2\nsecond line", attempt=2)
    log.error("bad")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4
    assert lines[0].endswith(" INFO  [fetch] fetched 3 items run_id=run-1")
    assert lines[1].endswith(" WARN  [fetch] password is *** run_id=run-1 attempt=2")
    assert lines[2].endswith(" WARN  [fetch] second line run_id=run-1 attempt=2")
    assert lines[3].endswith(" ERROR [fetch] bad run_id=run-1")
    assert "hunter2" not in stream.getvalue()


def test_json_log_lines():
    stream = io.StringIO()
    sink = LogSink("json", stream, "debug", Redactor(["hunter2"]))
    NodeLogger(sink, "n", "r").debug("token hunter2", extra={"k": "hunter2"}, node="spoof")
    record = json.loads(stream.getvalue())
    assert record["level"] == "debug" and record["node"] == "n" and record["run_id"] == "r"
    assert record["message"] == "token ***" and record["extra"] == {"k": "***"}
    assert record["time"].endswith("Z")


def test_unknown_log_format_is_rejected():
    with pytest.raises(ValueError, match="log format"):
        LogSink("xml")


async def test_response_object():
    response = Response(201, b'{"a": 1}', {"Content-Type": "application/json"}, "http://x/y")
    assert response.ok and response.status == 201
    assert response.headers["content-type"] == "application/json"
    assert await response.json() == {"a": 1}
    assert await response.text() == '{"a": 1}'
    assert await response.read() == b'{"a": 1}'
    assert not Response(404, b"").ok
    assert await Response(204, b"").json() is None


async def test_context_exposes_scope_and_delegates_fetch():
    calls = []

    class Fetcher:
        async def fetch(self, service, path, **kwargs):
            calls.append((service, path, kwargs))
            return Response(200, b"[]")

    stream = io.StringIO()
    scope = RunScope("r1", {"top_n": 3}, {"github": {"token": "t"}}, Fetcher(), LogSink(stream=stream))
    ctx = Context("node-a", scope)
    assert (ctx.node_id, ctx.run_id, ctx.config["top_n"], ctx.secrets["github"]["token"]) == ("node-a", "r1", 3, "t")
    response = await ctx.fetch("github", "/x", method="POST", json={"a": 1})
    assert await response.json() == []
    assert calls == [("github", "/x", {"method": "POST", "json": {"a": 1}})]
    ctx.log.info("hello")
    assert "[node-a] hello run_id=r1" in stream.getvalue()
    assert ctx.log is ctx.log


@pytest.mark.parametrize("fmt", ["text", "json"])
@pytest.mark.parametrize("secret", ['pa"ss\\word', "pässwörd-ü", "line one\nline two"])
def test_structured_fields_are_redacted_whatever_json_escapes(fmt, secret):
    stream = io.StringIO()
    sink = LogSink(fmt, stream, "info", Redactor([secret]))
    NodeLogger(sink, "n", "r").info("connecting", password=secret, nested={"list": [secret, 1]}, obj=KeyError(secret))
    out = stream.getvalue()
    for shown in (secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1], "line two"):
        assert shown not in out, out
    assert "***" in out
