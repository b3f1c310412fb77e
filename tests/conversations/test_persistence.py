"""What a conversation stores, when, and how it is reopened (MemoryStore; the SQLite and Redis
stores run the same checks across a killed process in ``test_crash.py``)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import attrs
import orjson
import pytest

import allm
from allm.conversations import MessageAdded, TurnEnded
from allm.conversations.storage import NAMESPACE, RESET, decode_log, encode_record
from allm.errors import ConversationError, StoreError, ValidationError
from allm.stores import MemoryStore
from allm.testing import fake_engine, tool_call
from tests.conversations.helpers import WAIT, Recorder, echo_engine, roles


def log_of(store: MemoryStore, id: str) -> list[allm.Message]:
    return decode_log(id, store.read(NAMESPACE, id), 0)[0]


def record_of(store: MemoryStore, id: str) -> dict[str, Any]:
    record = store.get(NAMESPACE, id)
    assert record is not None
    return orjson.loads(record.value)  # type: ignore[no-any-return]


def test_the_log_is_the_history_and_the_record_the_state(convs: allm.Conversations, store: MemoryStore) -> None:
    tool = allm.tool("t", "T", {"type": "object", "properties": {}}, handler=lambda a: "ok")
    engine = fake_engine([tool_call("t", {})], ["done"], tools=[tool])
    convs.open(
        "c1",
        engine=engine,
        messages=[allm.system("s")],
        context={"user": "ana"},
        metadata={"title": "demo"},
        options={"max_turns": 4, "api_key": "sk-never-stored-0123456789", "halt_when": lambda step: False},
    )
    convs.talk("c1", "go", timeout=WAIT)
    assert log_of(store, "c1") == list(convs.messages("c1"))
    assert roles(log_of(store, "c1")) == ["system", "user", "assistant", "tool", "assistant"]
    rec = record_of(store, "c1")
    assert rec["allm_conversation"] == 1 and rec["base"] == 0
    assert rec["options"] == {"max_turns": 4}  # only the JSON-native loop options; never a key
    session = rec["session"]["value"]
    assert session["id"] == "c1" and session["status"] == "completed"
    assert session["context"] == {"user": "ana"} and session["metadata"] == {"title": "demo"}
    assert "messages" not in session.get("thread", {})
    assert rec["engine"]["value"]["model"] == "fake"
    assert b"sk-never-stored" not in store.get(NAMESPACE, "c1").value  # type: ignore[union-attr]


def test_every_message_is_stored_before_its_event_is_published(convs: allm.Conversations, store: MemoryStore) -> None:
    tool = allm.tool("t", "T", {"type": "object", "properties": {}}, handler=lambda a: "ok")
    convs.open("c1", engine=fake_engine([tool_call("t", {})], ["done"], tools=[tool]))
    lengths: list[tuple[int, int]] = []

    class Check:
        def on_message(self, conversation_id: str, message: allm.Message) -> None:
            lengths.append((len(convs.messages(conversation_id)), store.length(NAMESPACE, conversation_id)))

    convs.close("c1")
    convs.reopen("c1", engine=fake_engine([tool_call("t", {})], ["done"], tools=[tool]), handlers=[Check()])
    sub = convs.subscribe("c1")
    convs.send("c1", "go")
    while True:
        u = sub.get(timeout=WAIT)
        if isinstance(u, MessageAdded):
            assert store.length(NAMESPACE, "c1") > u.index
            assert log_of(store, "c1")[u.index] == u.message
        if isinstance(u, TurnEnded):
            break
    assert lengths == [(1, 1), (3, 3), (3, 3), (4, 4)]  # a step's messages are stored together


def test_a_new_manager_reopens_a_conversation_from_the_store(store: MemoryStore) -> None:
    with allm.Conversations(store=store) as first:
        first.open("c1", engine=echo_engine(), messages=[allm.system("s")], context={"k": 1}, options={"max_turns": 3})
        first.talk("c1", "one", timeout=WAIT)
        before = first.messages("c1")
        session_before = first.session("c1")
    with allm.Conversations(store=store) as second:
        assert second.get("c1") is None
        assert second.messages("c1") == before  # readable without reopening
        rec = Recorder()
        info = second.reopen("c1", engine=echo_engine(), handlers=[rec])
        assert info.message_count == 3 and info.session_status == "completed"
        assert second.session("c1") == session_before
        assert second._core.live["c1"].options == {"max_turns": 3}
        assert second.talk("c1", "two", timeout=WAIT).text == "echo: two"
        assert [c[3] for c in rec.calls] == ["user", "assistant"]  # nothing re-emitted on reopen
        assert log_of(store, "c1") == list(second.messages("c1"))


def test_reopen_uses_the_stored_engine_when_none_is_given(store: MemoryStore) -> None:
    endpoint = allm.providers.OpenAICompatible.llama_cpp("http://127.0.0.1:9/v1")
    with allm.Conversations(store=store) as first:
        first.open("c1", engine=allm.Engine(adapter=endpoint, model="smollm2", defaults={"temperature": 0}))
    with allm.Conversations(store=store) as second:
        second.reopen("c1")
        engine = second._core.live["c1"].engine
        assert engine.model == "smollm2" and engine.defaults == {"temperature": 0}
        assert engine.adapter == endpoint


def test_reopen_errors(store: MemoryStore) -> None:
    with allm.Conversations(store=store) as convs:
        with pytest.raises(ConversationError) as e:
            convs.reopen("nope", engine=echo_engine())
        assert e.value.reason == "unknown_conversation"

        class Unstorable:
            provider = "custom"

        convs.open("custom", engine=allm.Engine(adapter=Unstorable(), model="m"))  # type: ignore[arg-type]
        assert record_of(store, "custom")["engine"] is None
        convs.close("custom")
        with pytest.raises(allm.EngineError) as e2:
            convs.reopen("custom")
        assert e2.value.reason == "invalid_engine"
        assert convs.get("custom") is None
        store.put(NAMESPACE, "corrupt", b"not json")
        with pytest.raises(StoreError) as e3:
            convs.reopen("corrupt", engine=echo_engine())
        assert e3.value.reason == "corrupt"
        with pytest.raises(StoreError):
            convs.messages("corrupt")
        newer = orjson.loads(store.get(NAMESPACE, "custom").value)  # type: ignore[union-attr]
        newer["allm_conversation"] = 2
        store.put(NAMESPACE, "newer", orjson.dumps(newer))
        with pytest.raises(ValidationError) as e4:
            convs.reopen("newer", engine=echo_engine())
        assert e4.value.reason == "invalid_session" and "format 2" in str(e4.value)
        convs.open("badlog", engine=echo_engine())
        convs.close("badlog")
        store.append(NAMESPACE, "badlog", [b'{"not": "a message"}'])
        with pytest.raises(StoreError) as e5:
            convs.reopen("badlog", engine=echo_engine())
        assert e5.value.reason == "corrupt" and "log item 0" in str(e5.value)
        assert convs.list() == []


def test_reopen_makes_the_state_agree_with_the_log(store: MemoryStore) -> None:
    pay = allm.tool("pay", "Pay", {"type": "object", "properties": {}}, manual=True)
    with allm.Conversations(store=store) as convs:
        convs.open("c1", engine=fake_engine([tool_call("pay", {})], tools=[pay]))
        convs.talk("c1", "pay", timeout=WAIT)
        assert convs.session("c1").status == "awaiting_tools"
        calls = convs.session("c1").pending_tool_calls
    # A crash after the log append and before the record write leaves an idle record.
    stale = allm.Session.new(id="c1")
    rec = record_of(store, "c1")
    store.put(NAMESPACE, "c1", encode_record(stale, None, {}, rec["created_at"], 0))
    with allm.Conversations(store=store) as convs:
        convs.reopen("c1", engine=fake_engine(["x"]))
        session = convs.session("c1")
        assert session.status == "awaiting_tools" and session.pending_tool_calls == calls
        assert record_of(store, "c1")["session"]["value"]["status"] == "awaiting_tools"  # repaired


class FlakyStore(MemoryStore):
    """A MemoryStore whose appends fail from the ``fail_at``-th on (counting from 1)."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at = fail_at
        self.appends = 0

    def append(self, namespace: str, key: str, items: Sequence[bytes]) -> int:
        self.appends += 1
        if self.appends >= self.fail_at:
            raise StoreError("the disk is gone", reason="unavailable")
        return super().append(namespace, key, items)


def test_a_store_failure_on_send_stores_and_publishes_nothing() -> None:
    store = FlakyStore(fail_at=2)
    with allm.Conversations(store=store) as convs:
        convs.open("c1", engine=echo_engine(), messages=[allm.system("s")])  # append 1
        sub = convs.subscribe("c1")
        with pytest.raises(StoreError) as e:
            convs.send("c1", "lost?")
        assert e.value.reason == "unavailable"
        assert convs.get("c1").status == "idle" and [m.role for m in convs.messages("c1")] == ["system"]  # type: ignore[union-attr]
        with pytest.raises(ConversationError):
            sub.get(timeout=0.1)  # nothing was published
        store.fail_at = 100
        assert convs.talk("c1", "again", timeout=WAIT).text == "echo: again"


def test_a_store_failure_mid_turn_ends_it_with_the_error_and_a_consistent_history() -> None:
    store = FlakyStore(fail_at=3)  # open(no messages: none), user message (1), step (2) ok, final step (3) fails
    tool = allm.tool("t", "T", {"type": "object", "properties": {}}, handler=lambda a: "ok")
    rec = Recorder()
    with allm.Conversations(store=store) as convs:
        convs.open("c1", engine=fake_engine([tool_call("t", {})], ["done"], ["later"], tools=[tool]), handlers=[rec])
        with pytest.raises(StoreError):
            convs.talk("c1", "go", timeout=WAIT)
        ended = convs.wait("c1")
        assert ended is not None and ended.outcome == "error" and isinstance(ended.error, StoreError)
        assert rec.calls[-1][1:] == ("on_error", "c1", "StoreError", "unavailable")
        assert roles(convs.messages("c1")) == ["user", "assistant", "tool"]
        assert log_of(store, "c1") == list(convs.messages("c1"))
        store.fail_at = 100
        assert convs.talk("c1", "again", timeout=WAIT).text == "later"


def test_a_failing_record_write_is_reported(store: MemoryStore) -> None:
    with allm.Conversations(store=store) as convs:
        convs.open("c1", engine=echo_engine())
        store.put(NAMESPACE, "c1", store.get(NAMESPACE, "c1").value)  # type: ignore[union-attr]  # another writer
        with pytest.raises(StoreError) as e:
            convs.talk("c1", "hi", timeout=WAIT)
        assert e.value.reason == "version_conflict"
        assert [m.text for m in convs.messages("c1")] == ["hi", "echo: hi"]


def test_import_with_replace_appends_a_reset_marker(tmp_path: Any, store: MemoryStore) -> None:
    with allm.Conversations(store=store, engine=echo_engine()) as convs:
        convs.open("src", messages=[allm.system("new history")])
        convs.export_history("src", tmp_path / "h.gz")
        convs.open("c1", messages=[allm.system("old")])
        convs.talk("c1", "old talk", timeout=WAIT)
        convs.import_history(tmp_path / "h.gz", "c1", replace=True)
        assert [m.text for m in convs.messages("c1")] == ["new history"]
        items = store.read(NAMESPACE, "c1")
        assert items.count(RESET) == 1 and len(items) == 5
        assert record_of(store, "c1")["base"] == 4
        convs.talk("c1", "new talk", timeout=WAIT)
    with allm.Conversations(store=store, engine=echo_engine()) as convs:
        convs.reopen("c1")
        assert [m.text for m in convs.messages("c1")] == ["new history", "new talk", "echo: new talk"]
    # A crash between the append and the record write: the marker still wins.
    rec = record_of(store, "c1")
    store.append(NAMESPACE, "c1", [RESET, allm.codec.dumps(allm.system("newest"))])
    with allm.Conversations(store=store, engine=echo_engine()) as convs:
        assert [m.text for m in convs.messages("c1")] == ["newest"]
        convs.reopen("c1")
        assert record_of(store, "c1")["base"] == rec["base"] + 4


def test_concurrent_sends_from_threads_get_one_turn_and_busy_errors(convs: allm.Conversations) -> None:
    convs.open("c1", engine=echo_engine(pause=0.2))
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def go(i: int) -> None:
        barrier.wait()
        try:
            convs.send("c1", f"m{i}")
            outcomes.append("sent")
        except ConversationError as exc:
            outcomes.append(exc.reason)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert sorted(outcomes) == ["busy"] * 7 + ["sent"]
    convs.wait("c1", timeout=WAIT)
    assert len(convs.messages("c1")) == 2


def test_session_values_stay_pure(convs: allm.Conversations) -> None:
    convs.open("c1", engine=echo_engine())
    before = convs.session("c1")
    convs.talk("c1", "hi", timeout=WAIT)
    assert before.messages == () and before.status == "idle"  # an old value never changes
    after = convs.session("c1")
    assert allm.Session.from_json(after.to_json()) == after
    assert attrs.evolve(after) == after


async def test_an_interrupt_waiting_on_a_send_whose_store_write_fails_returns() -> None:
    class SlowFailingStore(MemoryStore):
        def __init__(self) -> None:
            super().__init__()
            self.entered = asyncio.Event()
            self.release = asyncio.Event()

        async def aappend(self, namespace: str, key: str, items: Sequence[bytes]) -> int:
            self.entered.set()
            await self.release.wait()
            raise StoreError("the disk is gone", reason="unavailable")

    store = SlowFailingStore()
    async with allm.AsyncConversations(store=store, engine=echo_engine()) as convs:
        await convs.open("c1")
        sending = asyncio.create_task(convs.send("c1", "hi"))
        await asyncio.wait_for(store.entered.wait(), WAIT)
        interrupting = asyncio.create_task(convs.interrupt("c1"))
        await asyncio.sleep(0.01)
        store.release.set()
        with pytest.raises(StoreError):
            await sending
        assert await asyncio.wait_for(interrupting, WAIT) is True
        assert convs.get("c1").status == "idle" and await convs.messages("c1") == ()  # type: ignore[union-attr]


def test_opening_with_unanswered_tool_calls_awaits_them(convs: allm.Conversations) -> None:
    call = allm.ToolCall("call_9", "pay", {})
    convs.open("c1", engine=echo_engine(), messages=[allm.user("pay"), allm.assistant("", [call])])
    session = convs.session("c1")
    assert session.status == "awaiting_tools" and session.pending_tool_calls == (call,)
    question = allm.Message("assistant", "Which account?", metadata={"ask_user": True, "tool_call_id": "call_1", "choices": ["a"]})
    convs.open("c2", engine=echo_engine(), messages=[allm.user("pay"), question])
    s2 = convs.session("c2")
    assert (s2.status, s2.pending_question, s2.metadata["ask_user"]["choices"]) == ("awaiting_user", "Which account?", ["a"])
    assert convs.talk("c2", "a", timeout=WAIT).text == "echo: a"
