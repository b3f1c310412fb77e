"""The local SmolLM2-135M (llama-server, Hermes tool template) calls a tool of a real MCP
server end to end: allm lists the server's tools, the model asks for one, allm calls the
server, and the model reads the result. As in tests/test_live_tools.py, the model gets a
one-line example call in the system prompt, temperature 0, a seed and no prompt cache."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

import allm
from allm import mcp
from allm.providers import OpenAICompatible

from .conftest import server_command

pytestmark = pytest.mark.live

SYSTEM = (
    "You are a weather bot. You only answer with a tool call. Example:\n"
    "User: What is the weather in London?\n"
    'Assistant: <tool_call>{"name": "weather__get_weather", "arguments": {"city": "London"}}</tool_call>'
)


def test_local_model_calls_an_mcp_tool(llama_server: Any) -> None:
    server = mcp.Server.stdio("weather", server_command(), allowed_tools=["get_weather"])
    with mcp.Client() as client:
        tools = client.tools(server)
        assert [t.name for t in tools] == ["weather__get_weather"]
        engine = allm.Engine(adapter=OpenAICompatible.llama_cpp(llama_server.base_url), model="smollm2", tools=tools)
        req = allm.request(
            [allm.system(SYSTEM), allm.user("What is the weather in Paris?")],
            temperature=0.0,
            seed=42,
            max_tokens=120,
            options={"cache_prompt": False},
        )
        result = allm.chat(engine, req, max_turns=2)
    first = result.steps[0]
    # The model called the MCP tool with the city asked about, and the server answered. (At
    # this size it tends to repeat the call: max_tokens leaves room for that, since a call cut
    # off mid-JSON would be sent back and refused by llama-server's template. Any call that is
    # not well-formed is a tool error the loop reports; the well-formed ones must be right.)
    assert first.response.finish_reason == "tool_calls"
    good = [c for c in first.response.tool_calls if c.parse_error is None]
    assert good and all(c.name == "weather__get_weather" and c.arguments == {"city": "Paris"} for c in good)
    results = {m.tool_call_id: m for m in first.tool_results}
    for c in good:
        assert not results[c.id].is_error
        assert orjson.loads(results[c.id].text) == {"city": "Paris", "temperature_c": 18, "sky": "sunny"}
    # The model read the results and took another turn (its wording is not checked, only that
    # the loop went on from the server's answer).
    assert len(result.steps) == 2 and result.halted_reason in ("completed", "max_turns")
    sent = result.steps[1].response
    assert sent is not None and result.thread.messages[3].role == "tool"
