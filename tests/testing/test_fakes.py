"""ScriptedFake, fake(), auto() and example(): scripted and unscripted model stand-ins."""

from __future__ import annotations

import asyncio
import pickle
import threading
from typing import Any, Literal

import jsonschema
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import allm
from allm.events import MessageCompleted, MessageStarted, TextDelta
from allm.providers import Fake
from allm.testing import ScriptedFake, auto, error, event_types, example, fake, fake_engine, text, tool_call, usage


def test_scripted_fake_keeps_events_beside_requests() -> None:
    f = fake(["one"], [tool_call("t", {"x": 1}, id="c1")], [error("rate_limited", before_stream=True)])
    engine = allm.Engine(adapter=f, model="fake", retry=allm.RetryPolicy(max_attempts=1))
    allm.generate(engine, "a")
    allm.generate(engine, "b")
    with pytest.raises(allm.AdapterError):
        allm.generate(engine, "c")
    assert [r.messages[-1].text for r in f.requests] == ["a", "b", "c"]
    assert [event_types(e) for e in f.events] == [
        ["MessageStarted", "TextDelta", "TextCompleted", "MessageCompleted"],
        ["MessageStarted", "ToolCallStarted", "ToolCallDelta", "ToolCallCompleted", "MessageCompleted"],
        [],  # failed before its first event
    ]
    assert f.last_request is f.requests[-1] and f.last_events == []
    assert isinstance(f, Fake)  # a drop-in for the provider's Fake


def test_events_are_what_the_caller_streamed() -> None:
    f = fake([text("hi"), usage(3, 1)])
    streamed = list(allm.stream_generate(allm.Engine(adapter=f, model="fake"), "x"))
    assert f.last_events == streamed


async def test_async_calls_are_kept_too() -> None:
    f = fake(["a"], ["b"])
    engine = allm.Engine(adapter=f, model="fake")
    out = await asyncio.gather(allm.agenerate(engine, "1"), allm.agenerate(engine, "2"))
    assert sorted(r.output_text for r in out) == ["a", "b"] and len(f.events) == 2


def test_concurrent_calls_keep_requests_and_events_aligned() -> None:
    f = fake(function=lambda r: "echo " + r.messages[-1].text)
    engine = allm.Engine(adapter=f, model="fake")
    threads = [threading.Thread(target=allm.generate, args=(engine, str(i))) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for req, evs in zip(f.requests, f.events, strict=True):
        assert evs[1] == TextDelta("echo " + req.messages[-1].text)


def test_a_scripted_fake_pickles_and_keeps_working() -> None:
    f = fake(["a"], ["b"])
    allm.generate(allm.Engine(adapter=f, model="fake"), "x")
    g = pickle.loads(pickle.dumps(f))
    assert isinstance(g, ScriptedFake) and g.events == f.events and g.calls == 1
    assert allm.generate(allm.Engine(adapter=g, model="fake"), "y").output_text == "b" and len(g.events) == 2


def test_fake_arguments() -> None:
    assert fake("just text").open(allm.request("x")) is not None
    with pytest.raises(ValueError, match="scripts or function="):
        fake(["a"], function=lambda r: "b")
    assert allm.generate(fake_engine(function=lambda r: "fn"), "x").output_text == "fn"
    engine = fake_engine(["hi"], tools=[allm.tool(name="t")], defaults={"temperature": 0})
    allm.generate(engine, "x")
    assert engine.adapter.requests[-1].temperature == 0 and engine.adapter.requests[-1].tools[0].name == "t"
    assert type(engine.adapter) is Fake  # a plain Fake: storable with the engine
    assert allm.codec.loads(allm.codec.dumps(engine), allm.Engine).adapter.calls == 1
    assert allm.generate(fake_engine(), "x").output_text == "success (no tool calls)"
    with pytest.raises(ValueError, match="scripts or function="):
        fake_engine(["a"], function=lambda r: "b")
    img = fake(images=[allm.testing.image(b"\x89PNG", revised_prompt="p")])
    assert allm.generate_image(allm.Engine(adapter=img, model="fake"), "a cat").images[0].revised_prompt == "p"


# ------------------------------------------------------------------------------ auto


@allm.function_tool
def get_weather(city: str, days: int = 1) -> dict[str, Any]:
    """Current weather.

    Args:
        city: The city.
        days: How many days.
    """
    return {"city": city, "temp_c": 18}


@allm.function_tool
def convert(amount: float, currency: Literal["EUR", "USD"]) -> str:
    """Convert money."""
    return f"{amount} {currency}"


def test_auto_calls_every_tool_then_answers_with_their_results() -> None:
    engine = allm.Engine(adapter=fake(), model="fake", tools=[get_weather, convert])
    result = allm.chat(engine, "Weather, and 3 euros?")
    _, second = engine.adapter.requests
    calls = result.steps[0].response.tool_calls
    assert [(c.name, dict(c.arguments)) for c in calls] == [("get_weather", {"city": "a"}), ("convert", {"amount": 2.0, "currency": "EUR"})]
    assert result.final_response.output_text == '{"get_weather":{"city":"a","temp_c":18},"convert":"2.0 EUR"}'
    assert result.halted_reason == "completed" and len(second.messages) == 4


def test_auto_options() -> None:
    only = allm.Engine(adapter=fake(function=auto(tools=["convert"], text="done")), model="fake", tools=[get_weather, convert])
    r = allm.chat(only, "x")
    assert [c.name for c in r.steps[0].response.tool_calls] == ["convert"] and r.final_response.output_text == "done"
    none = allm.Engine(adapter=fake(), model="fake", tools=[get_weather])
    assert allm.generate(none, allm.request("x", tool_choice="none")).output_text == "success (no tool calls)"
    named = allm.Engine(adapter=fake(), model="fake", tools=[get_weather, convert])
    assert [c.name for c in allm.generate(named, allm.request("x", tool_choice="convert")).tool_calls] == ["convert"]
    # A new user turn calls the tools again.
    engine = allm.Engine(adapter=fake(), model="fake", tools=[get_weather])
    session, _ = allm.Session.start(engine, "first")
    session, _ = session.reply(engine, "second")
    assert sum(1 for m in session.thread.messages if m.role == "tool") == 2


class City(pydantic.BaseModel):
    name: str
    population: int = pydantic.Field(ge=1000)
    tags: list[str]
    capital: bool


def test_auto_answers_structured_output_with_a_valid_object() -> None:
    obj = allm.generate_object(allm.Engine(adapter=fake(), model="fake"), "A city?", City)
    assert obj == City(name="a", population=1000, tags=["c"], capital=True)  # seeds vary by property
    given = allm.generate_object(
        allm.Engine(adapter=fake(function=auto(output={"name": "Paris", "population": 2100000, "tags": [], "capital": True})), model="fake"),
        "x",
        City,
    )
    assert given.name == "Paris"


# ------------------------------------------------------------------------------ example


SCHEMAS: list[dict[str, Any]] = [
    {"type": "string", "minLength": 5, "maxLength": 7},
    {"type": "string", "format": "date-time"},
    {"type": "string", "format": "email"},
    {"type": "integer", "minimum": 10, "maximum": 20, "multipleOf": 3},
    {"type": "integer", "exclusiveMinimum": 0},
    {"type": "integer", "maximum": -5},
    {"type": "number", "exclusiveMinimum": 1.5, "exclusiveMaximum": 2.5},
    {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1, "multipleOf": 0.25},
    {"type": "integer", "exclusiveMinimum": 2.5, "exclusiveMaximum": 4},
    {"type": "integer", "minimum": -7, "maximum": -3, "multipleOf": 2},
    {"type": "array", "items": {"type": "integer"}, "minItems": 3, "uniqueItems": True},
    {"type": "array", "maxItems": 0},
    {"type": ["null", "boolean"]},
    {"enum": ["red", "green"]},
    {"const": 7},
    {"anyOf": [{"type": "null"}, {"type": "string", "minLength": 2}]},
    {"oneOf": [{"type": "integer"}]},
    {"allOf": [{"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}, {"required": ["b"], "properties": {"b": {"type": "integer"}}}]},
    {"type": "object", "properties": {"x": {"$ref": "#/$defs/P"}}, "required": ["x"], "$defs": {"P": {"type": "object", "properties": {"y": {"type": "number"}}, "required": ["y"]}}},
    {"type": "object", "required": ["free"], "additionalProperties": {"type": "boolean"}},
    {"type": "string", "pattern": "^[A-Z]{3}$", "examples": ["ABC"]},
    {"type": "object", "properties": {"when": {"type": "string", "format": "date"}}, "required": ["when"], "additionalProperties": False},
]


@pytest.mark.parametrize("schema", SCHEMAS, ids=[str(i) for i in range(len(SCHEMAS))])
@given(seed=st.integers(0, 1000))
@settings(max_examples=25, deadline=None)
def test_example_is_valid_for_its_schema(schema: dict[str, Any], seed: int) -> None:
    value = example(schema, seed=seed)
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(value)
    assert example(schema, seed=seed) == value  # deterministic


class Item(pydantic.BaseModel):
    sku: str = pydantic.Field(min_length=3)
    qty: int = pydantic.Field(gt=0, le=9)


class Order(pydantic.BaseModel):
    items: list[Item] = pydantic.Field(min_length=2)
    note: str | None = None
    kind: Literal["web", "shop"]
    ship_to: Item | None


def test_example_of_pydantic_schemas() -> None:
    schema = allm.schema_for(Order)
    value = example(schema)
    jsonschema.validate(value, schema)
    order = Order.model_validate(value)
    assert len(order.items) == 2 and order.items[0].qty == 1


def test_example_errors() -> None:
    with pytest.raises(ValueError, match="only local references"):
        example({"$ref": "https://example.com/s.json"})
    with pytest.raises(ValueError, match="cannot resolve"):
        example({"$ref": "#/$defs/Nope"})
    with pytest.raises(ValueError, match="deeper than 32"):
        example({"$ref": "#", "type": "object"})
    with pytest.raises(ValueError, match="type 'widget'"):
        example({"type": "widget"})


def test_first_events() -> None:
    evs = list(allm.stream_generate(fake_engine(["x"]), "y"))
    assert isinstance(evs[0], MessageStarted) and isinstance(evs[-1], MessageCompleted)
