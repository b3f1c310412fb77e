"""The call surface on the Fake provider: folds, filters, retries, deadlines, async twins."""

from __future__ import annotations

import asyncio
import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import allm
from allm.events import (
    Error,
    MessageCompleted,
    MessageStarted,
    RawChunk,
    ReasoningCompleted,
    ReasoningDelta,
    TextCompleted,
    TextDelta,
    ToolCallCompleted,
    ToolCallDelta,
    ToolCallStarted,
)
from allm.fold import Collector, fold_response
from allm.providers import Fake
from allm.testing import (
    delay,
    error,
    event_types,
    fake_engine,
    finish,
    raw_chunk,
    reasoning,
    text,
    tool_call,
    tool_call_delta,
    usage,
)

FAST = allm.RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.002, jitter=0.0)


def test_generate_is_the_fold_of_stream_generate() -> None:
    script = [text("Hel"), text("lo"), usage(3, 2), finish("stop")]
    streamed = list(allm.stream_generate(fake_engine(script), "hi"))
    assert event_types(streamed) == ["MessageStarted", "TextDelta", "TextDelta", "RawChunk", "TextCompleted", "MessageCompleted"]
    resp = allm.generate(fake_engine(script), "hi")
    folded = fold_response(streamed, request_id=resp.request_id)
    assert resp == folded
    assert resp.output_text == "Hello" and resp.finish_reason == "stop"
    assert resp.usage == allm.Usage(3, 2, total_tokens=5)
    assert resp.request_id and len(resp.request_id) == 22


def test_plain_strings_are_text_and_default_finish_is_stop() -> None:
    resp = allm.generate(fake_engine(["a", "b"]), "x")
    assert resp.output_text == "ab" and resp.finish_reason == "stop" and resp.raw_finish_reason == "stop"
    assert resp.usage == allm.Usage()  # unreported: None, never 0
    assert resp.id == "fake-1" and resp.model == "fake"


def test_scripts_are_one_per_call_and_requests_are_recorded() -> None:
    fake = Fake(scripts=[["one"], ["two"]])
    engine = allm.Engine(adapter=fake, model="m1")
    assert allm.generate(engine, "first").output_text == "one"
    assert allm.generate(engine, allm.request("second", model="m2", temperature=0.5)).output_text == "two"
    assert [r.messages[0].text for r in fake.requests] == ["first", "second"]
    assert fake.requests[0].model == "m1" and fake.requests[1].model == "m2" and fake.requests[1].temperature == 0.5
    assert fake.calls == 2 and fake.remaining == 0
    with pytest.raises(allm.AdapterError, match="no scripted response for call 3: 2 call") as info:
        allm.generate(engine, "third")
    assert info.value.reason == "no_scripted_response"


def test_single_script_and_function_form() -> None:
    fake = Fake(script=["only"])
    engine = allm.Engine(adapter=fake)
    assert allm.generate(engine, "a").output_text == "only"
    with pytest.raises(allm.AdapterError):
        allm.generate(engine, "b")
    echo = Fake(function=lambda req: f"you said {req.messages[-1].text}")
    e2 = allm.Engine(adapter=echo)
    assert allm.generate(e2, "x").output_text == "you said x"
    assert allm.generate(e2, "y").output_text == "you said y"
    many = Fake(function=lambda req: [text("a"), tool_call("t", {"n": len(req.messages)})])
    assert allm.generate(allm.Engine(adapter=many), "z").tool_calls[0].arguments == {"n": 1}


def test_fake_argument_errors() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Fake()
    with pytest.raises(ValueError, match="exactly one"):
        Fake(script=["a"], scripts=[["b"]])
    with pytest.raises(TypeError, match=r"script\[1\]"):
        Fake(script=["a", 3])
    with pytest.raises(TypeError, match="list of scripts"):
        Fake(scripts="abc")  # type: ignore[arg-type]
    bad = Fake(function=lambda req: 42)
    with pytest.raises(TypeError):
        allm.generate(allm.Engine(adapter=bad), "x")


def test_tool_calls_whole_and_streamed() -> None:
    engine = fake_engine(
        [
            text("Let me check."),
            tool_call("get_weather", {"city": "Paris"}, id="call_a"),
            tool_call_delta("call_b", '{"ci', name="get_time"),
            tool_call_delta("call_b", 'ty": "Oslo"}'),
        ]
    )
    events = list(allm.stream_generate(engine, "x"))
    assert event_types(events) == [
        "MessageStarted",
        "TextDelta",
        "ToolCallStarted",
        "ToolCallDelta",
        "ToolCallCompleted",
        "ToolCallStarted",
        "ToolCallDelta",
        "ToolCallDelta",
        "TextCompleted",
        "ToolCallCompleted",
        "MessageCompleted",
    ]
    resp = fold_response(events)
    assert [(t.id, t.name, dict(t.arguments)) for t in resp.tool_calls] == [
        ("call_a", "get_weather", {"city": "Paris"}),
        ("call_b", "get_time", {"city": "Oslo"}),
    ]
    assert resp.finish_reason == "tool_calls" and resp.output_text == "Let me check."


def test_generated_tool_ids_are_deterministic_per_fake() -> None:
    def ids() -> list[str]:
        e = fake_engine([tool_call("a"), tool_call("b")], [tool_call("c")])
        return [t.id for t in allm.generate(e, "x").tool_calls] + [t.id for t in allm.generate(e, "y").tool_calls]

    assert ids() == ids() == ["call_1", "call_2", "call_3"]


def test_invalid_json_arguments_are_kept_for_the_loop() -> None:
    tc = allm.generate(fake_engine([tool_call("t", raw_arguments="{not json")]), "x").tool_calls[0]
    assert tc.arguments == {} and tc.raw_arguments == "{not json" and tc.parse_error


def test_reasoning_with_signature() -> None:
    events = list(allm.stream_generate(fake_engine([reasoning("hmm", signature="sig"), text("ok")]), "x"))
    assert isinstance(events[1], ReasoningDelta)
    done = next(e for e in events if isinstance(e, ReasoningCompleted))
    assert done.part.text == "hmm" and done.part.signature == "sig" and done.part.provider == "fake"
    resp = fold_response(events)
    assert resp.reasoning_text == "hmm" and resp.output_text == "ok"
    assert isinstance(resp.message.content, tuple)


def test_finish_reasons_map_and_keep_raw() -> None:
    assert allm.generate(fake_engine(["x", finish("length")]), "x").finish_reason == "length"
    r = allm.generate(fake_engine(["x", finish("weird")]), "x")
    assert (r.finish_reason, r.raw_finish_reason) == ("other", "weird")
    r = allm.generate(fake_engine([tool_call("t"), finish("stop")]), "x")
    assert (r.finish_reason, r.raw_finish_reason) == ("tool_calls", "stop")


# ------------------------------------------------------------------------------ filters and hooks


def test_stream_filters_and_on_event() -> None:
    script = [text("a"), tool_call_delta("c1", "{}", name="t"), raw_chunk({"x": 1}), usage(1, 1), text("b")]
    seen: list[Any] = []
    events = list(
        allm.stream_generate(
            fake_engine(script), "x", emit_text_deltas=False, emit_tool_deltas=False, on_event=seen.append
        )
    )
    kinds = {type(e) for e in events}
    assert TextDelta not in kinds and ToolCallDelta not in kinds
    # raw chunks are dropped unless asked for, except those carrying usage
    raws = [e for e in events if isinstance(e, RawChunk)]
    assert len(raws) == 1 and raws[0].usage == allm.Usage(1, 1, total_tokens=2)
    # on_event saw everything before filtering
    assert {TextDelta, ToolCallDelta} <= {type(e) for e in seen}
    assert sum(isinstance(e, RawChunk) for e in seen) == 2
    # the fold is the same with or without deltas
    resp = fold_response(events)
    assert resp.output_text == "ab" and resp.tool_calls[0].name == "t"
    assert resp == fold_response(list(allm.stream_generate(fake_engine(script), "x")))
    with_raw = list(allm.stream_generate(fake_engine(script), "x", include_raw_chunks=True))
    assert [e.data for e in with_raw if isinstance(e, RawChunk) and e.usage is None] == [{"x": 1}]


def test_on_event_exceptions_reach_the_consumer() -> None:
    def boom(ev: Any) -> None:
        raise RuntimeError("hook failed")

    with pytest.raises(RuntimeError, match="hook failed"):
        allm.generate(fake_engine(["x"]), "x", on_event=boom)


# ------------------------------------------------------------------------------ errors, retries, deadlines


def test_mid_stream_error_keeps_partial_output() -> None:
    resp = allm.generate(fake_engine([text("partial"), usage(5, 1), error("provider_unavailable", "overloaded")]), "x")
    assert resp.finish_reason == "error" and resp.output_text == "partial"
    err = resp.metadata["error"]
    assert isinstance(err, allm.AdapterError) and err.reason == "provider_unavailable"
    assert resp.usage.input_tokens == 5


def test_error_before_any_event_raises_after_retries() -> None:
    retries: list[allm.RetryInfo] = []
    engine = fake_engine(
        [error("rate_limited", status=429, before_stream=True)],
        [error("provider_unavailable", status=503, before_stream=True)],
        ["finally"],
        retry=FAST,
    )
    resp = allm.generate(engine, "x", on_retry=retries.append)
    assert resp.output_text == "finally"
    assert [(r.attempt, r.error.reason) for r in retries] == [(1, "rate_limited"), (2, "provider_unavailable")]
    assert all(0 < r.delay <= 0.002 for r in retries)

    exhausted = fake_engine(*[[error("rate_limited", before_stream=True)]] * 3, retry=FAST)
    with pytest.raises(allm.AdapterError) as info:
        allm.generate(exhausted, "x")
    assert info.value.reason == "rate_limited"
    assert exhausted.adapter.calls == 3  # type: ignore[attr-defined]


def test_client_errors_are_not_retried() -> None:
    engine = fake_engine([error("invalid_request", status=400, before_stream=True)], ["never"], retry=FAST)
    with pytest.raises(allm.AdapterError, match="invalid_request"):
        allm.generate(engine, "x")
    assert engine.adapter.calls == 1  # type: ignore[attr-defined]


def test_in_stream_error_before_content_is_retried() -> None:
    # The provider accepted the call (MessageStarted) and then failed: nothing reached the caller.
    engine = fake_engine([error("provider_unavailable")], ["ok"], retry=FAST)
    events = list(allm.stream_generate(engine, "x"))
    assert fold_response(events).output_text == "ok"
    assert sum(isinstance(e, MessageStarted) for e in events) == 1


def test_retry_after_is_honoured_and_capped() -> None:
    seen: list[float] = []
    policy = allm.RetryPolicy(max_attempts=2, base_delay=5, retry_after_cap=0.01, jitter=0)
    engine = fake_engine([error("rate_limited", retry_after=30.0, before_stream=True)], ["ok"], retry=policy)
    assert allm.generate(engine, "x", on_retry=lambda r: seen.append(r.delay)).output_text == "ok"
    assert seen == [0.01]


def test_idle_deadline_on_a_silent_stream() -> None:
    t = allm.Timeouts(first_event=5, idle=0.05)
    resp = allm.generate(fake_engine([text("a"), delay(5), text("b")]), "x", timeouts=t)
    assert resp.finish_reason == "error" and resp.output_text == "a"
    assert resp.metadata["error"].reason == "timeout" and "idle" in resp.metadata["error"].message


def test_first_event_deadline_raises() -> None:
    t = allm.Timeouts(first_event=0.05, idle=5)
    with pytest.raises(allm.AdapterError, match="first-event"):
        allm.generate(fake_engine([delay(5), text("late")]), "x", timeouts=t, retry=allm.RetryPolicy(max_attempts=1))


def test_short_delays_within_deadlines() -> None:
    assert allm.generate(fake_engine([delay(0.01), "ok"]), "x").output_text == "ok"


def test_cancelled_stream_folds_to_partial() -> None:
    stream = allm.stream_generate(fake_engine([text("a"), text("b"), text("c")]), "x")
    c = Collector()
    for ev in stream:
        c.apply(ev)
        if isinstance(ev, TextDelta) and ev.delta == "b":
            break
    stream.close()
    resp = c.response()
    assert resp.output_text == "ab" and resp.finish_reason is None
    assert resp.metadata == {"halted_reason": "cancelled"}


def test_event_stream_is_a_context_manager() -> None:
    with allm.stream_generate(fake_engine(["a", "b"]), "x") as s:
        first = next(s)
    assert isinstance(first, MessageStarted)
    with pytest.raises(StopIteration):
        next(s)


# ------------------------------------------------------------------------------ engine resolution


def test_engine_defaults_tools_and_model() -> None:
    fake = Fake(scripts=[["a"], ["b"]])
    t1 = allm.Tool("lookup", "find", {"type": "object"})
    t1b = allm.Tool("lookup", "find better", {"type": "object"})
    t2 = allm.Tool("other")
    engine = allm.Engine(adapter=fake, model="base", tools=[t1, t2], defaults={"temperature": 0.0, "max_tokens": 9})
    allm.generate(engine, allm.request("x", temperature=0.7, tools=[t1b]))
    req = fake.requests[0]
    assert req.model == "base" and req.temperature == 0.7 and req.max_tokens == 9
    assert [t.description for t in req.tools] == ["find better", ""]
    assert engine.with_model("m2").model == "m2" and engine.model == "base"
    assert engine.tool("other") is t2 and engine.tool("none") is None
    with pytest.raises(ValueError, match="defaults"):
        allm.Engine(adapter=fake, defaults={"api_key": "x"})


def test_preflight_errors_raise_at_call_time() -> None:
    with pytest.raises(TypeError, match="Engine"):
        allm.stream_generate("not an engine", "x")  # type: ignore[arg-type]
    with pytest.raises(allm.EngineError, match="not an allm adapter"):
        allm.stream_generate(allm.Engine(adapter=object()), "x")  # type: ignore[arg-type]
    from allm.providers import OpenAI

    with pytest.raises(allm.EngineError, match="no model"):
        allm.stream_generate(allm.Engine(adapter=OpenAI()), "x", api_key="k")


def test_request_builders() -> None:
    thread = allm.Thread([allm.system("s"), allm.user("u")])
    assert allm.request(thread).messages == thread.messages
    assert allm.request("hi").messages == (allm.user("hi"),)
    with pytest.raises(TypeError):
        allm.request(["not a message"])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        allm.request("x", nonsense=1)
    with pytest.raises(ValueError, match="role"):
        allm.Message("robot", "x")  # type: ignore[arg-type]
    m = allm.user([allm.TextPart("a"), allm.TextPart("b")])
    assert m.text == "ab" and len(m.parts) == 2
    assert allm.tool_result("c1", "42", is_error=True).is_error
    assert thread.add(allm.assistant("a")).last == allm.assistant("a") and len(thread) == 2


def test_fake_pickles_with_its_state() -> None:
    fake = Fake(scripts=[["a"], ["b"]])
    allm.generate(allm.Engine(adapter=fake), "x")
    copy = pickle.loads(pickle.dumps(fake))
    assert copy.calls == 1 and allm.generate(allm.Engine(adapter=copy), "y").output_text == "b"


def test_list_models_on_fake() -> None:
    assert allm.list_models(fake_engine(["x"], model="mine")) == ["mine"]


# ------------------------------------------------------------------------------ async twins


async def test_agenerate_is_the_fold_of_astream_generate() -> None:
    script = [text("x"), tool_call("t", {"a": 1}), usage(1, 2)]
    events = [e async for e in allm.astream_generate(fake_engine(script), "q")]
    sync_events = list(allm.stream_generate(fake_engine(script), "q"))
    assert events == sync_events
    resp = await allm.agenerate(fake_engine(script), "q")
    assert resp == fold_response(events, request_id=resp.request_id)


async def test_async_delay_deadline_and_retry() -> None:
    t = allm.Timeouts(idle=0.05)
    resp = await allm.agenerate(fake_engine([text("a"), delay(5)]), "x", timeouts=t)
    assert resp.finish_reason == "error" and resp.metadata["error"].reason == "timeout"
    engine = fake_engine([error("rate_limited", before_stream=True)], ["ok"], retry=FAST)
    assert (await allm.agenerate(engine, "x")).output_text == "ok"
    with pytest.raises(allm.AdapterError):
        await allm.agenerate(fake_engine([error("authentication_failed", status=401, before_stream=True)]), "x")


async def test_async_stream_context_and_cancel() -> None:
    async with allm.astream_generate(fake_engine([text("a"), delay(10), text("b")]), "x") as s:
        first = await s.__anext__()
        assert isinstance(first, MessageStarted)
    task = asyncio.create_task(allm.agenerate(fake_engine([text("a"), delay(10)]), "x"))
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_completed_events_expose_tool_call_fields() -> None:
    ev = next(e for e in allm.stream_generate(fake_engine([tool_call("t", {"a": 1}, id="c9")]), "x") if isinstance(e, ToolCallCompleted))
    assert (ev.tool_call_id, ev.name, dict(ev.arguments)) == ("c9", "t", {"a": 1})
    started = [e for e in allm.stream_generate(fake_engine([tool_call("t")]), "x") if isinstance(e, ToolCallStarted)]
    assert started[0].index == 0
    assert isinstance(list(allm.stream_generate(fake_engine(["x"]), "x"))[-1], MessageCompleted)
    assert isinstance(Error(allm.AdapterError("x")).error, allm.AllmError)
    assert TextCompleted("a").id is None


# ------------------------------------------------------------------------------ plain replies


_plain_entries = st.lists(
    st.one_of(
        st.builds(allm.testing.text, st.sampled_from(["", "Hi", " there", "é"])),
        st.builds(
            lambda name, args, id, raw: tool_call(name, args, id=id, raw_arguments=raw),
            st.sampled_from(["add", "get_weather"]),
            st.none() | st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 3) | st.text(max_size=3), max_size=2),
            st.none() | st.sampled_from(["", "call_1", "call_2", "x"]),
            st.none() | st.sampled_from(["", "{", "[1]", '{"a": 1}', "  "]),
        ),
        st.builds(finish, st.sampled_from(["stop", "tool_calls", "length", "weird"])),
    ),
    max_size=5,
)


@given(_plain_entries, st.integers(0, 3))
@settings(max_examples=400, deadline=None)
def test_a_plain_reply_gives_the_assemblers_events(script: list[Any], index: int) -> None:
    from allm.providers._fake_plain import play_plain
    from allm.providers._fake_script import as_entries

    entries = as_entries(script, "script")
    direct, assembled = Fake(script=[]), Fake(script=[])
    got = list(play_plain(entries, index, "m", direct._next_tool_id))
    want = list(assembled._assembled(entries, index, "m"))
    assert got == want
    assert [type(e) for e in got] == [type(e) for e in want]
    assert direct._tool_ids == assembled._tool_ids  # the same automatic ids were drawn


def test_the_fake_plays_plain_replies_directly() -> None:
    from allm.providers._fake_script import as_entries

    fake = Fake(script=[])
    plain = as_entries(["Hi", tool_call("add", {"a": 1}), finish()], "s")
    other = as_entries(["Hi", usage(input_tokens=1)], "s")
    assert fake._play(plain, 0, "m").__name__ == "play_plain"  # type: ignore[attr-defined]
    assert fake._play(other, 0, "m").__name__ == "_assembled"  # type: ignore[attr-defined]
