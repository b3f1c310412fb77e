"""The Fake refuses the threads every real adapter refuses, with the same ValidationError, so
a test written against the Fake fails where production would; and it accepts what they accept."""

from __future__ import annotations

from typing import Any

import pytest

import allm
from allm.errors import ValidationError
from allm.providers import Anthropic, Fake, Gemini, OpenAI, OpenAICompatible, OpenAIResponses
from allm.testing import text

REAL = {
    "chat": OpenAI(),
    "compatible": OpenAICompatible.llama_cpp(),
    "responses": OpenAIResponses(),
    "anthropic": Anthropic(),
    "gemini": Gemini(),
}
CALL = allm.ToolCall("call_1", "get_weather", {"city": "Paris"}, '{"city": "Paris"}')
PNG = allm.ImagePart.from_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 16, "image/png")
WEATHER = allm.Tool("get_weather")

BAD: list[tuple[str, list[allm.Message], dict[str, Any], str]] = [
    ("tool message without tool_call_id", [allm.user("q"), allm.assistant(tool_calls=[CALL]), allm.Message("tool", "18")],
     {}, "invalid_message"),
    ("tool result answering no call", [allm.user("q"), allm.tool_result("call_9", "18")], {}, "invalid_thread"),
    ("tool result before its call", [allm.user("q"), allm.tool_result("call_1", "18"), allm.assistant(tool_calls=[CALL])],
     {}, "invalid_thread"),
    ("tool result for another call id", [allm.user("q"), allm.assistant(tool_calls=[CALL]), allm.tool_result("call_2", "x")],
     {}, "invalid_thread"),
    ("image in a system message", [allm.Message("system", ("Be brief.", PNG)), allm.user("q")], {}, "invalid_image"),
    ("tool_choice naming a tool not offered", [allm.user("q")], {"tools": [WEATHER], "tool_choice": "get_time"},
     "invalid_request"),
    ("tool_choice required without tools", [allm.user("q")], {"tool_choice": "required"}, "invalid_request"),
]


def _refusal(encode: Any) -> ValidationError:
    with pytest.raises(ValidationError) as ei:
        encode()
    return ei.value


@pytest.mark.parametrize(("messages", "fields", "reason"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_the_fake_refuses_what_every_real_adapter_refuses(messages: list[allm.Message], fields: dict[str, Any], reason: str) -> None:
    req = allm.request(messages, model="m", **fields)
    errors = {name: _refusal(lambda a=a: a.encode(req, stream=True)) for name, a in REAL.items()}
    fake = Fake([text("never")])
    errors["fake"] = _refusal(lambda: allm.generate(allm.Engine(adapter=fake, model="fake"), req))
    errors["fake count_tokens"] = _refusal(lambda: fake.encode_count_tokens(req))
    assert {e.reason for e in errors.values()} == {reason}
    assert len({e.message for e in errors.values()}) == 1, {n: e.message for n, e in errors.items()}
    assert fake.calls == 0  # refused before anything was recorded, as nothing is sent


GOOD: list[tuple[str, list[allm.Message]]] = [
    ("a tool round", [allm.system("s"), allm.user("q"), allm.assistant(tool_calls=[CALL]), allm.tool_result("call_1", "18"),
                      allm.assistant("18 °C")]),
    ("an empty model answer kept in the thread", [allm.user("q"), allm.assistant(""), allm.user("again?")]),
    ("an image in a user message", [allm.user(["look", PNG])]),
    ("a late system message", [allm.user("q"), allm.assistant("a"), allm.system("now be terse"), allm.user("q2")]),
]


@pytest.mark.parametrize("messages", [g[1] for g in GOOD], ids=[g[0] for g in GOOD])
def test_what_real_adapters_accept_the_fake_accepts(messages: list[allm.Message]) -> None:
    req = allm.request(messages, model="m", tools=[WEATHER], tool_choice="get_weather")
    for adapter in REAL.values():
        adapter.encode(req, stream=True)
    resp = allm.generate(allm.Engine(adapter=Fake([text("ok")]), model="fake"), req)
    assert resp.output_text == "ok"


def test_a_session_answering_a_pending_call_is_accepted() -> None:
    from allm.testing import fake_engine, tool_call

    weather = allm.tool("get_weather", handler=lambda args: "18", manual=True)
    engine = fake_engine([tool_call("get_weather", {"city": "Paris"})], [text("18 °C")], tools=[weather])
    session, _ = allm.Session.start(engine, "Weather?")
    session = session.submit_tool_result(session.pending_tool_calls[0].id, "18")
    session, result = session.continue_(engine)
    assert result.final_response is not None and result.final_response.output_text == "18 °C"
