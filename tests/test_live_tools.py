"""The tool loop against a real local model: llama-server with SmolLM2-135M.

The server gets tests/templates/hermes_chatml.jinja (ChatML turns, Hermes-style
<tools>/<tool_call>/<tool_response> blocks); llama-server parses the model's
<tool_call> output into OpenAI tool calls. So small a model needs a one-line
example call in the system prompt. Temperature 0, a fixed seed and no prompt
cache (``cache_prompt: false``, a llama.cpp body field) keep the runs repeatable.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

import allm
from allm.providers import OpenAICompatible

pytestmark = pytest.mark.live

SYSTEM = (
    "You are a weather bot. You only answer with a tool call. Example:\n"
    "User: What is the weather in London?\n"
    'Assistant: <tool_call>{"name": "get_weather", "arguments": {"city": "London"}}</tool_call>'
)
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def weather_tool(ran: list[dict[str, Any]], *, manual: bool = False) -> allm.Tool:
    def get_weather(args: dict[str, Any]) -> dict[str, Any]:
        ran.append(dict(args))
        return {"city": args["city"], "temperature_c": 18, "sky": "sunny"}

    return allm.tool("get_weather", "Get the current weather for a city.", SCHEMA, handler=get_weather, manual=manual)


def weather_request() -> allm.Request:
    return allm.request(
        [allm.system(SYSTEM), allm.user("What is the weather in Paris?")],
        temperature=0.0,
        seed=42,
        max_tokens=60,
        options={"cache_prompt": False},
    )


def engine(server: Any, *tools: allm.Tool) -> allm.Engine:
    return allm.Engine(adapter=OpenAICompatible.llama_cpp(server.base_url), model="smollm2", tools=tools)


@pytest.mark.parametrize("http_streaming", [True, False])
def test_local_model_calls_a_tool_and_completes(llama_server: Any, http_streaming: bool) -> None:
    ran: list[dict[str, Any]] = []
    eng = engine(llama_server, weather_tool(ran))
    req = weather_request()
    events = list(allm.stream(eng, req, http_streaming=http_streaming))
    r = allm.ChatCollector(req.thread).fold(events)
    # The handler ran with the city the user asked about.
    assert ran and all(a["city"] == "Paris" for a in ran)
    # Its result went back to the model, which then answered in text.
    assert r.halted_reason == "completed"
    assert r.final_response is not None and r.final_response.output_text.strip()
    assert not r.final_response.tool_calls
    first = r.steps[0]
    assert first.response.finish_reason == "tool_calls" and first.tool_results
    assert orjson.loads(first.tool_results[0].text) == {"city": "Paris", "temperature_c": 18, "sky": "sunny"}
    types = [type(e).__name__ for e in events]
    assert types.index("ToolCallCompleted") < types.index("ToolExecutionStarted") < types.index("ToolResultEncoded")
    assert types[-1] == "ChatCompleted" and types.count("StepCompleted") == len(r.steps) == 2
    assert [m.role for m in r.thread.messages][:3] == ["system", "user", "assistant"]
    assert r.thread.messages[-1].role == "assistant"


def test_local_model_session_with_approval(llama_server: Any) -> None:
    """A manual tool: the session stops for approval, is stored, approved, and completes."""
    ran: list[dict[str, Any]] = []
    eng = engine(llama_server, weather_tool(ran, manual=True))
    req = weather_request()
    params = {"temperature": 0.0, "seed": 42, "max_tokens": 60, "options": {"cache_prompt": False}}
    s, r = asyncio.run(allm.Session.astart(eng, req.thread, params=params))
    assert r.halted_reason == "manual_tool_calls" and s.status == "awaiting_tools" and not ran
    assert s.pending_tool_calls and all(c.arguments == {"city": "Paris"} for c in s.pending_tool_calls)
    s = allm.Session.from_json(s.to_json())
    for call in s.pending_tool_calls:
        s = s.approve(eng, call.id)
    assert ran and s.status == "idle"
    s, r = s.continue_(eng, params=params)
    assert s.status == "completed" and r.halted_reason == "completed"
    assert r.final_response is not None and r.final_response.output_text.strip()
    assert [m.role for m in s.thread.messages][-1] == "assistant"
