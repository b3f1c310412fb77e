"""A real model with no key: llama.cpp's llama-server with SmolLM2-135M, started on loopback.

Install it once with ./scripts/setup (or ./scripts/quickstart). Without it, this example
says how and exits 0.
"""

import sys

import allm
from allm.local import LocalServer, LocalServerError
from allm.providers import OpenAICompatible

try:
    server = LocalServer()
except LocalServerError as exc:
    print(f"skipped: {exc}")
    sys.exit(0)

with server:
    engine = allm.Engine(
        adapter=OpenAICompatible.llama_cpp(server.base_url),
        model="smollm2",
        defaults={"temperature": 0.0, "max_tokens": 60},
    )
    req = allm.request([allm.system("You are a helpful assistant. Be brief."), allm.user("What is the capital of France?")])
    for event in allm.stream_generate(engine, req):
        if isinstance(event, allm.events.TextDelta):
            print(event.delta, end="", flush=True)
    print()
    resp = allm.generate(engine, req)
    assert "Paris" in resp.output_text, resp.output_text
    assert resp.usage.input_tokens and resp.usage.output_tokens
    print(f"{resp.usage.input_tokens} input tokens, {resp.usage.output_tokens} output tokens")
print("ok")
