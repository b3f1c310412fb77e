"""``Session.submit_tool_result`` and ``Session.approve`` answer a call with a handler's
``AskUser`` or ``Halt`` as the tool loop does (the workers run each tool call this way).

The loop's own behaviour is the reference: the same turn run by ``Session.start`` in auto
mode and by a manual-mode step plus ``approve`` of each call must leave the same session.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

import allm
from allm.testing import fake_engine, text, tool_call


def ask(args: dict[str, Any]) -> allm.AskUser:
    return allm.AskUser("Which city?", choices=["Paris", "Oslo"], options={"mask": False})


def halt(args: dict[str, Any]) -> allm.Halt:
    return allm.Halt("booked", {"ref": 7})


def plain(args: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True}


TOOLS = [allm.tool("ask", handler=ask), allm.tool("halt", handler=halt), allm.tool("plain", handler=plain)]


def turn(*calls: tuple[str, str]) -> list[Any]:
    return [tool_call(name, {}, id=cid) for name, cid in calls]


@pytest.mark.parametrize(
    "calls",
    [
        [("ask", "a1")],
        [("halt", "h1")],
        [("plain", "p1"), ("ask", "a1")],
        [("ask", "a1"), ("halt", "h1")],  # the first of a turn to ask or halt decides
        [("halt", "h1"), ("ask", "a1"), ("plain", "p1")],
        [("plain", "p1"), ("plain", "p2")],
    ],
)
def test_approving_each_call_of_a_manual_step_equals_the_loop(calls: list[tuple[str, str]]) -> None:
    script = [turn(*calls), [text("after")]]
    start = allm.Session.new("go", id="ses_1")
    auto, _ = start.step(fake_engine(*script, tools=TOOLS))  # one turn of the loop, tools run
    manual, _ = start.step(fake_engine(*script, tools=TOOLS), mode="manual")  # the calls handed back
    engine = fake_engine(*script, tools=TOOLS)
    for _, cid in calls:
        manual = manual.approve(engine, cid)
    assert manual == auto


def test_submitting_ask_user_and_halt_values() -> None:
    s, _ = allm.Session.start(fake_engine(turn(("ask", "a1"), ("plain", "p1")), tools=TOOLS), "go", mode="manual")
    assert s.status == "awaiting_tools"
    s2 = s.submit_tool_result("a1", allm.AskUser("Which day?", choices=["Mon"]))
    assert s2.status == "awaiting_tools" and s2.pending_question == "Which day?" and s2.pending_tool_call_id == "a1"
    assert s2.messages[-1].text == "<awaiting user response>"
    s3 = s2.submit_tool_result("p1", "fine")
    assert s3.status == "awaiting_user" and s3.messages[-1].role == "assistant" and s3.messages[-1].text == "Which day?"
    assert s3.metadata["ask_user"] == {"choices": ["Mon"], "options": {}}

    h = s.submit_tool_result("a1", allm.Halt("done_here", {"n": 1}))
    assert h.status == "awaiting_tools" and h.metadata["halt"] == "done_here"
    h2 = h.submit_tool_result("p1", "fine")
    assert h2.status == "completed" and "halt" not in h2.metadata
    assert orjson.loads(h2.messages[-2].text) == {"n": 1}
    assert allm.Session.from_json(h.to_json()) == h


def test_a_reserved_halt_reason_is_refused_or_submitted_as_an_error() -> None:
    s, _ = allm.Session.start(fake_engine(turn(("plain", "p1")), tools=TOOLS), "go", mode="manual")
    with pytest.raises(allm.ToolError) as e:
        s.submit_tool_result("p1", allm.Halt("completed"))
    assert e.value.reason == "invalid_return"
    bad = allm.tool("plain", handler=lambda a: allm.Halt("error"))
    s2 = s.approve(fake_engine(tools=[bad]), "p1")
    assert s2.status == "idle" and s2.messages[-1].is_error and "reserved" in s2.messages[-1].text
