"""Subscriptions: several consumers, consumers leaving, late consumers catching up, lag."""

from __future__ import annotations

import gc
import threading

import pytest

import allm
from allm.conversations import MessageAdded, TurnEnded, TurnStarted, Update
from allm.errors import ConversationError, ValidationError
from allm.events import TextDelta
from allm.providers import Fake
from allm.testing import delay, fake_engine, text, tool_call
from tests.conversations.helpers import WAIT, added, echo_engine, last_user_text, until_turn_ended


def kinds(updates: list[Update]) -> list[str]:
    return [type(u).__name__ for u in updates]


def test_several_consumers_see_the_same_updates(convs: allm.Conversations) -> None:
    convs.open("c1", engine=echo_engine())
    a, b = convs.subscribe("c1"), convs.subscribe("c1")
    convs.send("c1", "hi")
    ua, ub = until_turn_ended(a), until_turn_ended(b)
    assert ua == ub
    assert kinds(ua)[:2] == ["MessageAdded", "TurnStarted"]
    assert added(ua) == [(0, "user", "hi"), (1, "assistant", "echo: hi")]
    assert isinstance(ua[1], TurnStarted) and ua[1].index == 0
    # A message is published after the model's events that made it and before StepCompleted.
    k = kinds(ua)
    assert k.index("TextDelta") < k.index("MessageCompleted") < len(k) - 1 - k[::-1].index("MessageAdded") < k.index("StepCompleted")


def test_a_consumer_that_leaves_does_not_stop_the_conversation(convs: allm.Conversations) -> None:
    convs.open("c1", engine=fake_engine([text("one"), delay(0.2), text(" two")], ["again"]))
    leaving, staying = convs.subscribe("c1"), convs.subscribe("c1")
    convs.send("c1", "hi")
    while not isinstance(leaving.get(timeout=WAIT), TextDelta):
        pass
    leaving.close()
    with pytest.raises(StopIteration):
        next(leaving)
    updates = until_turn_ended(staying)
    assert added(updates)[-1] == (1, "assistant", "one two")
    assert convs.talk("c1", "more", timeout=WAIT).text == "again"
    assert len(convs._core.live["c1"].sinks) == 1  # the closed one was detached


def test_a_dropped_consumer_is_detached(convs: allm.Conversations) -> None:
    convs.open("c1", engine=echo_engine())
    sub = convs.subscribe("c1")
    assert len(convs._core.live["c1"].sinks) == 1
    del sub
    gc.collect()
    convs.talk("c1", "hi", timeout=WAIT)  # runs on the loop after the detach was queued
    assert convs._core.live["c1"].sinks == []


def test_a_late_consumer_catches_up_from_an_index_without_gaps_or_repeats(convs: allm.Conversations) -> None:
    gate, entered = threading.Event(), threading.Event()

    def hold(args: dict[str, str]) -> str:
        entered.set()
        gate.wait(WAIT)
        return "held"

    def answer(request: allm.Request) -> list[object]:
        said = last_user_text(request)
        if said == "three" and request.messages[-1].role == "user":
            return [tool_call("hold", {})]
        return [text(f"echo: {said}")]

    engine = allm.Engine(adapter=Fake(function=answer), model="fake")
    hold_tool = allm.tool("hold", "Hold", {"type": "object", "properties": {}}, handler=hold)
    convs.open("c1", engine=engine, tools=[hold_tool], messages=[allm.system("s")])
    first = convs.subscribe("c1")
    convs.talk("c1", "one", timeout=WAIT)
    convs.talk("c1", "two", timeout=WAIT)
    seen_by_first = added(until_turn_ended(first)) + added(until_turn_ended(first))
    first.close()
    assert [i for i, _, _ in seen_by_first] == [1, 2, 3, 4]
    # The first consumer saw up to index 4; a new one resumes after it in the middle of a turn.
    convs.send("c1", "three")
    assert entered.wait(WAIT)
    late = convs.subscribe("c1", since=5)
    gate.set()
    updates = until_turn_ended(late)
    replayed = [u for u in updates if isinstance(u, MessageAdded) and u.replayed]
    live = [u for u in updates if isinstance(u, MessageAdded) and not u.replayed]
    assert [(u.index, u.message.role) for u in replayed] == [(5, "user")]
    assert [(u.index, u.message.role) for u in live] == [(6, "assistant"), (7, "tool"), (8, "assistant")]
    everything = convs.subscribe("c1", since=0)
    again = [everything.get(timeout=WAIT) for _ in range(9)]
    assert [(u.index, u.replayed) for u in again] == [(i, True) for i in range(9)]  # type: ignore[union-attr]
    assert list(convs.messages("c1")) == [u.message for u in again]  # type: ignore[union-attr]


def test_since_must_be_in_range(convs: allm.Conversations) -> None:
    convs.open("c1", engine=echo_engine(), messages=[allm.system("s")])
    for bad in (-1, 2, True, "0"):
        with pytest.raises(ValidationError):
            convs.subscribe("c1", since=bad)  # type: ignore[arg-type]
    assert convs._core.live["c1"].sinks == []
    with convs.subscribe("c1", since=1) as sub:
        convs.send("c1", "x")
        assert added(until_turn_ended(sub))[0] == (1, "user", "x")


def test_a_lagging_consumer_is_detached_with_where_to_resume(convs: allm.Conversations) -> None:
    convs.open("c1", engine=fake_engine([text(str(i)) for i in range(20)]))
    slow = convs.subscribe("c1", capacity=5)
    convs.talk("c1", "count", timeout=WAIT)
    got = [slow.get(timeout=WAIT) for _ in range(5)]
    with pytest.raises(ConversationError) as e:
        slow.get(timeout=WAIT)
    assert e.value.reason == "lagged"
    resume = e.value.metadata["next_index"]
    assert resume == 1 and added(got) == [(0, "user", "count")]
    with pytest.raises(StopIteration):
        next(slow)
    with convs.subscribe("c1", since=resume) as again:
        first = again.get(timeout=WAIT)
        assert isinstance(first, MessageAdded) and first.message.text == "".join(str(i) for i in range(20))


def test_a_lagging_catch_up_is_detached_too(convs: allm.Conversations) -> None:
    convs.open("c1", engine=echo_engine(), messages=[allm.system(str(i)) for i in range(10)])
    sub = convs.subscribe("c1", since=0, capacity=3)
    assert [sub.get(timeout=WAIT).index for _ in range(3)] == [0, 1, 2]  # type: ignore[union-attr]
    with pytest.raises(ConversationError) as e:
        sub.get(timeout=WAIT)
    assert e.value.metadata["next_index"] == 3


def test_closing_the_conversation_ends_its_subscriptions(convs: allm.Conversations) -> None:
    convs.open("c1", engine=echo_engine())
    sub = convs.subscribe("c1")
    convs.close("c1")
    assert list(sub) == []


def test_shutdown_ends_subscriptions() -> None:
    convs = allm.Conversations(engine=echo_engine(pause=30))
    convs.open("c1")
    sub = convs.subscribe("c1")
    convs.send("c1", "hi")
    convs.shutdown()
    updates = list(sub)
    assert isinstance(updates[-1], TurnEnded) and updates[-1].outcome == "interrupted"


def test_get_times_out(convs: allm.Conversations) -> None:
    convs.open("c1", engine=echo_engine())
    sub = convs.subscribe("c1")
    with pytest.raises(ConversationError) as e:
        sub.get(timeout=0.05)
    assert e.value.reason == "timeout"


def test_a_consumer_in_another_thread_sees_every_turn_in_order(convs: allm.Conversations) -> None:
    convs.open("c1", engine=echo_engine())
    sub = convs.subscribe("c1")
    seen: list[tuple[int, str, str]] = []

    def consume() -> None:
        for u in sub:
            if isinstance(u, MessageAdded):
                seen.append((u.index, u.message.role, u.message.text))
            if isinstance(u, TurnEnded) and u.message_count == 40:
                return

    t = threading.Thread(target=consume)
    t.start()
    for i in range(20):
        convs.talk("c1", f"m{i}", timeout=WAIT)
    t.join(WAIT)
    assert seen == [(i, r, x) for i, (r, x) in enumerate(
        p for n in range(20) for p in (("user", f"m{n}"), ("assistant", f"echo: m{n}"))
    )]
