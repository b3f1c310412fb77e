"""The Anthropic adapter end to end on a real model: llama-server's ``/v1/messages`` with SmolLM2."""

from __future__ import annotations

from typing import Any

import pytest

import allm
from allm.events import MessageCompleted, MessageStarted, RawChunk, TextCompleted, TextDelta
from allm.providers import Anthropic

pytestmark = pytest.mark.live

QUESTION = [allm.system("Be brief."), allm.user("What is the capital of France?")]


@pytest.fixture(scope="module")
def engine(llama_server: Any) -> allm.Engine:
    # Only the adapter differs from the OpenAI-compatible live tests.
    return allm.Engine(adapter=Anthropic(base_url=llama_server.url + "/v1"), model="smollm2", defaults={"temperature": 0.0})


def test_real_answer_streamed(engine: allm.Engine) -> None:
    events = list(allm.stream_generate(engine, allm.request(QUESTION, max_tokens=40)))
    assert isinstance(events[0], MessageStarted) and isinstance(events[-1], MessageCompleted)
    deltas = [e.delta for e in events if isinstance(e, TextDelta)]
    assert len(deltas) > 3
    (completed,) = [e for e in events if isinstance(e, TextCompleted)]
    assert completed.text == "".join(deltas) and "Paris" in completed.text
    assert any(isinstance(e, RawChunk) and e.usage for e in events)
    resp = allm.Collector().fold(events)
    assert resp.finish_reason in ("stop", "length") and resp.raw_finish_reason in ("end_turn", "max_tokens")
    assert resp.model == "smollm2" and resp.id and resp.id.startswith("chatcmpl-")
    u = resp.usage
    assert u.input_tokens and u.input_tokens > 5 and u.output_tokens and u.output_tokens > 0
    assert u.cached_input_tokens is not None and u.cached_input_tokens <= u.input_tokens
    assert u.total_tokens == u.input_tokens + u.output_tokens


def test_real_answer_body_path_equals_stream(engine: allm.Engine) -> None:
    streamed = allm.generate(engine, allm.request(QUESTION, max_tokens=40))
    body = allm.generate(engine, allm.request(QUESTION, max_tokens=40), http_streaming=False)
    assert "Paris" in body.output_text and body.output_text == streamed.output_text
    assert (body.usage.input_tokens, body.usage.output_tokens) == (streamed.usage.input_tokens, streamed.usage.output_tokens)
    assert (body.finish_reason, body.raw_finish_reason) == (streamed.finish_reason, streamed.raw_finish_reason)


async def test_real_answer_async(engine: allm.Engine) -> None:
    resp = await allm.agenerate(engine, allm.request(QUESTION, max_tokens=40))
    assert "Paris" in resp.output_text and resp.usage.output_tokens


def test_max_tokens_and_stop_sequences(engine: allm.Engine) -> None:
    resp = allm.generate(engine, allm.request("Count from 1 to 20, separated by commas.", max_tokens=5))
    assert (resp.finish_reason, resp.raw_finish_reason) == ("length", "max_tokens") and resp.usage.output_tokens == 5
    stopped = allm.generate(engine, allm.request("Count from 1 to 20, separated by commas.", max_tokens=60, stop_sequences=["5"]))
    assert "5" not in stopped.output_text and "6" not in stopped.output_text
    assert stopped.raw_finish_reason in ("stop_sequence", "end_turn")


def test_tool_history_and_reasoning_are_accepted(engine: allm.Engine) -> None:
    """A thread with tool_use / tool_result blocks (a foreign id, rewritten) and Anthropic thinking."""
    tool = allm.Tool("get_weather", "Weather for a city", {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
    call = allm.ToolCall("functions.get_weather:0", "get_weather", {"city": "Paris"})
    thread = [
        allm.user("What's the weather in Paris?"),
        allm.Message("assistant", (allm.ReasoningPart("Use the tool.", signature="sig", provider="anthropic"),), tool_calls=(call,)),
        allm.tool_result(call.id, "18 C and sunny"),
        allm.user("Summarise the weather in a few words."),
    ]
    resp = allm.generate(engine, allm.request(thread, tools=[tool], max_tokens=30))
    assert resp.finish_reason in ("stop", "length", "tool_calls") and (resp.output_text or resp.tool_calls)
    assert resp.usage.input_tokens and resp.usage.input_tokens > 20


def test_real_error_from_the_server(engine: allm.Engine) -> None:
    with pytest.raises(allm.AdapterError) as info:
        allm.generate(engine, allm.request("hello " * 6000, max_tokens=8))
    err = info.value
    assert (err.reason, err.status, err.provider) == ("context_length_exceeded", 400, "anthropic")
    assert "context" in err.message


def test_models_and_token_count(engine: allm.Engine) -> None:
    assert allm.list_models(engine) == ["smollm2"]
    assert isinstance(engine.adapter, Anthropic)
    n = allm.count_tokens(engine, allm.request(QUESTION, model="smollm2"))
    import asyncio

    assert asyncio.run(allm.acount_tokens(engine, allm.request(QUESTION, model="smollm2"))) == n
    answer = allm.generate(engine, allm.request(QUESTION, max_tokens=8))
    assert 5 < n <= (answer.usage.input_tokens or 0) + 5, n
