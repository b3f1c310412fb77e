"""The async shell: the same operations on the caller's event loop."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import allm
from allm.conversations import ConversationInfo, MessageAdded, TurnEnded
from allm.errors import ConversationError
from allm.events import TextDelta
from allm.stores import MemoryStore
from allm.testing import delay, fake_engine, text
from tests.conversations.helpers import WAIT, echo_engine


async def test_the_async_twin(tmp_path: Path) -> None:
    store = MemoryStore()
    async with allm.AsyncConversations(store=store, engine=echo_engine(pause=0.2)) as convs:
        assert repr(convs) == "AsyncConversations(0 live, store=MemoryStore)"
        assert await convs.open("c1", messages=[allm.system("s")]) == ConversationInfo("c1", "idle", 1, "idle")
        sub = convs.subscribe("c1", since=0)
        assert await convs.send("c1", "hi") == 1
        assert convs.get("c1") == ConversationInfo("c1", "busy", 2, "idle")
        with pytest.raises(ConversationError) as e:
            await convs.send("c1", "again")
        assert e.value.reason == "busy"
        updates = []
        async for u in sub:
            updates.append(u)
            if isinstance(u, TurnEnded):
                break
        assert [(u.index, u.replayed) for u in updates if isinstance(u, MessageAdded)] == [(0, True), (1, False), (2, False)]
        assert (await convs.talk("c1", "two", timeout=WAIT)).text == "echo: two"
        ended = await convs.wait("c1")
        assert ended is not None and ended.message_count == 5
        assert [i.id for i in convs.list()] == ["c1"]
        assert convs.session("c1").status == "completed"
        info = await convs.export_history("c1", tmp_path / "c1.gz")
        assert info.message_count == 5
        await convs.import_history(tmp_path / "c1.gz", "c2")
        assert await convs.messages("c2") == await convs.messages("c1")
        await sub.aclose()
        await convs.close("c2")
        assert await convs.find("c2") == ConversationInfo("c2", "idle", 5, "idle")
        assert (await convs.ensure("c3")).message_count == 0
        await convs.close("c3", delete=True)
        assert await convs.find("c3") is None
    with pytest.raises(ConversationError) as e:
        await convs.send("c1", "after shutdown")
    assert e.value.reason == "closed"
    async with allm.AsyncConversations(store=store, engine=echo_engine()) as again:
        await again.reopen("c1")
        assert len(await again.messages("c1")) == 5


async def test_async_interrupt_and_timeout() -> None:
    async with allm.AsyncConversations(engine=fake_engine([text("Hel"), delay(30), text("lo")])) as convs:
        await convs.open("c1")
        sub = convs.subscribe("c1")
        with pytest.raises(ConversationError) as e:
            await convs.talk("c1", "hi", timeout=0.05)
        assert e.value.reason == "timeout"
        while not isinstance(await sub.get(timeout=WAIT), TextDelta):
            pass
        assert await convs.interrupt("c1") is True
        assert [(m.text, dict(m.metadata)) for m in await convs.messages("c1")] == [("hi", {}), ("Hel", {"interrupted": True})]
        rest = [await sub.get(timeout=WAIT) for _ in range(2)]
        assert [type(u).__name__ for u in rest] == ["MessageAdded", "TurnEnded"]
        with pytest.raises(ConversationError) as e2:
            await sub.get(timeout=0.05)
        assert e2.value.reason == "timeout"
        async with convs.subscribe("c1") as late:
            with pytest.raises(ConversationError):
                await late.get(timeout=0.01)


async def test_async_talk_interrupted_by_another_task() -> None:
    async with allm.AsyncConversations(engine=echo_engine(pause=30)) as convs:
        await convs.open("c1")
        talking = asyncio.create_task(convs.talk("c1", "hi"))
        await asyncio.sleep(0.05)
        assert await convs.interrupt("c1") is True
        with pytest.raises(ConversationError) as e:
            await talking
        assert e.value.reason == "interrupted"


async def test_async_subscriptions_end_on_close() -> None:
    async with allm.AsyncConversations(engine=echo_engine()) as convs:
        await convs.open("c1")
        sub = convs.subscribe("c1")
        await convs.close("c1")
        assert [u async for u in sub] == []
        with pytest.raises(StopAsyncIteration):
            await sub.get()
