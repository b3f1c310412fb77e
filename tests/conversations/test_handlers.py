"""Event handlers: order, every callback, failures isolated, ``persist_initial``."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

import allm
from allm.conversations import HandlerFailed, TurnEnded
from allm.errors import ToolError
from allm.testing import error, fake_engine, text, tool_call
from tests.conversations.helpers import WAIT, Recorder, echo_engine, until_turn_ended


def test_handlers_are_called_in_order_for_every_message(convs: allm.Conversations) -> None:
    log: list[tuple[Any, ...]] = []
    convs.open("c1", engine=echo_engine(), handlers=[Recorder("a", log), Recorder("b", log)])
    convs.talk("c1", "hi", timeout=WAIT)
    assert log == [
        ("a", "on_message", "c1", "user", "hi"),
        ("b", "on_message", "c1", "user", "hi"),
        ("a", "on_message", "c1", "assistant", "echo: hi"),
        ("b", "on_message", "c1", "assistant", "echo: hi"),
    ]


def test_persist_initial_true_emits_the_initial_messages() -> None:
    rec = Recorder()
    with allm.Conversations(engine=echo_engine()) as convs:
        convs.open("new", messages=[allm.system("Be helpful.")], persist_initial=True, handlers=[rec])
        convs.talk("new", "Hello!", timeout=WAIT)
    assert [c[3:] for c in rec.calls] == [("system", "Be helpful."), ("user", "Hello!"), ("assistant", "echo: Hello!")]


def test_persist_initial_false_does_not_emit_restored_messages() -> None:
    rec = Recorder()
    restored = [allm.system("Be helpful."), allm.user("Earlier"), allm.assistant("Earlier answer")]
    with allm.Conversations(engine=echo_engine()) as convs:
        convs.open("restored", messages=restored, handlers=[rec])
        convs.talk("restored", "Continue", timeout=WAIT)
        assert len(convs.messages("restored")) == 5  # the initial messages are stored all the same
    assert [c[3:] for c in rec.calls] == [("user", "Continue"), ("assistant", "echo: Continue")]


def test_tool_callbacks_and_on_error(convs: allm.Conversations) -> None:
    def add(args: dict[str, int]) -> int:
        return args["a"] + args["b"]

    def broken(args: dict[str, int]) -> int:
        raise ValueError("no")

    schema = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}
    tools = [allm.tool("add", "Add", schema, handler=add), allm.tool("broken", "Broken", schema, handler=broken)]
    engine = fake_engine(
        [tool_call("add", {"a": 2, "b": 3})],
        [tool_call("broken", {})],
        [text("half"), error("provider_unavailable", "upstream gone")],
        tools=tools,
    )
    rec = Recorder()
    convs.open("c1", engine=engine, handlers=[rec])
    convs.send("c1", "sum")
    convs.wait("c1", timeout=WAIT)
    names = [c[1] for c in rec.calls]
    assert names == [
        "on_message",  # user
        "on_tool_call",
        "on_tool_result",
        "on_message",  # assistant with the call
        "on_message",  # tool result
        "on_tool_call",
        "on_tool_result",
        "on_message",
        "on_message",
        "on_error",
    ]
    assert rec.calls[1] == ("rec", "on_tool_call", "c1", "add", {"a": 2, "b": 3})
    assert rec.calls[2] == ("rec", "on_tool_result", "c1", "add", 5, None)
    broken_result = rec.calls[6]
    assert broken_result[3] == "broken" and broken_result[4] is None and isinstance(broken_result[5], ToolError)
    assert rec.calls[-1] == ("rec", "on_error", "c1", "AdapterError", "provider_unavailable")


class Exploding:
    def on_message(self, conversation_id: str, message: allm.Message) -> None:
        raise RuntimeError(f"cannot persist {message.role}")

    def on_tool_call(self, conversation_id: str, name: str, arguments: Any) -> None:
        raise RuntimeError("cannot log")


def test_a_failing_handler_is_reported_and_stops_nothing(convs: allm.Conversations, caplog: pytest.LogCaptureFixture) -> None:
    tool = allm.tool("t", "T", {"type": "object", "properties": {}}, handler=lambda a: "ok")
    rec = Recorder()
    convs.open("c1", engine=fake_engine([tool_call("t", {})], ["done"], tools=[tool]), handlers=[Exploding(), rec])
    sub = convs.subscribe("c1")
    with caplog.at_level(logging.ERROR, logger="allm.conversations"):
        assert convs.talk("c1", "go", timeout=WAIT).text == "done"
    updates = until_turn_ended(sub)
    failed = [u for u in updates if isinstance(u, HandlerFailed)]
    assert [(f.handler, f.callback) for f in failed] == [
        ("Exploding", "on_message"),  # the user message
        ("Exploding", "on_tool_call"),
        ("Exploding", "on_message"),  # the assistant's tool call
        ("Exploding", "on_message"),  # the tool result
        ("Exploding", "on_message"),  # the answer
    ]
    assert all(isinstance(f.error, RuntimeError) for f in failed)
    assert [c[1] for c in rec.calls].count("on_message") == 4  # the next handler saw everything
    assert isinstance(updates[-1], TurnEnded) and updates[-1].outcome == "completed"
    assert "Exploding.on_message raised for conversation c1" in caplog.text
    assert len(convs.messages("c1")) == 4


def test_async_handlers_are_awaited_in_order(convs: allm.Conversations) -> None:
    log: list[str] = []

    class Slow:
        async def on_message(self, conversation_id: str, message: allm.Message) -> None:
            await asyncio.sleep(0.05)
            log.append(f"slow {message.role}")

    class Fast:
        def on_message(self, conversation_id: str, message: allm.Message) -> None:
            log.append(f"fast {message.role}")

    convs.open("c1", engine=echo_engine(), handlers=[Slow(), Fast()])
    convs.talk("c1", "hi", timeout=WAIT)
    assert log == ["slow user", "fast user", "slow assistant", "fast assistant"]


def test_manager_handlers_come_before_the_conversations_own() -> None:
    log: list[tuple[Any, ...]] = []
    with allm.Conversations(engine=echo_engine(), handlers=[Recorder("manager", log)]) as convs:
        convs.open("c1", handlers=[Recorder("own", log)])
        convs.send("c1", "hi")
        convs.wait("c1", timeout=WAIT)
    assert [c[0] for c in log] == ["manager", "own", "manager", "own"]


def test_a_failing_on_error_handler_is_reported_too(convs: allm.Conversations) -> None:
    class BadOnError:
        def on_error(self, conversation_id: str, error: Exception) -> None:
            raise KeyError("x")

    rec = Recorder()
    convs.open("c1", engine=fake_engine([error("provider_unavailable", "gone", before_stream=False)]), handlers=[BadOnError(), rec])
    sub = convs.subscribe("c1")
    convs.send("c1", "hi")
    updates = until_turn_ended(sub)
    assert [(u.handler, u.callback) for u in updates if isinstance(u, HandlerFailed)] == [("BadOnError", "on_error")]
    assert rec.calls[-1][1] == "on_error"
