"""Image generation, edits and variations: the recorded OpenAI generation replayed, multipart
uploads parsed back, Gemini image output, the Fake's image scripts, and every refusal."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

import orjson
import pytest

import allm
from allm import codec
from allm.errors import AdapterError, EngineError, ValidationError
from allm.providers import Anthropic, Fake, Gemini, OpenAI, OpenAICompatible, OpenAIResponses
from allm.testing import error, image, text, usage
from tests.conftest import load_case
from tests.loopback import LoopbackServer, Req, Writer, serve

CASE = load_case("openai-misc", "images-generations-revised-prompt")
RUBY = base64.b64decode(load_case("anthropic", "vision-image-base64").request["messages"][0]["content"][1]["source"]["data"])
PNG = allm.Image.from_bytes(RUBY, "image/png")
KEY = "sk-test-images-0000000000"


def form_of(call: Any) -> dict[str, list[tuple[str | None, str | None, bytes]]]:
    """A multipart body parsed back by the standard library: name -> [(filename, content type, bytes)]."""
    msg = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {call.headers['content-type']}\r\n\r\n".encode() + call.body)
    assert msg.is_multipart()
    out: dict[str, list[tuple[str | None, str | None, bytes]]] = {}
    for p in msg.iter_parts():
        name = p.get_param("name", header="content-disposition")
        ctype = p.get_content_type() if p.get_filename() else None
        out.setdefault(str(name), []).append((p.get_filename(), ctype, p.get_payload(decode=True)))
    return out


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with serve() as s:
        yield s


def reply(server: LoopbackServer, status: int, body: bytes) -> None:
    async def handler(req: Req, w: Writer) -> None:
        await w.respond(status, body)

    server.handler = handler


# ------------------------------------------------------------------------------ OpenAI: the recorded generation


def test_generation_request_equals_the_recording() -> None:
    call = OpenAI().encode_image("generate", allm.ImageRequest("a siamese cat", model="dall-e-3", n=1, size="1024x1024"))
    assert f"{call.method} {call.url}" == CASE.request_line
    assert orjson.loads(call.body) == CASE.request
    assert call.headers["content-type"] == "application/json" and "authorization" not in call.headers
    assert call.warnings == ()


def test_the_recorded_generation_decodes() -> None:
    call = OpenAI().encode_image("generate", allm.ImageRequest("a siamese cat", model="dall-e-3"))
    resp = OpenAI().decode_image(call, CASE.body)
    item = orjson.loads(CASE.body)["data"][0]
    assert len(resp) == 1 and resp.created == 1778111495 and resp.model == "dall-e-3"
    assert resp.image.url == item["url"] and resp.image.data is None and resp.image.mime_type == "image/png"
    assert resp.revised_prompt == item["revised_prompt"] and resp.revised_prompt.startswith("An image of a Siamese cat")
    assert resp.usage == allm.Usage()  # DALL-E 3 reports no usage: None, never 0


def test_generate_image_replays_the_recording_over_http(server: LoopbackServer) -> None:
    reply(server, 200, CASE.body)
    engine = allm.Engine(adapter=OpenAI(base_url=server.url + "/v1"), model="dall-e-3")
    resp = allm.generate_image(engine, "a siamese cat", n=1, size="1024x1024", api_key=KEY)
    sent = server.requests[0]
    assert (sent.method, sent.path) == ("POST", "/v1/images/generations")
    assert orjson.loads(sent.body) == CASE.request
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert resp.revised_prompt == orjson.loads(CASE.body)["data"][0]["revised_prompt"]
    assert KEY not in repr(resp) and KEY not in codec.dumps(resp).decode()
    assert codec.loads(codec.dumps(resp)) == resp


def test_gpt_image_b64_bodies_and_usage() -> None:
    # https://platform.openai.com/docs/api-reference/images/object: b64_json, usage for GPT image models
    body = orjson.dumps(
        {
            "created": 1713833628,
            "data": [{"b64_json": base64.b64encode(RUBY).decode()}, {"b64_json": base64.b64encode(RUBY).decode()}],
            "output_format": "png",
            "size": "1024x1024",
            "usage": {"input_tokens": 50, "output_tokens": 4160, "total_tokens": 4210, "input_tokens_details": {"text_tokens": 50, "image_tokens": 0}},
        }
    )
    call = OpenAI().encode_image("generate", allm.ImageRequest("ruby", model="gpt-image-1", n=2))
    resp = OpenAI().decode_image(call, body)
    assert [g.image.data for g in resp.images] == [RUBY, RUBY] and resp.image.mime_type == "image/png"
    assert resp.usage == allm.Usage(input_tokens=50, output_tokens=4160, total_tokens=4210)
    assert resp.metadata == {"output_format": "png", "size": "1024x1024"} and resp.revised_prompt is None


@pytest.mark.parametrize("body", [b"not json", b"{}", b'{"data": {}}', b'{"data": [{}]}', b'{"data": [{"b64_json": "***"}]}'])
def test_malformed_image_bodies_are_typed_errors(body: bytes) -> None:
    call = OpenAI().encode_image("generate", allm.ImageRequest("x", model="m"))
    with pytest.raises(AdapterError) as info:
        OpenAI().decode_image(call, body)
    assert info.value.reason == "malformed_response"


def test_moderation_refusals_are_content_filter(server: LoopbackServer) -> None:
    refusal = b'{"error": {"code": "content_policy_violation", "message": "Your request was rejected as a result of our safety system.", "param": null, "type": "invalid_request_error"}}'
    reply(server, 400, refusal)
    engine = allm.Engine(adapter=OpenAI(base_url=server.url + "/v1"), model="dall-e-3")
    with pytest.raises(AdapterError) as info:
        allm.generate_image(engine, "x", api_key=KEY)
    assert info.value.reason == "content_filter" and info.value.status == 400
    reply(server, 401, load_case("openai-chat", "error-401-invalid-api-key").body)
    with pytest.raises(AdapterError) as info:
        allm.generate_image(engine, "x", api_key=KEY)
    assert info.value.reason == "authentication_failed"


# ------------------------------------------------------------------------------ OpenAI: edits and variations (multipart)


def test_edit_uploads_the_image_and_mask_as_multipart() -> None:
    mask = allm.Image.from_bytes(RUBY, "image/png")
    req = allm.ImageRequest("make it blue", model="gpt-image-1", images=[PNG], mask=mask, n=2, size="1024x1024", quality="high", options={"input_fidelity": "high"})
    call = OpenAI().encode_image("edit", req)
    assert call.url == "https://api.openai.com/v1/images/edits" and call.headers["content-type"].startswith("multipart/form-data; boundary=allm-")
    form = form_of(call)
    assert form["model"] == [(None, None, b"gpt-image-1")] and form["prompt"] == [(None, None, b"make it blue")]
    assert form["n"] == [(None, None, b"2")] and form["size"] == [(None, None, b"1024x1024")] and form["quality"] == [(None, None, b"high")]
    assert form["input_fidelity"] == [(None, None, b"high")]
    assert form["image"] == [("image0.png", "image/png", RUBY)] and form["mask"] == [("mask.png", "image/png", RUBY)]
    assert OpenAI().encode_image("edit", req).body == call.body  # the same input, the same bytes
    jpeg = allm.Image.from_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 64, "image/jpeg")
    several = form_of(OpenAI().encode_image("edit", allm.ImageRequest("combine", model="gpt-image-1", images=[PNG, jpeg])))
    assert [(f, t) for f, t, _ in several["image[]"]] == [("image0.png", "image/png"), ("image1.jpg", "image/jpeg")]


def test_variations_upload_one_png() -> None:
    call = OpenAI().encode_image("variations", allm.ImageRequest("ignored", model="dall-e-2", images=[PNG], n=3, quality="hd"))
    form = form_of(call)
    assert call.url.endswith("/images/variations")
    assert set(form) == {"model", "n", "image"} and form["image"] == [("image.png", "image/png", RUBY)]
    assert [(w.setting, w.message) for w in call.warnings] == [
        ("prompt", "prompt is not used by image variations and was not sent"),
        ("quality", "quality is not supported by OpenAI image variations and was not sent"),
    ]


def test_image_input_is_checked_before_sending() -> None:
    o = OpenAI()
    cases: list[tuple[str, allm.ImageRequest, str]] = [
        ("generate", allm.ImageRequest("", model="m"), "needs a prompt"),
        ("generate", allm.ImageRequest("x", model="m", images=[PNG]), "use edit_image"),
        ("edit", allm.ImageRequest("x", model="m"), "at least one image"),
        ("edit", allm.ImageRequest("x", model="m", images=[allm.Image.from_url("https://example.org/a.png")]), "allm.fetch_images"),
        ("edit", allm.ImageRequest("x", model="m", images=[allm.Image.from_bytes(b"GIF89a" + b"\0" * 9, "image/gif")]), "'image/gif'"),
        ("edit", allm.ImageRequest("x", model="m", images=[PNG], mask=allm.Image.from_bytes(b"\xff\xd8\xff" + b"\0" * 9, "image/jpeg")), "mask"),
        ("variations", allm.ImageRequest(model="m", images=[PNG, PNG]), "exactly one image"),
        ("variations", allm.ImageRequest(model="m", images=[allm.Image.from_bytes(b"\xff\xd8\xff" + b"\0" * 9, "image/jpeg")]), "image/png"),
        ("variations", allm.ImageRequest(model="m", images=[allm.Image.from_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * (4 * 1024 * 1024), "image/png")]), "4.0 MB"),
        ("variations", allm.ImageRequest(model="m", images=[PNG], mask=PNG), "no mask"),
    ]
    for op, req, needle in cases:
        with pytest.raises(ValidationError) as info:
            o.encode_image(op, req)
        assert needle in info.value.message, (op, needle, info.value.message)
    warned = o.encode_image("generate", allm.ImageRequest("x", model="m", aspect_ratio="16:9", style="vivid"))
    assert [(w.kind, w.setting, str(w)) for w in warned.warnings] == [
        ("dropped_setting", "aspect_ratio", "aspect_ratio is not supported by OpenAI image generate and was not sent")
    ]
    assert orjson.loads(warned.body)["style"] == "vivid"


def test_edit_and_variations_over_http(server: LoopbackServer) -> None:
    body = orjson.dumps({"created": 1, "data": [{"b64_json": base64.b64encode(RUBY).decode()}]})
    reply(server, 200, body)
    engine = allm.Engine(adapter=OpenAICompatible(server.url + "/v1"), model="gpt-image-1")
    out = allm.edit_image(engine, "make it blue", allm.ImagePart(PNG), mask=PNG)
    assert out.image.data == RUBY
    sent = server.requests[0]
    assert sent.path == "/v1/images/edits" and sent.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert b'name="mask"; filename="mask.png"' in sent.body and RUBY in sent.body
    assert allm.image_variations(engine, PNG, n=1).image.data == RUBY
    assert server.requests[1].path == "/v1/images/variations"
    # The Responses adapter uses the same Images API.
    responses = allm.Engine(adapter=OpenAIResponses.compatible(server.url + "/v1"), model="gpt-image-1")
    assert allm.generate_image(responses, "ruby").image.data == RUBY
    assert server.requests[2].path == "/v1/images/generations"


async def test_async_twins_over_http(server: LoopbackServer) -> None:
    reply(server, 200, CASE.body)
    engine = allm.Engine(adapter=OpenAI(base_url=server.url + "/v1"), model="dall-e-3")
    a = await allm.agenerate_image(engine, "a siamese cat", api_key=KEY)
    assert a.revised_prompt and a.image.url
    reply(server, 200, orjson.dumps({"data": [{"url": "https://example.org/x.webp"}]}))
    e = await allm.aedit_image(engine, "x", PNG, api_key=KEY)
    v = await allm.aimage_variations(engine, allm.ImageRequest(images=[PNG]), api_key=KEY)
    assert e.image.url == v.image.url == "https://example.org/x.webp" and e.image.mime_type == "image/webp"


# ------------------------------------------------------------------------------ Gemini image output

GEMINI_ANSWER = {
    "candidates": [
        {
            "content": {
                "parts": [
                    {"text": "thinking about it", "thought": True},
                    {"inlineData": {"mimeType": "image/png", "data": "AAAA"}, "thought": True},
                    {"text": "Here is your ruby: "},
                    {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(RUBY).decode()}},
                ],
                "role": "model",
            },
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": {"promptTokenCount": 17, "candidatesTokenCount": 1306, "totalTokenCount": 1323},
    "modelVersion": "gemini-2.5-flash-image",
    "responseId": "deO6aLeTE4fYvdIPuIm_kQQ",
}


def test_gemini_image_request_shape() -> None:
    # https://ai.google.dev/gemini-api/docs/image-generation
    call = Gemini().encode_image("generate", allm.ImageRequest("a ruby", model="gemini-2.5-flash-image", aspect_ratio="16:9", size="2k"))
    assert call.url == "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash-image:generateContent"
    assert orjson.loads(call.body) == {
        "contents": [{"role": "user", "parts": [{"text": "a ruby"}]}],
        "generationConfig": {"responseModalities": ["TEXT", "IMAGE"], "imageConfig": {"aspectRatio": "16:9", "imageSize": "2K"}},
    }
    edit = Gemini().encode_image("edit", allm.ImageRequest("make it blue", model="m", images=[PNG], n=2, size="1024x1024", options={"generationConfig": {"temperature": 0.5}}))
    body = orjson.loads(edit.body)
    assert body["contents"][0]["parts"][1] == {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(RUBY).decode()}}
    assert body["generationConfig"] == {"responseModalities": ["TEXT", "IMAGE"], "temperature": 0.5}
    assert [(w.setting, w.message) for w in edit.warnings] == [
        ("size", "size '1024x1024' is not supported by Gemini (1K, 2K, 4K; or aspect_ratio=) and was not sent"),
        ("n", "n is not supported by Gemini image output and was not sent"),
    ]


def test_gemini_image_refusals() -> None:
    g = Gemini()
    for op, req, needle in [
        ("edit", allm.ImageRequest("x", model="m", images=[PNG], mask=PNG), "no mask"),
        ("edit", allm.ImageRequest("x", model="m", images=[allm.Image.from_url("https://example.org/a.png")]), "inline"),
        ("edit", allm.ImageRequest("x", model="m"), "at least one image"),
        ("generate", allm.ImageRequest("", model="m"), "needs a prompt"),
    ]:
        with pytest.raises(ValidationError, match=needle):
            g.encode_image(op, req)
    with pytest.raises(EngineError) as info:
        allm.image_variations(allm.Engine(adapter=g, model="m"), PNG, api_key="k")
    assert info.value.reason == "unsupported_operation" and "make variations of" in info.value.message


def test_gemini_image_answers_decode() -> None:
    call = Gemini().encode_image("generate", allm.ImageRequest("a ruby", model="gemini-2.5-flash-image"))
    resp = Gemini().decode_image(call, orjson.dumps(GEMINI_ANSWER))
    assert [g.image.data for g in resp.images] == [RUBY]  # the thought image is skipped
    assert resp.text == "Here is your ruby: " and resp.id == "deO6aLeTE4fYvdIPuIm_kQQ" and resp.model == "gemini-2.5-flash-image"
    assert resp.usage.input_tokens == 17 and resp.usage.output_tokens == 1306 and resp.metadata == {"finish_reason": "STOP"}
    snake = {"candidates": [{"content": {"parts": [{"inline_data": {"mime_type": "image/png", "data": base64.b64encode(RUBY).decode()}}]}, "finishReason": "STOP"}]}
    assert Gemini().decode_image(call, orjson.dumps(snake)).image.data == RUBY
    blocked = {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}
    with pytest.raises(AdapterError) as info:
        Gemini().decode_image(call, orjson.dumps(blocked))
    assert info.value.reason == "content_filter" and "PROHIBITED_CONTENT" in info.value.message
    filtered = {"candidates": [{"content": {"parts": []}, "finishReason": "IMAGE_SAFETY", "finishMessage": "unsafe"}]}
    with pytest.raises(AdapterError, match="IMAGE_SAFETY: unsafe") as info:
        Gemini().decode_image(call, orjson.dumps(filtered))
    assert info.value.reason == "content_filter"
    with pytest.raises(AdapterError) as info:
        Gemini().decode_image(call, load_case("gemini", "error-400-api-key-invalid").body)
    assert info.value.reason == "authentication_failed"
    for bad in (b"[]", b"nope", b'{"candidates": [{"content": {"parts": [{"inlineData": {"data": "@@"}}]}}]}'):
        with pytest.raises(AdapterError) as info:
            Gemini().decode_image(call, bad)
        assert info.value.reason == "malformed_response"


def test_gemini_images_over_http(server: LoopbackServer) -> None:
    reply(server, 200, orjson.dumps(GEMINI_ANSWER))
    engine = allm.Engine(adapter=Gemini(base_url=server.url + "/v1beta"), model="gemini-2.5-flash-image")
    out = allm.edit_image(engine, "make it blue", PNG, api_key="AIza-not-a-key-000000000000")
    assert out.image.data == RUBY
    sent = server.requests[0]
    assert sent.path == "/v1beta/models/gemini-2.5-flash-image:generateContent" and sent.headers["x-goog-api-key"]
    assert orjson.loads(sent.body)["generationConfig"]["responseModalities"] == ["TEXT", "IMAGE"]


# ------------------------------------------------------------------------------ the Fake, and what cannot draw


def test_the_fake_plays_image_scripts() -> None:
    fake = Fake(image_scripts=[[image(RUBY, revised_prompt="a red gem"), text("done"), usage(3, 4)], [image(url="https://example.org/x.png")], [error("content_filter", "refused")]])
    engine = allm.Engine(adapter=fake, model="fake-image")
    first = allm.generate_image(engine, "a gem", size="256x256")
    assert first.image.data == RUBY and first.image.mime_type == "image/png" and first.revised_prompt == "a red gem"
    assert first.text == "done" and first.usage.total_tokens == 7 and first.model == "fake-image"
    second = allm.edit_image(engine, "bluer", PNG)
    assert second.image.url == "https://example.org/x.png" and second.image.mime_type is None
    with pytest.raises(AdapterError) as info:
        allm.image_variations(engine, PNG)
    assert info.value.reason == "content_filter"
    with pytest.raises(AdapterError) as info:
        allm.generate_image(engine, "more")
    assert info.value.reason == "no_scripted_response" and "3 image call(s)" in info.value.message
    ops = [(op, r.prompt, r.size, len(r.images)) for op, r in fake.image_requests]
    assert ops == [("generate", "a gem", "256x256", 0), ("edit", "bluer", None, 1), ("variations", "", None, 1), ("generate", "more", None, 0)]
    with pytest.raises(AdapterError, match="no scripted response"):
        allm.generate(engine, "chat")  # image scripts are not chat scripts


async def test_the_fake_async_and_stored() -> None:
    fake = Fake(["hello"], images=[image(RUBY)])
    engine = allm.Engine(adapter=fake, model="f")
    assert (await allm.agenerate_image(engine, "x")).image.data == RUBY
    assert allm.generate(engine, "hi").output_text == "hello"
    stored = codec.loads(codec.dumps(allm.Engine(adapter=Fake(images=[image(RUBY), "t"]), model="f")))
    assert allm.generate_image(stored, "again").image.data == RUBY
    with pytest.raises(TypeError, match="image script entries"):
        Fake(images=[allm.testing.tool_call("x")])
    with pytest.raises(ValueError, match="not both"):
        Fake(images=[], image_scripts=[])


def test_values_round_trip() -> None:
    req = allm.ImageRequest("p", model="m", images=[PNG, allm.Image.from_url("https://example.org/a.png")], mask=PNG, n=2, response_format="b64_json", options={"x": 1})
    assert codec.loads(codec.dumps(req)) == req
    resp = allm.ImageResponse((allm.GeneratedImage(PNG, "rp"),), "m", "id", 5, "t", allm.Usage(1, 2), ("w",), {"k": "v"})
    assert codec.loads(codec.dumps(resp)) == resp


def test_engines_that_cannot_draw_and_missing_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(EngineError) as info:
        allm.generate_image(allm.Engine(adapter=Anthropic(), model="claude"), "x", api_key="k")
    assert info.value.reason == "unsupported_operation"
    with pytest.raises(EngineError) as info:
        allm.generate_image(allm.Engine(adapter=OpenAI()), "x", api_key="k")
    assert info.value.reason == "missing_model"
    with pytest.raises(EngineError) as info:
        allm.generate_image(allm.Engine(adapter=OpenAI(), model="dall-e-3"), "x")
    assert info.value.reason == "missing_key"
    with pytest.raises(ValidationError, match="needs an image"):
        allm.edit_image(allm.Engine(adapter=OpenAI(), model="m"), "x", api_key="k")
    with pytest.raises(TypeError, match=r"allm\.Image"):
        allm.edit_image(allm.Engine(adapter=OpenAI(), model="m"), "x", b"raw bytes", api_key="k")  # type: ignore[arg-type]
