"""The Fake beside generation: embeddings, model lists, token counts and image calls through
the same encode/respond/decode pairs as an HTTP adapter, and its stored state."""

from __future__ import annotations

import math
import pickle

import orjson
import pytest

import allm
from allm import codec
from allm.errors import AdapterError
from allm.providers import Fake
from allm.providers.fake import EmbedRequest, count_tokens, derived_vector
from allm.testing import error, fake_engine, image, text, tool_call, usage

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 8


def test_embed_plays_scripted_vectors_and_derives_the_others() -> None:
    fake = Fake(embeddings={"cat": [1.0, 0.0], "dog": [0.0, 1.0]})
    engine = allm.Engine(adapter=fake, model="fake-embed")
    emb = allm.embed(engine, ["cat", "a dog and a cat", "dog"])
    assert emb.vectors[0] == (1.0, 0.0) and emb.vectors[2] == (0.0, 1.0)
    derived = emb.vectors[1]
    assert len(derived) == 8 and math.isclose(sum(v * v for v in derived), 1.0)
    assert derived == derived_vector("a dog and a cat", 8) != derived_vector("a dog and a cow", 8)
    assert emb.model == "fake-embed" and emb.usage == allm.Usage(input_tokens=7, total_tokens=7)
    assert fake.embed_requests == [EmbedRequest(("cat", "a dog and a cat", "dog"), "fake-embed", None)]
    # dimensions shape the derived vectors; the same text always gives the same vector
    again = allm.embed(engine, ["a dog and a cat"], dimensions=3)
    assert len(again.vectors[0]) == 3 and again.vectors[0] == allm.embed(engine, ["a dog and a cat"], dimensions=3).vectors[0]
    assert fake.embed_requests[1].dimensions == 3


def test_embed_splits_at_the_batch_size_like_an_http_adapter() -> None:
    fake = Fake(scripts=[])
    texts = [f"t{i}" for i in range(fake.embed_batch_size + 3)]
    emb = allm.embed(allm.Engine(adapter=fake), texts, model="e")
    assert [len(r.texts) for r in fake.embed_requests] == [fake.embed_batch_size, 3]
    assert emb.vectors == tuple(derived_vector(t, 8) for t in texts)
    assert emb.usage.input_tokens == len(texts)
    assert allm.embed(allm.Engine(adapter=fake, model="e"), []) == allm.Embeddings((), "e", allm.Usage())


async def test_async_embed_and_list_models_on_the_fake() -> None:
    fake = Fake(models=["small", "large"], embeddings={"x": [0.5]})
    engine = allm.Engine(adapter=fake, model="small")
    assert (await allm.aembed(engine, ["x"])).vectors == ((0.5,),)
    assert await allm.alist_models(engine) == ["small", "large"]


def test_list_models_plays_the_scripted_models() -> None:
    assert allm.list_models(allm.Engine(adapter=Fake(models=["a", "b"]), model="ignored")) == ["a", "b"]
    assert allm.list_models(fake_engine(["x"], model="mine")) == ["mine"]  # none scripted: the engine's
    call = Fake(["x"]).encode_list_models()
    assert (call.method, call.url) == ("GET", "fake:///models")


def test_count_tokens_is_words_plus_one_per_message() -> None:
    fake = Fake(["x"])
    req = allm.request([allm.system("Be brief."), allm.user("How are you today?")], model="m")
    call = fake.encode_count_tokens(req, "other")
    n = fake.decode_count_tokens(fake.respond(call))
    assert n == count_tokens(req) == (2 + 1) + (4 + 1)
    assert fake.count_requests == [allm.request(req.messages, model="other")]
    assert fake.calls == 0  # counting is not a generation call


def test_image_calls_go_through_encode_respond_decode() -> None:
    fake = Fake(image_scripts=[[image(PNG, revised_prompt="a red square"), text("done"), usage(3, 5)], [error("content_filter", "no")]])
    req = allm.ImageRequest("a square", model="img", size="1K")
    call = fake.encode_image("generate", req)
    assert (call.method, call.url, call.model) == ("POST", "fake:///images/generate", "img")
    resp = fake.decode_image(call, fake.respond(call))
    assert resp.image.data == PNG and resp.revised_prompt == "a red square" and resp.text == "done"
    assert resp.usage == allm.Usage(3, 5, total_tokens=8) and resp.id == "fake-image-1"
    assert fake.image_requests == [("generate", req)]
    with pytest.raises(AdapterError) as info:
        allm.generate_image(allm.Engine(adapter=fake), "again", model="img")
    assert info.value.reason == "content_filter"
    with pytest.raises(AdapterError) as info:
        fake.images("edit", req)
    assert info.value.reason == "no_scripted_response"


def test_respond_refuses_a_call_no_fake_makes() -> None:
    call = allm.providers.OpenAI().encode_list_models()
    with pytest.raises(AdapterError) as info:
        Fake(["x"]).respond(call)
    assert info.value.reason == "not_found" and "https://api.openai.com/v1/models" in info.value.message


def test_the_fake_takes_only_its_new_scripts() -> None:
    assert Fake(models=["m"]).remaining == 0
    assert Fake(embeddings={}).calls == 0
    with pytest.raises(ValueError, match="exactly one"):
        Fake()


# ------------------------------------------------------------------------------ state


def test_state_round_trips_through_the_codec_and_pickle() -> None:
    fake = Fake(
        scripts=[[text("a"), tool_call("f", {"x": 1}, id="c1")], ["b"]],
        images=[image(PNG)],
        models=["m1"],
        embeddings={"k": [0.25, -1.0]},
        model="fk",
    )
    allm.generate(allm.Engine(adapter=fake), "hi")
    state = fake.to_state()
    assert list(state) == ["model", "calls", "scripts", "image_scripts", "models", "embeddings"]
    assert orjson.loads(orjson.dumps(state)) == state  # JSON-native
    back = Fake.from_state(state)
    assert back.to_state() == state and back.calls == 1 and back.remaining == 1
    engine = allm.Engine(adapter=fake, model="fk")
    loaded = codec.loads(codec.dumps(engine), allm.Engine)
    assert isinstance(loaded.adapter, Fake) and loaded.adapter.to_state() == state
    assert allm.generate(loaded, "next").output_text == "b"
    assert allm.list_models(loaded) == ["m1"] and allm.embed(loaded, ["k"]).vectors == ((0.25, -1.0),)
    assert pickle.loads(pickle.dumps(fake)).to_state() == state


def test_the_stored_form_of_a_plain_fake_is_unchanged() -> None:
    engine = allm.Engine(adapter=Fake(["hi"]), model="f")
    assert codec.dumps(engine) == (
        b'{"allm_schema":1,"type":"Engine","value":{"adapter":{"adapter":"Fake","model":"fake","calls":0,'
        b'"scripts":[[{"entry":"TextEntry","text":"hi"}]]},"model":"f"}}'
    )


def test_a_function_fake_cannot_be_stored() -> None:
    with pytest.raises(allm.ValidationError, match="function="):
        Fake(function=lambda r: "x").to_state()
    with pytest.raises(allm.ValidationError, match="function="):
        codec.dumps(allm.Engine(adapter=Fake(function=lambda r: "x")))


def test_the_guide_block_runs() -> None:
    from pathlib import Path

    text = (Path(__file__).parent.parent / "guides" / "embeddings_and_images.md").read_text()
    block = text.split("<!-- fake-embeddings", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(block, "guides/embeddings_and_images.md", "exec"), {})
