"""Structured output on a real model: llama-server with SmolLM2-135M, through three wire APIs."""

from __future__ import annotations

import dataclasses
from typing import Any, TypedDict

import orjson
import pytest

import allm
from allm.providers import Anthropic, OpenAICompatible, OpenAIResponses

pytestmark = pytest.mark.live

QUESTION = "What is the capital of France? Answer as JSON with city and country."


@dataclasses.dataclass
class Capital:
    city: str
    country: str


class CapitalDict(TypedDict):
    city: str
    country: str


def _engine(adapter: Any) -> allm.Engine:
    return allm.Engine(adapter=adapter, model="smollm2", defaults={"temperature": 0.0, "seed": 42, "max_tokens": 60})


@pytest.fixture(scope="module")
def adapters(llama_server: Any) -> dict[str, Any]:
    return {
        "chat": OpenAICompatible.llama_cpp(llama_server.base_url),
        "responses": OpenAIResponses.compatible(llama_server.base_url, "llama.cpp"),
        "anthropic": Anthropic(base_url=llama_server.base_url),
    }


# Anthropic's output_config is mapped (checked against the recorded request), but
# llama-server's /v1/messages enforces no schema in any form, so a 135M model's free
# answer there is luck, not a test; the typed failure path is tested below instead.
@pytest.mark.parametrize("api", ["chat", "responses"])
def test_generate_object_returns_a_valid_dataclass(adapters: dict[str, Any], api: str) -> None:
    result = allm.generate_object(_engine(adapters[api]), QUESTION, Capital, return_response=True)
    cap = result.value
    assert isinstance(cap, Capital) and isinstance(cap.city, str) and isinstance(cap.country, str)
    assert "paris" in cap.city.lower()
    assert orjson.loads(result.raw_text) == dataclasses.asdict(cap)
    assert result.response.usage.input_tokens and result.response.usage.output_tokens


async def test_agenerate_object_with_a_typeddict(adapters: dict[str, Any]) -> None:
    got = await allm.agenerate_object(_engine(adapters["chat"]), QUESTION, CapitalDict)
    assert type(got) is dict and set(got) == {"city", "country"} and "paris" in got["city"].lower()


def test_json_schema_response_format_on_the_responses_api(adapters: dict[str, Any]) -> None:
    schema = allm.schema_for(Capital)
    resp = allm.generate(_engine(adapters["responses"]), allm.request(QUESTION, response_format=allm.json_schema("capital", schema)))
    data = orjson.loads(resp.output_text)
    assert set(data) == {"city", "country"} and all(isinstance(v, str) for v in data.values())


def test_unenforced_schema_gives_a_typed_error_or_a_valid_value(adapters: dict[str, Any]) -> None:
    try:
        cap = allm.generate_object(_engine(adapters["anthropic"]), QUESTION, Capital)
    except allm.InvalidOutputError as exc:
        assert exc.raw_text and exc.errors and exc.response is not None
        assert exc.response.output_text == exc.raw_text
    else:
        assert isinstance(cap, Capital)
