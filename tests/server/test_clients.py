"""Real clients against a real ``allm serve`` process: the ``openai`` Python SDK and allm's own
OpenAI Responses adapter."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator

import pytest

import allm
from allm.providers import registry

from .conftest import ServeProcess

openai = pytest.importorskip("openai")

WEATHER = {"type": "function", "name": "get_weather", "description": "Weather of a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.fixture
def sdk(fake_server: ServeProcess) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=f"{fake_server.url}/v1", api_key="test-key", max_retries=0)
    yield client
    client.close()


def _strict(model: object) -> None:
    """Re-validate an SDK object strictly: every field the SDK knows parses (no silent construct)."""
    cls: type = type(model)
    if cls.__name__ == "ParsedResponse":  # the stream helper's generic subclass: check as the plain one
        cls = openai.types.responses.Response
    data = model.model_dump(mode="json", exclude_unset=True, warnings=False)  # type: ignore[attr-defined]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cls.model_validate(data)


def test_create_retrieve_input_items_delete(sdk: openai.OpenAI) -> None:
    resp = sdk.responses.create(model="fake", input="Say hello", instructions="Be brief.")
    _strict(resp)
    assert resp.status == "completed" and resp.output_text == "Hello there, friend! 1 2 3 4 5"
    assert resp.usage is not None and resp.usage.output_tokens == 7
    assert resp.usage.input_tokens_details.cached_tokens == 0
    assert resp.usage.output_tokens_details.reasoning_tokens == 0
    got = sdk.responses.retrieve(resp.id)
    _strict(got)
    assert got.id == resp.id and got.output_text == resp.output_text
    items = sdk.responses.input_items.list(resp.id)
    assert [i.type for i in items.data] == ["message"]
    _strict(items.data[0])
    sdk.responses.delete(resp.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(resp.id)


def test_stream(sdk: openai.OpenAI) -> None:
    seen: list[str] = []
    deltas: list[str] = []
    with sdk.responses.stream(model="fake", input="Count") as stream:
        for event in stream:
            seen.append(event.type)
            _strict(event)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert seen[0] == "response.created" and seen[-1] == "response.completed"
    assert "".join(deltas) == final.output_text == "Hello there, friend! 1 2 3 4 5"
    # the low-level stream=True form too
    events = list(sdk.responses.create(model="fake", input="x", stream=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_continuation(sdk: openai.OpenAI) -> None:
    first = sdk.responses.create(model="echo", input="my name is Ada")
    second = sdk.responses.create(model="echo", input="what is it?", previous_response_id=first.id)
    assert second.output_text == "my name is Ada | what is it?"
    assert second.previous_response_id == first.id


def test_function_tool_round_trip(sdk: openai.OpenAI) -> None:
    first = sdk.responses.create(model="fake", input="Weather in Paris?", tools=[WEATHER])  # type: ignore[list-item]
    calls = [o for o in first.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    args = json.loads(calls[0].arguments)
    assert set(args) == {"city"}
    second = sdk.responses.create(
        model="fake",
        previous_response_id=first.id,
        tools=[WEATHER],  # type: ignore[list-item]
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": '{"temp_c": 18}'}],
    )
    _strict(second)
    assert second.output_text == "Hello there, friend! 1 2 3 4 5"


def test_sdk_errors_are_typed(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        sdk.responses.create(model="fake", input="x", previous_response_id="resp_missing")
    assert info.value.code == "previous_response_not_found"
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("nope")  # no such endpoint: a spec-shaped 404


def test_models_list(sdk: openai.OpenAI) -> None:
    ids = {m.id for m in sdk.models.list()}
    assert ids == {"thinker", "fake"}


def test_allm_responses_adapter_as_a_client(fake_server: ServeProcess) -> None:
    adapter = registry.build("responses", base_url=f"{fake_server.url}/v1")
    engine = allm.Engine(adapter=adapter, model="fake")
    resp = allm.generate(engine, allm.request([allm.user("hello")]), api_key="test-key")
    assert resp.output_text == "Hello there, friend! 1 2 3 4 5"
    assert resp.usage.output_tokens == 7
    text = "".join(e.delta for e in allm.stream_generate(engine, allm.request([allm.user("hi")]), api_key="test-key")
                   if isinstance(e, allm.events.TextDelta))
    assert text == "Hello there, friend! 1 2 3 4 5"

    # a tool loop whose tool runs in this client: the server hands the call back
    def get_weather(args: dict[str, str]) -> dict[str, int]:
        return {"temp_c": 18}

    tool = allm.tool("get_weather", "Weather of a city", WEATHER["parameters"], get_weather)  # type: ignore[arg-type]
    result = allm.chat(engine, allm.request([allm.user("weather?")], tools=[tool]), api_key="test-key")
    assert result.halted_reason == "completed"
    assert [m.role for m in result.thread.messages] == ["user", "assistant", "tool", "assistant"]
    assert result.final_response is not None and result.final_response.output_text == "Hello there, friend! 1 2 3 4 5"
