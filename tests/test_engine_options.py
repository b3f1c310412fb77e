"""Engine-wide provider options: ``Engine(defaults={"options": {...}})`` with the precedence of
the sampling fields (the request's keys win, key by key), checked when the engine is built,
stored with the engine, and read by each adapter as its guide says."""

from __future__ import annotations

from typing import Any

import attrs
import orjson
import pytest

import allm
from allm import codec
from allm.errors import ValidationError
from allm.providers import Anthropic, Fake, Gemini, OpenAI, OpenAICompatible
from allm.testing import text
from tests.loopback import Req, Writer, chat_chunks, serve


def _sent(defaults: dict[str, Any], request: allm.Request) -> allm.Request:
    """The request as the engine sends it (the Fake records what it receives)."""
    fake = Fake([text("ok")])
    allm.generate(allm.Engine(adapter=fake, model="fake", defaults=defaults), request)
    sent: allm.Request = fake.requests[0]
    return sent


def test_engine_options_fill_in_and_the_request_wins_per_key() -> None:
    defaults = {"options": {"reasoning_effort": "low", "metadata": {"team": "a"}}, "temperature": 0}
    assert _sent(defaults, allm.request("hi")).options == {"reasoning_effort": "low", "metadata": {"team": "a"}}
    mine = _sent(defaults, allm.request("hi", options={"reasoning_effort": "high", "user": "u1"}))
    assert mine.options == {"reasoning_effort": "high", "metadata": {"team": "a"}, "user": "u1"}
    assert mine.temperature == 0
    assert _sent({}, allm.request("hi", options={"x": 1})).options == {"x": 1}


def test_engine_options_reach_the_wire() -> None:
    bodies: list[dict[str, Any]] = []

    async def handler(req: Req, w: Writer) -> None:
        bodies.append(orjson.loads(req.body))
        await w.start_stream()
        for c in chat_chunks(["ok"]):
            await w.chunk(c)
        await w.end_stream()

    with serve(handler) as server:
        engine = allm.Engine(
            adapter=OpenAICompatible(server.url + "/v1"), model="m",
            defaults={"options": {"cache_prompt": True, "n_probs": 2}, "max_tokens": 16},
        )
        allm.generate(engine, allm.request("hi", options={"n_probs": 0}))
    assert bodies[0]["cache_prompt"] is True and bodies[0]["n_probs"] == 0 and bodies[0]["max_tokens"] == 16


def test_each_adapter_reads_its_options() -> None:
    thinking = {"type": "enabled", "budget_tokens": 1024}
    req = _sent({"options": {"thinking": thinking, "anthropic_beta": ["b1"]}}, allm.request("hi", max_tokens=2048))
    call = Anthropic().encode(attrs.evolve(req, model="m"), stream=True)
    body = orjson.loads(call.body or b"")
    assert body["thinking"] == thinking and "anthropic_beta" not in body and call.headers["anthropic-beta"] == "b1"
    req = _sent({"options": {"safetySettings": [{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_NONE"}],
                             "generationConfig": {"candidateCount": 1}}}, allm.request("hi", temperature=0.5))
    body = orjson.loads(Gemini().encode(attrs.evolve(req, model="m"), stream=True).body or b"")
    assert body["generationConfig"] == {"temperature": 0.5, "candidateCount": 1}  # deep-merged
    assert body["safetySettings"][0]["threshold"] == "BLOCK_NONE"
    req = _sent({"options": {"reasoning_effort": "minimal"}}, allm.request("hi"))
    assert orjson.loads(OpenAI().encode(attrs.evolve(req, model="gpt-4.1"), stream=True).body or b"")["reasoning_effort"] == "minimal"
    # The same engine-wide option on a model the router sends to the Responses API.
    body = orjson.loads(OpenAI(reasoning_summary="auto").encode(attrs.evolve(req, model="o4-mini"), stream=True).body or b"")
    assert body["reasoning"] == {"effort": "minimal", "summary": "auto"} and "reasoning_effort" not in body


@pytest.mark.parametrize(
    ("defaults", "needle"),
    [
        ({"options": {"tags": {1}}}, "options.tags is a set"),
        ({"options": "x"}, "options must be a mapping"),
        ({"temperature": "hot"}, "temperature must be a finite number"),
        ({"max_tokens": -1}, "max_tokens must be between"),
        ({"prompt_cache": {"key": "k"}}, "prompt_cache must be an allm.PromptCache"),
        ({"tools": []}, "accepts"),
    ],
)
def test_bad_defaults_are_refused_when_the_engine_is_built(defaults: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError) as ei:
        allm.Engine(adapter=Fake(["x"]), defaults=defaults)
    assert needle in ei.value.message


def test_an_engine_with_value_defaults_is_stored_and_loaded() -> None:
    engine = allm.Engine(
        adapter=OpenAI(), model="m",
        defaults={"options": {"reasoning_effort": "low"}, "prompt_cache": allm.PromptCache("k", "1h"),
                  "response_format": allm.json_schema("a", {"type": "object"}), "temperature": 0},
    )
    back = codec.loads(codec.dumps(engine), allm.Engine)
    assert back == engine and back.defaults["prompt_cache"] == allm.PromptCache("k", "1h")
