"""The loop machine on its own: no driver, no I/O, hand-made responses and outcomes."""

from __future__ import annotations

from typing import Any

import pytest

import allm
from allm import events as E
from allm.loop import CallModel, Finish, Loop, LoopPolicy, RunTools
from allm.tools import ToolOutcome
from allm.types import Message, Response, ToolCall

WEATHER = allm.tool("get_weather", schema={"type": "object", "properties": {"city": {"type": "string"}}}, handler=lambda a: a)
CONFIRM = allm.tool("confirm", manual=True)


def response(text: str = "", calls: tuple[ToolCall, ...] = (), rid: str = "req-1") -> Response:
    msg = Message("assistant", text, tool_calls=calls)
    return Response(msg, request_id=rid, output_text=text, tool_calls=calls, finish_reason="tool_calls" if calls else "stop")


def new_loop(**policy: Any) -> Loop:
    thread = allm.Thread((allm.user("hi"),))
    req = allm.Request(messages=thread.messages, tools=(WEATHER, CONFIRM), temperature=0.5)
    return Loop(thread, req, LoopPolicy(**policy), context={"k": 1}, session_id="s1")


def test_a_full_turn_without_any_io() -> None:
    loop = new_loop()
    a = loop.next_action()
    assert isinstance(a, CallModel) and a.events == () and a.turn == 0
    assert a.request.messages == (allm.user("hi"),) and a.request.temperature == 0.5
    calls = (ToolCall("a", "get_weather", {"city": "Oslo"}), ToolCall("b", "get_weather", {"city": "Rome"}))
    loop.model_done(response(calls=calls))
    run = loop.next_action()
    assert isinstance(run, RunTools) and run.timeout == 30.0
    assert [j.call.id for j in run.jobs] == ["a", "b"] and all(j.error is None for j in run.jobs)
    assert run.jobs[0].context.context == {"k": 1} and run.jobs[0].context.request_id == "req-1"
    assert [type(e).__name__ for e in run.events] == ["ToolExecutionStarted", "ToolExecutionStarted"]
    # Outcomes arrive in any order; the thread keeps call order.
    ev_b = loop.tool_done(ToolOutcome(calls[1], {"t": 20}))
    assert [type(e).__name__ for e in ev_b] == ["ToolExecutionCompleted", "ToolResultEncoded"]
    with pytest.raises(RuntimeError, match="before every tool call finished"):
        loop.next_action()
    loop.tool_done(ToolOutcome(calls[0], "plain"))
    nxt = loop.next_action()
    assert isinstance(nxt, CallModel) and nxt.turn == 1
    assert [type(e).__name__ for e in nxt.events] == ["StepCompleted"]
    assert [m.text for m in nxt.request.messages[2:]] == ["plain", '{"t":20}']
    loop.model_done(response("done"))
    fin = loop.next_action()
    assert isinstance(fin, Finish) and isinstance(fin.result, allm.ChatResult)
    assert [type(e).__name__ for e in fin.events] == ["StepCompleted", "ChatCompleted"]
    assert fin.result.halted_reason == "completed" and len(fin.result.steps) == 2


def test_protocol_misuse_raises() -> None:
    loop = new_loop()
    with pytest.raises(RuntimeError):
        loop.model_done(response())
    loop.next_action()
    with pytest.raises(RuntimeError):
        loop.next_action()
    with pytest.raises(RuntimeError):
        loop.tool_done(ToolOutcome(ToolCall("x", "get_weather")))
    c = ToolCall("a", "get_weather", {})
    loop.model_done(response(calls=(c,)))
    loop.next_action()
    with pytest.raises(RuntimeError, match="unexpected call"):
        loop.tool_done(ToolOutcome(ToolCall("zzz", "get_weather")))
    loop.tool_done(ToolOutcome(c, 1))
    with pytest.raises(RuntimeError, match="unexpected call"):
        loop.tool_done(ToolOutcome(c, 1))


def test_ask_user_with_manual_calls_pending_defers_the_question() -> None:
    loop = new_loop()
    loop.next_action()
    ask = ToolCall("q", "get_weather", {})
    manual = ToolCall("m", "confirm", {})
    loop.model_done(response(calls=(ask, manual)))
    run = loop.next_action()
    assert isinstance(run, RunTools) and [j.call.id for j in run.jobs] == ["q"]
    events = loop.tool_done(ToolOutcome(ask, allm.AskUser("Sure?", choices=["yes", "no"])))
    assert isinstance(events[-1], E.AskUserRequested)
    fin = loop.next_action()
    assert isinstance(fin, Finish) and isinstance(fin.result, allm.ChatResult)
    r = fin.result
    assert r.halted_reason == "ask_user" and [c.id for c in r.pending_tool_calls] == ["m"]
    assert r.pending_question == "Sure?"
    # The question waits until the manual call is answered: the thread stays valid.
    assert [m.role for m in r.thread.messages] == ["user", "assistant", "tool"]


def test_single_step_finishes_with_the_step() -> None:
    thread = allm.Thread((allm.user("hi"),))
    loop = Loop(thread, allm.Request(messages=thread.messages, tools=(WEATHER,)), LoopPolicy(), single_step=True)
    loop.next_action()
    c = ToolCall("a", "get_weather", {})
    loop.model_done(response(calls=(c,)))
    loop.next_action()
    loop.tool_done(ToolOutcome(c, 1))
    fin = loop.next_action()
    assert isinstance(fin, Finish) and isinstance(fin.result, allm.Step)
    assert fin.result.halted_reason is None and not fin.result.done
    assert [type(e).__name__ for e in fin.events] == ["StepCompleted"]


@pytest.mark.parametrize(
    "kwargs",
    [{"mode": "auto-ish"}, {"max_turns": 0}, {"max_turns": True}, {"tool_timeout": 0}, {"on_tool_error": "skip"}],
)
def test_policy_validation(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        LoopPolicy(**kwargs)
