"""Interrupting a turn: mid-stream, mid-tool, between steps, before it starts.

The upstream is a real HTTP server on loopback (``tests/loopback.py``) that streams part of
an answer and then stalls, or a tool whose handler waits on such a server: each time the
server must see its connection closed, and the stored history must be a valid thread
holding exactly what the conversation published.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

import allm
from allm.conversations import MessageAdded, TurnEnded
from allm.conversations.core import INTERRUPTED_RESULT
from allm.conversations.storage import NAMESPACE, decode_log
from allm.events import TextDelta, ToolExecutionStarted
from allm.stores import MemoryStore
from allm.testing import delay, fake_engine, text, tool_call
from tests.conversations.helpers import WAIT, echo_engine, roles, until_turn_ended
from tests.loopback import LoopbackServer, Req, Writer, chat_chunks, serve

AT_ONCE = 1.0  # seconds for the server to see the client leave (a factor of 10 over what it takes)


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with serve() as s:
        yield s


def stored(store: MemoryStore, id: str) -> list[allm.Message]:
    return decode_log(id, store.read(NAMESPACE, id), 0)[0]


def partial_then_stall(texts: list[str]) -> object:
    async def handler(req: Req, w: Writer) -> None:
        await w.start_stream()
        for c in chat_chunks(texts, done=False)[: len(texts)]:
            await w.chunk(c)
        await asyncio.sleep(30)

    return handler


def loopback_engine(server: LoopbackServer, **fields: object) -> allm.Engine:
    return allm.Engine(adapter=allm.providers.OpenAICompatible(base_url=server.url + "/v1"), model="m", **fields)  # type: ignore[arg-type]


def test_interrupt_mid_stream_closes_the_upstream_and_keeps_the_partial_text_marked(
    convs: allm.Conversations, store: MemoryStore, server: LoopbackServer
) -> None:
    server.handler = partial_then_stall(["Hello", ", wor"])  # type: ignore[assignment]
    convs.open("c1", engine=loopback_engine(server), messages=[allm.system("Be brief.")])
    sub = convs.subscribe("c1")
    convs.send("c1", "greet me", api_key="sk-loopback-0123456789")
    seen = ""
    while seen != "Hello, wor":
        u = sub.get(timeout=WAIT)
        if isinstance(u, TextDelta):
            seen += u.delta
    t0 = time.monotonic()
    assert convs.interrupt("c1") is True
    assert server.wait_for(lambda: server.disconnects == 1 and server.open_connections == 0, AT_ONCE)
    assert time.monotonic() - t0 < AT_ONCE
    rest = until_turn_ended(sub)
    ended = rest[-1]
    assert isinstance(ended, TurnEnded)
    assert (ended.outcome, ended.halted_reason, ended.status) == ("interrupted", "cancelled", "idle")
    kept = [u.message for u in rest if isinstance(u, MessageAdded)]
    assert [(m.role, m.text, dict(m.metadata)) for m in kept] == [("assistant", "Hello, wor", {"interrupted": True})]
    assert ended.reply == kept[0]
    history = convs.messages("c1")
    assert roles(history) == ["system", "user", "assistant"]
    assert stored(store, "c1") == list(history)
    assert convs.get("c1").status == "idle"  # type: ignore[union-attr]
    assert convs.interrupt("c1") is False  # nothing running now


def test_interrupt_mid_tool_cancels_the_tool_and_its_upstream(
    convs: allm.Conversations, store: MemoryStore, server: LoopbackServer
) -> None:
    server.handler = partial_then_stall([])  # type: ignore[assignment]
    cancelled = threading.Event()

    async def fetch(args: dict[str, str]) -> str:
        try:
            async with httpx.AsyncClient() as client:
                r = await client.get(server.url + "/slow")
                return r.text
        except asyncio.CancelledError:
            cancelled.set()
            raise

    def quick(args: dict[str, str]) -> str:
        return "quick result"

    schema = {"type": "object", "properties": {}}
    tools = [allm.tool("fetch", "Fetch", schema, handler=fetch), allm.tool("quick", "Quick", schema, handler=quick)]
    engine = fake_engine([tool_call("quick", {}), tool_call("fetch", {})], ["after"], tools=tools)
    convs.open("c1", engine=engine)
    sub = convs.subscribe("c1")
    convs.send("c1", "go")
    assert server.wait_for(lambda: server.active == 1, WAIT)
    t0 = time.monotonic()
    assert convs.interrupt("c1") is True
    assert server.wait_for(lambda: server.disconnects == 1 and server.open_connections == 0, AT_ONCE)
    assert cancelled.wait(AT_ONCE)
    assert time.monotonic() - t0 < AT_ONCE
    updates = until_turn_ended(sub)
    assert any(isinstance(u, ToolExecutionStarted) for u in updates)
    history = convs.messages("c1")
    assert roles(history) == ["user", "assistant", "tool", "tool"]
    assistant, quick_result, fetch_result = history[1:]
    assert [c.name for c in assistant.tool_calls] == ["quick", "fetch"] and assistant.metadata["interrupted"] is True
    assert (quick_result.name, quick_result.text, quick_result.is_error) == ("quick", "quick result", False)
    assert (fetch_result.name, fetch_result.text, fetch_result.is_error) == ("fetch", INTERRUPTED_RESULT, True)
    assert fetch_result.tool_call_id == assistant.tool_calls[1].id and fetch_result.metadata == {"interrupted": True}
    assert stored(store, "c1") == list(history)
    # The history is a valid thread: the next turn sends it and goes on.
    assert convs.talk("c1", "carry on", timeout=WAIT).text == "after"
    assert roles(convs.messages("c1")) == ["user", "assistant", "tool", "tool", "user", "assistant"]


def test_interrupt_while_a_sync_tool_runs(convs: allm.Conversations, store: MemoryStore) -> None:
    release = threading.Event()
    started = threading.Event()

    def slow(args: dict[str, str]) -> str:
        started.set()
        release.wait(WAIT)
        return "too late"

    tool = allm.tool("slow", "Slow", {"type": "object", "properties": {}}, handler=slow)
    convs.open("c1", engine=fake_engine([tool_call("slow", {})], tools=[tool]))
    convs.send("c1", "go")
    assert started.wait(WAIT)
    t0 = time.monotonic()
    assert convs.interrupt("c1") is True
    assert time.monotonic() - t0 < AT_ONCE  # the thread cannot be stopped; its result is dropped
    release.set()
    history = convs.messages("c1")
    assert roles(history) == ["user", "assistant", "tool"] and history[2].text == INTERRUPTED_RESULT
    assert stored(store, "c1") == list(history)


def test_interrupt_during_a_fake_delay_keeps_the_text_so_far(convs: allm.Conversations, store: MemoryStore) -> None:
    convs.open("c1", engine=fake_engine([text("Hel"), delay(30), text("lo")]))
    sub = convs.subscribe("c1")
    convs.send("c1", "hi")
    while not isinstance(sub.get(timeout=WAIT), TextDelta):
        pass
    assert convs.interrupt("c1") is True
    history = convs.messages("c1")
    assert [(m.role, m.text) for m in history] == [("user", "hi"), ("assistant", "Hel")]
    assert history[1].metadata == {"interrupted": True}
    assert stored(store, "c1") == list(history)


def test_interrupt_before_the_model_answers_keeps_only_the_user_message(convs: allm.Conversations, store: MemoryStore) -> None:
    convs.open("c1", engine=echo_engine(pause=30))
    convs.send("c1", "hi")
    assert convs.interrupt("c1") is True
    assert [m.text for m in convs.messages("c1")] == ["hi"]
    assert stored(store, "c1") == list(convs.messages("c1"))
    ended = convs.wait("c1")
    assert ended is not None and ended.outcome == "interrupted" and ended.reply is None


def test_interrupt_between_steps_keeps_the_finished_steps(convs: allm.Conversations, store: MemoryStore) -> None:
    gate = threading.Event()
    entered = threading.Event()

    class SlowPersistence:
        def on_message(self, conversation_id: str, message: allm.Message) -> None:
            if message.role == "tool":
                entered.set()
                gate.wait(WAIT)

    tool = allm.tool("t", "T", {"type": "object", "properties": {}}, handler=lambda a: "ok")
    engine = fake_engine([tool_call("t", {})], ["never asked"], tools=[tool])
    convs.open("c1", engine=engine, handlers=[SlowPersistence()])
    convs.send("c1", "go")
    assert entered.wait(WAIT)
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(convs.interrupt("c1")))
    waiter.start()
    time.sleep(0.1)
    assert waiter.is_alive()  # the interrupt waits for the step being stored and told
    gate.set()
    waiter.join(WAIT)
    assert result == [True]
    assert roles(convs.messages("c1")) == ["user", "assistant", "tool"]
    assert not any(m.metadata.get("interrupted") for m in convs.messages("c1"))
    assert engine.adapter.calls == 1  # type: ignore[attr-defined]  # the second model call never started
    assert stored(store, "c1") == list(convs.messages("c1"))


def test_interrupt_an_idle_conversation(convs: allm.Conversations) -> None:
    convs.open("c1", engine=echo_engine())
    assert convs.interrupt("c1") is False
    convs.talk("c1", "hi", timeout=WAIT)
    assert convs.interrupt("c1") is False
