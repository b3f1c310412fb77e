"""allm.telemetry records on the Fake: what each operation emits, in which order, with which facts."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import allm
from allm import telemetry
from allm.providers import Fake
from allm.testing import delay, error, image, tool_call, usage
from tests.telemetry.conftest import Records

FAST = allm.RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.002, jitter=0)
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


def engine(*scripts: Any, **kw: Any) -> allm.Engine:
    return allm.Engine(adapter=Fake(scripts=list(scripts), **kw), model="fake-1", retry=FAST)


def phases(records: Records) -> list[tuple[str, str]]:
    return [(r.kind, r.phase) for r in records]


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


# ------------------------------------------------------------------------------ off


def test_off_by_default_and_nothing_is_wrapped() -> None:
    assert not telemetry.active
    assert telemetry.handlers() == ()
    s = allm.stream_generate(engine(["hi"]), "x")
    assert s._gen.gi_code.co_name == "run"  # type: ignore[attr-defined]  # the shell itself, no layer
    s.close()
    c = allm.stream(engine(["hi"]), "x")
    assert c._gen.gi_code.co_name == "_drive"  # type: ignore[attr-defined]
    c.close()


def test_add_remove_and_scope_toggle_the_flag() -> None:
    seen: list[telemetry.Record] = []
    with telemetry.scope(seen.append):
        assert telemetry.active
        allm.generate(engine(["hi"]), "x")
    assert not telemetry.active
    allm.generate(engine(["hi"]), "x")
    assert [r.phase for r in seen] == ["start", "stop"]
    h = telemetry.add_handler(seen.append)
    telemetry.add_handler(h)  # twice: once
    assert telemetry.handlers() == (h,)
    telemetry.remove_handler(h)
    assert not telemetry.active
    with pytest.raises(TypeError):
        telemetry.add_handler(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError), telemetry.scope(42):  # type: ignore[arg-type]
        pass
    assert not telemetry.active


def test_a_scope_covers_only_its_own_context() -> None:
    seen: list[telemetry.Record] = []
    other: list[str] = []
    go, done = threading.Event(), threading.Event()

    def elsewhere() -> None:
        go.wait(10)
        allm.generate(engine(["hi"]), "x")
        other.append("called")
        done.set()

    t = threading.Thread(target=elsewhere)
    t.start()
    with telemetry.scope(seen.append):
        go.set()
        assert done.wait(10)
    t.join()
    assert other == ["called"] and seen == []  # the other thread's call is not this scope's


# ------------------------------------------------------------------------------ model calls


def test_generate_records(records: Records) -> None:
    resp = allm.generate(engine(["Hello", " there", usage(7, 2)]), allm.request("a-secret-prompt", temperature=0.5))
    assert phases(records) == [("generate", "start"), ("generate", "stop")]
    start, stop = records
    assert start.id == stop.id and start.parent_id is None
    assert start.operation == "chat" and start.provider == "fake" and start.model == "fake-1"
    assert start.request_id == stop.request_id == resp.request_id
    assert start.request is not None and start.request.temperature == 0.5
    assert start.duration is None and stop.duration is not None and stop.duration > 0
    assert stop.usage == resp.usage and stop.usage.input_tokens == 7
    assert stop.finish_reason == "stop" and stop.response_id == resp.id and stop.response_model == resp.model
    assert stop.time_to_first_event is not None and 0 <= stop.time_to_first_event <= stop.duration
    assert stop.attempts == 1 and not stop.cancelled and stop.error_reason is None and start.stream is True
    assert stop.output is not None and stop.output.text == "Hello there"
    assert "Hello there" not in repr(stop) and "a-secret-prompt" not in repr(start)  # content stays out of reprs


def test_stream_records_and_cancellation(records: Records) -> None:
    events = list(allm.stream_generate(engine(["a", "b"]), "x"))
    assert events and phases(records) == [("stream", "start"), ("stream", "stop")]
    records.clear()
    s = allm.stream_generate(engine(["a", "b", "c"]), "x")
    assert records == []  # nothing starts before the stream is iterated
    next(s)
    s.close()
    assert phases(records) == [("stream", "start"), ("stream", "stop")]
    assert records[1].cancelled and records[1].finish_reason is None
    records.clear()
    for _ in allm.stream_generate(engine(["a", "b", "c"]), "x"):
        break  # leaving a for loop closes the stream
    assert records[-1].phase == "stop" and records[-1].cancelled


def test_retries_then_success(records: Records) -> None:
    eng = engine([error("rate_limited", before_stream=True)], [error("provider_unavailable", before_stream=True)], ["ok"])
    assert allm.generate(eng, "x").output_text == "ok"
    assert phases(records) == [("generate", p) for p in ("start", "retry", "retry", "stop")]
    r1, r2 = records[1], records[2]
    assert (r1.attempt, r1.error_reason, r1.error_type) == (1, "rate_limited", "AdapterError")
    assert (r2.attempt, r2.error_reason) == (2, "provider_unavailable")
    assert r1.retry_delay is not None and r1.retry_delay >= 0
    assert records[-1].attempts == 3 and r1.id == records[0].id


def test_on_retry_still_sees_each_retry(records: Records) -> None:
    seen: list[allm.RetryInfo] = []
    eng = engine([error("rate_limited", before_stream=True)], ["ok"])
    allm.generate(eng, "x", on_retry=seen.append)
    assert [i.attempt for i in seen] == [1] and len(records.of("generate", "retry")) == 1


def test_failure_before_and_after_the_first_event(records: Records) -> None:
    with pytest.raises(allm.AdapterError):
        allm.generate(engine([error("invalid_request", "bad: secret prompt", before_stream=True)]), "x")
    assert phases(records) == [("generate", "start"), ("generate", "exception")]
    exc = records[-1]
    assert exc.error_reason == "invalid_request" and exc.error_type == "AdapterError" and exc.duration is not None
    assert isinstance(exc.error, allm.AdapterError)
    records.clear()
    resp = allm.generate(engine(["partial", error("provider_unavailable")]), "x")
    assert resp.finish_reason == "error"
    assert phases(records) == [("generate", "start"), ("generate", "exception")]
    assert records[-1].error_reason == "provider_unavailable" and records[-1].time_to_first_event is not None


def test_async_model_calls(records: Records) -> None:
    async def main() -> None:
        await allm.agenerate(engine(["a", usage(1, 1)]), "x")
        s = allm.astream_generate(engine(["a", delay(0.01), "b"]), "x")
        await s.__anext__()
        await s.aclose()

        async def consume() -> None:
            async for _ in allm.astream_generate(engine(["a", delay(30), "b"]), "x"):
                pass

        task = asyncio.ensure_future(consume())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert phases(records) == [("generate", "start"), ("generate", "stop")] + [("stream", "start"), ("stream", "stop")] * 2
    assert records[1].usage is not None and records[1].usage.output_tokens == 1
    assert records[3].cancelled and records[5].cancelled


def test_cancelled_agenerate_and_generate_facts(records: Records) -> None:
    # generate reads its call's facts from its own fold: the same as a stream's watch gives
    async def main() -> None:
        task = asyncio.ensure_future(allm.agenerate(engine(["a", delay(30), "b"]), "x"))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert phases(records) == [("generate", "start"), ("generate", "stop")]
    assert records[1].cancelled and records[1].time_to_first_event is not None
    records.clear()
    script = ["Hel", "lo", usage(3, 2)]
    resp = allm.generate(engine(script), "x")
    for _ev in allm.stream_generate(engine(script), "x"):
        pass
    gen, stream = records.one("generate", "stop"), records.one("stream", "stop")
    for r in (gen, stream):
        assert (r.response_id, r.response_model, r.usage, r.finish_reason) == (resp.id, resp.model, resp.usage, "stop")
        assert r.output == resp.message and not r.cancelled and r.attempts == 1


# ------------------------------------------------------------------------------ the tool loop


def test_chat_tree_and_ids(records: Records) -> None:
    eng = engine([tool_call("add", {"a": 1, "b": 2})], ["3", usage(10, 1)])
    result = allm.chat(eng, "1+2?", tools=[allm.function_tool(add)], session_id="ses_1")
    assert result.halted_reason == "completed"
    assert phases(records) == [
        ("chat", "start"),
        ("stream", "start"),
        ("stream", "stop"),
        ("tool", "start"),
        ("tool", "stop"),
        ("stream", "start"),
        ("stream", "stop"),
        ("chat", "stop"),
    ]
    chat = records[0]
    assert all(r.parent_id == chat.id for r in records[1:-1])
    assert all(r.session_id == "ses_1" for r in records)
    first, second = records.of("stream", "stop")
    assert first.request_id == result.steps[0].response.request_id
    assert second.request_id == result.steps[1].response.request_id
    tool = records.one("tool", "stop")
    assert (tool.tool_name, tool.tool_call_id, tool.request_id) == ("add", "call_1", first.request_id)
    assert tool.tool_arguments == {"a": 1, "b": 2} and tool.tool_result == 3
    stop = records[-1]
    assert stop.finish_reason == "completed" and stop.usage is not None and stop.usage.input_tokens == 10
    assert stop.output is not None and stop.output.text == "3"


def test_step_kind(records: Records) -> None:
    allm.step(engine([tool_call("add", {"a": 1, "b": 2})]), "1+2?", tools=[allm.function_tool(add)])
    assert [r.kind for r in records if r.parent_id is None] == ["step", "step"]
    assert records[-1].finish_reason is None  # the step would go on


def test_tool_failures(records: Records) -> None:
    def boom(x: int) -> int:
        """Fail."""
        raise RuntimeError("no")

    def slow(x: int) -> int:
        """Sleep."""
        threading.Event().wait(2)
        return x

    eng = engine(
        [tool_call("boom", {"x": 1}), tool_call("slow", {"x": 1}), tool_call("boom", {"x": "not a number"})],
        ["done"],
    )
    allm.chat(eng, "go", tools=[allm.function_tool(boom), allm.function_tool(slow)], tool_timeout=0.2)
    failed = records.of("tool", "exception")
    assert sorted((r.tool_name, r.error_reason) for r in failed) == [
        ("boom", "handler_raised"),
        ("boom", "invalid_arguments"),
        ("slow", "timeout"),
    ]
    assert all(r.error_type == "ToolError" for r in failed)
    assert len(records.of("tool", "start")) == 3
    records.clear()
    result = allm.chat(engine([tool_call("missing", {})]), "go", tools=[allm.function_tool(boom)])
    assert result.halted_reason == "error"
    assert phases(records)[-1] == ("chat", "exception") and records[-1].error_reason == "unknown_tool"


def test_chat_error_and_cancel(records: Records) -> None:
    eng = engine([tool_call("add", {"a": 1, "b": 2})], ["partial", error("provider_unavailable")])
    result = allm.chat(eng, "x", tools=[allm.function_tool(add)])
    assert result.halted_reason == "error"
    assert records[-1].kind == "chat" and records[-1].phase == "exception"
    assert records[-1].error_reason == "provider_unavailable"
    records.clear()
    s = allm.stream(engine(["a", "b"]), "x")
    next(iter(s))
    s.close()
    assert phases(records) == [("chat", "start"), ("stream", "start"), ("stream", "stop"), ("chat", "stop")]
    assert records[2].cancelled and records[3].cancelled
    records.clear()
    with pytest.raises(allm.AdapterError):
        allm.chat(engine([error("invalid_request", before_stream=True)]), "x")
    assert phases(records) == [("chat", "start"), ("stream", "start"), ("stream", "exception"), ("chat", "exception")]


def test_async_chat_tree(records: Records) -> None:
    async def aadd(a: int, b: int) -> int:
        """Add, asynchronously."""
        return a + b

    eng = engine([tool_call("aadd", {"a": 1, "b": 2}), tool_call("add", {"a": 2, "b": 2})], ["done"])
    asyncio.run(allm.achat(eng, "x", tools=[allm.function_tool(aadd), allm.function_tool(add)]))
    assert [r.kind for r in records if r.phase == "start"] == ["chat", "stream", "tool", "tool", "stream"]
    chat = records[0]
    assert all(r.parent_id == chat.id for r in records[1:-1])
    assert sorted(r.tool_result for r in records.of("tool", "stop")) == [3, 4]


def test_calls_inside_a_tool_are_its_children(records: Records) -> None:
    inner = engine(["inner answer"])

    def ask(q: str) -> str:
        """Ask another model."""
        return allm.generate(inner, q).output_text

    eng = engine([tool_call("ask", {"q": "?"})], ["done"])
    allm.chat(eng, "x", tools=[allm.function_tool(ask)])
    tool = records.one("tool", "start")
    nested = records.one("generate", "start")
    assert nested.parent_id == tool.id

    async def aask(q: str) -> str:
        """Ask another model, asynchronously."""
        return (await allm.agenerate(inner2, q)).output_text

    records.clear()
    inner2 = engine(["inner"])
    asyncio.run(allm.achat(engine([tool_call("aask", {"q": "?"})], ["done"]), "x", tools=[allm.function_tool(aask)]))
    assert records.one("generate", "start").parent_id == records.one("tool", "start").id


# ------------------------------------------------------------------------------ plain exchanges


def test_plain_exchanges(records: Records) -> None:
    eng = allm.Engine(adapter=Fake(scripts=[["x"]], embeddings={"a": [1.0, 0.0]}, images=[image(PNG)]), model="fake-1")
    emb = allm.embed(eng, ["a", "b c"])
    n = allm.count_tokens(eng, "one two three")
    models = allm.list_models(eng)
    allm.generate_image(eng, "a cat")
    assert phases(records) == [
        ("embed", "start"), ("embed", "stop"),
        ("count_tokens", "start"), ("count_tokens", "stop"),
        ("list_models", "start"), ("list_models", "stop"),
        ("image", "start"), ("image", "stop"),
    ]  # fmt: skip
    e = records.one("embed", "stop")
    assert e.operation == "embeddings" and e.usage == emb.usage and e.model == "fake-1"
    c = records.one("count_tokens", "stop")
    assert c.usage is not None and c.usage.input_tokens == n
    assert records.one("list_models", "stop").duration is not None and models
    i = records.one("image", "start")
    assert (i.operation, i.image_operation) == ("generate_content", "generate")
    records.clear()
    with pytest.raises(allm.AdapterError):  # one image call was scripted
        allm.edit_image(eng, "x", image=allm.Image(data=PNG, mime_type="image/png"))
    assert phases(records)[-1] == ("image", "exception")


def test_async_plain_exchanges(records: Records) -> None:
    eng = allm.Engine(adapter=Fake(scripts=[["x"]], embeddings={"a": [1.0]}), model="fake-1")

    async def main() -> None:
        await allm.aembed(eng, ["a"])
        await allm.acount_tokens(eng, "one two")
        await allm.alist_models(eng)

    asyncio.run(main())
    assert [r.kind for r in records if r.phase == "stop"] == ["embed", "count_tokens", "list_models"]


# ------------------------------------------------------------------------------ handlers that fail


def test_a_failing_handler_is_logged_and_never_breaks_the_call(caplog: pytest.LogCaptureFixture, records: Records) -> None:
    def bad(record: telemetry.Record) -> None:
        raise ValueError("handler bug")

    caplog.set_level(logging.ERROR, logger="allm.telemetry")
    with telemetry.scope(bad):
        resp = allm.generate(engine(["fine"]), "x")
        result = allm.chat(engine([tool_call("add", {"a": 1, "b": 1})], ["2"]), "x", tools=[allm.function_tool(add)])
    assert resp.output_text == "fine" and result.halted_reason == "completed"
    failures = [r for r in caplog.records if r.name == "allm.telemetry"]
    assert failures and all(r.exc_info and r.exc_info[0] is ValueError for r in failures)
    assert {getattr(r, "allm_phase", None) for r in failures} == {"start", "stop"}
    assert phases(records)[:2] == [("generate", "start"), ("generate", "stop")]  # the others still ran


def test_a_failing_activate_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    class Bad:
        def __call__(self, record: telemetry.Record) -> None:
            pass

        def activate(self, record: telemetry.Record) -> Any:
            raise ValueError("no")

    caplog.set_level(logging.ERROR, logger="allm.telemetry")
    with telemetry.scope(Bad()):
        result = allm.chat(engine([tool_call("add", {"a": 1, "b": 1})], ["2"]), "x", tools=[allm.function_tool(add)])
    assert result.halted_reason == "completed"
    assert any("activate" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------ logging


def test_log_handler_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="allm")
    eng = engine([error("rate_limited", before_stream=True)], ["ok", usage(3, 1)])
    with telemetry.scope(telemetry.LogHandler()):
        allm.generate(eng, "the secret prompt")
    lines = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    assert [n for n, _, _ in lines] == ["allm.generate"] * 3
    assert [lv for _, lv, _ in lines] == ["DEBUG", "WARNING", "INFO"]
    assert "attempt=1" in lines[1][2] and "error=rate_limited" in lines[1][2]
    assert "tokens in=3 out=1" in lines[2][2] and "finish=stop" in lines[2][2]
    stop = caplog.records[-1]
    assert stop.allm_input_tokens == 3 and stop.allm_kind == "generate" and stop.allm_duration_s > 0  # type: ignore[attr-defined]
    assert stop.allm_provider == "fake" and stop.allm_request_id  # type: ignore[attr-defined]
    assert "secret prompt" not in caplog.text


def test_quiet_by_default() -> None:
    """A LogHandler attached, logging not configured: nothing is printed."""
    code = (
        "import allm\nfrom allm import telemetry\nfrom allm.providers import Fake\nfrom allm.testing import error\n"
        "telemetry.add_handler(telemetry.LogHandler())\n"
        "telemetry.add_handler(lambda r: 1 / 0)\n"
        "e = allm.Engine(adapter=Fake(scripts=[[error('rate_limited', before_stream=True)], ['ok']]), model='m',"
        " retry=allm.RetryPolicy(base_delay=0.001, jitter=0))\n"
        "print(allm.generate(e, 'hi').output_text)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout == "ok\n" and out.stderr == ""


def test_plain_exchange_retries_over_http(records: Records) -> None:
    from allm.providers import OpenAI
    from tests.loopback import LoopbackServer, Req, Writer

    seen: list[str] = []

    async def handler(req: Req, w: Writer) -> None:
        seen.append(req.path)
        if len(seen) == 1:
            await w.respond(503, b'{"error": {"message": "busy"}}')
        else:
            await w.respond(200, b'{"object": "list", "data": [{"id": "m-1", "object": "model"}]}')

    server = LoopbackServer().start()
    server.handler = handler
    try:
        eng = allm.Engine(adapter=OpenAI(base_url=server.url + "/v1", api="chat"), model="m-1", retry=FAST)
        assert allm.list_models(eng, api_key="sk-test-key-0000000000") == ["m-1"]
    finally:
        server.stop()
    assert phases(records) == [("list_models", "start"), ("list_models", "retry"), ("list_models", "stop")]
    stop = records[-1]
    assert records[1].error_reason == "provider_unavailable" and stop.attempts == 2
    host, port = server.url.removeprefix("http://").split(":")
    assert (stop.server_address, stop.server_port, stop.provider) == (host, int(port), "openai")


counts = st.one_of(st.none(), st.integers(min_value=0, max_value=10**6))
usages = st.builds(allm.Usage, counts, counts, counts, counts, counts, counts)


@given(st.lists(usages, min_size=1, max_size=12))
def test_usage_chunks_fold_as_usage_merge(chunks: list[allm.Usage]) -> None:
    from allm.telemetry import _latest

    want = chunks[0]
    for u in chunks[1:]:
        want = want.merge(u)
    assert _latest(list(chunks)) == want


@settings(max_examples=30, deadline=None)
@given(st.lists(usages, min_size=1, max_size=4), st.booleans())
def test_stop_usage_equals_the_folded_response(chunks: list[allm.Usage], streamed: bool) -> None:
    """The law: a model call's stop record carries the usage its Response folds to."""
    seen: list[telemetry.Record] = []
    script: list[Any] = ["hi"]
    for u in chunks:
        script.append(usage(u.input_tokens, u.output_tokens, cached_input_tokens=u.cached_input_tokens,
                            reasoning_tokens=u.reasoning_tokens, total_tokens=u.total_tokens))
    with telemetry.scope(seen.append):
        resp = allm.generate(engine(script), "x")
    assert seen[-1].usage == (resp.usage if chunks else None)


@settings(max_examples=30, deadline=None)
@given(st.lists(usages, min_size=1, max_size=4))
def test_a_chats_usage_is_the_sum_of_its_calls(per_call: list[allm.Usage]) -> None:
    """The law: a chat's stop record carries the sum (``Usage.__add__``) of its steps' usage."""
    import functools
    import operator

    scripts: list[list[Any]] = []
    for i, u in enumerate(per_call):
        entry = usage(u.input_tokens, u.output_tokens, cached_input_tokens=u.cached_input_tokens,
                      reasoning_tokens=u.reasoning_tokens, total_tokens=u.total_tokens)
        last = i == len(per_call) - 1
        scripts.append(["done", entry] if last else [tool_call("add", {"a": i, "b": 1}, id=f"c{i}"), entry])
    seen: list[telemetry.Record] = []
    with telemetry.scope(seen.append):
        result = allm.chat(engine(*scripts), "x", tools=[allm.function_tool(add)])
    assert len(result.steps) == len(per_call)
    want = functools.reduce(operator.add, [st_.response.usage for st_ in result.steps])
    assert seen[-1].kind == "chat" and seen[-1].usage == want


# ------------------------------------------------------------------------------ the record value


def test_record_value() -> None:
    import pickle

    from attrs.exceptions import FrozenInstanceError

    from allm._records import FIELDS

    r = telemetry.Record("generate", "stop", 7, model="m", duration=0.5, output=allm.assistant("secret words"))
    assert (r.kind, r.phase, r.id, r.model, r.duration) == ("generate", "stop", 7, "m", 0.5)
    assert r.parent_id is None and r.cancelled is False and r.request is None  # the defaults
    with pytest.raises(FrozenInstanceError):
        r.model = "other"  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        del r.model
    with pytest.raises(TypeError, match="no field 'modle'"):
        telemetry.Record("generate", "stop", 7, modle="m")
    with pytest.raises(TypeError, match="no field 'nope'"):
        r.evolve(nope=1)
    assert "secret words" not in repr(r) and repr(r).startswith("Record(kind='generate', phase='stop', id=7,")
    assert r == telemetry.Record("generate", "stop", 7, model="m", duration=0.5)  # content is not compared
    assert hash(r) == hash(telemetry.Record("generate", "stop", 7, model="m", duration=0.5))
    assert r != r.evolve(duration=0.25) and r.evolve(duration=0.25).duration == 0.25 and r.duration == 0.5
    back = pickle.loads(pickle.dumps(r))
    assert back == r and back.output == r.output
    assert set(FIELDS) == {f for f in dir(r) if not f.startswith("_") and f != "evolve"}
    match r:
        case telemetry.Record("generate", "stop", id=7, model=model):
            assert model == "m"
        case _:
            raise AssertionError("the record did not match")


def test_a_chats_request_is_its_first(records: Records) -> None:
    eng = engine([tool_call("add", {"a": 1, "b": 2})], ["3"])
    allm.chat(eng, allm.request([allm.system("Be brief."), allm.user("1+2?")], temperature=0.3), tools=[allm.function_tool(add)])
    start, stop = records.of("chat")
    assert start.request is not None and [m.role for m in start.request.messages] == ["system", "user"]
    assert start.request.temperature == 0.3
    assert stop.request == start.request  # read after the chat grew: still the request it started from


# ------------------------------------------------------------------------------ context


def test_the_caller_between_events_is_not_inside_the_chat(records: Records) -> None:
    """The chat is current only while its driver runs: a call the caller makes between two of
    its events is not its child (sync and async)."""
    s = allm.stream(engine(["a", "b"], ["c"]), "x")
    it = iter(s)
    next(it)
    allm.generate(engine(["between"]), "y")
    for _ in it:
        pass
    chat = records.one("chat", "start")
    inside, between = records.of("stream", "start")[0], records.one("generate", "start")
    assert inside.parent_id == chat.id and between.parent_id is None
    records.clear()

    async def main() -> None:
        s = allm.astream(engine(["a", "b"]), "x")
        await s.__anext__()
        await allm.agenerate(engine(["between"]), "y")
        async for _ in s:
            pass

    asyncio.run(main())
    chat = records.one("chat", "start")
    assert records.of("stream", "start")[0].parent_id == chat.id and records.one("generate", "start").parent_id is None


def test_the_driver_sees_the_callers_context(records: Records) -> None:
    """A key scope entered around the iteration reaches every turn of the chat, and one the
    caller leaves is gone by its next call."""
    seen: list[str | None] = []

    def which(q: str) -> str:
        """Report."""
        return q

    def reply(request: allm.Request) -> Any:
        seen.append(allm.keys.lookup("fake")[0])
        if not any(m.role == "tool" for m in request.messages):
            return [tool_call("which", {"q": "x"})]
        return ["done"]

    eng = allm.Engine(adapter=Fake(function=reply), model="fake-1")
    with allm.keys.scope(fake="k-123"):
        result = allm.chat(eng, "x", tools=[allm.function_tool(which)])
    assert result.halted_reason == "completed" and seen == ["k-123", "k-123"]
    assert [r.kind for r in records if r.phase == "start"] == ["chat", "stream", "tool", "stream"]
    seen.clear()
    with allm.keys.scope(fake="k-456"):
        events = list(allm.stream(eng, "x", tools=[allm.function_tool(which)]))
    assert events and seen == ["k-456", "k-456"]
