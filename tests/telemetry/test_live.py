"""allm.otel against the real local model (llama-server with SmolLM2-135M): the span trees of a
streamed call, a non-streamed call, a two-turn tool loop, a retried call (through a loopback
proxy that refuses the first attempt), a failed call and a cancelled stream."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from opentelemetry.trace import StatusCode

import allm
from allm.providers import OpenAICompatible
from tests.loopback import LoopbackServer, Req, Writer
from tests.telemetry.conftest import Otel
from tests.test_live_tools import weather_request, weather_tool

pytestmark = pytest.mark.live

BRIEF = "You are a helpful assistant. Be brief."


def engine(base_url: str, *tools: allm.Tool) -> allm.Engine:
    return allm.Engine(
        adapter=OpenAICompatible.llama_cpp(base_url),
        model="smollm2",
        tools=tools,
        retry=allm.RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02, jitter=0),
    )


def question() -> allm.Request:
    return allm.request([allm.system(BRIEF), allm.user("What is the capital of France?")], temperature=0.0, max_tokens=24)


def host_port(url: str) -> tuple[str, int]:
    u = httpx.URL(url)
    assert u.host and u.port
    return u.host, u.port


def check_call_span(span: Any, server_url: str, *, streamed: bool = True) -> dict[str, Any]:
    a = dict(span.attributes or {})
    host, port = host_port(server_url)
    assert span.name == "chat smollm2" and span.kind.name == "CLIENT"
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == a["gen_ai.provider.name"].lower()
    assert a["gen_ai.request.model"] == "smollm2" and a["server.address"] == host and a["server.port"] == port
    assert a["gen_ai.request.temperature"] == 0.0 and a["gen_ai.request.max_tokens"] in (24, 60)
    assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
    assert a["gen_ai.response.finish_reasons"][0] in ("stop", "length", "tool_calls")
    assert isinstance(a.get("gen_ai.response.id"), str) and a["gen_ai.response.model"]
    assert a["gen_ai.request.stream"] is streamed
    if streamed:
        assert 0 < a["gen_ai.response.time_to_first_chunk"] <= (span.end_time - span.start_time) / 1e9
    else:
        assert "gen_ai.response.time_to_first_chunk" not in a
    assert "gen_ai.input.messages" not in a and "France" not in span.to_json()
    return a


def test_streamed_call(llama_server: Any, otel: Otel) -> None:
    text = "".join(e.delta for e in allm.stream_generate(engine(llama_server.base_url), question()) if type(e).__name__ == "TextDelta")
    assert "Paris" in text
    [span] = otel.spans()
    a = check_call_span(span, llama_server.base_url)
    assert a["gen_ai.request.stream"] is True
    tokens = {p[0]["gen_ai.token.type"]: p[1] for p in otel.points("gen_ai.client.token.usage")}
    assert tokens == {"input": a["gen_ai.usage.input_tokens"], "output": a["gen_ai.usage.output_tokens"]}
    [(attrs, _, count)] = otel.points("gen_ai.client.operation.time_to_first_chunk")
    assert count == 1 and attrs["server.address"] == a["server.address"]


def test_non_streamed_call(llama_server: Any, otel: Otel) -> None:
    resp = allm.generate(engine(llama_server.base_url), question(), http_streaming=False)
    assert "Paris" in resp.output_text
    [span] = otel.spans()
    a = check_call_span(span, llama_server.base_url, streamed=False)
    assert a["gen_ai.response.id"] == resp.id and a["allm.request_id"] == resp.request_id
    assert otel.points("gen_ai.client.operation.time_to_first_chunk") == []  # streamed calls only
    assert {p[0]["gen_ai.token.type"] for p in otel.points("gen_ai.client.token.usage")} == {"input", "output"}


def test_two_turn_tool_loop(llama_server: Any, otel: Otel) -> None:
    ran: list[dict[str, Any]] = []
    result = allm.chat(engine(llama_server.base_url, weather_tool(ran)), weather_request(), max_turns=2)
    assert ran and len(result.steps) == 2
    tools = [("execute_tool get_weather", [])] * len(ran)  # SmolLM2 may ask for the weather more than once
    assert otel.tree() == [("invoke_agent", [("chat smollm2", []), *tools, ("chat smollm2", [])])]
    first, *runs, second = otel.tree(attrs=True)[0][3]
    check_call_span(otel.named("chat smollm2")[0], llama_server.base_url)
    assert first[2]["gen_ai.response.finish_reasons"] == ("tool_calls",)
    assert [t[2]["gen_ai.tool.call.id"] for t in runs] == [c.id for c in result.steps[0].response.tool_calls]
    assert all(t[2]["allm.request_id"] == first[2]["allm.request_id"] for t in runs)
    assert second[2]["allm.request_id"] == result.steps[1].response.request_id
    [agent] = otel.named("invoke_agent")
    assert agent.attributes["gen_ai.usage.input_tokens"] == sum(s.response.usage.input_tokens or 0 for s in result.steps)  # type: ignore[index]


def test_retried_call(llama_server: Any, otel: Otel) -> None:
    seen: list[str] = []

    async def proxy(req: Req, w: Writer) -> None:
        seen.append(req.path)
        if len(seen) == 1:
            await w.respond(503, b'{"error": {"message": "busy", "type": "server_error"}}')
            return
        async with httpx.AsyncClient() as client:
            r = await client.post(llama_server.base_url + req.path.removeprefix("/v1"), content=req.body, headers={"content-type": "application/json"}, timeout=60)
        await w.respond(r.status_code, r.content)

    server = LoopbackServer(handler_limit=60).start()
    server.handler = proxy
    try:
        resp = allm.generate(engine(server.url + "/v1"), question(), http_streaming=False)
    finally:
        server.stop()
    assert "Paris" in resp.output_text and len(seen) == 2
    [span] = otel.spans()
    assert [(e.name, e.attributes["error.type"]) for e in span.events] == [("gen_ai.client.retry", "provider_unavailable")]  # type: ignore[index]
    assert span.attributes["allm.attempts"] == 2 and span.status.status_code == StatusCode.UNSET  # type: ignore[index]


def test_failed_call(llama_server: Any, otel: Otel) -> None:
    words = " ".join(["France"] * 6000)  # past the server's 4096-token context
    with pytest.raises(allm.AdapterError) as err:
        allm.generate(engine(llama_server.base_url), allm.request(words, max_tokens=4), retry=False)
    [span] = otel.spans()
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes["error.type"] == err.value.reason  # type: ignore[index]
    assert "France" not in span.to_json() and list(span.events) == []


def test_cancelled_stream(llama_server: Any, otel: Otel) -> None:
    req = allm.request([allm.system(BRIEF), allm.user("Count from one to fifty in words.")], temperature=0.0, max_tokens=200)
    with allm.stream_generate(engine(llama_server.base_url), req) as s:
        for ev in s:
            if type(ev).__name__ == "TextDelta":
                break
    [span] = otel.spans()
    a = dict(span.attributes or {})
    assert a["allm.cancelled"] is True and "gen_ai.response.finish_reasons" not in a
    assert a["gen_ai.response.time_to_first_chunk"] > 0 and span.status.status_code == StatusCode.UNSET
