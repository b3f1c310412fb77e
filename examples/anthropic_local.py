"""The Anthropic Messages adapter against a real local model, with no key.

llama.cpp's ``llama-server`` speaks Anthropic's ``/v1/messages`` as well as OpenAI's
``/v1/chat/completions``, so the same call site runs over both wire protocols: only
the adapter changes. Run it from the repository root::

    PYTHONPATH=. python examples/anthropic_local.py

It starts ``llama-server`` with SmolLM2-135M on a free loopback port (installed by
``scripts/quickstart``), or uses ``ALLM_LLAMA_URL=http://127.0.0.1:8080`` if a
server is already running there. Without one it says how to get one and exits 0.
"""

from __future__ import annotations

import os
import sys
from contextlib import AbstractContextManager, nullcontext

import allm
from allm.events import MessageCompleted, TextDelta
from allm.local import INSTALL_HINT, LocalServer, LocalServerError
from allm.providers import Anthropic, OpenAICompatible

QUESTION = [allm.system("Be brief."), allm.user("What is the capital of France?")]


def ask(engine: allm.Engine) -> allm.Response:
    """One call site, whatever the adapter: stream the answer, print it, return the fold."""
    collector = allm.Collector()
    for event in allm.stream_generate(engine, allm.request(QUESTION, max_tokens=40)):
        collector.apply(event)
        if isinstance(event, TextDelta):
            print(event.delta, end="", flush=True)
        elif isinstance(event, MessageCompleted):
            print(f"   [{event.finish_reason}]")
    return collector.response()


def run(url: str) -> None:
    messages = allm.Engine(adapter=Anthropic(base_url=url + "/v1"), model="smollm2", defaults={"temperature": 0.0})
    chat = allm.Engine(adapter=OpenAICompatible.llama_cpp(url + "/v1"), model="smollm2", defaults={"temperature": 0.0})

    print("Anthropic Messages (/v1/messages):  ", end="")
    a = ask(messages)
    print("Chat Completions (/v1/chat/completions): ", end="")
    b = ask(chat)
    for resp in (a, b):
        assert "Paris" in resp.output_text, resp.output_text
        assert resp.usage.input_tokens and resp.usage.output_tokens
        assert resp.usage.total_tokens == resp.usage.input_tokens + resp.usage.output_tokens
    # Anthropic counts prompt-cache reads apart; allm's input_tokens includes them.
    print(f"usage over /v1/messages: {a.usage}")

    # The non-streaming body decodes to the same events, so the same answer.
    body = allm.generate(messages, allm.request(QUESTION, max_tokens=40), http_streaming=False)
    assert body.output_text == a.output_text and body.usage.output_tokens == a.usage.output_tokens

    # Settings the Messages API lacks are dropped, and said so.
    warned = allm.generate(messages, allm.request(QUESTION, max_tokens=10, seed=7, presence_penalty=0.5))
    assert [w.setting for w in warned.warnings] == ["seed", "presence_penalty"]
    assert str(warned.warnings[0]) == "seed is not supported by Anthropic and was not sent"
    print("dropped:", "; ".join(map(str, warned.warnings)))

    # A thread with a tool call (an id from another provider) and its result: the ids are
    # rewritten to Anthropic's alphabet, the same way for the call and the result.
    call = allm.ToolCall("functions.get_weather:0", "get_weather", {"city": "Paris"})
    thread = [
        allm.user("What's the weather in Paris?"),
        allm.assistant(tool_calls=[call]),
        allm.tool_result(call.id, "18 C and sunny"),
        allm.user("Say it in five words."),
    ]
    tool = allm.Tool("get_weather", "Weather for a city", {"type": "object", "properties": {"city": {"type": "string"}}})
    follow = allm.generate(messages, allm.request(thread, tools=[tool], max_tokens=30))
    assert follow.output_text or follow.tool_calls
    print("after the tool result:", follow.output_text.strip())
    print("ok")


def main() -> int:
    url = os.environ.get("ALLM_LLAMA_URL")
    server: AbstractContextManager[object]
    if url:
        server = nullcontext()
    else:
        try:
            local = LocalServer()
        except LocalServerError as exc:
            print(f"No local llama-server: {exc}\nTo get one: {INSTALL_HINT}")
            print("Or point ALLM_LLAMA_URL at a running llama-server (e.g. http://127.0.0.1:8080).")
            return 0
        server, url = local, local.url
    with server:
        run(url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
