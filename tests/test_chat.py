"""The tool loop on the Fake: every halted_reason, event order, errors, cancellation.

Each scenario runs through the sync driver and the async driver (the ``drive``
fixture), which share the decisions of :class:`allm.loop.Loop`.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest

import allm
from allm import events as E
from allm.errors import AdapterError, EngineError
from allm.providers import Fake
from allm.testing import error, event_types, fake_engine, text, tool_call

# ------------------------------------------------------------------------------ tools used below

calls: list[tuple[str, Any]] = []
_lock = threading.Lock()


def record(name: str, value: Any) -> None:
    with _lock:
        calls.append((name, value))


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    calls.clear()


def weather_handler(args: dict[str, Any]) -> dict[str, Any]:
    record("get_weather", args)
    return {"city": args["city"], "temp_c": 18}


WEATHER = allm.tool(
    "get_weather",
    "Current weather for a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False},
    handler=weather_handler,
)


def slow_weather(args: dict[str, Any]) -> dict[str, Any]:
    time.sleep(0.15)
    return weather_handler(args)


SLOW_WEATHER = allm.tool("get_weather", "Weather, slowly.", WEATHER.schema, handler=slow_weather)


def ask_handler(args: dict[str, Any]) -> allm.AskUser:
    record("which_city", args)
    return allm.AskUser("Which city do you mean?", choices=["Paris, France", "Paris, Texas"], options={"mask": False})


ASK = allm.tool("which_city", "Ask the user which city.", handler=ask_handler)


def boom_handler(args: dict[str, Any]) -> Any:
    record("boom", args)
    raise RuntimeError("the service is down")


BOOM = allm.tool("boom", "Always fails.", handler=boom_handler)


def book_handler(args: dict[str, Any]) -> allm.Halt:
    record("book", args)
    return allm.Halt("booked", {"ref": "R-17"})


BOOK = allm.tool("book", "Book a table.", handler=book_handler)


def confirm_handler(args: dict[str, Any]) -> str:
    record("confirm", args)
    return "confirmed"


CONFIRM = allm.tool("confirm_payment", "Pay (needs approval).", handler=confirm_handler, manual=True)


def sleeper_handler(args: dict[str, Any]) -> str:
    time.sleep(3)
    return "too late"


SLEEPER = allm.tool("sleeper", "Takes 3 s.", handler=sleeper_handler)

TOOLS = [WEATHER, ASK, BOOM, BOOK, CONFIRM, SLEEPER]


def engine(*scripts: list[Any], tools: list[allm.Tool] | None = None, **fields: Any) -> allm.Engine:
    return fake_engine(*scripts, tools=TOOLS if tools is None else tools, **fields)


# ------------------------------------------------------------------------------ the two drivers


Drive = Callable[..., tuple[list[E.Event], allm.ChatResult]]


@pytest.fixture(params=["sync", "async"])
def drive(request: pytest.FixtureRequest) -> Drive:
    """Run ``stream`` / ``astream`` to the end: (events, fold of the events)."""

    def run(eng: allm.Engine, req: Any, **options: Any) -> tuple[list[E.Event], allm.ChatResult]:
        if request.param == "sync":
            events = list(allm.stream(eng, req, **options))
        else:

            async def go() -> list[E.Event]:
                return [ev async for ev in allm.astream(eng, req, **options)]

            events = asyncio.run(go())
        thread = req if isinstance(req, allm.Thread) else allm.Thread((allm.user(req),)) if isinstance(req, str) else allm.Thread(tuple(req))
        result = allm.ChatCollector(thread).fold(events)
        assert isinstance(events[-1], E.ChatCompleted) and events[-1].result is result
        assert sum(isinstance(e, E.ChatCompleted) for e in events) == 1
        assert sum(isinstance(e, E.StepCompleted) for e in events) == len(result.steps)
        return events, result

    return run


def roles(thread: allm.Thread) -> list[str]:
    return [m.role for m in thread.messages]


def of(events: list[E.Event], cls: type[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, cls)]


# ------------------------------------------------------------------------------ completed


def test_auto_tool_turn_then_text_completes_in_reference_order(drive: Drive) -> None:
    eng = engine([tool_call("get_weather", {"city": "Paris"}, id="w1")], ["It is 18 °C in Paris."])
    events, r = drive(eng, "Weather in Paris?")
    assert event_types(events) == [
        "MessageStarted",
        "ToolCallStarted",
        "ToolCallDelta",
        "ToolCallCompleted",
        "MessageCompleted",
        "ToolExecutionStarted",
        "ToolExecutionCompleted",
        "ToolResultEncoded",
        "StepCompleted",
        "MessageStarted",
        "TextDelta",
        "TextCompleted",
        "MessageCompleted",
        "StepCompleted",
        "ChatCompleted",
    ]
    assert r.halted_reason == "completed" and r.metadata == {}
    assert r.final_response is not None and r.final_response.output_text == "It is 18 °C in Paris."
    assert roles(r.thread) == ["user", "assistant", "tool", "assistant"]
    tool_msg = r.thread.messages[2]
    assert tool_msg.tool_call_id == "w1" and tool_msg.name == "get_weather" and not tool_msg.is_error
    assert orjson.loads(tool_msg.text) == {"city": "Paris", "temp_c": 18}
    assert calls == [("get_weather", {"city": "Paris"})]
    # The second model call read the tool result.
    fake = eng.adapter
    assert isinstance(fake, Fake) and fake.calls == 2
    assert fake.requests[1].messages[-1] == tool_msg
    assert len(r.steps) == 2 and r.steps[0].halted_reason is None and not r.steps[0].done
    assert r.steps[0].tool_results == (tool_msg,) and r.steps[1].halted_reason == "completed"
    enc = of(events, E.ToolResultEncoded)[0]
    assert enc.tool_call_id == "w1" and enc.content == tool_msg.text


def test_text_only_completes_in_one_turn(drive: Drive) -> None:
    events, r = drive(engine(["Hello!"]), "Hi")
    assert r.halted_reason == "completed" and len(r.steps) == 1 and roles(r.thread) == ["user", "assistant"]
    assert not of(events, E.ToolExecutionStarted)


def test_chat_is_the_fold_of_stream() -> None:
    scripts = ([tool_call("get_weather", {"city": "Oslo"}, id="a")], ["Cold."])
    r1 = allm.chat(engine(*scripts), "Oslo?")
    r2 = allm.ChatCollector(allm.Thread((allm.user("Oslo?"),))).fold(allm.stream(engine(*scripts), "Oslo?"))
    r3 = asyncio.run(allm.achat(engine(*scripts), "Oslo?"))
    for r in (r2, r3):
        assert r.thread == r1.thread and r.halted_reason == r1.halted_reason and len(r.steps) == len(r1.steps)


def test_a_chat_stopped_anywhere_folds_as_event_by_event() -> None:
    """ChatCollector.fold (and afold) keep a call's events aside until the end: every prefix of
    a chat's stream folds to what applying its events one by one gives."""
    scripts = ([tool_call("get_weather", {"city": "Oslo"}, id="a")], ["Cold ", "and dark."])
    thread = allm.Thread((allm.user("Oslo?"),))
    events = list(allm.stream(engine(*scripts), "Oslo?"))

    async def aiter(evs: list[E.Event]) -> Any:
        for ev in evs:
            yield ev

    for n in range(len(events) + 1):
        one_by_one = allm.ChatCollector(thread)
        for ev in events[:n]:
            one_by_one.apply(ev)
        want = one_by_one.result()
        assert allm.ChatCollector(thread).fold(events[:n]) == want
        assert asyncio.run(allm.ChatCollector(thread).afold(aiter(events[:n]))) == want


# ------------------------------------------------------------------------------ ask_user with parallel tools


def test_parallel_tools_one_asks_the_user(drive: Drive) -> None:
    eng = engine(
        [tool_call("get_weather", {"city": "Paris"}, id="w"), tool_call("which_city", {}, id="q")],
        tools=[SLOW_WEATHER, ASK],
    )
    events, r = drive(eng, "Weather in Paris?")
    assert r.halted_reason == "ask_user"
    assert r.pending_question == "Which city do you mean?" and r.pending_tool_call_id == "q"
    assert r.metadata["ask_user"] == {"choices": ["Paris, France", "Paris, Texas"], "options": {"mask": False}}
    # Both ran at once: the slow sibling was drained, not dropped.
    assert sorted(n for n, _ in calls) == ["get_weather", "which_city"]
    started = of(events, E.ToolExecutionStarted)
    assert [e.tool_call_id for e in started] == ["w", "q"]
    completed = [e.tool_call_id for e in of(events, E.ToolExecutionCompleted)]
    assert completed == ["q", "w"]  # completion order: the question came first
    ask = of(events, E.AskUserRequested)
    assert ask == [E.AskUserRequested("q", "which_city", "Which city do you mean?", ("Paris, France", "Paris, Texas"), {"mask": False})]
    # Thread: the tool messages in call order, then the question as an assistant message.
    assert roles(r.thread) == ["user", "assistant", "tool", "tool", "assistant"]
    assert r.thread.messages[2].tool_call_id == "w"
    assert r.thread.messages[3].text == "<awaiting user response>"
    q = r.thread.messages[4]
    assert q.text == "Which city do you mean?" and q.metadata["ask_user"] is True and q.metadata["tool_call_id"] == "q"
    assert eng.adapter.calls == 1  # type: ignore[attr-defined]
    # Answering continues the conversation.
    eng2 = engine(["Paris, France: 18 °C."])
    r2 = allm.chat(eng2, r.thread.add(allm.user("Paris, France")))
    assert r2.halted_reason == "completed"


# ------------------------------------------------------------------------------ argument problems and tool errors


def test_invalid_json_arguments_are_a_tool_error_the_model_reads(drive: Drive) -> None:
    eng = engine([tool_call("get_weather", raw_arguments='{"city": "Par', id="w")], ["Sorry, retrying."])
    events, r = drive(eng, "Weather?")
    assert calls == []  # the handler never ran
    done = of(events, E.ToolExecutionCompleted)[0]
    assert done.error is not None and done.error.reason == "invalid_arguments"
    enc = of(events, E.ToolResultEncoded)[0]
    assert enc.is_error and "could not be read" in enc.content
    assert r.halted_reason == "completed"
    sent = eng.adapter.requests[1].messages[-1]  # type: ignore[attr-defined]
    assert sent.role == "tool" and sent.is_error and "not valid JSON" in sent.text


def test_schema_invalid_arguments_are_a_tool_error(drive: Drive) -> None:
    eng = engine([tool_call("get_weather", {"town": "Paris"}, id="w")], ["Let me fix that."])
    events, r = drive(eng, "Weather?")
    assert calls == []
    enc = of(events, E.ToolResultEncoded)[0]
    assert enc.is_error and "'city' is a required property" in enc.content and "'town' was unexpected" in enc.content
    assert r.halted_reason == "completed"


def test_unknown_tool_is_a_typed_error_event(drive: Drive) -> None:
    eng = engine([tool_call("launch_rockets", {}, id="x")], ["never"])
    events, r = drive(eng, "Go")
    errs = of(events, E.Error)
    assert len(errs) == 1 and isinstance(errs[0].error, EngineError) and errs[0].error.reason == "unknown_tool"
    assert errs[0].error.metadata == {"tool_name": "launch_rockets", "tool_call_id": "x"}
    assert event_types(events)[-3:] == ["Error", "StepCompleted", "ChatCompleted"]
    assert not of(events, E.ToolExecutionStarted)
    assert r.halted_reason == "error" and r.metadata["error"] == errs[0].error
    assert roles(r.thread) == ["user"]  # the unusable assistant turn is not kept
    assert eng.adapter.calls == 1  # type: ignore[attr-defined]


def test_on_tool_error_continue_is_the_default(drive: Drive) -> None:
    eng = engine([tool_call("boom", {}, id="b")], ["The service is down, sorry."])
    events, r = drive(eng, "Try")
    assert r.halted_reason == "completed"
    msg = r.thread.messages[2]
    assert msg.is_error and orjson.loads(msg.text) == {"error": "handler_raised: RuntimeError: the service is down"}
    done = of(events, E.ToolExecutionCompleted)[0]
    assert done.error is not None and done.error.metadata["exception_type"] == "RuntimeError"


def test_on_tool_error_halt_drains_the_batch(drive: Drive) -> None:
    eng = engine([tool_call("boom", {}, id="b"), tool_call("get_weather", {"city": "Rome"}, id="w")], ["never"])
    _events, r = drive(eng, "Try", on_tool_error="halt")
    assert r.halted_reason == "tool_error"
    assert r.metadata["halt_tool_call_id"] == "b" and r.metadata["error"].reason == "handler_raised"
    assert ("get_weather", {"city": "Rome"}) in calls  # the sibling still ran
    assert roles(r.thread) == ["user", "assistant", "tool", "tool"]
    assert eng.adapter.calls == 1  # type: ignore[attr-defined]


def test_on_tool_error_function_decides_per_call(drive: Drive) -> None:
    seen: list[tuple[str, str]] = []

    def decide(call: allm.ToolCall, err: allm.ToolError) -> str:
        seen.append((call.name, err.reason))
        return "continue" if err.reason == "invalid_arguments" else "halt"

    eng = engine([tool_call("get_weather", {}, id="w")], [tool_call("boom", {}, id="b")], ["never"])
    _, r = drive(eng, "Try", on_tool_error=decide)
    assert seen == [("get_weather", "invalid_arguments"), ("boom", "handler_raised")]
    assert r.halted_reason == "tool_error" and r.metadata["halt_tool_call_id"] == "b" and len(r.steps) == 2


@pytest.mark.parametrize(
    ("decide", "expected"),
    [
        (lambda call, err: 1 / 0, "ZeroDivisionError: division by zero"),
        (lambda call, err: "retry", "on_tool_error returned 'retry'; expected 'continue', 'halt' or ('continue', replacement)"),
    ],
)
def test_on_tool_error_function_that_fails_halts(drive: Drive, decide: Any, expected: str) -> None:
    _, r = drive(engine([tool_call("boom", {}, id="b")], ["never"]), "Try", on_tool_error=decide)
    assert r.halted_reason == "tool_error" and r.metadata["on_tool_error_exception"] == expected


def test_tool_timeout(drive: Drive) -> None:
    eng = engine([tool_call("sleeper", {}, id="s")], ["It timed out."])
    t0 = time.monotonic()
    events, r = drive(eng, "Wait", tool_timeout=0.2)
    assert time.monotonic() - t0 < 2
    done = of(events, E.ToolExecutionCompleted)[0]
    assert done.error is not None and done.error.reason == "timeout"
    assert r.halted_reason == "completed"
    assert r.thread.messages[2].is_error and "did not finish within 0.2 s" in r.thread.messages[2].text


def test_result_encoder_and_encoding_failure(drive: Drive) -> None:
    eng = engine([tool_call("get_weather", {"city": "Lima"}, id="w")], ["ok"])
    _, r = drive(eng, "Lima?", result_encoder=lambda v: f"city={v['city']}")
    assert r.thread.messages[2].text == "city=Lima"

    odd = allm.tool("odd", handler=lambda a: object())
    eng2 = engine([tool_call("odd", {}, id="o")], ["ok"], tools=[odd])
    events, r2 = drive(eng2, "odd")
    enc = of(events, E.ToolResultEncoded)[0]
    assert enc.is_error and "encoding_failed" in enc.content
    assert r2.halted_reason == "completed"


# ------------------------------------------------------------------------------ manual


def test_manual_mode_hands_back_the_first_tool_calls(drive: Drive) -> None:
    eng = engine([tool_call("get_weather", {"city": "Paris"}, id="w")], ["unused"])
    events, r = drive(eng, "Weather?", mode="manual")
    assert r.halted_reason == "manual_tool_calls" and calls == []
    assert [c.id for c in r.pending_tool_calls] == ["w"] and r.metadata["manual_turn_index"] == 0
    assert roles(r.thread) == ["user", "assistant"] and r.thread.messages[1].tool_calls == r.pending_tool_calls
    assert not of(events, E.ToolExecutionStarted) and r.steps[0].mode == "manual"
    # The caller runs the tool and continues.
    thread = r.thread.add(allm.tool_result("w", '{"temp_c": 18}'))
    r2 = allm.chat(engine(["18 °C."]), thread, mode="manual")
    assert r2.halted_reason == "completed"


def test_manual_mode_without_tool_calls_completes(drive: Drive) -> None:
    _, r = drive(engine(["Just text."]), "Hi", mode="manual")
    assert r.halted_reason == "completed"


def test_per_tool_manual_runs_the_others_and_stops(drive: Drive) -> None:
    eng = engine(
        [tool_call("get_weather", {"city": "Paris"}, id="w"), tool_call("confirm_payment", {"amount": 5}, id="p")],
        ["unused"],
    )
    events, r = drive(eng, "Pay and check weather")
    assert r.halted_reason == "manual_tool_calls"
    assert [c.id for c in r.pending_tool_calls] == ["p"] and calls == [("get_weather", {"city": "Paris"})]
    assert roles(r.thread) == ["user", "assistant", "tool"]  # no placeholder for the manual call
    assert [e.tool_call_id for e in of(events, E.ToolExecutionStarted)] == ["w"]


def test_manual_mode_ignores_per_tool_flags_and_unknown_names(drive: Drive) -> None:
    eng = engine([tool_call("confirm_payment", {}, id="p"), tool_call("not_offered", {}, id="n")])
    _, r = drive(eng, "x", mode="manual")
    assert r.halted_reason == "manual_tool_calls" and [c.id for c in r.pending_tool_calls] == ["p", "n"]


# ------------------------------------------------------------------------------ bounds


def test_max_turns(drive: Drive) -> None:
    eng = engine(*[[tool_call("get_weather", {"city": f"C{i}"})] for i in range(5)])
    _, r = drive(eng, "Loop", max_turns=3)
    assert r.halted_reason == "max_turns" and r.metadata["max_turns"] == 3
    assert len(r.steps) == 3 and eng.adapter.calls == 3  # type: ignore[attr-defined]
    assert roles(r.thread)[-1] == "tool"  # valid to continue from


def test_max_turns_defaults_to_8(drive: Drive) -> None:
    fake = Fake(function=lambda req: [tool_call("get_weather", {"city": "X"})])
    _, r = drive(allm.Engine(adapter=fake, model="fake", tools=[WEATHER]), "Loop")
    assert r.halted_reason == "max_turns" and fake.calls == 8 and r.metadata["max_turns"] == 8


def test_halt_when(drive: Drive) -> None:
    eng = engine(*[[tool_call("get_weather", {"city": f"C{i}"})] for i in range(5)])
    _, r = drive(eng, "Loop", halt_when=lambda step: len(step.thread) >= 5)
    assert r.halted_reason == "halt_when" and r.metadata["halt_when_step_index"] == 1 and len(r.steps) == 2


def test_halt_when_exceptions_propagate() -> None:
    def bad(step: allm.Step) -> bool:
        raise KeyError("oops")

    with pytest.raises(KeyError):
        allm.chat(engine([tool_call("get_weather", {"city": "A"})]), "x", halt_when=bad)


# ------------------------------------------------------------------------------ handler halt


def test_handler_halt_with_its_own_reason(drive: Drive) -> None:
    eng = engine([tool_call("book", {"people": 2}, id="b")], ["unused"])
    events, r = drive(eng, "Book")
    assert r.halted_reason == "booked"
    assert r.metadata["halt_tool_call_id"] == "b" and r.metadata["halt_result"] == {"ref": "R-17"}
    halt = of(events, E.ToolHalt)
    assert halt == [E.ToolHalt("b", "booked", {"ref": "R-17"}, '{"ref":"R-17"}')]
    assert r.thread.messages[-1].text == '{"ref":"R-17"}'


def test_handler_halt_with_a_reserved_reason_is_invalid_return(drive: Drive) -> None:
    bad = allm.tool("bad", handler=lambda a: allm.Halt("completed"))
    events, r = drive(engine([tool_call("bad", {}, id="x")], ["ok"], tools=[bad]), "x")
    enc = of(events, E.ToolResultEncoded)[0]
    assert enc.is_error and "invalid_return" in enc.content and "reserved" in enc.content
    assert r.halted_reason == "completed"


# ------------------------------------------------------------------------------ errors from the model


def test_mid_stream_error_halts_with_error(drive: Drive) -> None:
    eng = engine([text("Part"), error("provider_unavailable", "overloaded")])
    _events, r = drive(eng, "Hi")
    assert r.halted_reason == "error" and r.metadata["error"].reason == "provider_unavailable"
    assert r.final_response is not None and r.final_response.output_text == "Part"
    assert r.final_response.finish_reason == "error" and roles(r.thread) == ["user"]


def test_error_before_the_first_event_raises() -> None:
    eng = engine([error("invalid_request", "bad", status=400, before_stream=True)])
    with pytest.raises(AdapterError) as e:
        allm.chat(eng, "Hi")
    assert e.value.reason == "invalid_request"
    with pytest.raises(AdapterError):
        asyncio.run(allm.achat(engine([error("invalid_request", "bad", status=400, before_stream=True)]), "Hi"))


def test_error_before_a_later_turns_first_event_is_an_error_event(drive: Drive) -> None:
    eng = engine(
        [tool_call("get_weather", {"city": "Oslo"}, id="w")],
        [error("invalid_request", "context too long", status=400, before_stream=True)],
    )
    events, r = drive(eng, "Oslo?")
    assert r.halted_reason == "error" and r.metadata["error"].reason == "invalid_request"
    assert roles(r.thread) == ["user", "assistant", "tool"]  # the first turn's work is kept
    assert event_types(events)[-3:] == ["Error", "StepCompleted", "ChatCompleted"]


def test_preflight_errors_raise_at_call_time() -> None:
    from allm.providers import OpenAICompatible

    eng = allm.Engine(adapter=OpenAICompatible(base_url="http://127.0.0.1:9/v1"))
    with pytest.raises(EngineError) as e:
        allm.stream(eng, "Hi")
    assert e.value.reason == "missing_model"
    with pytest.raises(EngineError):
        allm.astream(eng, "Hi")
    with pytest.raises(TypeError, match="unknown option"):
        allm.stream(engine(["x"]), "Hi", max_turn=3)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="mode"):
        allm.stream(engine(["x"]), "Hi", mode="sometimes")  # type: ignore[typeddict-item]
    with pytest.raises(ValueError, match="max_turns"):
        allm.stream(engine(["x"]), "Hi", max_turns=0)
    with pytest.raises(ValueError, match="tool_timeout"):
        allm.stream(engine(["x"]), "Hi", tool_timeout=-1)
    with pytest.raises(ValueError, match="on_tool_error"):
        allm.stream(engine(["x"]), "Hi", on_tool_error="ignore")  # type: ignore[typeddict-item]


# ------------------------------------------------------------------------------ cancellation


class Tracked:
    """Wraps allm.driver.open_stream / open_astream to see the inner streams closed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        chat_module = sys.modules["allm.driver"]
        self.opened = 0
        self.closed = 0
        real, areal = chat_module.open_stream, chat_module.open_astream
        tracker = self

        class S(allm.EventStream):
            def close(self) -> None:
                tracker.closed += 1
                super().close()

        class A(allm.AsyncEventStream):
            async def aclose(self) -> None:
                tracker.closed += 1
                await super().aclose()

        def sg(*a: Any, **k: Any) -> allm.EventStream:
            self.opened += 1
            return S(real(*a, **k)._gen)

        def asg(*a: Any, **k: Any) -> allm.AsyncEventStream:
            self.opened += 1
            return A(areal(*a, **k)._gen)

        monkeypatch.setattr(chat_module, "open_stream", sg)
        monkeypatch.setattr(chat_module, "open_astream", asg)


def test_stopping_the_stream_folds_to_cancelled_and_closes_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    tracked = Tracked(monkeypatch)
    eng = engine([text("Hel"), text("lo"), text(" there")])
    col = allm.ChatCollector(allm.Thread((allm.user("Hi"),)))
    s = allm.stream(eng, "Hi")
    for ev in s:
        col.apply(ev)
        if isinstance(ev, E.TextDelta):
            break
    s.close()
    r = col.result()
    assert r.halted_reason == "cancelled" and r.steps == () and roles(r.thread) == ["user"]
    assert r.final_response is not None and r.final_response.output_text == "Hel"
    assert tracked.opened == 1 and tracked.closed == 1


async def test_async_cancellation_closes_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    tracked = Tracked(monkeypatch)
    eng = engine([tool_call("get_weather", {"city": "Oslo"})], [text("Co"), text("ld")])
    col = allm.ChatCollector(allm.Thread((allm.user("Hi"),)))
    s = allm.astream(eng, "Hi")
    async for ev in s:
        col.apply(ev)
        if isinstance(ev, E.TextDelta):
            break
    await s.aclose()
    r = col.result()
    assert r.halted_reason == "cancelled" and len(r.steps) == 1
    assert roles(r.thread) == ["user", "assistant", "tool"]  # the completed turn is kept
    assert r.final_response is not None and r.final_response.output_text == "Co"
    assert tracked.opened == 2 and tracked.closed == 2


def test_cancelling_during_tools() -> None:
    eng = engine([tool_call("sleeper", {}, id="s")], ["unused"])
    col = allm.ChatCollector(allm.Thread((allm.user("x"),)))
    t0 = time.monotonic()
    with allm.stream(eng, "x") as s:
        for ev in s:
            col.apply(ev)
            if isinstance(ev, E.ToolExecutionStarted):
                break
    assert time.monotonic() - t0 < 1  # did not wait for the 3 s handler
    r = col.result()
    assert r.halted_reason == "cancelled" and r.steps == ()
    assert r.final_response is not None and [c.id for c in r.final_response.tool_calls] == ["s"]


async def test_async_cancelling_during_tools_cancels_async_handlers() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def forever(args: Any) -> str:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    eng = engine([tool_call("forever", {}, id="f")], tools=[allm.tool("forever", handler=forever)])
    s = allm.astream(eng, "x")

    async def consume() -> None:
        async for _ in s:
            pass

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(cancelled.wait(), 2)


def test_stopping_closes_a_real_http_response() -> None:
    """A server that streams slowly sees the connection closed as soon as the consumer stops."""
    import socket

    from allm.providers import OpenAICompatible

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    seen_eof = threading.Event()

    def serve() -> None:
        conn, _ = srv.accept()
        conn.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        chunk = b'data: {"id":"c1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"}}]}\n\n'
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        conn.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        try:
            while True:
                if conn.recv(1024) == b"":
                    seen_eof.set()
                    return
        except OSError:
            seen_eof.set()
        finally:
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    eng = allm.Engine(adapter=OpenAICompatible(base_url=f"http://127.0.0.1:{port}/v1"), model="m")
    s = allm.stream(eng, "Hi")
    for ev in s:
        if isinstance(ev, E.TextDelta):
            break
    s.close()
    assert seen_eof.wait(3), "the HTTP connection was not closed"
    srv.close()


# ------------------------------------------------------------------------------ context handed to handlers


def test_handlers_receive_the_merged_context(drive: Drive) -> None:
    seen: list[allm.ToolContext] = []

    def h(args: Any, ctx: allm.ToolContext) -> str:
        seen.append(ctx)
        return "ok"

    async def ah(args: Any, ctx: allm.ToolContext) -> str:
        await asyncio.sleep(0)
        seen.append(ctx)
        return "ok"

    tools = [allm.tool("sync_tool", handler=h), allm.tool("async_tool", handler=ah)]
    eng = engine(
        [tool_call("sync_tool", {}, id="s"), tool_call("async_tool", {}, id="a")],
        ["done"],
        tools=tools,
        context={"tenant": "acme", "region": "eu"},
    )
    _, r = drive(eng, "x", context={"region": "us", "user": 7}, session_id="ses_1")
    assert r.halted_reason == "completed" and len(seen) == 2
    for ctx in seen:
        assert ctx.context == {"tenant": "acme", "region": "us", "user": 7}
        assert ctx.session_id == "ses_1" and ctx.engine is eng
        assert ctx.request_id is not None and ctx.request_id == r.steps[0].response.request_id
    assert {c.tool_call.id for c in seen} == {"s", "a"}


def test_call_tools_merge_over_engine_tools(drive: Drive) -> None:
    override = allm.tool("get_weather", schema=WEATHER.schema, handler=lambda a: "overridden")
    extra = allm.tool("extra", handler=lambda a: "extra")
    eng = engine([tool_call("get_weather", {"city": "X"}, id="w"), tool_call("extra", {}, id="e")], ["ok"])
    _, r = drive(eng, "x", tools=[override, extra])
    assert [m.text for m in r.steps[0].tool_results] == ["overridden", "extra"]
    offered = [t.name for t in eng.adapter.requests[0].tools]  # type: ignore[attr-defined]
    assert offered[: len(TOOLS)] == [t.name for t in TOOLS] and offered[-1] == "extra"


def test_on_event_sees_adapter_events_only() -> None:
    seen: list[str] = []
    allm.chat(engine([tool_call("get_weather", {"city": "A"})], ["ok"]), "x", on_event=lambda e: seen.append(type(e).__name__))
    assert "ToolExecutionStarted" not in seen and "StepCompleted" not in seen and seen.count("MessageCompleted") == 2


# ------------------------------------------------------------------------------ step


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_step_runs_one_turn(mode: str) -> None:
    eng = engine([tool_call("get_weather", {"city": "Oslo"}, id="w")], ["Cold."])
    if mode == "sync":
        events = list(allm.stream_step(eng, "Oslo?"))
        s1 = allm.StepCollector(allm.Thread((allm.user("Oslo?"),))).fold(events)
        s2 = allm.step(eng, s1.thread)
    else:

        async def go() -> tuple[list[E.Event], allm.Step, allm.Step]:
            evs = [e async for e in allm.astream_step(eng, "Oslo?")]
            a = allm.StepCollector().fold(evs)
            return evs, a, await allm.astep(eng, a.thread)

        events, s1, s2 = asyncio.run(go())
    assert event_types(events)[-1] == "StepCompleted" and not of(events, E.ChatCompleted)
    assert s1.halted_reason is None and not s1.done and roles(s1.thread) == ["user", "assistant", "tool"]
    assert s2.halted_reason == "completed" and s2.done and s2.response.output_text == "Cold."


def test_step_ignores_max_turns_and_fold_of_a_stopped_step_is_cancelled() -> None:
    eng = engine([text("a"), text("b")])
    st = allm.step(eng, "x", max_turns=1, halt_when=lambda s: True)
    assert st.halted_reason == "completed"
    eng2 = engine([text("a"), text("b")])
    col = allm.StepCollector(allm.Thread((allm.user("x"),)))
    with allm.stream_step(eng2, "x") as s:
        for ev in s:
            col.apply(ev)
            if isinstance(ev, E.TextDelta):
                break
    st2 = col.result()
    assert st2.halted_reason == "cancelled" and st2.done and st2.response.output_text == "a"
    assert roles(st2.thread) == ["user"]


def test_request_fields_apply_on_every_turn() -> None:
    eng = engine([tool_call("get_weather", {"city": "A"})], ["ok"])
    req = allm.request([allm.system("Be brief."), allm.user("A?")], temperature=0.0, max_tokens=50)
    r = allm.chat(eng, req)
    sent = eng.adapter.requests  # type: ignore[attr-defined]
    assert [q.temperature for q in sent] == [0.0, 0.0] and [q.max_tokens for q in sent] == [50, 50]
    assert roles(r.thread) == ["system", "user", "assistant", "tool", "assistant"]
