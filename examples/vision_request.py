"""One image, four wire formats: how each adapter encodes the same ImagePart, and what is
refused before anything is sent. Nothing is sent here, so no key is needed."""

import struct
import zlib

import orjson

import allm
from allm.providers import Anthropic, Gemini, OpenAI, OpenAIResponses


def tiny_png(r: int, g: int, b: int) -> bytes:
    """A valid 1x1 PNG of one colour."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes([0, r, g, b]))) + chunk(b"IEND", b"")


png = tiny_png(200, 30, 40)
part = allm.ImagePart.from_bytes(png, "image/png", detail="low")
req = allm.request([allm.user([allm.TextPart("What colour is this?"), part])], model="some-model")
b64 = part.image.base64


def shown(value: object) -> str:
    return orjson.dumps(value).decode().replace(b64, "<base64>")


adapters = {"OpenAI Chat": OpenAI(api="chat"), "OpenAI Responses": OpenAIResponses(), "Anthropic": Anthropic(), "Gemini": Gemini()}
encoded = {}
for name, adapter in adapters.items():
    call = adapter.encode(req, stream=False)
    body = orjson.loads(call.body)
    encoded[name] = body
    print(f"{name}: {call.method} {call.url}")
    print("   body:", shown(body))
    if call.warnings:
        print("   warnings:", call.warnings)

assert encoded["OpenAI Chat"]["messages"][0]["content"][1] == {"type": "image_url", "image_url": {"url": "data:image/png;base64," + b64, "detail": "low"}}
assert encoded["OpenAI Responses"]["input"][0]["content"][1] == {"type": "input_image", "image_url": "data:image/png;base64," + b64, "detail": "low"}
assert encoded["Anthropic"]["messages"][0]["content"][1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64}}
assert encoded["Gemini"]["contents"][0]["parts"][1] == {"inlineData": {"mimeType": "image/png", "data": b64}}

# Refused before sending, with the reason:
refusals = [
    ("a URL image for Gemini", Gemini(), [allm.user([allm.ImagePart.from_url("https://example.org/cat.png")])]),
    ("an image in a system message", OpenAI(), [allm.Message("system", (part,)), allm.user("hi")]),
    ("bytes that are not the declared type", Anthropic(), [allm.user([allm.ImagePart.from_bytes(png, "image/jpeg")])]),
    ("a BMP", OpenAI(), [allm.user([allm.ImagePart.from_bytes(b"BM" + bytes(60), "image/bmp")])]),
    ("a 6 MB image for Anthropic", Anthropic(), [allm.user([allm.ImagePart.from_bytes(png + bytes(6 * 1024 * 1024), "image/png")])]),
]
for what, adapter, messages in refusals:
    try:
        adapter.encode(allm.request(messages, model="m"), stream=False)
        raise AssertionError(f"{what} was not refused")
    except allm.ValidationError as err:
        assert err.reason == "invalid_image"
        print(f"refused {what}: {err.message[:150]}")
print("ok")
