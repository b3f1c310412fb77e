"""Every ```python block of guides/getting_started.md, guides/providers.md and guides/tools.md
runs, in order, in one namespace per guide (a guide is read top to bottom).

Blocks that call OpenAI talk to a loopback server speaking Chat Completions (the real
adapter over real HTTP; the adapter is built with that server's ``base_url``); the block
that starts ``allm.local.LocalServer`` gets the session's real llama-server; names a tools
guide block takes from the reader's program (``engine``, ``thread``...) are given Fake-backed
values.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import allm
import allm.local
import allm.providers
from allm.testing import fake_engine, text, tool_call
from tests.loopback import LoopbackServer, Req, Writer, chat_chunks, serve

GUIDES = Path(__file__).parent.parent / "guides"


def blocks(guide: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (GUIDES / guide).read_text(), re.S)


async def _openai(req: Req, w: Writer) -> None:
    await w.start_stream()
    for c in chat_chunks(["2, 3 and 5."], model="gpt-4.1-mini"):
        await w.chunk(c)
    await w.end_stream()


@pytest.fixture
def openai_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopbackServer]:
    from allm.providers import OpenAI

    with serve(_openai) as server:
        monkeypatch.setattr(allm.providers, "OpenAI", lambda **kw: OpenAI(base_url=server.url + "/v1", **kw))
        monkeypatch.setenv("OPENAI_API_KEY", "sk-guide-test-key-0000")
        yield server


def test_the_guides_have_their_blocks() -> None:
    assert len(blocks("getting_started.md")) == 7
    assert len(blocks("providers.md")) == 4
    assert len(blocks("tools.md")) == 6


def test_getting_started_blocks_run(openai_server: LoopbackServer, request: pytest.FixtureRequest,
                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    ns: dict[str, Any] = {"__name__": "guide"}
    for i, code in enumerate(blocks("getting_started.md")):
        if "LocalServer()" in code:
            server = request.getfixturevalue("llama_server")  # the real model: skips without it (unless required)
            monkeypatch.setattr(allm.local, "LocalServer", lambda s=server: contextlib.nullcontext(s))
        exec(compile(code, f"getting_started.md:block{i}", "exec"), ns)
    assert ns["resp"].warnings and ns["thread"].last.text == "18 °C."
    assert openai_server.requests and all(r.path == "/v1/chat/completions" for r in openai_server.requests)


def test_providers_blocks_run() -> None:
    ns: dict[str, Any] = {"__name__": "guide"}
    for i, code in enumerate(blocks("providers.md")):
        exec(compile(code, f"providers.md:block{i}", "exec"), ns)


def _tools_names(ns: dict[str, Any]) -> None:
    """What the tools guide's blocks take from the reader's program: a fresh Fake engine
    scripted for the weather question, a thread, a stop button and a JSON schema."""
    weather = ns["weather"]
    ns["engine"] = fake_engine(
        [tool_call("get_weather", {"city": "Paris"})], [text("18 °C in Paris.")], [text('{"temp_c": 18}')], tools=[weather]
    )
    ns["thread"] = allm.Thread([allm.user("What's the weather in Paris?")])
    ns["user_pressed_stop"] = lambda: False
    ns["schema"] = allm.json_schema("weather", {"type": "object", "properties": {"temp_c": {"type": "number"}}})


def test_tools_blocks_run() -> None:
    ns: dict[str, Any] = {"__name__": "guide", "allm": allm}
    for i, code in enumerate(blocks("tools.md")):
        if "weather" in ns and "fake_engine(" not in code:
            _tools_names(ns)
        exec(compile(code, f"tools.md:block{i}", "exec"), ns)
    assert ns["result"].final_response is not None
