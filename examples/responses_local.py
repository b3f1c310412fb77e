"""The Responses API adapter against a local llama-server (no key), and OpenAI's per-model routing.

llama.cpp's ``llama-server`` speaks OpenAI's ``/v1/responses`` as well as
``/v1/chat/completions``. Run it from the repository root::

    PYTHONPATH=. python examples/responses_local.py

It starts ``llama-server`` with SmolLM2-135M on a free loopback port (installed by
``scripts/quickstart``), or uses ``ALLM_LLAMA_URL=http://127.0.0.1:8080`` if a
server is already running there. Without one it says how to get one and exits 0.
Every step checks its own result (``assert``), so a wrong answer fails loudly.
"""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack

import orjson

import allm
from allm.events import TextDelta
from allm.providers import OpenAI, OpenAIResponses


def routing() -> None:
    """Which wire API ``OpenAI()`` picks per model (pure: nothing is sent)."""
    openai = OpenAI()
    for model, api in [("o3-mini", "responses"), ("gpt-5-nano", "responses"), ("gpt-4.1-mini", "chat")]:
        call = openai.encode(allm.request("hi", model=model), stream=True)
        assert openai.api_for(model) == api and call.url.endswith("/responses" if api == "responses" else "/chat/completions")
        print(f"{model:>14} -> {call.url}")
    forced = OpenAI(api="chat").encode(allm.request("hi", model="o3-mini"), stream=True)
    assert forced.url.endswith("/chat/completions")
    print(f"{'o3-mini':>14} -> {forced.url}  (OpenAI(api='chat'))")


def local(base_url: str) -> None:
    engine = allm.Engine(
        adapter=OpenAIResponses.compatible(base_url, "llama.cpp"),
        model="smollm2",
        defaults={"temperature": 0.0},
    )
    question = allm.request([allm.system("Be brief."), allm.user("What is the capital of France?")], max_tokens=40)

    print("streamed: ", end="")
    deltas = []
    for event in allm.stream_generate(engine, question):
        if isinstance(event, TextDelta):
            deltas.append(event.delta)
            print(event.delta, end="", flush=True)
    print()
    answer = allm.generate(engine, question, http_streaming=False)
    assert "Paris" in answer.output_text and answer.output_text == "".join(deltas), answer.output_text
    u = answer.usage
    assert u.input_tokens and u.output_tokens and u.total_tokens == u.input_tokens + u.output_tokens
    print(f"one body:  {answer.output_text!r} ({answer.id}, {u.input_tokens} in / {u.output_tokens} out)")

    person = allm.json_schema(
        "person",
        {
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name", "age"],
            "additionalProperties": False,
        },
    )
    resp = allm.generate(engine, allm.request("Generate a person named John who is 30 years old.", max_tokens=64, response_format=person))
    value = orjson.loads(resp.output_text)
    assert isinstance(value["name"], str) and isinstance(value["age"], int)
    print(f"json:      {value}")

    try:
        allm.generate(engine, allm.request("x", max_tokens=4, options={"input": [{"type": "bogus"}]}))
    except allm.AdapterError as exc:
        assert exc.reason == "invalid_request" and exc.status == 400
        print(f"bad input: {exc.reason} ({exc.status}): {exc.message}")
    else:
        raise AssertionError("the server accepted an invalid input item")


def main() -> int:
    routing()
    with ExitStack() as stack:
        running = os.environ.get("ALLM_LLAMA_URL")
        if running:
            base_url = running.rstrip("/") + "/v1"
        else:
            from allm.local import LocalServer, LocalServerError

            try:
                server = LocalServer()
            except LocalServerError as exc:
                print(f"\nNo local llama-server: {exc}")
                print("Or point ALLM_LLAMA_URL at a running llama-server (http://127.0.0.1:8080).")
                return 0
            base_url = stack.enter_context(server).base_url
        local(base_url)
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
