"""Record a real model (llama-server with SmolLM2) through three wire APIs, stop it, replay offline.

The server is this module's own, so it can be stopped: the replays run with nothing
listening, and give the same events and responses as the live calls (ids seeded with
:func:`allm.testing.deterministic_ids`). The calls carry a key; no recorded file holds it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

import allm
from allm.providers import Anthropic, OpenAICompatible, OpenAIResponses
from allm.testing import deterministic_ids, recording
from tests.conftest import TEMPLATES, _start
from tests.test_key_leaks import find_leaks
from tests.test_live_tools import SYSTEM, weather_request, weather_tool

pytestmark = pytest.mark.live

KEY = "sk-live-" + "Tq4" * 11
QUESTION = allm.request(
    [allm.system("You are a helpful assistant. Be brief."), allm.user("What is the capital of France?")],
    max_tokens=30,
    temperature=0.0,
    seed=42,
)
WIRES: dict[str, Callable[[Any], allm.Engine]] = {
    "chat_completions": lambda s: allm.Engine(adapter=OpenAICompatible.llama_cpp(s.base_url), model="smollm2"),
    "anthropic_messages": lambda s: allm.Engine(adapter=Anthropic(base_url=s.url + "/v1"), model="smollm2"),
    "responses": lambda s: allm.Engine(adapter=OpenAIResponses(base_url=s.url + "/v1"), model="smollm2"),
}


def pipeline(engine: allm.Engine) -> dict[str, Any]:
    """What a user's pipeline does with the model: stream, fold, the body path, async."""
    return {
        "events": list(allm.stream_generate(engine, QUESTION, api_key=KEY)),
        "body": allm.generate(engine, QUESTION, api_key=KEY, http_streaming=False),
        "async": asyncio.run(allm.agenerate(engine, QUESTION, api_key=KEY)),
    }


def tool_loop(engine: allm.Engine) -> tuple[list[Any], list[dict[str, Any]]]:
    ran: list[dict[str, Any]] = []
    events = list(allm.stream(engine.with_tools(weather_tool(ran)), weather_request(), api_key=KEY))
    return events, ran


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Record everything against a server of our own, then stop it."""
    root = tmp_path_factory.mktemp("live")
    template = TEMPLATES / "hermes_chatml.jinja"
    gen = _start(chat_template_file=str(template))
    server = next(gen)
    out: dict[str, Any] = {"root": root, "base_url": server.base_url, "url": server.url}
    try:
        for name, make in WIRES.items():
            with recording(root / name, mode="all") as rec, deterministic_ids(name):
                out[name] = pipeline(make(server))
            out[name + "/recorded"] = len(rec.recorded)
        with recording(root / "tool_loop", mode="all") as rec, deterministic_ids("tools"):
            out["tool_loop"] = tool_loop(WIRES["chat_completions"](server))
        out["tool_loop/recorded"] = len(rec.recorded)
    finally:
        gen.close()  # stops the server
    yield out


class _Gone:
    def __init__(self, recorded: dict[str, Any]) -> None:
        self.base_url, self.url = recorded["base_url"], recorded["url"]


def test_the_server_is_gone(recorded: dict[str, Any]) -> None:
    engine = WIRES["chat_completions"](_Gone(recorded))
    with pytest.raises(allm.AdapterError) as info:
        allm.generate(engine, "hi", retry=allm.RetryPolicy(max_attempts=1))
    assert info.value.reason == "network_error"


@pytest.mark.parametrize("wire", list(WIRES))
def test_replay_offline_gives_identical_events_and_responses(recorded: dict[str, Any], wire: str) -> None:
    live = recorded[wire]
    assert recorded[wire + "/recorded"] == 3
    assert "Paris" in live["body"].output_text and live["events"][-1].message.text.strip()
    with recording(recorded["root"] / wire) as rec, deterministic_ids(wire):
        again = pipeline(WIRES[wire](_Gone(recorded)))
    assert again["events"] == live["events"]
    assert again["body"] == live["body"]
    assert again["async"] == live["async"]
    assert len(rec.played) == 3 and rec.unplayed == []


@pytest.mark.parametrize("chunks", [1, 7, 4096])
def test_replay_in_any_chunk_size(recorded: dict[str, Any], chunks: int) -> None:
    with recording(recorded["root"] / "responses", chunks=chunks), deterministic_ids("responses"):
        again = pipeline(WIRES["responses"](_Gone(recorded)))
    assert again["events"] == recorded["responses"]["events"]


def test_a_recorded_tool_loop_replays_and_runs_the_tool_again(recorded: dict[str, Any]) -> None:
    live_events, live_ran = recorded["tool_loop"]
    assert recorded["tool_loop/recorded"] >= 2  # a call asking for the tool, then the answer
    assert live_ran and live_ran[0]["city"] == "Paris"
    with recording(recorded["root"] / "tool_loop"), deterministic_ids("tools"):
        events, ran = tool_loop(WIRES["chat_completions"](_Gone(recorded)))
    assert events == live_events and ran == live_ran
    assert type(events[-1]).__name__ == "ChatCompleted"
    sent = orjson.loads((recorded["root"] / "tool_loop" / "01-post-v1-chat-completions" / "request.json").read_bytes())
    assert sent["messages"][0] == {"role": "system", "content": SYSTEM} and sent["tools"][0]["function"]["name"] == "get_weather"


def test_no_recording_holds_the_key(recorded: dict[str, Any]) -> None:
    files = [p for p in Path(recorded["root"]).rglob("*") if p.is_file()]
    assert len(files) >= 7 * (3 * 3 + 2)  # seven files per exchange
    assert find_leaks(KEY, [p.read_bytes() for p in files]) == []
    headers = [p.read_text().lower() for p in files if p.name == "request_headers.txt"]
    assert headers and not any("authorization" in h or "x-api-key" in h for h in headers)
