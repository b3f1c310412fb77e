"""Every operation of the conversation manager and every error it raises (sync shell)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

import allm
from allm.conversations import ConversationInfo, TurnEnded
from allm.conversations.storage import NAMESPACE, decode_log
from allm.errors import AdapterError, ConversationError, EngineError, SessionError, ValidationError
from allm.stores import MemoryStore
from allm.testing import error, fake_engine, text, tool_call
from tests.conversations.helpers import WAIT, echo_engine, last_user_text, roles


def test_open_get_list_and_talk(convs: allm.Conversations) -> None:
    info = convs.open("c1", engine=echo_engine(), messages=[allm.system("Be brief.")])
    assert info == ConversationInfo("c1", "idle", 1, "idle")
    assert convs.get("c1") == info
    assert convs.get("nope") is None
    reply = convs.talk("c1", "hello", timeout=WAIT)
    assert reply.role == "assistant" and reply.text == "echo: hello"
    assert [(m.role, m.text) for m in convs.messages("c1")] == [
        ("system", "Be brief."),
        ("user", "hello"),
        ("assistant", "echo: hello"),
    ]
    assert convs.list() == [ConversationInfo("c1", "idle", 3, "completed")]
    session = convs.session("c1")
    assert isinstance(session, allm.Session) and session.id == "c1"
    assert session.messages == convs.messages("c1") and session.status == "completed"


def test_open_without_an_id_makes_one(convs: allm.Conversations) -> None:
    a = convs.open(engine=echo_engine())
    b = convs.open(engine=echo_engine())
    assert a.id.startswith("conv_") and b.id.startswith("conv_") and a.id != b.id


def test_send_returns_at_once_and_the_turn_runs_in_the_background(convs: allm.Conversations) -> None:
    convs.open("c1", engine=echo_engine(pause=0.3))
    t0 = time.monotonic()
    index = convs.send("c1", "hi")
    assert time.monotonic() - t0 < 0.3
    assert index == 0
    assert convs.get("c1") == ConversationInfo("c1", "busy", 1, "idle")
    ended = convs.wait("c1", timeout=WAIT)
    assert isinstance(ended, TurnEnded)
    assert (ended.outcome, ended.halted_reason, ended.status, ended.message_count) == ("completed", "completed", "completed", 2)
    assert ended.reply is not None and ended.reply.text == "echo: hi"
    assert convs.get("c1") == ConversationInfo("c1", "idle", 2, "completed")
    assert convs.wait("c1") == ended  # idle: the last turn's end


def test_wait_before_any_turn_is_none(convs: allm.Conversations) -> None:
    convs.open("c1", engine=echo_engine())
    assert convs.wait("c1") is None


def test_sending_to_a_busy_conversation_is_refused_and_nothing_is_stored(convs: allm.Conversations, store: MemoryStore) -> None:
    convs.open("c1", engine=echo_engine(pause=0.5))
    convs.send("c1", "first")
    with pytest.raises(ConversationError) as e:
        convs.send("c1", "second")
    assert e.value.reason == "busy"
    assert "'c1'" in str(e.value) and e.value.metadata["conversation_id"] == "c1"
    with pytest.raises(ConversationError) as e2:
        convs.talk("c1", "third")
    assert e2.value.reason == "busy"
    assert [m.text for m in convs.messages("c1")] == ["first"]
    assert store.length(NAMESPACE, "c1") == 1
    convs.wait("c1", timeout=WAIT)
    assert [m.text for m in convs.messages("c1")] == ["first", "echo: first"]
    assert convs.talk("c1", "second", timeout=WAIT).text == "echo: second"


def test_unknown_conversation_errors(convs: allm.Conversations) -> None:
    for call in (
        lambda: convs.send("nope", "hi"),
        lambda: convs.talk("nope", "hi"),
        lambda: convs.wait("nope"),
        lambda: convs.interrupt("nope"),
        lambda: convs.close("nope"),
        lambda: convs.subscribe("nope"),
        lambda: convs.messages("nope"),
        lambda: convs.session("nope"),
        lambda: convs.export_history("nope", "/tmp/never-written.gz"),
    ):
        with pytest.raises(ConversationError) as e:
            call()
        assert e.value.reason == "unknown_conversation"
        assert "'nope'" in str(e.value)


def test_already_exists_live_and_stored(convs: allm.Conversations) -> None:
    convs.open("c1", engine=echo_engine())
    with pytest.raises(ConversationError) as e:
        convs.open("c1", engine=echo_engine())
    assert e.value.reason == "already_exists"
    convs.close("c1")
    with pytest.raises(ConversationError) as e:
        convs.open("c1", engine=echo_engine())
    assert e.value.reason == "already_exists" and "stored" in str(e.value)
    convs.reopen("c1", engine=echo_engine())
    with pytest.raises(ConversationError) as e:
        convs.reopen("c1", engine=echo_engine())
    assert e.value.reason == "already_exists"


@pytest.mark.parametrize("bad", ["", "has space", "x" * 201, "tab\there", 42])
def test_invalid_ids(convs: allm.Conversations, bad: object) -> None:
    for op in (lambda: convs.open(bad, engine=echo_engine()), lambda: convs.find(bad), lambda: convs.get(bad),  # type: ignore[arg-type]
               lambda: convs.messages(bad), lambda: convs.ensure(bad, engine=echo_engine())):  # type: ignore[arg-type]
        with pytest.raises(ValidationError) as e:
            op()
        assert e.value.reason == "invalid_request"


def test_bad_open_arguments(convs: allm.Conversations) -> None:
    with pytest.raises(EngineError) as e:
        convs.open("c1")
    assert e.value.reason == "invalid_engine"
    with pytest.raises(ValidationError):
        convs.open("c1", engine=echo_engine(), card=SimpleNamespace(engine=echo_engine()))
    with pytest.raises(ValidationError):
        convs.open("c1", card=SimpleNamespace(system="no engine"))
    with pytest.raises(ValidationError) as e2:
        convs.open("c1", engine=echo_engine(), messages=["not a message"])  # type: ignore[list-item]
    assert e2.value.reason == "invalid_message"
    with pytest.raises(ValidationError):
        convs.open("c1", engine=echo_engine(), handlers=[object()])
    with pytest.raises(TypeError):
        convs.open("c1", engine=echo_engine(), options={"max_turn": 3})
    with pytest.raises(ValidationError) as e3:
        convs.open("c1", engine=echo_engine(), context={"conn": object()})
    assert e3.value.reason == "invalid_session"
    assert convs.list() == []  # nothing was left behind
    assert convs.open("c1", engine=echo_engine()).id == "c1"


def test_bad_send_arguments(convs: allm.Conversations) -> None:
    convs.open("c1", engine=echo_engine())
    with pytest.raises(ValidationError) as e:
        convs.send("c1", allm.assistant("I speak for the user"))
    assert e.value.reason == "invalid_message"
    with pytest.raises(TypeError):
        convs.send("c1", "hi", max_turn=3)  # type: ignore[call-arg]
    assert convs.messages("c1") == () and convs.get("c1").status == "idle"  # type: ignore[union-attr]
    assert convs.talk("c1", allm.user("as a message"), timeout=WAIT).text == "echo: as a message"


def test_card_gives_the_engine_and_system_prompt(convs: allm.Conversations) -> None:
    card = SimpleNamespace(engine=echo_engine(), system="You are a pirate.")
    convs.open("c1", card=card)
    assert [(m.role, m.text) for m in convs.messages("c1")] == [("system", "You are a pirate.")]
    convs.open("c2", card=card, messages=[allm.system("Mine.")])
    assert [m.text for m in convs.messages("c2")] == ["Mine."]
    method_card = SimpleNamespace(engine=lambda: echo_engine(), system=None)
    convs.open("c3", card=method_card)
    assert convs.talk("c3", "arr", timeout=WAIT).text == "echo: arr"


def test_manager_default_engine_and_ensure() -> None:
    with allm.Conversations(engine=echo_engine()) as convs:
        info = convs.ensure("c1")
        assert info == ConversationInfo("c1", "idle", 0, "idle")
        convs.talk("c1", "one", timeout=WAIT)
        assert convs.ensure("c1", messages=[allm.system("ignored")]).message_count == 2  # a no-op
        convs.close("c1")
        assert convs.get("c1") is None
        assert convs.ensure("c1").message_count == 2  # reopened from the store
        assert convs.talk("c1", "two", timeout=WAIT).text == "echo: two"


def test_find_reopens_stored_conversations(convs: allm.Conversations) -> None:
    assert convs.find("c1") is None
    convs.open("c1", engine=echo_engine())
    convs.talk("c1", "hi", timeout=WAIT)
    assert convs.find("c1") == convs.get("c1")
    convs.close("c1")
    assert convs.get("c1") is None
    found = convs.find("c1", engine=echo_engine())
    assert found == ConversationInfo("c1", "idle", 2, "completed")


def test_close(convs: allm.Conversations, store: MemoryStore) -> None:
    convs.open("c1", engine=echo_engine(pause=0.3))
    convs.send("c1", "hi")
    with pytest.raises(ConversationError) as e:
        convs.close("c1")
    assert e.value.reason == "busy"
    convs.wait("c1", timeout=WAIT)
    convs.close("c1")
    assert convs.get("c1") is None and convs.list() == []
    with pytest.raises(ConversationError) as e:
        convs.send("c1", "again")
    assert e.value.reason == "unknown_conversation"
    assert [m.text for m in convs.messages("c1")] == ["hi", "echo: hi"]  # still stored
    convs.reopen("c1", engine=echo_engine())
    convs.close("c1", delete=True)
    assert store.get(NAMESPACE, "c1") is None and store.length(NAMESPACE, "c1") == 0
    with pytest.raises(ConversationError):
        convs.messages("c1")


def test_talk_timeout_leaves_the_turn_running(convs: allm.Conversations) -> None:
    convs.open("c1", engine=echo_engine(pause=0.5))
    with pytest.raises(ConversationError) as e:
        convs.talk("c1", "slow", timeout=0.05)
    assert e.value.reason == "timeout" and e.value.metadata["timeout"] == 0.05
    assert convs.get("c1").status == "busy"  # type: ignore[union-attr]
    with pytest.raises(ConversationError) as e2:
        convs.wait("c1", timeout=0.01)
    assert e2.value.reason == "timeout"
    ended = convs.wait("c1", timeout=WAIT)
    assert ended is not None and ended.outcome == "completed"
    assert [m.text for m in convs.messages("c1")] == ["slow", "echo: slow"]


def test_talk_interrupted_from_another_thread(convs: allm.Conversations) -> None:
    convs.open("c1", engine=echo_engine(pause=5.0))
    threading.Timer(0.2, lambda: convs.interrupt("c1")).start()
    with pytest.raises(ConversationError) as e:
        convs.talk("c1", "never answered", timeout=WAIT)
    assert e.value.reason == "interrupted"
    assert [m.text for m in convs.messages("c1")] == ["never answered"]


def test_a_failed_turn_keeps_the_user_message_and_the_conversation_goes_on(convs: allm.Conversations) -> None:
    engine = fake_engine(
        [text("partial "), error("provider_unavailable", "boom")],
        [error("authentication_failed", "bad key", status=401, before_stream=True)],
        ["fine now"],
    )
    convs.open("c1", engine=engine)
    with pytest.raises(AdapterError) as e:
        convs.talk("c1", "first", timeout=WAIT)
    assert e.value.reason == "provider_unavailable"
    ended = convs.wait("c1")
    assert ended is not None and (ended.outcome, ended.halted_reason, ended.status) == ("error", "error", "idle")
    assert ended.error == e.value
    assert [m.text for m in convs.messages("c1")] == ["first"]  # the failed output is not stored
    with pytest.raises(AdapterError) as e2:
        convs.talk("c1", "second", timeout=WAIT)
    assert e2.value.reason == "authentication_failed"
    assert [m.text for m in convs.messages("c1")] == ["first", "second"]
    assert convs.talk("c1", "third", timeout=WAIT).text == "fine now"
    assert roles(convs.messages("c1")) == ["user", "user", "user", "assistant"]


def test_tools_run_by_themselves_with_the_conversations_options(convs: allm.Conversations) -> None:
    calls: list[str] = []

    def lookup(args: dict[str, str]) -> str:
        calls.append(args["q"])
        return f"found {args['q']}"

    tool = allm.tool("lookup", "Look up", {"type": "object", "properties": {"q": {"type": "string"}}}, handler=lookup)
    engine = fake_engine([tool_call("lookup", {"q": "a"})], [tool_call("lookup", {"q": "b"})], ["done"])
    convs.open("c1", engine=engine, tools=[tool], options={"max_turns": 2})
    convs.send("c1", "go")
    ended = convs.wait("c1", timeout=WAIT)
    assert ended is not None and ended.halted_reason == "max_turns" and calls == ["a", "b"]
    assert roles(convs.messages("c1")) == ["user", "assistant", "tool", "assistant", "tool"]
    assert convs.talk("c1", "and?", max_turns=1, timeout=WAIT).text == "done"  # a per-turn option


def test_manual_tools_wait_for_their_results(convs: allm.Conversations, store: MemoryStore) -> None:
    pay = allm.tool("pay", "Pay", {"type": "object", "properties": {"to": {"type": "string"}}}, manual=True)
    engine = fake_engine([tool_call("pay", {"to": "ana"}), tool_call("pay", {"to": "bo"})], ["Both paid."], tools=[pay])
    convs.open("c1", engine=engine)
    convs.talk("c1", "pay them", timeout=WAIT)
    assert convs.get("c1").session_status == "awaiting_tools"  # type: ignore[union-attr]
    first, second = convs.session("c1").pending_tool_calls
    with pytest.raises(SessionError) as e:
        convs.send("c1", "hello?")
    assert e.value.reason == "invalid_status"
    with pytest.raises(SessionError) as e:
        convs.submit_tool_results("c1", {"call_nope": "x"})
    assert e.value.reason == "unknown_tool_call_id"
    assert len(convs.messages("c1")) == 2 and convs.get("c1").status == "idle"  # type: ignore[union-attr]
    assert convs.submit_tool_results("c1", {first.id: "paid ana"}) == 2  # one call still pending: no turn
    assert convs.get("c1").status == "idle" and convs.session("c1").pending_tool_calls == (second,)  # type: ignore[union-attr]
    assert convs.wait("c1") is not None and convs.wait("c1").outcome == "completed"  # type: ignore[union-attr]  # the earlier turn
    assert convs.submit_tool_results("c1", {second.id: {"paid": "bo"}}) == 3
    ended = convs.wait("c1", timeout=WAIT)
    assert ended is not None and ended.reply is not None and ended.reply.text == "Both paid."
    assert [m.role for m in convs.messages("c1")] == ["user", "assistant", "tool", "tool", "assistant"]
    assert convs.messages("c1")[3].text == '{"paid":"bo"}'
    assert decode_log("c1", store.read(NAMESPACE, "c1"), 0)[0] == list(convs.messages("c1"))
    with pytest.raises(SessionError) as e:
        convs.submit_tool_results("c1", {second.id: "again"})
    assert e.value.reason == "invalid_status"


def test_a_question_from_a_tool_is_answered_by_the_next_message(convs: allm.Conversations) -> None:
    ask = allm.tool("ask", "Ask", {"type": "object", "properties": {}}, handler=lambda a: allm.AskUser("Which account?", ["a", "b"]))
    convs.open("c1", engine=fake_engine([tool_call("ask", {})], ["Paid from b."], tools=[ask]))
    reply = convs.talk("c1", "pay my bill", timeout=WAIT)
    assert reply.text == "Which account?"
    session = convs.session("c1")
    assert session.status == "awaiting_user" and session.pending_question == "Which account?"
    assert convs.talk("c1", "b", timeout=WAIT).text == "Paid from b."
    assert convs.session("c1").status == "completed"


def test_per_turn_params_reach_the_model() -> None:
    seen: list[allm.Request] = []

    def answer(request: allm.Request) -> str:
        seen.append(request)
        return last_user_text(request)

    engine = allm.Engine(adapter=allm.providers.Fake(function=answer), model="fake")
    with allm.Conversations(engine=engine) as convs:
        convs.open("c1", options={"params": {"temperature": 0.5}})
        convs.talk("c1", "a", timeout=WAIT)
        convs.talk("c1", "b", params={"max_tokens": 7}, timeout=WAIT)
    assert seen[0].temperature == 0.5 and seen[1].max_tokens == 7 and seen[1].temperature is None


def test_shutdown_interrupts_and_then_refuses() -> None:
    convs = allm.Conversations(engine=echo_engine(pause=5.0))
    convs.open("c1")
    convs.send("c1", "hi")
    t0 = time.monotonic()
    convs.shutdown()
    assert time.monotonic() - t0 < 2.0
    with pytest.raises(ConversationError) as e:
        convs.list()
    assert e.value.reason == "closed"
    convs.shutdown()  # twice is fine


def test_methods_cannot_block_their_own_loop() -> None:
    seen: list[BaseException] = []
    with allm.Conversations(engine=echo_engine()) as convs:

        class Handler:
            async def on_message(self, conversation_id: str, message: allm.Message) -> None:
                try:
                    convs.list()
                except BaseException as exc:
                    seen.append(exc)

        convs.open("c1", handlers=[Handler()])
        convs.talk("c1", "hi", timeout=WAIT)
    assert seen and all(isinstance(e, RuntimeError) for e in seen)


def test_sync_handlers_may_call_the_manager() -> None:
    counts: list[int] = []
    with allm.Conversations(engine=echo_engine()) as convs:

        class Handler:
            def on_message(self, conversation_id: str, message: allm.Message) -> None:
                counts.append(len(convs.messages(conversation_id)))

        convs.open("c1", handlers=[Handler()])
        convs.talk("c1", "hi", timeout=WAIT)
    assert counts == [1, 2]


def test_turns_use_the_callers_key_scope() -> None:
    keys: list[str | None] = []
    from tests.loopback import chat_chunks, serve

    async def handler(req, w):  # type: ignore[no-untyped-def]
        keys.append(req.headers.get("authorization"))
        await w.start_stream()
        for c in chat_chunks(["hi"]):
            await w.chunk(c)
        await w.end_stream()

    with serve(handler) as server:
        engine = allm.Engine(adapter=allm.providers.OpenAICompatible(base_url=server.url + "/v1"), model="m")
        with allm.Conversations(engine=engine) as convs:
            convs.open("c1")
            with allm.keys.scope("sk-scoped-0123456789"):
                assert convs.talk("c1", "a", timeout=WAIT).text == "hi"
            assert convs.talk("c1", "b", api_key="sk-percall-0123456789", timeout=WAIT).text == "hi"
    assert keys == ["Bearer sk-scoped-0123456789", "Bearer sk-percall-0123456789"]


def test_a_dropped_manager_stops_its_thread() -> None:
    import gc

    convs = allm.Conversations(engine=echo_engine())
    convs.open("c1")
    convs.talk("c1", "hi", timeout=WAIT)
    thread = convs._thread
    del convs
    gc.collect()
    thread.join(WAIT)
    assert not thread.is_alive()
