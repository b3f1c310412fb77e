"""``tool_choice`` forces one function: a tool name, ``ToolChoice(name)`` or a provider's own
dict, checked against the tools offered and sent in each provider's shape."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

import allm
from allm.errors import ValidationError
from allm.providers import Anthropic, Fake, Gemini, OpenAI, OpenAICompatible, OpenAIResponses
from allm.testing import fake_engine, text, tool_call
from allm.types import ToolChoice

WEATHER = allm.Tool("get_weather", schema={"type": "object", "properties": {"city": {"type": "string"}}})
OTHER = allm.Tool("other")

WIRE: dict[str, tuple[Any, str, Any]] = {
    "chat": (OpenAI(), "tool_choice", {"type": "function", "function": {"name": "get_weather"}}),
    "compatible": (OpenAICompatible.llama_cpp(), "tool_choice", {"type": "function", "function": {"name": "get_weather"}}),
    "responses": (OpenAIResponses(), "tool_choice", {"type": "function", "name": "get_weather"}),
    "anthropic": (Anthropic(), "tool_choice", {"type": "tool", "name": "get_weather"}),
    "gemini": (Gemini(), "toolConfig", {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}}),
}

FORMS: list[Any] = [
    "get_weather",
    ToolChoice("get_weather"),
    ToolChoice(name="get_weather"),
    {"type": "function", "function": {"name": "get_weather"}},
    {"type": "function", "name": "get_weather"},
    {"type": "tool", "name": "get_weather"},
    {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
]


@pytest.mark.parametrize("form", FORMS, ids=lambda f: repr(f)[:40])
@pytest.mark.parametrize("wire", sorted(WIRE))
def test_every_form_is_sent_in_each_providers_shape(form: Any, wire: str) -> None:
    adapter, field, expected = WIRE[wire]
    req = allm.request("weather?", model="m", tools=[OTHER, WEATHER], tool_choice=form)
    assert req.tool_choice == "get_weather"
    body = orjson.loads(adapter.encode(req, stream=True).body or b"")
    assert body[field] == expected


@pytest.mark.parametrize(
    ("form", "stored"),
    [({"type": "auto"}, "auto"), ({"type": "any"}, "required"), ({"type": "none"}, "none"),
     ({"functionCallingConfig": {"mode": "AUTO"}}, "auto"), ({"functionCallingConfig": {"mode": "ANY"}}, "required")],
)
def test_provider_mode_dicts_become_modes(form: Any, stored: str) -> None:
    assert allm.request("x", tools=[WEATHER], tool_choice=form).tool_choice == stored


@pytest.mark.parametrize("wire", sorted(WIRE))
def test_an_unknown_tool_name_is_refused_before_sending(wire: str) -> None:
    adapter = WIRE[wire][0]
    for req in (
        allm.request("x", model="m", tools=[WEATHER], tool_choice="get_time"),
        allm.request("x", model="m", tool_choice=ToolChoice("get_weather")),  # no tools at all
        allm.request("x", model="m", tool_choice="required"),
    ):
        with pytest.raises(ValidationError) as ei:
            adapter.encode(req, stream=True)
        assert ei.value.reason == "invalid_request" and "tool" in ei.value.message


def test_the_fake_refuses_the_same_and_engine_tools_count() -> None:
    engine = fake_engine([text("x")])
    with pytest.raises(ValidationError, match="get_time"):
        allm.generate(engine, allm.request("x", tools=[WEATHER], tool_choice="get_time"))
    assert engine.adapter.calls == 0  # type: ignore[attr-defined]
    # A tool offered by the engine may be forced by a request that offers none itself.
    engine = allm.Engine(adapter=Fake([tool_call("get_weather", {"city": "Rome"})]), model="fake", tools=[WEATHER])
    resp = allm.generate(engine, allm.request("x", tool_choice=ToolChoice("get_weather")))
    assert resp.tool_calls[0].name == "get_weather"
    sent = engine.adapter.requests[0]  # type: ignore[attr-defined]
    assert sent.tool_choice == "get_weather" and [t.name for t in sent.tools] == ["get_weather"]
    body = orjson.loads(OpenAI().encode(sent, stream=True).body or b"")
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}


@pytest.mark.parametrize(
    ("form", "needle"),
    [
        ("bad name!", "neither auto, none, required nor a tool name"),
        ({"type": "function"}, "names no tool"),
        ({"type": "weird"}, "is not a shape allm reads"),
        ({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["a", "b"]}}, "is not a shape"),
        (42, "tool_choice must be a string, ToolChoice"),
    ],
)
def test_malformed_choices_are_refused_at_construction(form: Any, needle: str) -> None:
    with pytest.raises(ValidationError) as ei:
        allm.request("x", tool_choice=form)
    assert needle in ei.value.message


def test_a_tool_named_like_a_mode_cannot_be_forced_by_name() -> None:
    with pytest.raises(ValidationError, match="cannot be forced"):
        ToolChoice("auto")
    with pytest.raises(ValidationError, match="tool name"):
        ToolChoice("bad name!")
