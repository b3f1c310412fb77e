"""Request values are checked before anything is sent: a sampling value of the wrong type or
out of range, an ``options`` value JSON cannot hold, a text JSON cannot carry. Each is a
ValidationError naming the field; nothing reaches the server (a loopback server counts)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import allm
from allm.errors import ValidationError
from allm.providers import Anthropic, Gemini, OpenAI, OpenAIResponses
from tests.loopback import LoopbackServer, Req, Writer, chat_chunks, serve


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("temperature", float("nan"), "temperature must be a finite number"),
        ("temperature", float("inf"), "temperature must be a finite number"),
        ("temperature", "hot", "temperature must be a finite number, not 'hot'"),
        ("temperature", True, "temperature must be a finite number"),
        ("temperature", -0.5, "temperature must be at least 0"),
        ("top_p", 1.5, "top_p must be between 0 and 1"),
        ("top_p", float("-inf"), "top_p must be a finite number"),
        ("top_k", 0, "top_k must be between 1"),
        ("top_k", 2.5, "top_k must be an integer"),
        ("max_tokens", -5, "max_tokens must be between 1 and 2147483647, not -5"),
        ("max_tokens", 10**30, "max_tokens must be between 1 and 2147483647"),
        ("max_tokens", "64", "max_tokens must be an integer"),
        ("seed", 2**64, "seed must be between"),
        ("seed", 1.0, "seed must be an integer"),
        ("frequency_penalty", float("nan"), "frequency_penalty must be a finite number"),
        ("presence_penalty", "0.5", "presence_penalty must be a finite number"),
        ("stop_sequences", ["ok", ""], r"stop_sequences[1] must be a non-empty string"),
        ("stop_sequences", [3], r"stop_sequences[0] must be a non-empty string"),
        ("stop_sequences", ["\ud800"], r"stop_sequences[0] is not valid Unicode"),
        ("options", {"tags": {1, 2}}, "options.tags is a set"),
        ("options", {"x": [1, float("nan")]}, "options.x[1] is nan"),
        ("options", {"x": "\udcff"}, "options.x is not valid Unicode"),
        ("options", {1: "a"}, "options has a key 1"),
        ("options", ["not", "a", "mapping"], "options must be a mapping"),
        ("model", "", "model must be a non-empty string"),
        ("response_format", {"type": "json_object"}, "response_format must be an allm.ResponseFormat"),
    ],
)
def test_bad_values_are_refused_at_construction(field: str, value: Any, needle: str) -> None:
    with pytest.raises(ValidationError) as ei:
        allm.request("hi", **{field: value})
    assert ei.value.reason == "invalid_request"
    assert needle in ei.value.message, ei.value.message


def test_good_values_pass() -> None:
    req = allm.request(
        "hi", temperature=0, top_p=1, top_k=40, max_tokens=2**31 - 1, seed=-(2**63), frequency_penalty=-2,
        presence_penalty=1.5, stop_sequences="\n", options={"a": [1, 2.5, None, {"b": True}]},
    )
    assert req.stop_sequences == ("\n",)  # one string is one stop sequence


def test_engine_defaults_are_checked_when_the_engine_is_built() -> None:
    from allm.providers import Fake

    with pytest.raises(ValidationError, match="temperature must be a finite number"):
        allm.Engine(adapter=Fake(["x"]), model="fake", defaults={"temperature": float("nan")})


ADAPTERS = {
    "openai": OpenAI(),
    "responses": OpenAIResponses(),
    "anthropic": Anthropic(),
    "gemini": Gemini(),
}


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_a_lone_surrogate_in_a_message_is_refused_at_encode_naming_where(name: str) -> None:
    req = allm.request([allm.user("ok"), allm.user("bad \ud800 text")], model="m")
    with pytest.raises(ValidationError) as ei:
        ADAPTERS[name].encode(req, stream=True)
    assert ei.value.reason == "invalid_request"
    assert "not valid Unicode" in ei.value.message and ei.value.message.startswith("body.")
    assert "[1]" in ei.value.message  # the second message


async def _answer_hi(req: Req, w: Writer) -> None:
    await w.start_stream()
    for c in chat_chunks(["hi"]):
        await w.chunk(c)
    await w.end_stream()


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with serve(_answer_hi) as s:
        yield s


def test_nothing_is_sent_for_a_bad_value(server: LoopbackServer) -> None:
    from allm.providers import OpenAICompatible

    seen = server.requests  # every request the server received
    engine = allm.Engine(adapter=OpenAICompatible(server.url + "/v1"), model="m")
    assert allm.generate(engine, "hi").output_text == "hi"  # the server answers a good request
    assert len(seen) == 1
    for bad in (
        lambda: allm.generate(engine, allm.request("hi", temperature=float("nan"))),
        lambda: allm.generate(engine, allm.request("hi", options={"s": {1}})),
        lambda: allm.generate(engine, allm.request([allm.user("\ud800")])),
        lambda: allm.generate(engine, allm.request("hi", max_tokens=10**30)),
    ):
        with pytest.raises(ValidationError):
            bad()
    assert len(seen) == 1
