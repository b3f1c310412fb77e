"""End to end on a real model: llama.cpp's llama-server with SmolLM2-135M-Instruct, on loopback."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

import allm
from allm.events import MessageCompleted, MessageStarted, RawChunk, TextCompleted, TextDelta
from allm.providers import OpenAICompatible

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def engine(llama_server: Any) -> allm.Engine:
    return allm.Engine(
        adapter=OpenAICompatible.llama_cpp(llama_server.base_url),
        model="smollm2",
        defaults={"temperature": 0.0, "seed": 42},
    )


QUESTION = [allm.system("Be brief."), allm.user("What is the capital of France?")]


def test_real_answer(engine: allm.Engine) -> None:
    resp = allm.generate(engine, allm.request(QUESTION, max_tokens=40))
    assert "Paris" in resp.output_text
    assert resp.finish_reason in ("stop", "length") and resp.raw_finish_reason
    assert resp.model == "smollm2" and resp.id and resp.id.startswith("chatcmpl-")
    u = resp.usage
    assert u.input_tokens and u.input_tokens > 5 and u.output_tokens and u.output_tokens > 0
    assert u.total_tokens == u.input_tokens + u.output_tokens


def test_real_stream(engine: allm.Engine) -> None:
    events = list(allm.stream_generate(engine, allm.request(QUESTION, max_tokens=40)))
    assert isinstance(events[0], MessageStarted) and isinstance(events[-1], MessageCompleted)
    deltas = [e.delta for e in events if isinstance(e, TextDelta)]
    assert len(deltas) > 3
    completed = next(e for e in events if isinstance(e, TextCompleted))
    assert completed.text == "".join(deltas) and "Paris" in completed.text
    assert any(isinstance(e, RawChunk) and e.usage for e in events)
    # The same question, folded, gives the same text (temperature 0, fixed seed).
    assert allm.generate(engine, allm.request(QUESTION, max_tokens=40)).output_text == completed.text


async def test_real_async_and_body_paths(engine: allm.Engine) -> None:
    a = await allm.agenerate(engine, allm.request(QUESTION, max_tokens=40))
    b = allm.generate(engine, allm.request(QUESTION, max_tokens=40), http_streaming=False)
    assert "Paris" in a.output_text and a.output_text == b.output_text
    assert (a.usage.input_tokens, a.usage.output_tokens) == (b.usage.input_tokens, b.usage.output_tokens)


def test_json_schema_output(engine: allm.Engine) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
        "required": ["city", "country"],
        "additionalProperties": False,
    }
    req = allm.request(
        [allm.user("What is the capital of France? Answer as JSON with city and country.")],
        max_tokens=60,
        response_format=allm.json_schema("capital", schema),
    )
    resp = allm.generate(engine, req)
    data = orjson.loads(resp.output_text)
    assert set(data) == {"city", "country"}
    assert all(isinstance(v, str) for v in data.values())


def test_max_tokens_and_stop_sequences(engine: allm.Engine) -> None:
    resp = allm.generate(engine, allm.request("Count from 1 to 20, separated by commas.", max_tokens=5))
    assert resp.finish_reason == "length" and resp.usage.output_tokens == 5
    stopped = allm.generate(engine, allm.request("Count from 1 to 20, separated by commas.", max_tokens=60, stop_sequences=["5"]))
    assert "5" not in stopped.output_text and "6" not in stopped.output_text


def test_real_error_from_the_server(engine: allm.Engine) -> None:
    long_prompt = "hello " * 6000  # more tokens than the server's 4096-token context
    with pytest.raises(allm.AdapterError) as info:
        allm.generate(engine, allm.request(long_prompt, max_tokens=8))
    err = info.value
    assert err.reason == "context_length_exceeded" and err.status == 400
    assert "context" in err.message


def test_model_list(engine: allm.Engine) -> None:
    assert "smollm2" in allm.list_models(engine)


def test_embeddings_server(llama_embeddings_server: Any) -> None:
    e = allm.Engine(adapter=OpenAICompatible.llama_cpp(llama_embeddings_server.base_url), model="smollm2")
    emb = allm.embed(e, ["Paris is the capital of France.", "The capital of France is Paris.", "Bananas are yellow."])
    assert len(emb.vectors) == 3 and len({len(v) for v in emb.vectors}) == 1

    def cos(a: tuple[float, ...], b: tuple[float, ...]) -> float:
        dot = sum(x * y for x, y in zip(a, b, strict=True))
        return dot / ((sum(x * x for x in a) ** 0.5) * (sum(y * y for y in b) ** 0.5))

    assert cos(emb[0], emb[1]) > cos(emb[0], emb[2])
    assert emb.usage.input_tokens and emb.usage.input_tokens > 10
