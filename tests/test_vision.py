"""Images in requests: one ImagePart encoded by every adapter, checked field by field against
the recorded vision requests; every pre-flight rejection; fetching URLs as an explicit opt-in."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import allm
from allm.errors import ValidationError
from allm.providers import Anthropic, Gemini, OpenAI, OpenAICompatible, OpenAIResponses
from allm.providers.media import (
    ANTHROPIC_IMAGES,
    GEMINI_IMAGES,
    MB,
    OPENAI_IMAGES,
    check_images,
    multipart_body,
    sniff_mime_type,
)
from tests.conftest import load_case
from tests.loopback import Req, Writer, serve

QUESTION = "What do you see in this image?"
RUBY_B64 = load_case("anthropic", "vision-image-base64").request["messages"][0]["content"][1]["source"]["data"]
RUBY = base64.b64decode(RUBY_B64)
PART = allm.ImagePart.from_bytes(RUBY, "image/png")

ADAPTERS: dict[str, Any] = {
    "openai-chat": OpenAI(api="chat"),
    "openai-responses": OpenAIResponses(),
    "anthropic": Anthropic(),
    "gemini": Gemini(),
    "llama.cpp": OpenAICompatible.llama_cpp("http://127.0.0.1:8080/v1"),
}


def body_of(adapter: Any, request: allm.Request, stream: bool = False) -> dict[str, Any]:
    return orjson.loads(adapter.encode(request, stream=stream).body)


def ask(*parts: Any, model: str = "m", **kw: Any) -> allm.Request:
    return allm.request([allm.user([allm.TextPart(QUESTION), *parts])], model=model, **kw)


# ------------------------------------------------------------------------------ one part, every adapter


def test_the_recorded_cases_carry_the_same_image() -> None:
    g = load_case("gemini", "vision-inline-data").request["contents"][0]["parts"][1]["inline_data"]
    o = load_case("openai-chat", "vision-image-base64").request["messages"][0]["content"][1]["image_url"]["url"]
    assert g["data"] == RUBY_B64 and o == "data:image/png;base64," + RUBY_B64
    assert sniff_mime_type(RUBY) == "image/png"


def test_openai_chat_encodes_the_recorded_vision_request() -> None:
    case = load_case("openai-chat", "vision-image-base64")
    body = body_of(ADAPTERS["openai-chat"], ask(PART, model="gpt-4.1-nano"))
    rec = case.request
    assert body["model"] == rec["model"]
    assert body["messages"][0]["role"] == rec["messages"][0]["role"] == "user"
    ours, theirs = body["messages"][0]["content"], rec["messages"][0]["content"]
    assert ours[0] == theirs[0] == {"type": "text", "text": QUESTION}
    assert ours[1]["type"] == theirs[1]["type"] == "image_url"
    assert ours[1]["image_url"]["url"] == theirs[1]["image_url"]["url"]
    assert set(ours[1]["image_url"]) == set(theirs[1]["image_url"]) == {"url"}  # no detail unless asked
    detailed = body_of(ADAPTERS["openai-chat"], ask(allm.ImagePart(PART.image, "low")))
    assert detailed["messages"][0]["content"][1]["image_url"] == {"url": theirs[1]["image_url"]["url"], "detail": "low"}


def test_anthropic_encodes_the_recorded_vision_request() -> None:
    case = load_case("anthropic", "vision-image-base64")
    call = ADAPTERS["anthropic"].encode(ask(PART, model=case.request["model"], max_tokens=case.request["max_tokens"]), stream=False)
    body = orjson.loads(call.body)
    ours, theirs = body["messages"][0]["content"], case.request["messages"][0]["content"]
    assert ours[0] == theirs[0] == {"type": "text", "text": QUESTION}
    assert ours[1]["type"] == theirs[1]["type"] == "image"
    for field in ("type", "media_type", "data"):
        assert ours[1]["source"][field] == theirs[1]["source"][field], field
    assert body["model"] == case.request["model"] and body["max_tokens"] == case.request["max_tokens"]
    assert call.warnings == ()
    # detail has no Anthropic field: dropped and reported
    detailed = ADAPTERS["anthropic"].encode(ask(allm.ImagePart(PART.image, "high")), stream=False)
    assert orjson.loads(detailed.body)["messages"][0]["content"][1] == theirs[1]
    assert [(w.setting, str(w)) for w in detailed.warnings] == [("detail", "image detail is not supported by Anthropic and was not sent")]
    # a URL image goes as a url source
    url = ADAPTERS["anthropic"].encode(ask(allm.ImagePart.from_url("https://example.org/ruby.png")), stream=False)
    assert orjson.loads(url.body)["messages"][0]["content"][1] == {"type": "image", "source": {"type": "url", "url": "https://example.org/ruby.png"}}


def test_gemini_encodes_the_recorded_vision_request() -> None:
    case = load_case("gemini", "vision-inline-data")
    call = ADAPTERS["gemini"].encode(ask(PART, model="gemini-2.5-flash"), stream=False)
    assert f"{call.method} {call.url}" == case.request_line
    body = orjson.loads(call.body)
    ours, theirs = body["contents"][0], case.request["contents"][0]
    assert ours["role"] == theirs["role"] == "user"
    assert ours["parts"][0] == theirs["parts"][0] == {"text": QUESTION}
    # The recording spells the part in snake_case; the API takes both, we send camelCase.
    assert ours["parts"][1] == {"inlineData": {"mimeType": theirs["parts"][1]["inline_data"]["mime_type"], "data": theirs["parts"][1]["inline_data"]["data"]}}
    assert call.warnings == ()


def test_responses_encodes_an_input_image_part() -> None:
    # https://platform.openai.com/docs/api-reference/responses/create: input_image {image_url, detail}
    body = body_of(ADAPTERS["openai-responses"], ask(PART, model="gpt-5-nano"))
    content = body["input"][0]["content"]
    assert content[0] == {"type": "input_text", "text": QUESTION}
    assert content[1] == {"type": "input_image", "image_url": "data:image/png;base64," + RUBY_B64, "detail": "auto"}
    url = body_of(ADAPTERS["openai-responses"], ask(allm.ImagePart.from_url("https://example.org/r.png", detail="high")))
    assert url["input"][0]["content"][1] == {"type": "input_image", "image_url": "https://example.org/r.png", "detail": "high"}


def test_image_sources_all_encode_the_same(tmp_path: Path) -> None:
    f = tmp_path / "ruby.png"
    f.write_bytes(RUBY)
    parts = [
        allm.ImagePart.from_bytes(RUBY, "image/png"),
        allm.ImagePart.from_base64(RUBY_B64, "image/png"),
        allm.ImagePart.from_url("data:image/png;base64," + RUBY_B64),
        allm.ImagePart.from_file(f),
    ]
    for name, adapter in ADAPTERS.items():
        bodies = [body_of(adapter, ask(p)) for p in parts]
        assert all(b == bodies[0] for b in bodies), name


# ------------------------------------------------------------------------------ rejections, before anything is sent


def _rejects(adapter: Any, request: allm.Request, *needles: str) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        adapter.encode(request, stream=True)
    err = info.value
    assert err.reason == "invalid_image"
    for n in needles:
        assert n in err.message, (n, err.message)
    return err


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_images_in_a_system_message_are_rejected(name: str) -> None:
    req = allm.request([allm.Message("system", (PART,)), allm.user("hi")], model="m")
    _rejects(ADAPTERS[name], req, "messages[0].content[0]", "not allowed in a system message")


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_unknown_mime_types_are_rejected(name: str) -> None:
    bmp = allm.ImagePart.from_bytes(b"BM" + b"\0" * 64, "image/bmp")
    _rejects(ADAPTERS[name], ask(bmp), "messages[0].content[1]", "'image/bmp'")
    jpg = allm.ImagePart.from_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 16, "image/jpg")
    _rejects(ADAPTERS[name], ask(jpg), "did you mean 'image/jpeg'")
    pdf_url = allm.ImagePart.from_url("https://example.org/a.pdf", mime_type="application/pdf")
    if name != "gemini":
        _rejects(ADAPTERS[name], ask(pdf_url), "'application/pdf'")


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_bytes_that_are_another_type_than_declared_are_rejected(name: str) -> None:
    lying = allm.ImagePart.from_bytes(RUBY, "image/jpeg")
    _rejects(ADAPTERS[name], ask(lying), "declared 'image/jpeg'", "'image/png'")


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_empty_and_untyped_images_are_rejected(name: str) -> None:
    _rejects(ADAPTERS[name], ask(allm.ImagePart(allm.Image(data=b"", mime_type="image/png"))), "no bytes")
    _rejects(ADAPTERS[name], ask(allm.ImagePart(allm.Image(data=RUBY))), "needs a mime_type")


def test_gif_is_refused_by_gemini_and_taken_by_the_others() -> None:
    gif = allm.ImagePart.from_bytes(b"GIF89a" + b"\0" * 32, "image/gif")
    _rejects(ADAPTERS["gemini"], ask(gif), "Gemini accepts images of type image/heic, image/heif, image/jpeg, image/png, image/webp")
    for name in ("openai-chat", "openai-responses", "anthropic", "llama.cpp"):
        ADAPTERS[name].encode(ask(gif), stream=True)
    heic = allm.ImagePart.from_bytes(b"\0\0\0\x18ftypheic" + b"\0" * 16, "image/heic")
    assert orjson.loads(Gemini().encode(ask(heic), stream=True).body)["contents"][0]["parts"][1]["inlineData"]["mimeType"] == "image/heic"


def test_gemini_refuses_urls_unless_fetched() -> None:
    err = _rejects(ADAPTERS["gemini"], ask(allm.ImagePart.from_url("https://example.org/ruby.png")), "inline", "allm.fetch_images")
    assert "https://example.org/ruby.png" in err.message


@pytest.mark.parametrize("name", ["openai-chat", "openai-responses", "anthropic"])
def test_only_http_urls_are_sent(name: str) -> None:
    img = allm.ImagePart(allm.Image(url="file:///etc/passwd"))
    _rejects(ADAPTERS[name], ask(img), "must be http(s)")


def _png(size: int) -> allm.ImagePart:
    return allm.ImagePart.from_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * (size - 8), "image/png")


def test_openai_size_caps() -> None:
    # https://platform.openai.com/docs/guides/images-vision: 20 MB per image, 50 MB per request.
    for name in ("openai-chat", "openai-responses"):
        ADAPTERS[name].encode(ask(_png(20 * MB)), stream=True)
        _rejects(ADAPTERS[name], ask(_png(20 * MB + 1)), "20.0 MB", "per image")
        _rejects(ADAPTERS[name], ask(_png(17 * MB), _png(17 * MB), _png(17 * MB)), "50.0 MB", "per request")
    # An OpenAI-compatible server has no documented cap: its own limits apply.
    ADAPTERS["llama.cpp"].encode(ask(_png(21 * MB)), stream=True)


def test_anthropic_caps_the_base64_size() -> None:
    # 5 MB of base64 text = 3,932,160 raw bytes (the API's error counts the base64 bytes).
    limit = 5 * MB * 3 // 4
    ADAPTERS["anthropic"].encode(ask(_png(limit)), stream=True)
    _rejects(ADAPTERS["anthropic"], ask(_png(limit + 1)), "as base64", "5.0 MB (5,242,880 bytes) per image")
    many = [_png(100)] * 101
    _rejects(ADAPTERS["anthropic"], ask(*many), "101 images", "at most 100")
    # 32 MB per request: nine images just under the per-image cap make ~45 MB of JSON.
    _rejects(ADAPTERS["anthropic"], ask(*[_png(limit)] * 9), "per request")


def test_gemini_caps_the_whole_request() -> None:
    ADAPTERS["gemini"].encode(ask(_png(10 * MB)), stream=True)
    _rejects(ADAPTERS["gemini"], ask(_png(8 * MB), _png(8 * MB)), "20.0 MB", "per request")
    with pytest.raises(ValidationError):
        ADAPTERS["gemini"].encode(ask(_png(20 * MB + 1)), stream=True)


def test_images_only_where_the_provider_reads_them() -> None:
    in_tool = [
        allm.user("look"),
        allm.assistant("", [allm.ToolCall("call_1", "snap")]),
        allm.Message("tool", (allm.TextPart("here"), PART), tool_call_id="call_1", name="snap"),
    ]
    # Chat Completions and Responses tool outputs are text; Gemini's functionResponse too.
    for name in ("openai-chat", "openai-responses", "gemini", "llama.cpp"):
        _rejects(ADAPTERS[name], allm.request(in_tool, model="m"), "messages[2].content[1]", "tool message")
    # Anthropic tool_result blocks carry images.
    body = body_of(ADAPTERS["anthropic"], allm.request(in_tool, model="m"))
    block = body["messages"][2]["content"][0]
    assert block["type"] == "tool_result" and block["content"][1]["source"]["data"] == RUBY_B64
    in_assistant = [allm.user("hi"), allm.assistant([PART]), allm.user("and?")]
    for name in ("openai-chat", "openai-responses", "anthropic", "llama.cpp"):
        _rejects(ADAPTERS[name], allm.request(in_assistant, model="m"), "assistant message")
    # Gemini models draw images; an image the model made goes back in its turn.
    sent = body_of(ADAPTERS["gemini"], allm.request(in_assistant, model="m"))
    assert sent["contents"][1] == {"role": "model", "parts": [{"inlineData": {"mimeType": "image/png", "data": RUBY_B64}}]}


def test_rejections_happen_before_any_request() -> None:
    engine = allm.Engine(adapter=Gemini(base_url="http://127.0.0.1:9/v1beta"), model="gemini-2.5-flash")
    with pytest.raises(ValidationError, match="inline"):
        allm.stream_generate(engine, ask(allm.ImagePart.from_url("https://example.org/r.png")), api_key="k")


def test_the_rules_are_the_documented_numbers() -> None:
    assert (OPENAI_IMAGES.max_image_bytes, OPENAI_IMAGES.max_total_bytes, OPENAI_IMAGES.max_images) == (20 * MB, 50 * MB, 500)
    assert (ANTHROPIC_IMAGES.max_image_bytes, ANTHROPIC_IMAGES.measure, ANTHROPIC_IMAGES.max_images) == (5_242_880, "base64", 100)
    assert ANTHROPIC_IMAGES.max_request_bytes == 32 * MB
    assert (GEMINI_IMAGES.urls, GEMINI_IMAGES.max_request_bytes) == (False, 20 * MB)
    assert "image/gif" not in GEMINI_IMAGES.mime_types and "image/heic" in GEMINI_IMAGES.mime_types
    assert check_images([allm.user("text only")], ANTHROPIC_IMAGES) == []


def test_sniffing() -> None:
    assert sniff_mime_type(b"\xff\xd8\xff\xdb") == "image/jpeg"
    assert sniff_mime_type(b"GIF87a....") == "image/gif"
    assert sniff_mime_type(b"RIFF\0\0\0\0WEBPVP8 ") == "image/webp"
    assert sniff_mime_type(b"\0\0\0\x18ftypmif1\0\0") == "image/heif"
    assert sniff_mime_type(b"hello") is None and sniff_mime_type(b"") is None


# ------------------------------------------------------------------------------ multipart bodies


def test_multipart_body_is_deterministic_and_well_formed() -> None:
    fields = [("prompt", 'a "cat"\nwith a hat'), ("n", "2")]
    files = [("image", "ruby.png", "image/png", RUBY)]
    ctype, body = multipart_body(fields, files)
    assert (ctype, body) == multipart_body(fields, files)
    boundary = ctype.split("boundary=", 1)[1]
    assert ctype.startswith("multipart/form-data; boundary=allm-")
    parts = body.split(b"--" + boundary.encode())
    assert parts[0] == b"" and parts[-1] == b"--\r\n" and len(parts) == 5
    assert parts[1] == b'\r\nContent-Disposition: form-data; name="prompt"\r\n\r\na "cat"\nwith a hat\r\n'
    assert parts[3] == b'\r\nContent-Disposition: form-data; name="image"; filename="ruby.png"\r\nContent-Type: image/png\r\n\r\n' + RUBY + b"\r\n"
    assert multipart_body([("prompt", "other")], files)[0] != ctype
    # Parsed back by the standard library's MIME parser.
    from email.parser import BytesParser
    from email.policy import HTTP

    msg = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {ctype}\r\n\r\n".encode() + body)
    got = {p.get_param("name", header="content-disposition"): p.get_payload(decode=True) for p in msg.iter_parts()}
    assert got == {"prompt": b'a "cat"\nwith a hat', "n": b"2", "image": RUBY}


def test_multipart_boundary_avoids_the_content(monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    import allm.providers.media as media

    class Fixed:
        """A digest that does not depend on the content, so the content can contain the boundary."""

        def __init__(self, data: bytes = b"") -> None:
            pass

        def update(self, data: bytes) -> None:
            pass

        def digest(self) -> bytes:
            return b"\0" * 32

        def hexdigest(self) -> str:
            return "0" * 64

    monkeypatch.setattr(media, "hashlib", type("H", (), {"sha256": Fixed}))
    first = "allm-" + "0" * 32
    ctype, body = multipart_body([("evil", "--" + first)], [("f", "a.png", "image/png", b"--allm-1-" + b"0" * 32)])
    boundary = ctype.split("boundary=", 1)[1]
    assert boundary == "allm-2-" + "0" * 32  # both earlier candidates occur in the content
    assert body.count(b"--" + boundary.encode()) == 3
    monkeypatch.setattr(media, "hashlib", hashlib)


# ------------------------------------------------------------------------------ fetching URLs (opt-in)


def _image_server(routes: dict[str, tuple[int, str, bytes]]) -> Any:
    async def handler(req: Req, w: Writer) -> None:
        status, ctype, body = routes.get(req.path, (404, "text/plain", b"nope"))
        await w.respond(status, body, content_type=ctype)

    return serve(handler)


def test_fetch_images_inlines_urls_for_gemini() -> None:
    routes = {"/ruby.png": (200, "image/png", RUBY), "/octet": (200, "application/octet-stream", RUBY)}
    with _image_server(routes) as server:
        a = allm.ImagePart.from_url(server.url + "/ruby.png")
        b = allm.ImagePart.from_url(server.url + "/octet")
        req = ask(a, b, allm.ImagePart.from_url(server.url + "/ruby.png"), model="gemini-2.5-flash")
        fetched = allm.fetch_images(req)
        assert len(server.requests) == 2  # each distinct URL once
    assert req.messages[0].content[1].image.url  # the original is unchanged (a value)
    images = [p.image for p in fetched.messages[0].content if isinstance(p, allm.ImagePart)]
    assert [(i.data, i.mime_type, i.url) for i in images] == [(RUBY, "image/png", None)] * 3  # type came from the signature for /octet
    assert body_of(Gemini(), fetched)["contents"][0]["parts"][1] == {"inlineData": {"mimeType": "image/png", "data": RUBY_B64}}
    assert allm.fetch_images(ask(PART)) == ask(PART)  # nothing to fetch


def test_fetch_images_rejections() -> None:
    routes = {
        "/page": (200, "text/html", b"<html></html>"),
        "/big.png": (200, "image/png", b"\x89PNG\r\n\x1a\n" + b"\0" * 2000),
    }
    with _image_server(routes) as server:
        with pytest.raises(ValidationError, match="text/html"):
            allm.fetch_images(ask(allm.ImagePart.from_url(server.url + "/page")))
        with pytest.raises(ValidationError, match="limit is 1,000"):
            allm.fetch_images(ask(allm.ImagePart.from_url(server.url + "/big.png")), max_bytes=1000)
        with pytest.raises(allm.AdapterError) as info:
            allm.fetch_images(ask(allm.ImagePart.from_url(server.url + "/missing.png")))
        assert info.value.reason == "not_found" and info.value.status == 404
    with pytest.raises(ValidationError, match="http"):
        allm.fetch_images(ask(allm.ImagePart(allm.Image(url="ftp://example.org/a.png"))))


async def test_afetch_images_and_image_requests() -> None:
    with _image_server({"/ruby.png": (200, "image/png", RUBY), "/mask.png": (200, "image/png", RUBY)}) as server:
        req = allm.ImageRequest("make it blue", images=[allm.Image.from_url(server.url + "/ruby.png")], mask=allm.Image.from_url(server.url + "/mask.png"))
        fetched = await allm.afetch_images(req)
        msg = await allm.afetch_images(ask(allm.ImagePart.from_url(server.url + "/ruby.png")))
    assert fetched.images[0].data == RUBY and fetched.mask is not None and fetched.mask.data == RUBY
    assert msg.messages[0].content[1].image.data == RUBY


_names = st.text(alphabet=st.characters(min_codepoint=48, max_codepoint=122, categories=("Lu", "Ll", "Nd")), min_size=1, max_size=12)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(_names, st.text(max_size=40)), max_size=5, unique_by=lambda t: t[0]),
    st.lists(st.tuples(_names, st.binary(max_size=300)), max_size=3, unique_by=lambda t: t[0]),
)
def test_any_multipart_body_parses_back_to_its_parts(fields: list[tuple[str, str]], blobs: list[tuple[str, bytes]]) -> None:
    from email.parser import BytesParser
    from email.policy import HTTP

    fields = [(f"f_{n}", v) for n, v in fields]
    files = [(f"b_{n}", f"{n}.bin", "application/octet-stream", data) for n, data in blobs]
    ctype, body = multipart_body(fields, files)
    assert (ctype, body) == multipart_body(fields, files)
    msg = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {ctype}\r\n\r\n".encode() + body)
    parts = list(msg.iter_parts()) if fields or files else []
    got = [(p.get_param("name", header="content-disposition"), p.get_payload(decode=True)) for p in parts]
    # The MIME parser turns a lone CR or LF inside a text part into CRLF; compare texts on normalised newlines.
    want = [(n, v.encode()) for n, v in fields] + [(n, d) for n, _, _, d in files]
    assert [n for n, _ in got] == [n for n, _ in want]
    for (_, g), (_, w), is_text in zip(got, want, [True] * len(fields) + [False] * len(files), strict=True):
        if is_text:
            assert g.replace(b"\r\n", b"\n").replace(b"\r", b"\n") == w.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        else:
            assert g == w
