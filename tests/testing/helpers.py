"""Shared by the allm.testing tests: how pytester runs load the plugin, and small servers."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterator
from pathlib import Path

import orjson

from tests.loopback import LoopbackServer, Req, Writer, chat_chunks

ROOT = Path(__file__).parent.parent.parent


def plugin_installed() -> bool:
    """Whether the installed allm declares the plugin (then pytest loads it by itself)."""
    return any(ep.value == "allm.testing.pytest_plugin" for ep in importlib.metadata.entry_points(group="pytest11"))


#: Arguments that load the plugin in a pytester run (none when the entry point does it).
PLUGIN = [] if plugin_installed() else ["-p", "allm.testing.pytest_plugin"]


async def chat_server(req: Req, w: Writer) -> None:
    """An OpenAI Chat Completions server that answers with the last user message, reversed."""
    body = orjson.loads(req.body)
    said = body["messages"][-1]["content"]
    words = said[::-1].split(" ")
    if body.get("stream"):
        await w.start_stream()
        for c in chat_chunks([w_ + " " for w_ in words]):
            await w.chunk(c)
        await w.end_stream()
    else:
        msg = {"role": "assistant", "content": said[::-1]}
        await w.respond(200, orjson.dumps({"id": "chatcmpl-9", "model": body["model"], "choices": [{"index": 0, "message": msg, "finish_reason": "stop"}], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}))


def started(handler: object) -> Iterator[LoopbackServer]:
    server = LoopbackServer().start()
    server.handler = handler  # type: ignore[assignment]
    try:
        yield server
    finally:
        server.stop()
