"""The Anthropic adapter through the real I/O shells: recorded bytes served on loopback."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

import orjson
import pytest

import allm
from allm.events import Error, MessageCompleted, ReasoningDelta, ToolCallCompleted
from allm.providers import Anthropic
from tests.conftest import load_case
from tests.loopback import LoopbackServer, Req, Writer, serve

FAST = allm.RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.01, jitter=0, retry_after_cap=0.01)
MODEL = "claude-haiku-4-5-20251001"


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with serve() as s:
        yield s


def engine_for(server: LoopbackServer, **kw: object) -> allm.Engine:
    return allm.Engine(adapter=Anthropic(base_url=server.url + "/v1"), model=MODEL, retry=FAST, **kw)  # type: ignore[arg-type]


def replay(name: str, chunk: int = 97) -> Callable[[Req, Writer], Awaitable[None]]:
    """A handler answering with a recorded case (streams sent in small chunks)."""
    case = load_case("anthropic", name)
    status = case.status

    async def handler(req: Req, w: Writer) -> None:
        if case.headers.get("Content-Type", "").startswith("text/event-stream"):
            await w.start_stream(status)
            for i in range(0, len(case.body), chunk):
                await w.chunk(case.body[i : i + chunk])
            await w.end_stream()
        else:
            headers = {k: v for k, v in case.headers.items() if k.lower() in ("request-id", "retry-after")}
            await w.respond(status, case.body, headers)

    return handler


def test_stream_key_headers_and_body_on_the_wire(server: LoopbackServer) -> None:
    server.handler = replay("stream-tool-use")
    tool = allm.Tool("weather", "Gets current weather for a location", {"type": "object", "properties": {}})
    resp = allm.generate(engine_for(server), allm.request("Weather in Berlin?", tools=[tool], seed=1), api_key="sk-ant-tenant-1")
    assert [(t.name, dict(t.arguments)) for t in resp.tool_calls] == [("weather", {"latitude": "52.5200", "longitude": "13.4050"})]
    assert resp.finish_reason == "tool_calls" and resp.usage.input_tokens == 633
    assert [(w.setting, str(w)) for w in resp.warnings] == [("seed", "seed is not supported by Anthropic and was not sent")]
    req = server.requests[0]
    assert (req.method, req.path) == ("POST", "/v1/messages")
    assert req.headers["x-api-key"] == "sk-ant-tenant-1" and "authorization" not in req.headers
    assert req.headers["anthropic-version"] == "2023-06-01" and req.headers["accept"] == "text/event-stream"
    body = orjson.loads(req.body)
    assert body["stream"] is True and body["max_tokens"] == 4096 and body["model"] == MODEL
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Weather in Berlin?"}]}]


def test_no_key_needed_for_a_custom_base_url(server: LoopbackServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    server.handler = replay("stream-text")
    assert allm.generate(engine_for(server), "Count").output_text == "1\n2\n3"
    assert "x-api-key" not in server.requests[0].headers
    # The key chain still applies when one is configured.
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-from-env")
    allm.generate(engine_for(server), "Count")
    assert server.requests[1].headers["x-api-key"] == "sk-ant-from-env"


def test_in_stream_overloaded_error_is_retried_before_any_content(server: LoopbackServer) -> None:
    answers = iter([replay("stream-error-event-overloaded"), replay("stream-text")])

    async def handler(req: Req, w: Writer) -> None:
        await next(answers)(req, w)

    server.handler = handler
    retries: list[allm.RetryInfo] = []
    resp = allm.generate(engine_for(server), "Count", on_retry=retries.append)
    assert resp.output_text == "1\n2\n3" and resp.finish_reason == "stop"
    assert [(r.attempt, r.error.reason, r.error.status) for r in retries] == [(1, "provider_unavailable", None)]
    assert len(server.requests) == 2


def test_529_is_retried_and_401_is_not(server: LoopbackServer) -> None:
    answers = iter([replay("error-529-overloaded"), replay("stream-text")])

    async def handler(req: Req, w: Writer) -> None:
        await next(answers)(req, w)

    server.handler = handler
    retries: list[allm.RetryInfo] = []
    assert allm.generate(engine_for(server), "x", on_retry=retries.append).output_text == "1\n2\n3"
    assert [(r.error.reason, r.error.status) for r in retries] == [("provider_unavailable", 529)]

    server.handler = replay("error-401-authentication")
    with pytest.raises(allm.AdapterError) as info:
        allm.generate(engine_for(server), "x", api_key="sk-ant-wrong-key-123")
    err = info.value
    assert (err.reason, err.status, err.request_id) == ("authentication_failed", 401, "<REQUEST_ID>")
    assert len(server.requests) == 3  # the 401 was not retried


def test_429_retry_after_is_honoured_within_the_cap(server: LoopbackServer) -> None:
    server.handler = replay("error-429-rate-limit-retry-after")
    retries: list[allm.RetryInfo] = []
    with pytest.raises(allm.AdapterError) as info:
        allm.generate(engine_for(server), "x", on_retry=retries.append)
    assert info.value.reason == "rate_limited" and info.value.retry_after == 65.0
    assert [r.delay for r in retries] == [0.01, 0.01]  # 65 s asked, capped by the policy
    assert len(server.requests) == 3


def test_body_path_gives_the_same_reasoning(server: LoopbackServer) -> None:
    server.handler = replay("nonstream-thinking")
    engine = allm.Engine(adapter=Anthropic(base_url=server.url + "/v1", thinking_budget=1024), model=MODEL)
    events = list(allm.stream_generate(engine, "riddle", http_streaming=False))
    assert any(isinstance(e, ReasoningDelta) for e in events) and isinstance(events[-1], MessageCompleted)
    resp = allm.generate(engine, "riddle", http_streaming=False)
    data = orjson.loads(load_case("anthropic", "nonstream-thinking").body)
    (part,) = resp.message.reasoning
    assert part.signature == data["content"][0]["signature"] and resp.output_text == data["content"][1]["text"]
    body = orjson.loads(server.requests[-1].body)
    assert "stream" not in body and body["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert server.requests[-1].headers["accept"] == "application/json"


def test_truncated_stream_on_the_wire_is_an_error(server: LoopbackServer) -> None:
    case = load_case("anthropic", "stream-text")
    cut = case.body[: case.body.index(b"event: message_stop")]

    async def handler(req: Req, w: Writer) -> None:
        await w.start_stream()
        await w.chunk(cut)
        await w.end_stream()

    server.handler = handler
    events = list(allm.stream_generate(engine_for(server), "x"))
    assert isinstance(events[-1], Error) and events[-1].error.reason == "malformed_response"
    resp = allm.generate(engine_for(server), "x")
    assert resp.finish_reason == "error" and resp.output_text == "1\n2\n3"


async def test_async_stream_and_models(server: LoopbackServer) -> None:
    server.handler = replay("stream-tool-use-no-params", chunk=13)
    events = [e async for e in allm.astream_generate(engine_for(server), "x")]
    done = [e for e in events if isinstance(e, ToolCallCompleted)]
    assert [(d.name, dict(d.arguments)) for d in done] == [("best_language_to_learn", {})]
    server.handler = replay("models-list")
    models = await allm.alist_models(engine_for(server))
    assert models[0] == "claude-opus-4-6" and server.requests[-1].path == "/v1/models?limit=1000"
    assert allm.list_models(engine_for(server)) == models
