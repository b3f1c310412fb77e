"""A thousand conversations at once in one process: order kept, nothing lost; the memory an
idle conversation holds (printed with ``-s``; bounded so a leak fails)."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
import zlib

import allm
from allm.conversations import MessageAdded, TurnEnded
from allm.conversations.storage import NAMESPACE, decode_log
from allm.providers import Fake
from allm.stores import MemoryStore
from allm.testing import delay, text
from tests.conversations.helpers import WAIT, last_user_text

N = 1000
TURNS = 3


def jittered_echo() -> allm.Engine:
    """Echo after 0 to 19 ms (the same for the same text), in two text deltas."""

    def answer(request: allm.Request) -> list[object]:
        said = last_user_text(request)
        return [delay((zlib.crc32(said.encode()) % 20) / 1000), text("echo: "), text(said)]

    return allm.Engine(adapter=Fake(function=answer), model="fake")


def expected(cid: str, turns: int) -> list[tuple[str, str]]:
    out = []
    for t in range(turns):
        out += [("user", f"{cid} #{t}"), ("assistant", f"echo: {cid} #{t}")]
    return out


async def test_a_thousand_concurrent_conversations_async() -> None:
    store = MemoryStore()
    async with allm.AsyncConversations(store=store, engine=jittered_echo()) as convs:
        ids = [f"c{i:04d}" for i in range(N)]
        for cid in ids:
            await convs.open(cid)
        subs = {cid: convs.subscribe(cid) for cid in ids}

        async def run(cid: str) -> None:
            for t in range(TURNS):
                reply = await convs.talk(cid, f"{cid} #{t}", timeout=60)
                assert reply.text == f"echo: {cid} #{t}"

        await asyncio.wait_for(asyncio.gather(*(run(cid) for cid in ids)), 120)
        assert all(i.status == "idle" and i.message_count == 2 * TURNS for i in convs.list())
        for cid in ids:
            want = expected(cid, TURNS)
            assert [(m.role, m.text) for m in await convs.messages(cid)] == want
            assert [(m.role, m.text) for m in decode_log(cid, store.read(NAMESPACE, cid), 0)[0]] == want
            seen, ends = [], 0
            while ends < TURNS:
                u = await subs[cid].get(timeout=WAIT)
                if isinstance(u, MessageAdded):
                    seen.append((u.index, u.message.role, u.message.text))
                elif isinstance(u, TurnEnded):
                    ends += 1
            assert seen == [(i, r, x) for i, (r, x) in enumerate(want)]


def test_a_thousand_concurrent_conversations_sync() -> None:
    store = MemoryStore()
    with allm.Conversations(store=store, engine=jittered_echo()) as convs:
        ids = [f"s{i:04d}" for i in range(N)]
        for cid in ids:
            convs.open(cid)
        for t in range(TURNS):
            for cid in ids:
                assert convs.send(cid, f"{cid} #{t}") == 2 * t
            for cid in ids:
                ended = convs.wait(cid, timeout=60)
                assert ended is not None and ended.outcome == "completed" and ended.message_count == 2 * (t + 1)
        for cid in ids:
            assert [(m.role, m.text) for m in convs.messages(cid)] == expected(cid, TURNS)


def test_memory_per_idle_conversation() -> None:
    def history(i: int) -> list[allm.Message]:
        return [
            allm.system("You are a helpful assistant. Be brief."),
            allm.user(f"What is the capital of France? ({i})"),
            allm.assistant(f"Paris. ({i})"),
        ]

    with allm.Conversations(store=MemoryStore(), engine=jittered_echo()) as convs:
        convs.open("warm-up", messages=history(-1))
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        for i in range(N):
            convs.open(f"m{i:04d}", messages=history(i))
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        stats = after.compare_to(before, "filename")
        total = sum(s.size_diff for s in stats)
        stored = sum(s.size_diff for s in stats if s.traceback[0].filename.endswith(("stores/memory.py", "storage.py")))
        per, per_stored = total / N, stored / N
        print(
            f"\nmemory per idle conversation of 3 messages: {per:.0f} B "
            f"({per - per_stored:.0f} B live state and messages, {per_stored:.0f} B in the MemoryStore)"
        )
        assert per < 16 * 1024
