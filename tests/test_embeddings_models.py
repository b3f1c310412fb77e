"""Embeddings and model lists against the recorded OpenAI traffic, over HTTP: the request
field by field, ``dimensions``, batches split at the provider's batch size with usage summed,
and every adapter's model list."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

import allm
from allm.errors import AdapterError
from allm.providers import Anthropic, Gemini, OpenAI, OpenAICompatible, OpenAIResponses
from tests.conftest import load_capture, load_case
from tests.loopback import LoopbackServer, Req, Writer, serve

EMB = load_case("openai-misc", "embeddings-multiple-inputs")
MODELS = load_case("openai-misc", "models-list")


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with serve() as s:
        yield s


def test_embedding_request_matches_the_recording_field_by_field() -> None:
    rec = EMB.request
    call = OpenAI().encode_embed(rec["input"], model=rec["model"], dimensions=rec["dimensions"])
    assert f"{call.method} {call.url}" == EMB.request_line
    body = orjson.loads(call.body)
    for field in ("model", "input", "dimensions"):
        assert body[field] == rec[field], field
    # We ask for base64 (a quarter of the bytes); the recorder took the float default.
    assert body["encoding_format"] == "base64" and set(body) == {*rec, "encoding_format"}
    assert "dimensions" not in orjson.loads(OpenAI().encode_embed(["a"], model="m").body)


def test_embed_replays_the_recording_over_http(server: LoopbackServer) -> None:
    async def handler(req: Req, w: Writer) -> None:
        await w.respond(200, EMB.body)

    server.handler = handler
    engine = allm.Engine(adapter=OpenAI(base_url=server.url + "/v1"), model="text-embedding-3-small")
    emb = allm.embed(engine, EMB.request["input"], dimensions=768, api_key="sk-test-000000")
    recorded = orjson.loads(EMB.body)
    assert emb.vectors == tuple(tuple(d["embedding"]) for d in recorded["data"])
    assert len(emb) == 3 and all(len(v) == 768 for v in emb.vectors)
    assert emb.model == "text-embedding-3-small" and emb.usage.input_tokens == recorded["usage"]["prompt_tokens"]
    assert orjson.loads(server.requests[0].body)["dimensions"] == 768


def _counting(server: LoopbackServer) -> list[int]:
    sizes: list[int] = []

    async def handler(req: Req, w: Writer) -> None:
        texts = orjson.loads(req.body)["input"]
        sizes.append(len(texts))
        data = [{"index": i, "embedding": [float(int(t)), float(len(sizes))]} for i, t in enumerate(texts)]
        usage = {"prompt_tokens": 2 * len(texts), "total_tokens": 2 * len(texts)}
        await w.respond(200, orjson.dumps({"object": "list", "data": data[::-1], "model": "e", "usage": usage}))

    server.handler = handler
    return sizes


@pytest.mark.parametrize("adapter_of", [lambda url: OpenAICompatible(url), lambda url: OpenAIResponses.compatible(url)])
def test_batches_split_at_the_batch_size_and_usage_is_summed(server: LoopbackServer, adapter_of: Any) -> None:
    sizes = _counting(server)
    adapter = adapter_of(server.url + "/v1")
    assert adapter.embed_batch_size == 2048
    texts = [str(i) for i in range(2 * 2048 + 5)]
    emb = allm.embed(allm.Engine(adapter=adapter, model="e"), texts, dimensions=4)
    assert sizes == [2048, 2048, 5]
    assert [v[0] for v in emb.vectors] == [float(i) for i in range(len(texts))]  # input order, across batches
    assert emb.usage.input_tokens == 2 * len(texts) and emb.usage.total_tokens == 2 * len(texts)
    assert all(orjson.loads(r.body)["dimensions"] == 4 for r in server.requests)


async def test_async_batches_are_sent_concurrently_and_joined_in_order(server: LoopbackServer) -> None:
    sizes = _counting(server)
    texts = [str(i) for i in range(2048 + 1)]
    emb = await allm.aembed(allm.Engine(adapter=OpenAICompatible(server.url + "/v1"), model="e"), texts)
    assert sorted(sizes) == [1, 2048] and [v[0] for v in emb.vectors] == [float(i) for i in range(len(texts))]
    assert emb.usage.input_tokens == 2 * len(texts)


def test_llama_server_embedding_captures_decode_alike() -> None:
    llama = OpenAICompatible.llama_cpp("http://127.0.0.1:8080/v1")
    floats = llama.decode_embed(load_capture("e2-embeddings").body)
    assert load_capture("e2-embeddings").request["input"] and len(floats) == len(load_capture("e2-embeddings").request["input"])


# ------------------------------------------------------------------------------ model lists


def _models_server(server: LoopbackServer, body: bytes) -> None:
    async def handler(req: Req, w: Writer) -> None:
        await w.respond(200, body)

    server.handler = handler


@pytest.mark.parametrize("adapter_of", [lambda url: OpenAI(base_url=url), lambda url: OpenAIResponses(base_url=url)])
def test_the_recorded_openai_model_list_replays(server: LoopbackServer, adapter_of: Any) -> None:
    _models_server(server, MODELS.body)
    ids = allm.list_models(allm.Engine(adapter=adapter_of(server.url + "/v1")), api_key="sk-test-000000")
    assert ids == [m["id"] for m in orjson.loads(MODELS.body)["data"]] and len(ids) > 50
    assert (server.requests[0].method, server.requests[0].path) == ("GET", "/v1/models")
    assert MODELS.request_line == "GET https://api.openai.com/v1/models"


def test_every_adapter_encodes_its_documented_model_list_call() -> None:
    calls = {
        "openai": OpenAI().encode_list_models(),
        "responses": OpenAIResponses().encode_list_models(),
        "anthropic": Anthropic().encode_list_models(),
        "gemini": Gemini().encode_list_models(),
    }
    assert {k: (c.method, c.url) for k, c in calls.items()} == {
        "openai": ("GET", "https://api.openai.com/v1/models"),
        "responses": ("GET", "https://api.openai.com/v1/models"),
        "anthropic": ("GET", "https://api.anthropic.com/v1/models?limit=1000"),
        "gemini": ("GET", "https://generativelanguage.googleapis.com/v1beta/models?pageSize=1000"),
    }
    assert OpenAIResponses().decode_list_models(MODELS.body) == OpenAI().decode_list_models(MODELS.body)


@pytest.mark.parametrize("body", [b"<html>", b"[]", b'{"data": null}'])
def test_a_malformed_model_list_is_a_typed_error(body: bytes) -> None:
    for adapter in (OpenAI(), OpenAIResponses(), OpenAICompatible.llama_cpp()):
        with pytest.raises(AdapterError) as info:
            adapter.decode_list_models(body)
        assert info.value.reason == "malformed_response"
