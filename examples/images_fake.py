"""Image generation, edits and variations on the Fake, and the OpenAI edit upload it stands in
for (built, not sent). No key needed."""

import struct
import zlib

import allm
from allm.providers import Fake, OpenAI
from allm.testing import image, usage


def tiny_png(r: int, g: int, b: int) -> bytes:
    """A valid 1x1 PNG of one colour."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes([0, r, g, b]))) + chunk(b"IEND", b"")


red, blue = tiny_png(220, 20, 20), tiny_png(20, 20, 220)
fake = Fake(
    image_scripts=[
        [image(red, revised_prompt="a single red pixel, centred"), usage(12, 1056)],  # generate_image
        [image(blue)],  # edit_image
        [image(url="https://images.example/variation-1.png"), image(url="https://images.example/variation-2.png")],  # image_variations
    ]
)
engine = allm.Engine(adapter=fake, model="gpt-image-1")

made = allm.generate_image(engine, "a red pixel", size="1024x1024")
print("generated:", len(made.image.data or b""), "bytes,", made.image.mime_type, "| revised prompt:", made.revised_prompt)
assert made.image.data == red and made.revised_prompt == "a single red pixel, centred"
assert made.usage.input_tokens == 12 and made.usage.output_tokens == 1056

edited = allm.edit_image(engine, "make it blue", made.image, mask=allm.Image.from_bytes(red, "image/png"))
assert edited.image.data == blue

varied = allm.image_variations(engine, edited.image, n=2)
print("variations:", [g.image.url for g in varied.images])
assert [g.image.url for g in varied.images] == ["https://images.example/variation-1.png", "https://images.example/variation-2.png"]

# The Fake recorded each call: the operation and the ImageRequest value.
assert [(op, r.prompt) for op, r in fake.image_requests] == [("generate", "a red pixel"), ("edit", "make it blue"), ("variations", "")]
assert fake.image_requests[1][1].mask is not None

# What OpenAI would receive for the same edit: a multipart/form-data upload built by the adapter.
_, edit_request = fake.image_requests[1]
call = OpenAI().encode_image("edit", edit_request)
print(call.method, call.url, call.headers["content-type"])
assert call.url == "https://api.openai.com/v1/images/edits"
assert b'name="image"; filename="image0.png"' in call.body and b'name="mask"; filename="mask.png"' in call.body
assert OpenAI().encode_image("edit", edit_request).body == call.body  # deterministic boundary: the same bytes every time

# What cannot be drawn by a provider is a typed error before any call.
try:
    allm.generate_image(allm.Engine(adapter=allm.providers.Anthropic(), model="claude"), "a pixel", api_key="unused")
    raise AssertionError("expected EngineError")
except allm.EngineError as err:
    assert err.reason == "unsupported_operation"
    print("refused:", err)
print("ok")
