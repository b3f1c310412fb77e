"""allm.otel with the OpenTelemetry SDK's in-memory exporters, on the Fake: the exact span trees,
names, kinds, attributes and metrics of each kind of call."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import allm
import allm.otel
from allm import telemetry
from allm.providers import Fake
from allm.testing import delay, error, tool_call, usage
from tests.telemetry.conftest import Otel

FAST = allm.RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.002, jitter=0)
SECRET = "the-secret-prompt-words"


def engine(*scripts: Any) -> allm.Engine:
    return allm.Engine(adapter=Fake(scripts=list(scripts)), model="fake-1", retry=FAST)


def norm(tree: list[Any]) -> list[Any]:
    """The tree with per-run values (ids, times) replaced by their kind."""
    out = []
    for name, kind, attrs, kids in tree:
        a = dict(attrs)
        for k in ("allm.request_id",):
            if k in a:
                assert isinstance(a[k], str) and len(a[k]) == 22
                a[k] = "<id>"
        for k in ("gen_ai.response.time_to_first_chunk",):
            if k in a:
                assert isinstance(a[k], float) and a[k] >= 0
                a[k] = "<s>"
        out.append((name, kind, a, norm(kids)))
    return out


def chat_span(finish: str, *, usage_in: int | None = None, usage_out: int | None = None, rid: str = "fake-1", **extra: Any) -> dict[str, Any]:
    a: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "fake",
        "gen_ai.request.model": "fake-1",
        "allm.request_id": "<id>",
        "gen_ai.request.stream": True,
        "gen_ai.response.id": rid,
        "gen_ai.response.model": "fake-1",
        "gen_ai.response.finish_reasons": (finish,),
        "gen_ai.response.time_to_first_chunk": "<s>",
    }
    if usage_in is not None:
        a["gen_ai.usage.input_tokens"] = usage_in
    if usage_out is not None:
        a["gen_ai.usage.output_tokens"] = usage_out
    a.update(extra)
    return a


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


# ------------------------------------------------------------------------------ span trees


def test_streamed_call(otel: Otel) -> None:
    events = list(allm.stream_generate(engine(["Hel", "lo", usage(4, 2)]), allm.request("hi", temperature=0.2, max_tokens=20)))
    assert events
    assert norm(otel.tree(attrs=True)) == [
        ("chat fake-1", "CLIENT", chat_span("stop", usage_in=4, usage_out=2, **{"gen_ai.request.temperature": 0.2, "gen_ai.request.max_tokens": 20}), []),
    ]
    span = otel.spans()[0]
    assert span.status.status_code == StatusCode.UNSET and list(span.events) == []


def test_non_streamed_call(otel: Otel) -> None:
    resp = allm.generate(engine(["Hello", usage(3, 1)]), "hi")
    [(name, kind, attrs, kids)] = otel.tree(attrs=True)
    assert (name, kind, kids) == ("chat fake-1", "CLIENT", [])
    assert attrs["allm.request_id"] == resp.request_id and attrs["gen_ai.response.id"] == resp.id
    assert attrs["gen_ai.usage.input_tokens"] == 3 and attrs["gen_ai.response.finish_reasons"] == ("stop",)


def test_two_turn_tool_loop(otel: Otel) -> None:
    eng = engine([tool_call("add", {"a": 1, "b": 2}), usage(10, 5)], ["3", usage(20, 1)])
    result = allm.chat(eng, "1+2?", tools=[allm.function_tool(add)], session_id="ses_telemetry")
    assert result.halted_reason == "completed"
    conv = {"gen_ai.conversation.id": "ses_telemetry"}
    assert norm(otel.tree(attrs=True)) == [
        (
            "invoke_agent",
            "INTERNAL",
            {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.provider.name": "fake",
                "gen_ai.request.model": "fake-1",
                **conv,
                "gen_ai.response.id": "fake-2",
                "gen_ai.response.model": "fake-1",
                "allm.halted_reason": "completed",
                "gen_ai.usage.input_tokens": 30,
                "gen_ai.usage.output_tokens": 6,
            },
            [
                ("chat fake-1", "CLIENT", chat_span("tool_calls", usage_in=10, usage_out=5, **conv), []),
                (
                    "execute_tool add",
                    "INTERNAL",
                    {
                        "gen_ai.operation.name": "execute_tool",
                        **conv,
                        "allm.request_id": "<id>",
                        "gen_ai.tool.name": "add",
                        "gen_ai.tool.call.id": "call_1",
                        "gen_ai.tool.type": "function",
                    },
                    [],
                ),
                ("chat fake-1", "CLIENT", chat_span("stop", usage_in=20, usage_out=1, rid="fake-2", **conv), []),
            ],
        )
    ]
    # the tool ran for the first call: same request id
    first, tool, _ = otel.tree(attrs=True)[0][3]
    assert first[2]["allm.request_id"] == tool[2]["allm.request_id"] == result.steps[0].response.request_id


def test_retried_call(otel: Otel) -> None:
    eng = engine([error("rate_limited", before_stream=True)], [error("provider_unavailable", before_stream=True)], ["ok"])
    allm.generate(eng, "hi")
    [span] = otel.spans()
    assert span.name == "chat fake-1" and span.status.status_code == StatusCode.UNSET
    assert [(e.name, dict(e.attributes or {})) for e in span.events] == [
        ("gen_ai.client.retry", {"allm.retry.attempt": 1, "allm.retry.delay": 0.001, "error.type": "rate_limited"}),
        ("gen_ai.client.retry", {"allm.retry.attempt": 2, "allm.retry.delay": 0.002, "error.type": "provider_unavailable"}),
    ]
    assert span.attributes is not None and span.attributes["allm.attempts"] == 3


def test_failed_call(otel: Otel) -> None:
    with pytest.raises(allm.AdapterError):
        allm.generate(engine([error("invalid_request", f"bad request: {SECRET}", before_stream=True)]), SECRET)
    [span] = otel.spans()
    assert span.status.status_code == StatusCode.ERROR and span.status.description == "invalid_request"
    assert span.attributes is not None and span.attributes["error.type"] == "invalid_request"
    assert list(span.events) == []  # no exception event: its message may quote the prompt
    assert SECRET not in span.to_json()
    [(attrs, _, count)] = otel.points("gen_ai.client.operation.duration")
    assert attrs["error.type"] == "invalid_request" and count == 1


def test_failed_mid_stream(otel: Otel) -> None:
    allm.generate(engine(["partial", error("provider_unavailable", SECRET)]), "hi")
    [span] = otel.spans()
    assert span.status.status_code == StatusCode.ERROR and span.attributes["error.type"] == "provider_unavailable"  # type: ignore[index]
    assert SECRET not in span.to_json()


def test_cancelled_stream(otel: Otel) -> None:
    s = allm.stream_generate(engine(["a", "b", "c"]), "hi")
    next(s)
    assert otel.spans() == []  # still open while the stream is
    s.close()
    [span] = otel.spans()
    assert span.attributes is not None and span.attributes["allm.cancelled"] is True
    assert span.status.status_code == StatusCode.UNSET and "gen_ai.response.finish_reasons" not in span.attributes


def test_cancelled_chat_ends_its_call_inside_it(otel: Otel) -> None:
    s = allm.stream(engine(["a", "b"]), "hi")
    next(iter(s))
    s.close()
    assert otel.tree() == [("invoke_agent", [("chat fake-1", [])])]
    outer, inner = sorted(otel.spans(), key=lambda sp: sp.start_time or 0)
    assert inner.end_time is not None and outer.end_time is not None and inner.end_time <= outer.end_time
    assert all(sp.attributes is not None and sp.attributes["allm.cancelled"] for sp in (outer, inner))


def test_async_tree_and_cancellation(otel: Otel) -> None:
    async def aadd(a: int, b: int) -> int:
        """Add, asynchronously."""
        return a + b

    async def main() -> None:
        eng = engine([tool_call("aadd", {"a": 1, "b": 2}), tool_call("add", {"a": 2, "b": 2})], ["done"])
        await allm.achat(eng, "x", tools=[allm.function_tool(aadd), allm.function_tool(add)])
        s = allm.astream_generate(engine(["a", delay(0.01), "b"]), "x")
        await s.__anext__()
        await s.aclose()

    asyncio.run(main())
    tree = otel.tree()
    assert tree[0][0] == "invoke_agent"
    assert sorted(n for n, _ in tree[0][1]) == ["chat fake-1", "chat fake-1", "execute_tool aadd", "execute_tool add"]
    assert tree[1] == ("chat fake-1", [])
    assert otel.spans()[-1].attributes["allm.cancelled"] is True  # type: ignore[index]


def test_plain_exchange_spans(otel: Otel) -> None:
    eng = allm.Engine(adapter=Fake(scripts=[["x"]], embeddings={"a": [1.0]}), model="fake-1")
    allm.embed(eng, ["a"])
    n = allm.count_tokens(eng, "one two")
    allm.list_models(eng)
    got = [(s.name, s.kind.name, s.attributes["gen_ai.operation.name"]) for s in otel.spans()]  # type: ignore[index]
    assert got == [
        ("embeddings fake-1", "CLIENT", "embeddings"),
        ("count_tokens fake-1", "CLIENT", "count_tokens"),
        ("list_models", "CLIENT", "list_models"),
    ]
    assert otel.spans()[1].attributes["gen_ai.usage.input_tokens"] == n  # type: ignore[index]


# ------------------------------------------------------------------------------ metrics


def test_metrics(otel: Otel) -> None:
    eng = engine([tool_call("add", {"a": 1, "b": 2}), usage(10, 5)], ["3", usage(20, 1)])
    allm.chat(eng, "x", tools=[allm.function_tool(add)])
    m = otel.metrics()
    assert set(m) == {"gen_ai.client.operation.duration", "gen_ai.client.token.usage", "gen_ai.client.operation.time_to_first_chunk"}
    assert (m["gen_ai.client.operation.duration"].unit, m["gen_ai.client.token.usage"].unit) == ("s", "{token}")
    assert m["gen_ai.client.operation.time_to_first_chunk"].unit == "s"
    for name, bounds in (
        ("gen_ai.client.operation.duration", allm.otel.DURATION_BUCKETS),
        ("gen_ai.client.token.usage", allm.otel.TOKEN_BUCKETS),
        ("gen_ai.client.operation.time_to_first_chunk", allm.otel.DURATION_BUCKETS),
    ):
        assert all(tuple(p.explicit_bounds) == tuple(float(b) for b in bounds) for p in m[name].data.data_points)
    tokens = {(a["gen_ai.token.type"], a["gen_ai.operation.name"]): (s, c) for a, s, c in otel.points("gen_ai.client.token.usage")}
    assert tokens == {("input", "chat"): (30, 2), ("output", "chat"): (6, 2)}  # the loop's own span adds none
    durations = {a["gen_ai.operation.name"]: c for a, _, c in otel.points("gen_ai.client.operation.duration")}
    assert durations == {"chat": 2, "execute_tool": 1, "invoke_agent": 1}
    base = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "fake", "gen_ai.request.model": "fake-1", "gen_ai.response.model": "fake-1"}
    assert [a for a, _, _ in otel.points("gen_ai.client.operation.time_to_first_chunk")] == [base]


# ------------------------------------------------------------------------------ content


def test_no_content_without_opt_in(otel: Otel) -> None:
    def echo(q: str) -> str:
        """Echo."""
        return q

    eng = engine([tool_call("echo", {"q": SECRET})], [SECRET, error("provider_unavailable", SECRET)])
    allm.chat(eng, allm.request([allm.system(SECRET), allm.user(SECRET)]), tools=[allm.function_tool(echo)])
    text_of_spans = "".join(s.to_json() for s in otel.spans())
    assert SECRET not in text_of_spans
    for s in otel.spans():
        assert not any(k in (s.attributes or {}) for k in ("gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions"))


def test_content_with_opt_in(otel_content: Otel) -> None:
    def echo(q: str) -> str:
        """Echo."""
        return q.upper()

    eng = engine([tool_call("echo", {"q": "abc"})], ["ABC"])
    allm.chat(eng, allm.request([allm.system("Be brief."), allm.user("say abc")]), tools=[allm.function_tool(echo)])
    calls = otel_content.named("chat fake-1")
    a0, a1 = (dict(s.attributes or {}) for s in calls)
    assert json.loads(a0["gen_ai.system_instructions"]) == [{"type": "text", "content": "Be brief."}]
    assert json.loads(a0["gen_ai.input.messages"]) == [{"role": "user", "parts": [{"type": "text", "content": "say abc"}]}]
    assert json.loads(a0["gen_ai.output.messages"]) == [
        {"role": "assistant", "parts": [{"type": "tool_call", "id": "call_1", "name": "echo", "arguments": {"q": "abc"}}], "finish_reason": "tool_calls"}
    ]
    second_input = json.loads(a1["gen_ai.input.messages"])
    assert second_input[-1] == {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_1", "response": "ABC"}]}
    [tool] = otel_content.named("execute_tool echo")
    assert json.loads(tool.attributes["gen_ai.tool.call.arguments"]) == {"q": "abc"}  # type: ignore[index]
    assert json.loads(tool.attributes["gen_ai.tool.call.result"]) == "ABC"  # type: ignore[index]


def test_capture_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(allm.otel.CAPTURE_ENV, "true")
    assert Otel().handler.capture_content
    monkeypatch.setenv(allm.otel.CAPTURE_ENV, "false")
    assert not Otel().handler.capture_content
    monkeypatch.delenv(allm.otel.CAPTURE_ENV)
    assert not Otel().handler.capture_content


def test_legacy_system_attribute() -> None:
    o = Otel(legacy_system=True)
    with telemetry.scope(o.handler):
        allm.generate(engine(["x"]), "hi")
    attrs = otel_attrs = dict(o.spans()[0].attributes or {})
    assert attrs["gen_ai.system"] == otel_attrs["gen_ai.provider.name"] == "fake"
    o2 = Otel()
    with telemetry.scope(o2.handler):
        allm.generate(engine(["x"]), "hi")
    assert "gen_ai.system" not in (o2.spans()[0].attributes or {})


def test_spans_only() -> None:
    o = Otel(metrics=False)
    with telemetry.scope(o.handler):
        allm.generate(engine(["x", usage(1, 1)]), "hi")
    assert [s.name for s in o.spans()] == ["chat fake-1"] and o.metrics() == {}


def test_no_meter_provider_skips_metric_work(monkeypatch: pytest.MonkeyPatch) -> None:
    # With the API's no-op meter provider, or its proxy before a real provider is set, the
    # metric points are not even built; once the proxy gets a real meter, they are recorded.
    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.metrics._internal import _ProxyMeter

    built: list[str] = []
    real = allm.otel.OpenTelemetry._record_metrics

    def counting(self: allm.otel.OpenTelemetry, r: telemetry.Record) -> None:
        built.append(r.kind)
        real(self, r)

    monkeypatch.setattr(allm.otel.OpenTelemetry, "_record_metrics", counting)
    o = Otel()
    noop = allm.otel.OpenTelemetry(tracer_provider=o.tracer_provider, meter_provider=NoOpMeterProvider())
    with telemetry.scope(noop):
        allm.generate(engine(["x", usage(1, 1)]), "hi")
    assert [s.name for s in o.spans()] == ["chat fake-1"] and built == []

    proxy = _ProxyMeter("allm")
    monkeypatch.setattr(allm.otel.otel_metrics, "get_meter", lambda *a, **k: proxy)
    late = allm.otel.OpenTelemetry(tracer_provider=o.tracer_provider)
    with telemetry.scope(late):
        allm.generate(engine(["x", usage(1, 1)]), "hi")
    assert built == [] and len(o.spans()) == 2
    proxy.on_set_meter_provider(o.meter_provider)
    with telemetry.scope(late):
        allm.generate(engine(["x", usage(1, 1)]), "hi")
    assert built == ["generate"]
    assert [p[2] for p in o.points("gen_ai.client.operation.duration")] == [1]


def test_provider_names() -> None:
    assert allm.otel.PROVIDER_NAMES["gemini"] == "gcp.gemini"


# ------------------------------------------------------------------------------ context


def _user_spans_under_tools(o: Otel) -> dict[str, str]:
    by_id = {s.context.span_id: s for s in o.spans()}
    return {s.name: by_id[s.parent.span_id].name for s in o.spans() if s.name.startswith("user ") and s.parent is not None}


def test_handler_spans_are_inside_execute_tool() -> None:
    o = Otel()
    tracer = o.tracer_provider.get_tracer("user")

    def sync_tool(x: int) -> int:
        """Sync."""
        with tracer.start_as_current_span("user sync"):
            return x

    async def async_tool(x: int) -> int:
        """Async."""
        with tracer.start_as_current_span("user async"):
            await asyncio.sleep(0)
            return x

    tools = [allm.function_tool(sync_tool), allm.function_tool(async_tool)]
    script = [tool_call("sync_tool", {"x": 1}), tool_call("async_tool", {"x": 2})]
    with telemetry.scope(o.handler):
        allm.chat(engine(script, ["done"]), "x", tools=tools)  # sync driver: pool threads, a thread loop
    assert _user_spans_under_tools(o) == {"user sync": "execute_tool sync_tool", "user async": "execute_tool async_tool"}
    o2 = Otel()
    tracer = o2.tracer_provider.get_tracer("user")

    async def main() -> None:
        with telemetry.scope(o2.handler):
            await allm.achat(engine(script, ["done"]), "x", tools=tools)  # async driver: a task, the pool

    asyncio.run(main())
    assert _user_spans_under_tools(o2) == {"user sync": "execute_tool sync_tool", "user async": "execute_tool async_tool"}


def test_calls_join_the_callers_span(otel: Otel) -> None:
    tracer = otel.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("request"):
        allm.generate(engine(["x"]), "hi")
    assert otel.tree() == [("request", [("chat fake-1", [])])]


def test_server_span_joins_the_incoming_traceparent() -> None:
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    o = Otel()
    o.tracer_provider = tp
    handler = allm.otel.OpenTelemetry(tracer_provider=tp, meter_provider=o.meter_provider)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = {"Traceparent": f"00-{trace_id}-00f067aa0ba902b7-01", "Content-Type": "application/json"}
    with telemetry.scope(handler), allm.otel.server_span("POST", "/v1/responses", headers, tracer_provider=tp) as span:
        assert trace.get_current_span() is span
        allm.generate(engine(["x"]), "hi")
    [server] = [s for s in exporter.get_finished_spans() if s.kind.name == "SERVER"]
    [call] = [s for s in exporter.get_finished_spans() if s.kind.name == "CLIENT"]
    assert (server.name, server.kind.name) == ("POST /v1/responses", "SERVER")
    assert format(server.context.trace_id, "032x") == trace_id == format(call.context.trace_id, "032x")
    assert server.parent is not None and format(server.parent.span_id, "016x") == "00f067aa0ba902b7"
    assert call.parent is not None and call.parent.span_id == server.context.span_id
    with pytest.raises(ValueError), allm.otel.server_span("GET", "/x", {}, tracer_provider=tp):
        raise ValueError(SECRET)
    failed = exporter.get_finished_spans()[-1]
    assert failed.status.status_code == StatusCode.ERROR and SECRET not in failed.to_json()


def test_a_server_span_outlives_its_handler_through_the_task_it_starts() -> None:
    o = Otel()
    headers = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}

    async def main() -> None:
        with telemetry.scope(o.handler):
            s = allm.otel.start_server_span("POST", "/v1/responses", headers, tracer_provider=o.tracer_provider)
            with s.current():
                task = asyncio.ensure_future(allm.agenerate(engine(["a", delay(0.01), "b"]), "hi"))
            assert trace.get_current_span() is not s.span  # the handler returned; the task goes on
            await task
            s.end()

    asyncio.run(main())
    assert o.tree() == [("POST /v1/responses", [("chat fake-1", [])])]
    server = o.named("POST /v1/responses")[0]
    assert format(server.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"


def test_instrument_and_uninstrument() -> None:
    o = Otel()
    h = allm.otel.instrument(tracer_provider=o.tracer_provider, meter_provider=o.meter_provider)
    try:
        assert telemetry.active and h in telemetry.handlers()
        h2 = allm.otel.instrument(tracer_provider=o.tracer_provider, meter_provider=o.meter_provider)
        assert telemetry.handlers() == (h2,)
    finally:
        allm.otel.uninstrument()
    assert not telemetry.active
    allm.otel.uninstrument()  # twice: fine


def test_unended_spans_are_bounded() -> None:
    o = Otel()
    o.handler.max_open = 10
    with telemetry.scope(o.handler):
        streams = [allm.stream_generate(engine(["a", "b"]), "x") for _ in range(15)]
        for s in streams:
            next(s)  # started, never closed
    assert len(o.handler._spans) <= 10
    assert all(s.attributes["allm.abandoned"] for s in o.spans())  # type: ignore[index]
    for s in streams:
        s.close()


def test_a_loop_stopped_by_middleware(otel: Otel) -> None:
    from allm import middleware as mw

    eng = engine(
        [tool_call("add", {"a": 1, "b": 2}), usage(400, 20)],
        [tool_call("add", {"a": 3, "b": 4}), usage(450, 20)],
        ["3 and 7.", usage(500, 10)],
    )
    result = allm.chat(eng, "Add 1+2, then 3+4.", tools=[allm.function_tool(add)], middleware=[mw.TokenBudget(800)])
    assert result.halted_reason == "token_budget"
    assert otel.tree() == [
        ("invoke_agent", [("chat fake-1", []), ("execute_tool add", []), ("chat fake-1", []), ("execute_tool add", [])]),
    ]
    [agent] = otel.named("invoke_agent")
    assert agent.attributes["allm.halted_reason"] == "token_budget"  # type: ignore[index]
    assert agent.attributes["gen_ai.usage.input_tokens"] == 850 and agent.status.status_code == StatusCode.UNSET  # type: ignore[index]


def test_no_content_in_failures_without_opt_in(otel: Otel, caplog: pytest.LogCaptureFixture) -> None:
    """Content capture off: a tool that raises quoting its input, a model call refused quoting
    the prompt, a chat that ends on that error: no span, status, event, metric or log line
    holds the content."""
    import logging

    def leaky(q: str) -> str:
        """Raise, quoting the input."""
        raise ValueError(f"cannot handle {q}")

    eng = engine([tool_call("leaky", {"q": SECRET})], [error("invalid_request", f"bad: {SECRET}", before_stream=True)])
    caplog.set_level(logging.DEBUG, logger="allm")
    with telemetry.scope(telemetry.LogHandler()):
        result = allm.chat(eng, allm.request([allm.system(SECRET), allm.user(SECRET)]), tools=[allm.function_tool(leaky)])
    assert result.halted_reason == "error"
    [tool] = otel.named("execute_tool leaky")
    assert tool.status.status_code == StatusCode.ERROR and tool.attributes["error.type"] == "handler_raised"  # type: ignore[index]
    failed = [s for s in otel.spans() if s.status.status_code == StatusCode.ERROR]
    assert {s.name for s in failed} == {"execute_tool leaky", "chat fake-1", "invoke_agent"}
    assert all(list(s.events) == [] for s in otel.spans())  # no exception events at all
    assert SECRET not in "".join(s.to_json() for s in otel.spans())
    data = otel.reader.get_metrics_data()
    assert data is not None and SECRET not in data.to_json()
    assert any(r.name == "allm.tool" and r.levelname == "WARNING" for r in caplog.records)
    assert SECRET not in caplog.text and all(SECRET not in repr(r.__dict__) for r in caplog.records)


def test_content_capture_on_keeps_the_failure_message_redacted(otel_content: Otel) -> None:
    key = "sk-" + "q" * 40
    with pytest.raises(allm.AdapterError):
        allm.generate(engine([error("invalid_request", f"bad request {key}", before_stream=True)]), "hi")
    [span] = otel_content.spans()
    assert span.status.description is not None and "bad request" in span.status.description
    assert key not in span.to_json()


def test_every_name_is_in_the_conventions(otel_content: Otel) -> None:
    """Every attribute and metric allm writes is in the OpenTelemetry semantic conventions
    registry (``opentelemetry-semantic-conventions``), or is allm's own (``allm.*``)."""
    from opentelemetry.semconv._incubating.attributes import error_attributes, gen_ai_attributes, server_attributes
    from opentelemetry.semconv._incubating.metrics import gen_ai_metrics

    known = {
        v
        for mod in (gen_ai_attributes, server_attributes, error_attributes)
        for k, v in vars(mod).items()
        if k.isupper() and isinstance(v, str)
    }
    o = Otel(capture_content=True, legacy_system=True)
    eng = allm.Engine(
        adapter=Fake(scripts=[[tool_call("add", {"a": 1, "b": 2}), usage(3, 2)], ["3", usage(4, 1)], ["x"]], embeddings={"a": [1.0]}),
        model="fake-1",
        retry=FAST,
    )
    with telemetry.scope(o.handler):
        allm.chat(eng, allm.request([allm.system("s"), allm.user("u")], temperature=0.1, max_tokens=9, top_p=0.5, seed=1, stop_sequences=["z"]), tools=[allm.function_tool(add)])
        allm.embed(eng, ["a"])
        allm.count_tokens(eng, "one two")
        allm.list_models(eng)
        s = allm.stream_generate(eng, "x")
        next(s)
        s.close()
        with pytest.raises(allm.AdapterError):
            allm.generate(engine([error("invalid_request", before_stream=True)]), "x")
    names = {k for s in o.spans() for k in (s.attributes or {})}
    names |= {k for s in o.spans() for e in s.events for k in (e.attributes or {})}
    metrics = o.metrics()
    names |= {k for m in metrics.values() for p in m.data.data_points for k in p.attributes}
    assert {"gen_ai.system", "gen_ai.input.messages", "gen_ai.request.top_p", "error.type"} <= names  # the run covered them
    assert sorted(n for n in names if n not in known and not n.startswith("allm.")) == []
    metric_names = {v for k, v in vars(gen_ai_metrics).items() if k.isupper() and isinstance(v, str)}
    assert set(metrics) <= metric_names


def test_a_bad_traceparent_starts_a_new_trace() -> None:
    o = Otel()
    for headers in ({"traceparent": "not-a-traceparent"}, {"traceparent": "00-" + "0" * 32 + "-" + "0" * 16 + "-01"}, {}):
        with allm.otel.server_span("POST", "/v1/responses", headers, tracer_provider=o.tracer_provider):
            pass
    spans = o.spans()
    assert len(spans) == 3 and all(s.parent is None for s in spans)
    assert len({s.context.trace_id for s in spans}) == 3
