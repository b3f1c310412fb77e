"""Sessions: every status transition, the illegal ones, streaming folds, storage, resuming elsewhere."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import allm
from allm import codec
from allm import events as E
from allm.errors import EngineError, SessionError
from allm.providers import Fake
from allm.testing import error, fake_engine, text, tool_call
from tests.session_fixtures import FIXTURES

HERE = Path(__file__).parent


def weather(args: dict[str, Any]) -> dict[str, Any]:
    return {"city": args["city"], "temp_c": 18}


def ask(args: dict[str, Any]) -> allm.AskUser:
    return allm.AskUser("Which city?", choices=["Paris", "Oslo"])


def boom(args: dict[str, Any]) -> Any:
    raise RuntimeError("down")


def transfer(args: dict[str, Any], ctx: allm.ToolContext) -> dict[str, Any]:
    return {"status": "sent", "to": args.get("to"), "session": ctx.session_id, "tenant": ctx.context.get("tenant")}


WEATHER = allm.tool(
    "get_weather", schema={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}, handler=weather
)
ASK = allm.tool("which_city", handler=ask)
BOOM = allm.tool("boom", handler=boom)
HALT = allm.tool("book", handler=lambda a: allm.Halt("booked", {"ref": 1}))
TRANSFER = allm.tool(
    "transfer_funds",
    "Send money (needs approval).",
    {"type": "object", "properties": {"to": {"type": "string"}, "amount_eur": {"type": "number"}}, "required": ["to"]},
    handler=transfer,
    manual=True,
)
TOOLS = [WEATHER, ASK, BOOM, HALT, TRANSFER]


def engine(*scripts: list[Any], **fields: Any) -> allm.Engine:
    return fake_engine(*scripts, tools=TOOLS, **fields)


def roles(s: allm.Session) -> list[str]:
    return [m.role for m in s.thread.messages]


def assert_stores(s: allm.Session) -> None:
    assert allm.Session.from_json(s.to_json()) == s
    assert pickle.loads(pickle.dumps(s)) == s


# ------------------------------------------------------------------------------ transitions


def test_start_to_completed_then_reply() -> None:
    eng = engine(["Hello!"], ["Still here."])
    s, r = allm.Session.start(eng, "Hi", context={"tenant": "acme"}, metadata={"ticket": 1})
    assert s.status == "completed" and r.halted_reason == "completed"
    assert s.id.startswith("ses_") and s.context == {"tenant": "acme"} and s.metadata == {"ticket": 1}
    assert roles(s) == ["user", "assistant"]
    s2, _r2 = s.reply(eng, "Are you there?")
    assert s2.status == "completed" and roles(s2) == ["user", "assistant", "user", "assistant"]
    assert s.status == "completed" and len(s.thread) == 2  # the old value is unchanged
    assert s2.id == s.id
    assert_stores(s2)


def test_max_turns_halt_when_and_handler_halt_end_completed() -> None:
    loop_script = [[tool_call("get_weather", {"city": "A"})] for _ in range(3)]
    s, r = allm.Session.start(engine(*loop_script), "x", max_turns=2)
    assert r.halted_reason == "max_turns" and s.status == "completed"
    s, r = allm.Session.start(engine(*loop_script), "x", halt_when=lambda st: True)
    assert r.halted_reason == "halt_when" and s.status == "completed"
    s, r = allm.Session.start(engine([tool_call("book", {})]), "x")
    assert r.halted_reason == "booked" and s.status == "completed"


def test_manual_tools_await_results_then_continue() -> None:
    eng = engine(
        [tool_call("transfer_funds", {"to": "Bob"}, id="t1"), tool_call("transfer_funds", {"to": "Ann"}, id="t2")],
        ["Both sent."],
    )
    s, r = allm.Session.start(eng, "Pay Bob and Ann", context={"tenant": "acme"})
    assert s.status == "awaiting_tools" and r.halted_reason == "manual_tool_calls"
    assert [c.id for c in s.pending_tool_calls] == ["t1", "t2"]
    assert s.legal_operations() == ("submit_tool_result", "submit_tool_results", "approve", "reject")
    assert_stores(s)
    s1 = s.submit_tool_result("t1", {"status": "sent"})
    assert s1.status == "awaiting_tools" and [c.id for c in s1.pending_tool_calls] == ["t2"]
    s2 = s1.submit_tool_result("t2", "failed: insufficient funds", is_error=True)
    assert s2.status == "idle" and s2.pending_tool_calls == ()
    assert [(m.tool_call_id, m.text, m.is_error) for m in s2.thread.messages[-2:]] == [
        ("t1", '{"status":"sent"}', False),
        ("t2", "failed: insufficient funds", True),
    ]
    s3, r3 = s2.continue_(eng)
    assert s3.status == "completed" and r3.final_response is not None and r3.final_response.output_text == "Both sent."
    assert eng.adapter.requests[1].messages[-2:] == s2.thread.messages[-2:]  # type: ignore[attr-defined]


def test_approve_runs_the_handler_and_reject_answers_with_an_error() -> None:
    eng = engine(
        [tool_call("transfer_funds", {"to": "Bob"}, id="t1"), tool_call("transfer_funds", {"to": "Eve"}, id="t2")],
        ["Sent to Bob; Eve declined."],
        context={"tenant": "acme"},
    )
    s, _ = allm.Session.start(eng, "Pay")
    s = s.approve(eng, "t1").reject("t2", "The user said no.")
    assert s.status == "idle"
    bob, eve = s.thread.messages[-2:]
    assert orjson.loads(bob.text) == {"status": "sent", "to": "Bob", "session": s.id, "tenant": "acme"}
    assert eve.is_error and orjson.loads(eve.text) == {"error": "The user said no."}
    s, _r = s.continue_(eng)
    assert s.status == "completed"


def test_approve_reports_handler_errors_and_needs_a_handler() -> None:
    failing = allm.tool("transfer_funds", schema=TRANSFER.schema, handler=boom, manual=True)
    eng = fake_engine([tool_call("transfer_funds", {"to": "Bob"}, id="t1")], tools=[failing])
    s, _ = allm.Session.start(eng, "Pay")
    s2 = s.approve(eng, "t1")
    assert s2.thread.messages[-1].is_error and "RuntimeError: down" in s2.thread.messages[-1].text
    bare = fake_engine(["x"])
    with pytest.raises(EngineError) as e:
        s.approve(bare, "t1")
    assert e.value.reason == "unknown_tool"
    # A handler given to this call is used.
    s3 = s.approve(bare, "t1", tools=[TRANSFER])
    assert '"status":"sent"' in s3.thread.messages[-1].text


def test_ask_user_then_reply() -> None:
    eng = engine([tool_call("which_city", {}, id="q")], ["Paris it is: 18 °C."])
    s, r = allm.Session.start(eng, "Weather?")
    assert s.status == "awaiting_user" and r.halted_reason == "ask_user"
    assert s.pending_question == "Which city?" and s.pending_tool_call_id == "q"
    assert s.metadata["ask_user"] == {"choices": ["Paris", "Oslo"], "options": {}}
    assert roles(s) == ["user", "assistant", "tool", "assistant"]
    assert_stores(s)
    s2, _r2 = s.reply(eng, "Paris")
    assert s2.status == "completed" and s2.pending_question is None and "ask_user" not in s2.metadata
    assert roles(s2) == ["user", "assistant", "tool", "assistant", "user", "assistant"]


def test_ask_user_while_manual_calls_are_pending() -> None:
    eng = engine([tool_call("which_city", {}, id="q"), tool_call("transfer_funds", {"to": "Bob"}, id="t")], ["Done."])
    s, r = allm.Session.start(eng, "x")
    assert r.halted_reason == "ask_user" and s.status == "awaiting_tools"  # tool results first
    assert s.pending_question == "Which city?" and [c.id for c in s.pending_tool_calls] == ["t"]
    assert roles(s) == ["user", "assistant", "tool"]
    s = s.submit_tool_result("t", "ok")
    assert s.status == "awaiting_user"
    assert roles(s) == ["user", "assistant", "tool", "tool", "assistant"]
    assert s.thread.messages[-1].text == "Which city?" and s.thread.messages[-1].metadata["choices"] == ["Paris", "Oslo"]
    s, _ = s.reply(eng, "Paris")
    assert s.status == "completed"


def test_errors_and_recover() -> None:
    eng = engine([text("par"), error("provider_unavailable", "overloaded")], ["Hello again."])
    s, r = allm.Session.start(eng, "Hi")
    assert s.status == "error" and r.halted_reason == "error"
    assert s.error is not None and s.error.reason == "provider_unavailable" and roles(s) == ["user"]
    assert_stores(s)
    with pytest.raises(SessionError) as e:
        s.reply(eng, "again?")
    assert e.value.reason == "session_in_error_state" and "recover" in e.value.message
    s2 = s.recover()
    assert s2.status == "idle" and "error" not in s2.metadata and s2.thread == s.thread
    s3, r3 = s2.continue_(eng)
    assert s3.status == "completed" and r3.final_response is not None
    with pytest.raises(SessionError) as e2:
        s3.recover()
    assert e2.value.reason == "invalid_status"


def test_tool_error_halt_puts_the_session_in_error() -> None:
    s, r = allm.Session.start(engine([tool_call("boom", {})]), "x", on_tool_error="halt")
    assert r.halted_reason == "tool_error" and s.status == "error" and s.error.reason == "handler_raised"


def test_step_by_step() -> None:
    eng = engine([tool_call("get_weather", {"city": "Oslo"})], [tool_call("transfer_funds", {"to": "B"}, id="t")])
    s0 = allm.Session.new("Oslo?")
    assert s0.status == "idle" and roles(s0) == ["user"]
    s1, st1 = s0.step(eng)
    assert st1.halted_reason is None and s1.status == "idle" and roles(s1) == ["user", "assistant", "tool"]
    s2, st2 = s1.step(eng)
    assert st2.halted_reason == "manual_tool_calls" and s2.status == "awaiting_tools"


def test_illegal_operations_name_the_status_and_the_legal_ones() -> None:
    eng = engine(["x"])
    idle = allm.Session.new("hi")
    with pytest.raises(SessionError) as e:
        idle.submit_tool_result("c", 1)
    assert e.value.reason == "invalid_status"
    assert str(e.value.message) == "cannot submit_tool_result: the session is idle; legal now: reply, continue_, step"
    assert e.value.metadata == {"status": "idle", "operation": "submit_tool_result", "legal": ["reply", "continue_", "step"]}
    for op in (lambda s: s.approve(eng, "c"), lambda s: s.reject("c"), lambda s: s.submit_tool_results({"c": 1}), lambda s: s.recover()):
        with pytest.raises(SessionError):
            op(idle)
    tools_s = FIXTURES["awaiting_tools"]()
    for op in (lambda s: s.reply(eng, "x"), lambda s: s.continue_(eng), lambda s: s.step(eng), lambda s: s.stream_reply(eng, "x")):
        with pytest.raises(SessionError, match="awaiting_tools; legal now: submit_tool_result"):
            op(tools_s)
    user_s = FIXTURES["awaiting_user"]()
    for op in (lambda s: s.continue_(eng), lambda s: s.step(eng), lambda s: s.submit_tool_result("c", 1)):
        with pytest.raises(SessionError, match="awaiting_user; legal now: reply"):
            op(user_s)
    with pytest.raises(SessionError, match="error state"):
        FIXTURES["error"]().continue_(eng)
    with pytest.raises(ValueError, match="status"):
        allm.Session(status="paused")  # type: ignore[arg-type]
    with pytest.raises(allm.ValidationError, match="user message"):
        idle.reply(eng, allm.assistant("not a reply"))


def test_unknown_tool_call_id_and_all_or_nothing_submits() -> None:
    s = FIXTURES["awaiting_tools"]()
    with pytest.raises(SessionError) as e:
        s.submit_tool_result("nope", 1)
    assert e.value.reason == "unknown_tool_call_id" and e.value.metadata == {"tool_call_id": "nope"}
    with pytest.raises(SessionError):
        s.submit_tool_results([("call_t1", "ok"), ("call_t1", "twice")])
    done = s.submit_tool_results({"call_t1": {"ok": True}})
    assert done.status == "idle" and done.thread.messages[-1].text == '{"ok":true}'


def test_context_layers_and_session_id() -> None:
    seen: list[allm.ToolContext] = []

    def spy(args: Any, ctx: allm.ToolContext) -> str:
        seen.append(ctx)
        return "ok"

    eng = fake_engine(
        [tool_call("spy", {})], ["done"], [tool_call("spy", {})], ["done"],
        tools=[allm.tool("spy", handler=spy)], context={"a": "engine", "b": "engine", "c": "engine"},
    )
    s, _ = allm.Session.start(eng, "x", context={"b": "session", "c": "session"})
    s.reply(eng, "again", context={"c": "call"})
    assert seen[0].context == {"a": "engine", "b": "session", "c": "session"} and seen[0].session_id == s.id
    assert seen[1].context == {"a": "engine", "b": "session", "c": "call"}


def test_params_apply_to_every_turn_and_the_thread_keeps_its_metadata() -> None:
    eng = engine([tool_call("get_weather", {"city": "A"})], ["ok"])
    s = allm.Session.new(allm.Thread((allm.user("A?"),), metadata={"title": "weather"}))
    s2, _ = s.continue_(eng, params={"temperature": 0.0, "max_tokens": 40, "options": {"cache_prompt": False}})
    sent = eng.adapter.requests  # type: ignore[attr-defined]
    assert [q.temperature for q in sent] == [0.0, 0.0] and [q.options for q in sent] == [{"cache_prompt": False}] * 2
    assert s2.thread.metadata == {"title": "weather"}
    with pytest.raises(TypeError, match="messages"):
        s.continue_(eng, params={"messages": ()})
    with pytest.raises(TypeError):
        s.continue_(eng, params={"temprature": 0})


def test_no_key_is_ever_stored() -> None:
    secret = "sk-test-0123456789abcdefSECRET"
    eng = engine([tool_call("transfer_funds", {"to": "Bob"}, id="t")])
    s, _ = allm.Session.start(eng, "Pay", api_key=secret)
    assert secret.encode() not in s.to_json() and secret.encode() not in pickle.dumps(s)
    assert secret not in repr(s)


# ------------------------------------------------------------------------------ streaming sessions


def test_stream_then_finish() -> None:
    eng = engine([tool_call("get_weather", {"city": "Oslo"})], [text("Co"), text("ld.")])
    s = allm.Session.new("Oslo?")
    stream = s.stream_continue(eng)
    deltas = [ev.delta for ev in stream if isinstance(ev, E.TextDelta)]
    s2, r = stream.finish()
    assert deltas == ["Co", "ld."] and s2.status == "completed" and r.final_response.output_text == "Cold."  # type: ignore[union-attr]


def test_finish_consumes_the_rest() -> None:
    eng = engine(["All done."])
    s2, r = allm.Session.stream_start(eng, "hi").finish()
    assert s2.status == "completed" and r.halted_reason == "completed"


def test_stopping_a_reply_drops_the_turn() -> None:
    eng = engine([text("Hel"), text("lo")])
    s = FIXTURES["awaiting_user"]()
    stream = s.stream_reply(eng, "savings")
    for ev in stream:
        if isinstance(ev, E.TextDelta):
            break
    stream.close()
    s2, r = stream.finish()
    assert r.halted_reason == "cancelled" and s2 == s  # nothing happened, the reply included


def test_stopping_after_a_turn_keeps_it() -> None:
    eng = engine([tool_call("get_weather", {"city": "Oslo"})], [text("Co"), text("ld")])
    with allm.Session.new("Oslo?").stream_continue(eng) as stream:
        for ev in stream:
            if isinstance(ev, E.TextDelta):
                break
    s2, r = stream.finish()
    assert r.halted_reason == "cancelled" and s2.status == "idle" and roles(s2) == ["user", "assistant", "tool"]
    s3, r3 = allm.Session.new("Oslo?").stream_step(engine([text("a"), text("b")])).finish()
    assert r3.halted_reason == "completed" and s3.status == "completed"


def test_reducer_folds_events_elsewhere() -> None:
    eng = engine([tool_call("which_city", {}, id="q")])
    s = allm.Session.new("Weather?")
    events = list(allm.stream(eng, s.thread, session_id=s.id))
    from allm.loop import ChatCollector
    from allm.session import SessionReducer

    reducer = SessionReducer(s, ChatCollector(s.thread))
    for ev in events:
        reducer.apply(ev)
    s2, r = reducer.finalize()
    assert s2.status == "awaiting_user" and r.pending_tool_call_id == "q"


# ------------------------------------------------------------------------------ async


async def test_async_operations() -> None:
    eng = engine(
        [tool_call("transfer_funds", {"to": "Bob"}, id="t")],
        ["Sent."],
        [tool_call("which_city", {}, id="q")],
        [text("Par"), text("is.")],
        [tool_call("get_weather", {"city": "Oslo"})],
    )
    s, r = await allm.Session.astart(eng, "Pay Bob")
    assert s.status == "awaiting_tools"
    s = await s.aapprove(eng, "t")
    s, r = await s.acontinue(eng)
    assert s.status == "completed" and r.final_response.output_text == "Sent."  # type: ignore[union-attr]
    s, r = await s.areply(eng, "Weather?")
    assert s.status == "awaiting_user"
    stream = s.astream_reply(eng, "Paris")
    deltas = [ev.delta async for ev in stream if isinstance(ev, E.TextDelta)]
    s, r = await stream.finish()
    assert deltas == ["Par", "is."] and s.status == "completed"
    s, st_ = await s.astep(eng)
    assert st_.halted_reason is None and s.status == "idle"
    s_new, _ = await allm.Session.astream_start(fake_engine(["hi"]), "x").finish()
    assert s_new.status == "completed"


async def test_async_stop_early() -> None:
    eng = engine([text("a"), text("b")])
    s = allm.Session.new("x")
    async with s.astream_continue(eng) as stream:
        async for ev in stream:
            if isinstance(ev, E.TextDelta):
                break
    s2, r = await stream.finish()
    assert r.halted_reason == "cancelled" and s2 == s


# ------------------------------------------------------------------------------ storage


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_stored_fixtures_still_load(name: str) -> None:
    data = (HERE / "fixtures" / "sessions" / f"{name}.json").read_bytes()
    assert orjson.loads(data)["allm_schema"] == 1
    loaded = allm.Session.from_json(data)
    assert loaded == FIXTURES[name]()
    assert_stores(loaded)


def test_stored_fixture_can_be_resumed() -> None:
    data = (HERE / "fixtures" / "sessions" / "awaiting_tools.json").read_bytes()
    s = allm.Session.from_json(data).submit_tool_result("call_t1", {"status": "sent"})
    eng = engine(["Sent 50 EUR to Bob."])
    s, r = s.continue_(eng)
    assert s.status == "completed" and r.final_response.output_text == "Sent 50 EUR to Bob."  # type: ignore[union-attr]


def test_from_json_rejects_other_values() -> None:
    with pytest.raises(allm.ValidationError):
        allm.Session.from_json(codec.dumps(allm.Thread()))
    with pytest.raises(allm.ValidationError):
        allm.Session.from_json(b'{"allm_schema": 99, "type": "Session", "value": {}}')


# ------------------------------------------------------------------------------ resuming in another process


def test_resume_in_another_process(tmp_path: Path) -> None:
    eng = engine(
        [text("I will send it."), tool_call("transfer_funds", {"to": "Bob", "amount_eur": 50}, id="call_t1")],
        ["Done: 50 EUR sent to Bob."],
        context={"tenant": "acme"},
    )
    s, r = allm.Session.start(eng, "Send 50 EUR to Bob.")
    assert s.status == "awaiting_tools" and r.halted_reason == "manual_tool_calls"
    (tmp_path / "engine.json").write_bytes(codec.dumps(eng))
    (tmp_path / "session.json").write_bytes(s.to_json())
    proc = subprocess.run(
        [sys.executable, str(HERE / "resume_worker.py"), str(tmp_path / "engine.json"), str(tmp_path / "session.json"), str(tmp_path / "out.json")],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert proc.returncode == 0, proc.stderr
    child_pid, halted = proc.stdout.split()
    assert halted == "completed" and int(child_pid) != os.getpid()
    out = allm.Session.from_json((tmp_path / "out.json").read_bytes())
    assert out.id == s.id and out.status == "completed"
    assert out.thread.messages[: len(s.thread)] == s.thread.messages
    tool_msg, final = out.thread.messages[len(s.thread) :]
    result = orjson.loads(tool_msg.text)
    assert result["worker_pid"] == int(child_pid) and result["tenant"] == "acme" and result["session_id"] == s.id
    assert tool_msg.tool_call_id == "call_t1" and final.text == "Done: 50 EUR sent to Bob."


# ------------------------------------------------------------------------------ property: reachable sessions store losslessly

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)

scripts = st.sampled_from(
    [
        "text",
        "weather",
        "two_tools",
        "manual",
        "ask",
        "ask_and_manual",
        "boom",
        "halt",
        "stream_error",
        "bad_json",
        "unknown",
    ]
)


def script_for(kind: str, n: int, words: str) -> list[Any]:
    return {
        "text": [text(words or "ok")],
        "weather": [tool_call("get_weather", {"city": words or "X"}, id=f"w{n}")],
        "two_tools": [tool_call("get_weather", {"city": "A"}, id=f"a{n}"), tool_call("get_weather", {"city": "B"}, id=f"b{n}")],
        "manual": [tool_call("transfer_funds", {"to": words or "Bob"}, id=f"t{n}")],
        "ask": [tool_call("which_city", {}, id=f"q{n}")],
        "ask_and_manual": [tool_call("which_city", {}, id=f"q{n}"), tool_call("transfer_funds", {"to": "B"}, id=f"t{n}")],
        "boom": [tool_call("boom", {}, id=f"x{n}")],
        "halt": [tool_call("book", {}, id=f"h{n}")],
        "stream_error": [text(words), error("provider_unavailable", "overloaded")],
        "bad_json": [tool_call("get_weather", raw_arguments='{"city": ', id=f"j{n}")],
        "unknown": [tool_call("nope", {}, id=f"u{n}")],
    }[kind]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), context=st.dictionaries(st.text(max_size=5), json_values, max_size=3), meta=st.dictionaries(st.text(max_size=5), json_values, max_size=3))
def test_any_reachable_session_round_trips(data: st.DataObject, context: dict[str, Any], meta: dict[str, Any]) -> None:
    counter = iter(range(10_000))

    def respond(request: allm.Request) -> list[Any]:
        kind = data.draw(scripts, label="script")
        return script_for(kind, next(counter), data.draw(st.text(max_size=6), label="words"))

    eng = allm.Engine(adapter=Fake(function=respond), model="fake", tools=TOOLS)
    s = allm.Session.new(data.draw(st.text(max_size=10), label="prompt"), context=context, metadata=meta)
    assert_stores(s)
    for _ in range(data.draw(st.integers(1, 6), label="ops")):
        legal = s.legal_operations()
        op = data.draw(st.sampled_from(legal), label="op")
        if op == "reply":
            s, _r = s.reply(eng, data.draw(st.text(max_size=10), label="reply"), max_turns=3)
        elif op == "continue_":
            s, _r = s.continue_(eng, max_turns=3)
        elif op == "step":
            s, _s = s.step(eng)
        elif op == "submit_tool_result":
            call = data.draw(st.sampled_from(s.pending_tool_calls), label="call")
            s = s.submit_tool_result(call.id, data.draw(json_values, label="result"))
        elif op == "submit_tool_results":
            s = s.submit_tool_results({c.id: "ok" for c in s.pending_tool_calls})
        elif op == "approve":
            s = s.approve(eng, s.pending_tool_calls[0].id)
        elif op == "reject":
            s = s.reject(s.pending_tool_calls[0].id)
        elif op == "recover":
            s = s.recover()
        assert_stores(s)
        event(f"reached {s.status}")
        event(f"ran {op}")
        # Invariants of every reachable session.
        assert (s.status == "awaiting_tools") == bool(s.pending_tool_calls)
        assert (s.status == "error") == ("error" in s.metadata)
        if s.status == "awaiting_user":
            assert s.pending_question is not None and s.thread.messages[-1].metadata.get("ask_user") is True
