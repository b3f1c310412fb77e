"""The Gemini adapter through allm's real HTTP shells, against a loopback server replaying
the recorded responses: the same call sites as for OpenAI, only the adapter swapped."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest

import allm
from allm.events import Error, MessageCompleted, TextDelta
from allm.policy import RetryInfo, RetryPolicy
from allm.providers import Gemini
from tests.conftest import load_case

KEY = "AIzaSyTHISisNOTaREALkey00000000000000"


class Replay(ThreadingHTTPServer):
    """Serves ``tests/fixtures/gemini/<case>`` for ``/v1beta/models/<case>:<method>``; embeddings
    are answered per request (``[len(text), position]``); every request is recorded."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[dict[str, Any]] = []
        self.fail_first: dict[str, int] = {}  # case -> number of 429s to send before the case itself

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1beta"


class _Handler(BaseHTTPRequestHandler):
    server: Replay

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append({"method": method, "path": self.path, "headers": dict(self.headers), "body": body})
        path = self.path.removeprefix("/v1beta/")
        if path.startswith("models?"):
            c = load_case("gemini", "models-list")
            return self._reply(c.status, c.body, "application/json")
        resource, _, verb = path.partition(":")
        name = resource.removeprefix("models/")
        if verb == "batchEmbedContents":
            reqs = orjson.loads(body)["requests"]
            out = {"embeddings": [{"values": [float(len(r["content"]["parts"][0]["text"])), float(i)]} for i, r in enumerate(reqs)]}
            return self._reply(200, orjson.dumps(out), "application/json")
        if name == "truncated-stream":  # the connection closes after the first chunk
            full = load_case("gemini", "stream-sse-function-response-followup").body
            return self._reply(200, full[: full.index(b"\r\n\r\n") + 4], "text/event-stream")
        if self.server.fail_first.get(name, 0) > 0:
            self.server.fail_first[name] -= 1
            c = load_case("gemini", "error-429-resource-exhausted")
            return self._reply(c.status, c.body, "application/json; charset=UTF-8")
        c = load_case("gemini", name)
        ctype = "text/event-stream" if verb.endswith("alt=sse") and c.ok else "application/json; charset=UTF-8"
        self._reply(c.status, c.body, ctype)

    def do_POST(self) -> None:
        self._handle("POST")

    def do_GET(self) -> None:
        self._handle("GET")


@pytest.fixture(scope="module")
def replay() -> Iterator[Replay]:
    server = Replay()
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def engine(replay: Replay) -> allm.Engine:
    replay.seen.clear()
    return allm.Engine(adapter=Gemini(base_url=replay.base_url), model="stream-sse-text")


def _only_header_has_the_key(replay: Replay) -> None:
    assert replay.seen
    for r in replay.seen:
        assert r["headers"].get("x-goog-api-key") == KEY
        assert KEY not in r["path"] and KEY.encode() not in r["body"]
        assert not any(k.lower() == "authorization" for k in r["headers"])


def test_generate_streams_over_sse(replay: Replay, engine: allm.Engine) -> None:
    resp = allm.generate(engine, "Count from 1 to 3", api_key=KEY)
    assert resp.output_text == "1, 2, 3" and resp.finish_reason == "stop"
    assert resp.usage == allm.Usage(input_tokens=8, output_tokens=27, reasoning_tokens=20, total_tokens=35)
    (seen,) = replay.seen
    assert seen["path"] == "/v1beta/models/stream-sse-text:streamGenerateContent?alt=sse"
    assert orjson.loads(seen["body"]) == load_case("gemini", "stream-sse-text").request | {
        "contents": [{"role": "user", "parts": [{"text": "Count from 1 to 3"}]}]
    }
    _only_header_has_the_key(replay)


def test_generate_unary(replay: Replay, engine: allm.Engine) -> None:
    resp = allm.generate(engine.with_model("generate-text"), "What's 2 + 2?", api_key=KEY, http_streaming=False)
    assert resp.output_text == "2 + 2 = **4**" and resp.usage.total_tokens == 41
    assert replay.seen[0]["path"] == "/v1beta/models/generate-text:generateContent"
    _only_header_has_the_key(replay)


def test_stream_events_and_a_key_from_the_environment(
    replay: Replay, engine: allm.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.setenv("GOOGLE_API_KEY", KEY)
    events = list(allm.stream_generate(engine.with_model("stream-sse-thoughts"), "q"))
    assert sum(isinstance(e, TextDelta) for e in events) == 25
    assert isinstance(events[-1], MessageCompleted) and events[-1].message.reasoning[0].provider == "gemini"
    _only_header_has_the_key(replay)


def test_a_tool_turn_end_to_end(replay: Replay, engine: allm.Engine) -> None:
    weather = allm.Tool("weather", "Gets current weather for a location", {"type": "object", "properties": {}})
    thread = [allm.user("What's the weather in Berlin? (52.5200, 13.4050)")]
    first = allm.generate(engine.with_model("stream-sse-function-call"), allm.request(thread, tools=[weather]), api_key=KEY)
    (tc,) = first.tool_calls
    thread += [first.message, allm.tool_result(tc.id, "15°C, Wind: 10 km/h")]
    second = allm.generate(
        engine.with_model("stream-sse-function-response-followup"), allm.request(thread, tools=[weather]), api_key=KEY
    )
    assert second.output_text == "The weather in Berlin is 15°C with a wind of 10 km/h."
    sent = orjson.loads(replay.seen[1]["body"])
    recorded = load_case("gemini", "stream-sse-function-response-followup").request
    assert sent["contents"][1] == recorded["contents"][1]
    assert sent["contents"][2]["parts"][0]["functionResponse"]["name"] == "weather"


def test_an_invalid_key_raises_a_typed_error_without_the_key(replay: Replay, engine: allm.Engine) -> None:
    with pytest.raises(allm.AdapterError) as ei:
        allm.generate(engine.with_model("error-400-api-key-invalid"), "Hello", api_key=KEY, http_streaming=False)
    assert ei.value.reason == "authentication_failed" and ei.value.status == 400
    assert len(replay.seen) == 1  # not retried
    assert KEY not in str(ei.value) and KEY not in repr(ei.value)


def test_quota_errors_are_retried_with_the_body_delay(replay: Replay, engine: allm.Engine) -> None:
    replay.fail_first["stream-sse-text"] = 1
    retries: list[RetryInfo] = []
    policy = RetryPolicy(max_attempts=2, retry_after_cap=0.01)
    resp = allm.generate(engine, "Count from 1 to 3", api_key=KEY, retry=policy, on_retry=retries.append)
    assert resp.output_text == "1, 2, 3"
    (info,) = retries
    assert info.error.reason == "rate_limited" and info.error.retry_after == 48.0 and info.delay <= 0.011
    assert len(replay.seen) == 2


def test_list_models(replay: Replay, engine: allm.Engine) -> None:
    ids = allm.list_models(engine, api_key=KEY)
    assert len(ids) == 45 and ids[0] == "gemini-2.5-flash"
    assert replay.seen[0]["method"] == "GET" and replay.seen[0]["path"] == "/v1beta/models?pageSize=1000"
    _only_header_has_the_key(replay)


def test_embed_batches_by_100_and_keeps_order(replay: Replay, engine: allm.Engine) -> None:
    texts = ["x" * (i % 7 + 1) + str(i) for i in range(150)]
    e = allm.embed(engine, texts, model="gemini-embedding-001", dimensions=8, api_key=KEY)
    assert len(e) == 150
    assert [v[0] for v in e.vectors] == [float(len(t)) for t in texts]
    assert [v[1] for v in e.vectors] == [float(i % 100) for i in range(150)]
    assert [len(orjson.loads(r["body"])["requests"]) for r in replay.seen] == [100, 50]
    assert all(r["path"] == "/v1beta/models/gemini-embedding-001:batchEmbedContents" for r in replay.seen)
    assert orjson.loads(replay.seen[0]["body"])["requests"][0]["outputDimensionality"] == 8
    _only_header_has_the_key(replay)


async def test_async_twins(replay: Replay, engine: allm.Engine) -> None:
    resp = await allm.agenerate(engine.with_model("stream-sse-thoughts-token-accounting"), "q", api_key=KEY)
    assert resp.output_text.endswith("So, 2 + 2 = 4.") and resp.usage.reasoning_tokens == 137
    e = await allm.aembed(engine, ["a", "bb"], model="gemini-embedding-001", api_key=KEY)
    assert [v[0] for v in e.vectors] == [1.0, 2.0]
    assert await allm.alist_models(engine, api_key=KEY) == allm.list_models(engine, api_key=KEY)
    _only_header_has_the_key(replay)


def test_a_stream_cut_short_over_http_ends_in_an_error_event(replay: Replay, engine: allm.Engine) -> None:
    events = list(allm.stream_generate(engine.with_model("truncated-stream"), "q", api_key=KEY))
    assert isinstance(events[-1], Error) and events[-1].error.reason == "malformed_response"
    resp = allm.generate(engine.with_model("truncated-stream"), "q", api_key=KEY)
    assert resp.finish_reason == "error" and resp.output_text == "The weather in Berlin"
