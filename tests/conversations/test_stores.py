"""The conversation flows on every store (memory, SQLite, Redis), sync and async, and a manager
in a second store instance (another process's view of the same data) reopening them."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

import allm
from allm.conversations import TurnEnded
from allm.conversations.core import INTERRUPTED_RESULT
from allm.conversations.storage import NAMESPACE, RESET, decode_log
from allm.stores import Store, open_store
from allm.testing import fake_engine, text, tool_call
from tests.conversations.helpers import WAIT, echo_engine, roles
from tests.conversations.test_scale import TURNS, expected, jittered_echo


def logged(store: Store, id: str) -> list[allm.Message]:
    record = store.get(NAMESPACE, id)
    assert record is not None
    return decode_log(id, store.read(NAMESPACE, id), 0)[0]


def test_flows_on_every_store(store_url: str, any_store: Store, tmp_path: Path) -> None:
    started = threading.Event()

    async def wait_forever(args: dict[str, str]) -> str:
        started.set()
        await asyncio.sleep(60)
        return "never"

    slow = allm.tool("slow", "Slow", {"type": "object", "properties": {}}, handler=wait_forever)
    quick = allm.tool("quick", "Quick", {"type": "object", "properties": {}}, handler=lambda a: "quick")
    engine = fake_engine([tool_call("quick", {})], ["done"], [tool_call("slow", {})], tools=[slow, quick])
    with allm.Conversations(store=any_store) as convs:
        convs.open("c1", engine=engine, messages=[allm.system("s")], context={"k": "v"})
        assert convs.talk("c1", "go", timeout=WAIT).text == "done"
        convs.send("c1", "slow one")
        assert started.wait(WAIT)
        assert convs.interrupt("c1") is True
        history = convs.messages("c1")
        assert roles(history) == ["system", "user", "assistant", "tool", "assistant", "user", "assistant", "tool"]
        assert history[-1].text == INTERRUPTED_RESULT
        assert logged(any_store, "c1") == list(history)
        convs.export_history("c1", tmp_path / "c1.gz")
        convs.open("c2", engine=echo_engine(), messages=[allm.system("old")])
        convs.import_history(tmp_path / "c1.gz", "c2", replace=True)
        assert any_store.read(NAMESPACE, "c2").count(RESET) == 1
        session = convs.session("c1")
    if store_url == "memory://":
        return  # nothing outside this store instance sees a MemoryStore
    other = open_store(store_url)  # what another process sees
    try:
        with allm.Conversations(store=other, engine=echo_engine()) as convs:
            assert convs.messages("c1") == history
            convs.reopen("c1", engine=echo_engine())
            assert convs.session("c1") == session
            assert convs.talk("c1", "again", timeout=WAIT).text == "echo: again"
            convs.reopen("c2")
            assert convs.messages("c2") == history
    finally:
        other.close()


async def test_async_flows_on_every_store(any_store: Store) -> None:
    engine = allm.Engine(adapter=allm.providers.Fake(scripts=[[text("Hel"), allm.testing.delay(30), text("lo")], ["ok"]]), model="fake")
    async with allm.AsyncConversations(store=any_store, engine=engine) as convs:
        await convs.open("a1")
        sub = convs.subscribe("a1")
        await convs.send("a1", "hi")
        while not isinstance(await sub.get(timeout=WAIT), allm.events.TextDelta):
            pass
        assert await convs.interrupt("a1") is True
        assert (await convs.talk("a1", "again", timeout=WAIT)).text == "ok"
        assert [(m.role, m.text) for m in await convs.messages("a1")] == [
            ("user", "hi"), ("assistant", "Hel"), ("user", "again"), ("assistant", "ok")
        ]
        ends = []
        while len(ends) < 2:
            u = await sub.get(timeout=WAIT)
            if isinstance(u, TurnEnded):
                ends.append(u.outcome)
        assert ends == ["interrupted", "completed"]
        assert logged(any_store, "a1") == list(await convs.messages("a1"))


@pytest.mark.parametrize("n", [1000])
async def test_a_thousand_concurrent_conversations_on_every_store(any_store: Store, n: int) -> None:
    async with allm.AsyncConversations(store=any_store, engine=jittered_echo()) as convs:
        ids = [f"k{i:04d}" for i in range(n)]
        await asyncio.gather(*(convs.open(cid) for cid in ids))

        async def run(cid: str) -> None:
            for t in range(TURNS):
                await convs.talk(cid, f"{cid} #{t}", timeout=120)

        await asyncio.wait_for(asyncio.gather(*(run(cid) for cid in ids)), 300)
        for cid in ids:
            assert [(m.role, m.text) for m in logged(any_store, cid)] == expected(cid, TURNS)


def test_every_message_is_in_the_store_before_anyone_hears_of_it(store_url: str, any_store: Store) -> None:
    """With each store, what a handler or subscriber is told about can already be read back
    through another connection (another process's view): the message at that index, and the
    record saying the conversation exists."""
    other = any_store if store_url == "memory://" else open_store(store_url)
    checked: list[int] = []

    def in_store(index: int, message: allm.Message) -> None:
        assert other.get(NAMESPACE, "c1") is not None
        assert decode_log("c1", other.read(NAMESPACE, "c1"), 0)[0][index] == message
        checked.append(index)

    class Check:
        calls = 0

        def on_message(self, conversation_id: str, message: allm.Message) -> None:
            in_store(self.calls, message)  # handlers hear of every message, in order
            self.calls += 1

    tool = allm.tool("t", "T", {"type": "object", "properties": {}}, handler=lambda a: "ok")
    engine = fake_engine([tool_call("t", {})], [text("do"), text("ne")], tools=[tool])
    try:
        with allm.Conversations(store=any_store) as convs:
            convs.open("c1", engine=engine, messages=[allm.system("s")], handlers=[Check()], persist_initial=True)
            sub = convs.subscribe("c1")
            convs.send("c1", "go")
            while True:
                u = sub.get(timeout=WAIT)
                if isinstance(u, allm.conversations.MessageAdded):
                    in_store(u.index, u.message)
                if isinstance(u, TurnEnded):
                    break
            assert roles(convs.messages("c1")) == ["system", "user", "assistant", "tool", "assistant"]
    finally:
        if other is not any_store:
            other.close()
    assert sorted(checked) == [0, 1, 1, 2, 2, 3, 3, 4, 4]  # the subscriber came after the system message
