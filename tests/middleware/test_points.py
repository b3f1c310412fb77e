"""The loop's middleware points, through the Fake, with both drivers: what a hook may do at
each point (rewrite, stop, refuse, observe), what the run looks like after, and errors."""

from __future__ import annotations

import asyncio
import inspect
import sys
from typing import Any

import attrs
import pytest

import allm
from allm import middleware as mw
from allm.events import ChatCompleted, StepCompleted, ToolExecutionCompleted, ToolExecutionStarted
from allm.testing import event_types, fake_engine, text, tool_call, usage
from tests.middleware.conftest import ADD, DRIVERS


def engine_with(*scripts: Any, **fields: Any) -> allm.Engine:
    return fake_engine(*scripts, tools=[ADD], **fields)


TOOL_LOOP = (
    [tool_call("add", {"a": 1, "b": 2}), usage(10, 5)],
    [tool_call("add", {"a": 3, "b": 4}), usage(20, 5)],
    [text("The sums are 3 and 7."), usage(30, 8)],
)


class Recorder:
    """Records every hook it sees; optionally stops or refuses."""

    def __init__(self, name: str = "rec", *, stop_before: int | None = None, stop_after: int | None = None,
                 refuse: str | None = None) -> None:  # fmt: skip
        self.name = name
        self.seen: list[tuple[str, Any]] = []
        self.stop_before, self.stop_after, self.refuse = stop_before, stop_after, refuse

    def before_model(self, run: mw.Run, request: allm.Request) -> mw.Stop | None:
        self.seen.append(("before_model", run.turn))
        if self.stop_before == run.turn:
            return mw.Stop("held", "held before the call", {"turn": run.turn})
        return None

    def after_model(self, run: mw.Run, response: allm.Response) -> mw.Stop | None:
        self.seen.append(("after_model", response.output_text or [c.name for c in response.tool_calls]))
        if self.stop_after == run.turn:
            return mw.Stop("held", "held after the call")
        return None

    def before_tool(self, run: mw.Run, call: allm.ToolCall) -> mw.Refuse | None:
        self.seen.append(("before_tool", call.id))
        if self.refuse == call.id:
            return mw.Refuse("not this one", {"policy": "p1"})
        return None

    def after_tool(self, run: mw.Run, outcome: mw.ToolOutcome) -> None:
        self.seen.append(("after_tool", outcome.call.id))

    def on_event(self, run: mw.Run, event: Any) -> None:
        self.seen.append(("event", event))


def run_chat(engine: allm.Engine, asynchronous: bool, prompt: Any = "add things", **options: Any) -> tuple[list[Any], allm.ChatResult]:
    """The events of a chat and their fold, with the sync or the async driver."""
    if asynchronous:

        async def go() -> list[Any]:
            async with allm.astream(engine, prompt, **options) as s:
                return [ev async for ev in s]

        events = asyncio.run(go())
    else:
        with allm.stream(engine, prompt, **options) as s:
            events = list(s)
    return events, allm.ChatCollector(allm.Thread((allm.user(prompt),)) if isinstance(prompt, str) else prompt).fold(events)


# ------------------------------------------------------------------------------ before a model call


@DRIVERS
def test_before_model_rewrites_the_request_of_that_call_only(asynchronous: bool) -> None:
    class Rewrite:
        def before_model(self, run: mw.Run, request: allm.Request) -> allm.Request:
            note = allm.system(f"turn {run.turn}")
            return attrs.evolve(request, messages=(note, *request.messages), temperature=0.25)

    engine = engine_with(*TOOL_LOOP)
    _, result = run_chat(engine, asynchronous, middleware=[Rewrite()])
    sent = engine.adapter.requests
    assert [r.messages[0].text for r in sent] == ["turn 0", "turn 1", "turn 2"]
    assert all(r.temperature == 0.25 for r in sent)
    assert result.halted_reason == "completed"
    assert all(m.role != "system" for m in result.thread.messages)  # the thread keeps the original


@DRIVERS
def test_a_stop_before_the_first_call_makes_no_call(asynchronous: bool) -> None:
    rec = Recorder(stop_before=0)
    engine = engine_with(*TOOL_LOOP)
    events, result = run_chat(engine, asynchronous, middleware=[rec])
    assert engine.adapter.calls == 0
    assert event_types(events) == ["ChatCompleted"]
    assert result.halted_reason == "held" and result.steps == () and result.final_response is None
    assert result.thread.messages == (allm.user("add things"),)
    assert result.metadata["stopped_by"] == {"middleware": "rec", "message": "held before the call", "turn": 0}


@DRIVERS
def test_a_stop_before_a_later_call_keeps_the_tool_results(asynchronous: bool) -> None:
    rec = Recorder(stop_before=1)
    engine = engine_with(*TOOL_LOOP)
    events, result = run_chat(engine, asynchronous, middleware=[rec])
    assert engine.adapter.calls == 1
    assert result.halted_reason == "held" and len(result.steps) == 1
    assert [m.role for m in result.thread.messages] == ["user", "assistant", "tool"]
    assert result.final_response == result.steps[0].response
    assert type(events[-1]) is ChatCompleted


@DRIVERS
def test_a_stop_after_a_call_never_adds_its_message_nor_runs_its_tools(asynchronous: bool) -> None:
    calls: list[Any] = []
    tool = allm.tool("add", schema=ADD.schema, handler=lambda a: calls.append(a) or 0)
    rec = Recorder(stop_after=1)
    engine = fake_engine(*TOOL_LOOP, tools=[tool])
    events, result = run_chat(engine, asynchronous, middleware=[rec])
    assert len(calls) == 1  # the first call's tool ran, the second's did not
    assert result.halted_reason == "held"
    assert [m.role for m in result.thread.messages] == ["user", "assistant", "tool"]
    last = result.steps[-1]
    assert last.halted_reason == "held" and last.response.tool_calls[0].arguments == {"a": 3, "b": 4}
    assert last.thread == result.thread
    assert sum(type(e) is ToolExecutionStarted for e in events) == 1


# ------------------------------------------------------------------------------ tool calls


@DRIVERS
def test_a_refused_tool_call_is_a_tool_error_the_model_reads(asynchronous: bool) -> None:
    ran: list[Any] = []
    tool = allm.tool("add", schema=ADD.schema, handler=lambda a: ran.append(a) or a["a"] + a["b"])
    engine = fake_engine(
        [tool_call("add", {"a": 1, "b": 2}, id="c1"), tool_call("add", {"a": 5, "b": 5}, id="c2")],
        [text("One of them was refused.")],
        tools=[tool],
    )
    events, result = run_chat(engine, asynchronous, middleware=[Recorder("gate", refuse="c2")])
    assert ran == [{"a": 1, "b": 2}]
    done = {e.tool_call_id: e for e in events if type(e) is ToolExecutionCompleted}
    err = done["c2"].error
    assert isinstance(err, allm.ToolError) and err.reason == "refused"
    assert err.message == "refused by gate: not this one"
    assert err.metadata == {"policy": "p1", "tool_name": "add", "tool_call_id": "c2", "middleware": "gate"}
    tool_msgs = [m for m in result.thread.messages if m.role == "tool"]
    assert [m.is_error for m in tool_msgs] == [False, True]
    assert "refused by gate: not this one" in tool_msgs[1].text
    assert engine.adapter.requests[1].messages[-1].text == tool_msgs[1].text  # the model read it
    assert result.halted_reason == "completed"


def test_a_refusal_follows_on_tool_error() -> None:
    engine = engine_with([tool_call("add", {"a": 1, "b": 2}, id="c1")], [text("unreached")])
    result = allm.chat(engine, "add", middleware=[Recorder("gate", refuse="c1")], on_tool_error="halt")
    assert result.halted_reason == "tool_error" and result.metadata["error"].reason == "refused"
    assert engine.adapter.calls == 1


def test_before_tool_sees_only_calls_the_loop_runs() -> None:
    confirm = allm.tool("confirm", manual=True)
    engine = fake_engine([tool_call("add", {"a": 1, "b": 2}, id="c1"), tool_call("confirm", {}, id="c2")], tools=[ADD, confirm])
    rec = Recorder()
    result = allm.chat(engine, "add", middleware=[rec])
    assert result.halted_reason == "manual_tool_calls"
    assert [s for s in rec.seen if s[0] == "before_tool"] == [("before_tool", "c1")]
    rec2 = Recorder()
    allm.chat(engine_with([tool_call("nope", {})]), "x", middleware=[rec2])  # an unknown tool: nothing runs
    assert not [s for s in rec2.seen if s[0] == "before_tool"]


# ------------------------------------------------------------------------------ observers


@DRIVERS
def test_on_event_sees_every_event_in_order_and_after_tool_every_outcome(asynchronous: bool) -> None:
    rec = Recorder()
    events, result = run_chat(engine_with(*TOOL_LOOP), asynchronous, middleware=[rec])
    seen_events = [e for kind, e in rec.seen if kind == "event"]
    assert len(seen_events) == len(events) and all(a is b for a, b in zip(seen_events, events, strict=True))
    outcomes = [e for kind, e in rec.seen if kind == "after_tool"]
    assert outcomes == [e.tool_call_id for e in events if type(e) is ToolExecutionCompleted]
    points = [kind for kind, _ in rec.seen if kind != "event"]
    assert points == ["before_model", "after_model", "before_tool", "after_tool"] * 2 + ["before_model", "after_model"]
    assert result.halted_reason == "completed"


def test_run_carries_the_runs_facts() -> None:
    runs: list[tuple[str, str | None, int, int | None, tuple[str, ...]]] = []

    class Look:
        name = "look"

        def after_model(self, run: mw.Run, response: allm.Response) -> None:
            runs.append((run.id, run.session_id, run.turn, run.usage.total_tokens, run.pipeline))
            assert run.context == {"tenant": "acme"} and run.model == "fake" and run.engine is not None

    allm.chat(engine_with(*TOOL_LOOP), "x", middleware=[Look()], context={"tenant": "acme"}, session_id="ses_1")
    assert [r[1:] for r in runs] == [("ses_1", 0, 15, ("look",)), ("ses_1", 1, 40, ("look",)), ("ses_1", 2, 78, ("look",))]
    assert len({r[0] for r in runs}) == 1 and runs[0][0].startswith("run_")
    runs.clear()
    allm.chat(engine_with(*TOOL_LOOP), "x", middleware=[Look()], context={"tenant": "acme"})
    assert runs[0][1] is None


# ------------------------------------------------------------------------------ async hooks


def test_the_async_driver_uses_async_twins_and_the_sync_driver_the_sync_hooks() -> None:
    used: list[str] = []

    class Both:
        def before_model(self, run: mw.Run, request: allm.Request) -> None:
            used.append("sync before")

        async def abefore_model(self, run: mw.Run, request: allm.Request) -> None:
            await asyncio.sleep(0)
            used.append("async before")

        def after_model(self, run: mw.Run, response: allm.Response) -> None:
            used.append("sync after")

        async def aafter_model(self, run: mw.Run, response: allm.Response) -> None:
            used.append("async after")

        def before_tool(self, run: mw.Run, call: allm.ToolCall) -> None:
            used.append("sync tool")

        async def abefore_tool(self, run: mw.Run, call: allm.ToolCall) -> None:
            used.append("async tool")

    allm.chat(engine_with(*TOOL_LOOP[1:]), "x", middleware=[Both()])
    assert used == ["sync before", "sync after", "sync tool", "sync before", "sync after"]
    used.clear()
    asyncio.run(allm.achat(engine_with(*TOOL_LOOP[1:]), "x", middleware=[Both()]))
    assert used == ["async before", "async after", "async tool", "async before", "async after"]


def test_an_async_hook_runs_under_the_async_driver_and_fails_under_the_sync_one() -> None:
    class AsyncOnly:
        name = "async_only"

        async def before_model(self, run: mw.Run, request: allm.Request) -> mw.Stop:
            await asyncio.sleep(0)
            return mw.Stop("held")

    result = asyncio.run(allm.achat(engine_with(*TOOL_LOOP), "x", middleware=[AsyncOnly()]))
    assert result.halted_reason == "held"
    with pytest.raises(allm.EngineError) as info:
        allm.chat(engine_with(*TOOL_LOOP), "x", middleware=[AsyncOnly()])
    assert info.value.reason == "middleware_failed"
    assert "async_only.before_model is async: run it with achat, astream or astep" in info.value.message
    assert info.value.metadata["middleware"] == "async_only"


# ------------------------------------------------------------------------------ failures


@DRIVERS
def test_a_hook_that_raises_before_anything_was_emitted_raises(asynchronous: bool) -> None:
    class Broken:
        name = "broken"

        def before_model(self, run: mw.Run, request: allm.Request) -> None:
            raise KeyError("tenant")

    engine = engine_with(*TOOL_LOOP)
    with pytest.raises(allm.EngineError) as info:
        run_chat(engine, asynchronous, middleware=[Broken()])
    err = info.value
    assert err.reason == "middleware_failed" and err.metadata == {"middleware": "broken", "exception_type": "KeyError"}
    assert "the middleware 'broken' failed: KeyError: 'tenant'" in err.message
    assert isinstance(err.__cause__, KeyError) and engine.adapter.calls == 0


@DRIVERS
def test_a_hook_that_raises_later_ends_the_run_with_error_keeping_the_thread(asynchronous: bool) -> None:
    class BrokenAfter:
        name = "broken_after"

        def after_model(self, run: mw.Run, response: allm.Response) -> None:
            if run.turn == 1:
                raise allm.errors.StoreError("Redis at x cannot be reached", reason="unavailable")

    events, result = run_chat(engine_with(*TOOL_LOOP), asynchronous, middleware=[BrokenAfter()])
    assert result.halted_reason == "error"
    err = result.metadata["error"]
    assert isinstance(err, allm.errors.StoreError) and err.reason == "unavailable"  # an allm error stays as it is
    assert result.metadata["middleware"] == "broken_after"
    assert [m.role for m in result.thread.messages] == ["user", "assistant", "tool"]
    assert event_types(events)[-3:] == ["Error", "StepCompleted", "ChatCompleted"]
    assert result.steps[-1].response.tool_calls[0].arguments == {"a": 3, "b": 4}
    session = allm.Session.new("x").settle(result)
    assert session.status == "error" and session.thread == result.thread


@pytest.mark.parametrize(
    ("hook", "value", "expected"),
    [
        ("before_model", "a string", "before_model returned str; expected None, a Request or a Stop"),
        ("after_model", allm.Request(), "after_model returned Request; expected None or a Stop"),
        ("before_tool", mw.Stop("held"), "before_tool returned Stop; expected None or a Refuse"),
    ],
)
def test_a_hook_returning_the_wrong_thing_fails_the_run(hook: str, value: Any, expected: str) -> None:
    class Wrong:
        name = "wrong"

    setattr(Wrong, hook, lambda self, run, x: value)
    engine = engine_with([tool_call("add", {"a": 1, "b": 2})], [text("done")])
    if hook == "before_model":
        with pytest.raises(allm.EngineError) as info:
            allm.chat(engine, "x", middleware=[Wrong()])
        err = info.value
    else:
        result = allm.chat(engine, "x", middleware=[Wrong()])
        assert result.halted_reason == "error"
        err = result.metadata["error"]
    assert err.reason == "middleware_failed" and f"wrong.{expected}" in err.message


def test_observer_exceptions_propagate() -> None:
    class Loud:
        def on_event(self, run: mw.Run, event: Any) -> None:
            if type(event) is StepCompleted:
                raise RuntimeError("observer broke")

    with pytest.raises(RuntimeError, match="observer broke"):
        allm.chat(engine_with(*TOOL_LOOP), "x", middleware=[Loud()])


def test_pre_flight_errors_still_raise_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OPENAI_API_KEY",):
        monkeypatch.delenv(var, raising=False)
    allm.keys.clear()
    engine = allm.Engine(adapter=allm.providers.OpenAI(base_url="http://127.0.0.1:9/v1"), model="gpt-x")
    rec = Recorder()
    with pytest.raises(allm.EngineError) as info:
        allm.stream(engine, "hi", middleware=[rec])  # not iterated: raised by the call
    assert info.value.reason == "missing_key" and rec.seen == []


# ------------------------------------------------------------------------------ order, pipelines, single steps


def test_pipelines_run_engine_then_session_then_call_and_the_first_stop_wins() -> None:
    order: list[str] = []

    def named(label: str, stop: bool = False) -> Any:
        class M:
            name = label

            def before_model(self, run: mw.Run, request: allm.Request) -> mw.Stop | None:
                order.append(label)
                return mw.Stop("held") if stop else None

        return M

    mw.register("session_one", named("session_one"))
    engine = engine_with([text("hi")], [text("again")], middleware=[named("engine_one")])
    session, result = allm.Session.start(engine, "hi", pipeline=["session_one"], middleware=[named("call_one")])
    assert order == ["engine_one", "session_one", "call_one"] and result.halted_reason == "completed"
    order.clear()
    session, result = session.reply(engine, "again", middleware=[named("call_stop", stop=True), named("never")])
    assert order == ["engine_one", "session_one", "call_stop"] and result.halted_reason == "held"
    assert result.metadata["stopped_by"]["middleware"] == "call_stop"


def test_a_factory_makes_a_middleware_per_run_and_an_object_is_shared() -> None:
    made: list[Any] = []

    class PerRun:
        def __init__(self) -> None:
            made.append(self)
            self.turns = 0

        def before_model(self, run: mw.Run, request: allm.Request) -> None:
            self.turns += 1

    shared = Recorder()
    engine = engine_with(*TOOL_LOOP, middleware=[PerRun, shared])
    allm.chat(engine, "x")
    allm.chat(engine_with(*TOOL_LOOP, middleware=[PerRun, shared]), "y")
    assert len(made) == 2 and [m.turns for m in made] == [3, 3]
    assert sum(1 for kind, _ in shared.seen if kind == "before_model") == 6


@DRIVERS
def test_a_step_stopped_before_its_call_is_a_finished_step(asynchronous: bool) -> None:
    engine = engine_with(*TOOL_LOOP)
    rec = Recorder(stop_before=0)
    if asynchronous:
        step = asyncio.run(allm.astep(engine, "x", middleware=[rec]))
    else:
        step = allm.step(engine, "x", middleware=[rec])
    assert step.done and step.halted_reason == "held" and step.response.output_text == ""
    assert step.thread.messages == (allm.user("x"),) and engine.adapter.calls == 0
    session, stepped = allm.Session.new("x").step(engine_with(*TOOL_LOOP), middleware=[Recorder(stop_after=0)])
    assert stepped.halted_reason == "held" and session.status == "completed"
    assert session.thread.messages == (allm.user("x"),)


def test_a_stop_in_structured_finalize_keeps_the_first_pass_thread() -> None:
    fmt = allm.json_schema("answer", {"type": "object", "properties": {"n": {"type": "integer"}}})
    engine = engine_with([text("The answer is 3.")], [text('{"n": 3}')])

    class HoldFinal:
        def before_model(self, run: mw.Run, request: allm.Request) -> mw.Stop | None:
            return mw.Stop("held") if request.response_format is not None else None

    req = allm.request("three?", response_format=fmt)
    result = allm.chat(engine, req, structured_finalize=True, middleware=[HoldFinal()])
    assert result.halted_reason == "held" and engine.adapter.calls == 1
    assert [m.text for m in result.thread.messages] == ["three?", "The answer is 3."]


def test_a_stopped_session_settles_completed_and_continues_later() -> None:
    limit = mw.RateLimit(1, 3600, limits=mw.MemoryLimits())
    engine = engine_with([text("first")], [text("second")])
    session, result = allm.Session.start(engine, "one", middleware=[limit])
    assert result.halted_reason == "completed"
    session, result = session.reply(engine, "two", middleware=[limit])
    assert result.halted_reason == "rate_limit" and session.status == "completed"
    assert [m.text for m in session.thread.messages] == ["one", "first", "two"]  # the reply stays; no answer yet
    session, result = session.continue_(engine)  # without the limit: the stopped call is made
    assert result.halted_reason == "completed"
    assert [m.text for m in session.thread.messages] == ["one", "first", "two", "second"]


# ------------------------------------------------------------------------------ no middleware: no cost


def profiled_chat(n_events: int, **options: Any) -> dict[str, int]:
    """Python function calls (generators resuming aside) made by a chat of one model call with
    ``n_events`` text deltas, by ``file:function``."""
    engine = fake_engine([text("x") for _ in range(n_events)])
    calls: dict[str, int] = {}

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and not frame.f_code.co_flags & inspect.CO_GENERATOR:  # not a generator resuming
            code = frame.f_code
            key = f"{code.co_filename.rsplit('allm', 1)[-1]}:{code.co_name}"
            calls[key] = calls.get(key, 0) + 1

    sys.setprofile(profile)
    try:
        result = allm.chat(engine, "go", **options)
    finally:
        sys.setprofile(None)
    assert result.halted_reason == "completed" and result.final_response is not None
    assert result.final_response.output_text == "x" * n_events
    return calls


def test_without_middleware_events_cost_no_middleware_or_loop_call() -> None:
    small, large = profiled_chat(100), profiled_chat(1100)
    grew = {k: large.get(k, 0) - small.get(k, 0) for k in set(small) | set(large) if large.get(k, 0) != small.get(k, 0)}
    # What 1000 more events cost: the adapter's and transport's generators and the fold's apply,
    # nothing from the loop (one sink() per model call) and nothing from middleware.
    assert not [k for k in grew if "middleware" in k or "loop.py" in k or "driver.py" in k], grew
    assert grew["/fold.py:apply"] % 1000 == 0
    assert small.get("/loop.py:sink") == 1
    # With an on_event middleware, each event costs its hook (and nothing else from the loop).
    seen = profiled_chat(100, middleware=[Recorder()])
    seen_large = profiled_chat(1100, middleware=[Recorder()])
    hook = next(k for k in seen if k.endswith("test_points.py:on_event"))
    assert seen_large[hook] - seen[hook] == 1000


def test_events_of_a_model_call_reach_on_event_before_the_caller() -> None:
    order: list[str] = []

    class Seen:
        def on_event(self, run: mw.Run, event: Any) -> None:
            order.append(f"hook {type(event).__name__}")

    for ev in allm.stream(engine_with([text("hi")]), "x", middleware=[Seen()]):
        order.append(f"caller {type(ev).__name__}")
    hooks = [(i, o.split()[1]) for i, o in enumerate(order) if o.startswith("hook")]
    callers = [(i, o.split()[1]) for i, o in enumerate(order) if o.startswith("caller")]
    assert [h for _, h in hooks] == [c for _, c in callers]  # the same events in the same order
    assert all(hi < ci for (hi, _), (ci, _) in zip(hooks, callers, strict=True))  # each seen by the hook first


def test_an_error_event_of_a_failed_call_reaches_on_event() -> None:
    from allm.testing import error

    seen: list[str] = []

    class Seen:
        def on_event(self, run: mw.Run, event: Any) -> None:
            seen.append(type(event).__name__)

    engine = engine_with([tool_call("add", {"a": 1, "b": 2})], [error("provider_unavailable", before_stream=True)],
                         retry=allm.RetryPolicy(max_attempts=1))  # fmt: skip
    result = allm.chat(engine, "x", middleware=[Seen()])
    assert result.halted_reason == "error" and "Error" in seen
    assert seen[-2:] == ["StepCompleted", "ChatCompleted"]
