"""ContentFilter through the Fake: input blocked before the call, output blocked after it (never
stored in the thread), tool arguments refused; what it reports; both drivers."""

from __future__ import annotations

import re
from typing import Any

import pytest

import allm
from allm import middleware as mw
from allm.testing import fake_engine, text, tool_call
from tests.middleware.conftest import ADD, DRIVERS, chat

DENY = [r"\bpassword\b", r"card number \d{4}"]


@DRIVERS
def test_input_is_blocked_before_the_call(asynchronous: bool) -> None:
    engine = fake_engine([text("never sent")])
    result = chat(engine, "My PASSWORD is swordfish", asynchronous, middleware=[mw.ContentFilter(DENY)])
    assert engine.adapter.calls == 0
    assert result.halted_reason == "content_filter"
    assert result.metadata["stopped_by"] == {
        "middleware": "content_filter",
        "message": "the input matches a denied pattern",
        "direction": "input",
        "pattern": r"\bpassword\b",
        "message_index": 0,
        "role": "user",
    }
    assert "swordfish" not in str(result.metadata)  # the matched text is not reported


@DRIVERS
def test_output_is_blocked_and_never_stored(asynchronous: bool) -> None:
    engine = fake_engine([text("Sure: card number 4111 1111 1111 1111")])
    prompt = allm.Thread((allm.system("Be brief."), allm.user("What is my card?")))
    result = chat(engine, prompt, asynchronous, middleware=[mw.ContentFilter(DENY)])
    assert result.halted_reason == "content_filter"
    assert result.metadata["stopped_by"]["direction"] == "output"
    assert result.metadata["stopped_by"]["pattern"] == r"card number \d{4}"
    assert result.thread == prompt  # the blocked answer is not in the thread
    assert result.steps[-1].response.output_text.startswith("Sure: card number")  # it is in the last step
    session, settled = allm.Session.new(prompt).continue_(fake_engine([text("card number 4111")]), middleware=[mw.ContentFilter(DENY)])
    assert settled.halted_reason == "content_filter" and session.status == "completed" and session.thread == prompt


@DRIVERS
def test_a_tool_result_is_input_to_the_next_call(asynchronous: bool) -> None:
    leaky = allm.tool("lookup", handler=lambda a: {"password": "swordfish"})
    engine = fake_engine([tool_call("lookup", {})], [text("never")], tools=[leaky])
    result = chat(engine, "look it up", asynchronous, middleware=[mw.ContentFilter(DENY)])
    assert engine.adapter.calls == 1 and result.halted_reason == "content_filter"
    stop = result.metadata["stopped_by"]
    assert stop["direction"] == "input" and stop["role"] == "tool" and stop["message_index"] == 2
    assert [m.role for m in result.thread.messages] == ["user", "assistant", "tool"]


@DRIVERS
def test_denied_tool_arguments_are_refused(asynchronous: bool) -> None:
    ran: list[Any] = []
    search = allm.tool("search", schema={"type": "object", "properties": {"q": {"type": "string"}}},
                       handler=lambda a: ran.append(a) or "results")  # fmt: skip
    engine = fake_engine(
        [tool_call("search", {"q": "admin password"}, id="c1"), tool_call("search", {"q": "weather"}, id="c2")],
        [text("I could only search the weather.")],
        tools=[search],
    )
    result = chat(engine, "search", asynchronous, middleware=[mw.ContentFilter(DENY)])
    assert ran == [{"q": "weather"}]
    refused = next(m for m in result.thread.messages if m.tool_call_id == "c1")
    assert refused.is_error and "refused by content_filter: the arguments match a denied pattern" in refused.text
    assert result.halted_reason == "completed"


def test_each_direction_can_be_turned_off() -> None:
    engine = fake_engine([tool_call("add", {"a": 1, "b": 2}, raw_arguments='{"a": 1, "b": 2, "note": "password"}')], [text("password")], tools=[ADD])
    result = allm.chat(engine, "password?", middleware=[mw.ContentFilter(DENY, input=False, output=False, tools=False)])
    assert result.halted_reason == "completed" and engine.adapter.calls == 2


def test_patterns() -> None:
    f = mw.ContentFilter([re.compile("Secret")], ignore_case=True)  # a compiled pattern keeps its own flags
    assert f.before_model(mw.Run(), allm.request("secret")) is None
    assert f.before_model(mw.Run(), allm.request("Secret")) is not None
    g = mw.ContentFilter("secret", ignore_case=False, name="strict_filter")
    stop = g.after_model(mw.Run(), allm.Response(allm.assistant("a secret"), output_text="a secret"))
    assert stop is not None and stop.reason == "strict_filter"
    assert g.after_model(mw.Run(), allm.Response(allm.assistant("A SECRET"), output_text="A SECRET")) is None
    with pytest.raises(ValueError, match="at least one deny pattern"):
        mw.ContentFilter([])
    with pytest.raises(ValueError, match="is not a regular expression"):
        mw.ContentFilter(["(unclosed"])
    with pytest.raises(ValueError, match="a deny pattern is a non-empty str"):
        mw.ContentFilter([""])
