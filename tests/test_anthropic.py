"""The Anthropic Messages adapter against recorded Anthropic and llama-server traffic."""

from __future__ import annotations

import pickle
import re
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import allm
from allm import codec
from allm.errors import AdapterError, ValidationError
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
from allm.fold import fold_response
from allm.providers import Anthropic
from allm.providers.anthropic import map_stop_reason, map_usage, wire_tool_id
from tests.conftest import FIXTURES, case_names, feed_all, load_capture, load_case, splits

A = Anthropic()
MODEL = "claude-haiku-4-5-20251001"


def stream_events(body: bytes, adapter: Anthropic = A, **kw: Any) -> list[Any]:
    call = adapter.encode(allm.request("x", model="m"), stream=True)
    return feed_all(adapter.decoder(call, **kw), [body])


def body_events(body: bytes, adapter: Anthropic = A, **kw: Any) -> list[Any]:
    call = adapter.encode(allm.request("x", model="m"), stream=False)
    return adapter.decode_body(call, body, **kw)


def sse_events(body: bytes) -> list[dict[str, Any]]:
    """The JSON data of each SSE event (test-side, line based: the fixtures use plain LF framing)."""
    return [orjson.loads(line[5:]) for line in body.splitlines() if line.startswith(b"data:")]


def accumulate(body: bytes) -> dict[str, Any]:
    """The non-streaming message a stream describes, built from the JSON events as the
    streaming guide describes (independent of the adapter: plain dict updates)."""
    msg: dict[str, Any] = {}
    blocks: dict[int, dict[str, Any]] = {}
    partial: dict[int, str] = {}
    for ev in sse_events(body):
        t = ev["type"]
        if t == "message_start":
            msg = dict(ev["message"])
            msg["usage"] = dict(msg.get("usage") or {})
        elif t == "content_block_start":
            blocks[ev["index"]] = dict(ev["content_block"])
            partial[ev["index"]] = ""
        elif t == "content_block_delta":
            b, d = blocks[ev["index"]], ev["delta"]
            if d["type"] == "text_delta":
                b["text"] += d["text"]
            elif d["type"] == "thinking_delta":
                b["thinking"] += d["thinking"]
            elif d["type"] == "signature_delta":
                b["signature"] = b.get("signature", "") + d["signature"]
            elif d["type"] == "input_json_delta":
                partial[ev["index"]] += d["partial_json"]
        elif t == "content_block_stop":
            b = blocks[ev["index"]]
            if b["type"] == "tool_use":
                p = partial[ev["index"]]
                b["input"] = orjson.loads(p) if p else {}
        elif t == "message_delta":
            msg.update(ev["delta"])
            msg["usage"].update(ev.get("usage") or {})
        elif t == "message_stop":
            msg["content"] = [blocks[i] for i in sorted(blocks)]
    return msg


# ------------------------------------------------------------------------------ recorded Anthropic cases

STREAM_CASES = [n for n in case_names("anthropic", "stream-") if n != "stream-error-event-overloaded"]
BODY_CASES = [*case_names("anthropic", "nonstream-"), "structured-output-json-schema", "vision-image-base64"]
ERROR_CASES = case_names("anthropic", "error-")


def test_every_recorded_case_is_covered() -> None:
    handled = [*STREAM_CASES, *BODY_CASES, *ERROR_CASES, "stream-error-event-overloaded", "models-list"]
    assert sorted(handled) == case_names("anthropic")
    assert len(handled) == 16


@pytest.mark.parametrize("name", STREAM_CASES)
def test_recorded_streams_decode_to_a_complete_message(name: str) -> None:
    case = load_case("anthropic", name)
    events = stream_events(case.body)
    assert not any(isinstance(e, Error) for e in events)
    assert isinstance(events[0], MessageStarted) and isinstance(events[-1], MessageCompleted)
    resp = fold_response(events)
    start = sse_events(case.body)[0]["message"]
    assert resp.id == start["id"] and resp.id.startswith("msg_") and resp.model == MODEL
    acc = accumulate(case.body)
    u = acc["usage"]
    assert resp.usage.input_tokens == u["input_tokens"] + u["cache_read_input_tokens"] + u["cache_creation_input_tokens"]
    assert resp.usage.output_tokens == u["output_tokens"]
    assert resp.usage.cached_input_tokens == 0 and resp.usage.cache_write_input_tokens == 0
    assert resp.usage.total_tokens == resp.usage.input_tokens + resp.usage.output_tokens
    assert resp.raw_finish_reason == acc["stop_reason"]
    assert resp.output_text == "".join(b["text"] for b in acc["content"] if b["type"] == "text")


@pytest.mark.parametrize("name", BODY_CASES)
def test_recorded_bodies_decode_to_a_complete_message(name: str) -> None:
    case = load_case("anthropic", name)
    events = body_events(case.body)
    assert not any(isinstance(e, Error) for e in events)
    assert isinstance(events[0], MessageStarted) and isinstance(events[-1], MessageCompleted)
    resp = fold_response(events)
    data = orjson.loads(case.body)
    assert resp.id == data["id"] and resp.model == MODEL
    assert resp.output_text == "".join(b["text"] for b in data["content"] if b["type"] == "text")
    assert resp.usage.input_tokens == data["usage"]["input_tokens"] and resp.usage.output_tokens == data["usage"]["output_tokens"]
    assert resp.raw_finish_reason == data["stop_reason"]


def test_stream_text() -> None:
    events = stream_events(load_case("anthropic", "stream-text").body)
    assert [e.delta for e in events if isinstance(e, TextDelta)] == ["1\n2\n3"]
    done = [e for e in events if isinstance(e, TextCompleted)]
    assert [(d.text, d.id) for d in done] == [("1\n2\n3", "0")]
    resp = fold_response(events)
    assert resp.output_text == "1\n2\n3" and resp.message.content == "1\n2\n3"
    assert (resp.finish_reason, resp.raw_finish_reason) == ("stop", "end_turn")
    # Usage split between message_start (input) and message_delta (final output count): merged.
    assert resp.usage == allm.Usage(15, 9, 0, 0, None, 24)


def test_stream_thinking_keeps_text_and_signature() -> None:
    case = load_case("anthropic", "stream-thinking")
    events = stream_events(case.body)
    acc = accumulate(case.body)
    thinking, text = acc["content"]
    assert thinking["type"] == "thinking" and len(thinking["signature"]) > 100
    deltas = [e.delta for e in events if isinstance(e, ReasoningDelta)]
    assert "".join(deltas) == thinking["thinking"] and len(deltas) > 5
    done = [e for e in events if isinstance(e, ReasoningCompleted)]
    assert len(done) == 1
    part = done[0].part
    assert (part.text, part.signature, part.provider, part.redacted_data) == (thinking["thinking"], thinking["signature"], "anthropic", None)
    # Reasoning completes before the answer text starts.
    kinds = [type(e) for e in events]
    assert kinds.index(ReasoningCompleted) < kinds.index(TextDelta)
    resp = fold_response(events)
    assert resp.message.content == (part, allm.TextPart(text["text"]))
    assert resp.reasoning_text == thinking["thinking"] and resp.output_text == text["text"]
    assert resp.usage.reasoning_tokens == 353 and resp.usage.output_tokens == 638


def test_nonstream_thinking_keeps_signature() -> None:
    data = orjson.loads(load_case("anthropic", "nonstream-thinking").body)
    resp = fold_response(body_events(load_case("anthropic", "nonstream-thinking").body))
    (part,) = resp.message.reasoning
    assert part.text == data["content"][0]["thinking"] and part.signature == data["content"][0]["signature"]
    assert part.provider == "anthropic"
    assert resp.usage.reasoning_tokens == data["usage"]["output_tokens_details"]["thinking_tokens"] == 456


def test_stream_tool_use_assembles_from_fragments() -> None:
    events = stream_events(load_case("anthropic", "stream-tool-use").body)
    started = [e for e in events if isinstance(e, ToolCallStarted)]
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    done = [e for e in events if isinstance(e, ToolCallCompleted)]
    assert [(s.tool_call_id, s.name, s.index) for s in started] == [("toolu_01MKSN7NHsBVKr7Jvw5pqCQq", "weather", 0)]
    assert len(deltas) == 6 and {d.tool_call_id for d in deltas} == {"toolu_01MKSN7NHsBVKr7Jvw5pqCQq"}
    (tc,) = [d.tool_call for d in done]
    assert tc.arguments == {"latitude": "52.5200", "longitude": "13.4050"} and tc.parse_error is None
    assert tc.raw_arguments == "".join(d.arguments_delta for d in deltas)
    kinds = [type(e) for e in events]
    assert kinds.index(ToolCallStarted) < kinds.index(ToolCallDelta) < kinds.index(ToolCallCompleted) < kinds.index(MessageCompleted)
    resp = fold_response(events)
    assert (resp.finish_reason, resp.raw_finish_reason) == ("tool_calls", "tool_use")
    assert resp.tool_calls == (tc,) and resp.output_text == ""


def test_stream_tool_use_without_parameters() -> None:
    resp = fold_response(stream_events(load_case("anthropic", "stream-tool-use-no-params").body))
    (tc,) = resp.tool_calls
    assert (tc.id, tc.name, dict(tc.arguments), tc.raw_arguments, tc.parse_error) == (
        "toolu_01EcJNDtgucTvxugUxuGcJmF",
        "best_language_to_learn",
        {},
        "{}",
        None,
    )


def test_nonstream_parallel_tool_use() -> None:
    events = body_events(load_case("anthropic", "nonstream-parallel-tool-use").body)
    assert [(e.name, e.index) for e in events if isinstance(e, ToolCallStarted)] == [("weather", 0), ("best_language_to_learn", 1)]
    resp = fold_response(events)
    assert [(t.id, t.name, dict(t.arguments)) for t in resp.tool_calls] == [
        ("toolu_01TjHdHxyQNDy4DipRieJU5n", "weather", {"latitude": "52.5200", "longitude": "13.4050"}),
        ("toolu_01QHFWAkMuVLb3VgS4EDGUGY", "best_language_to_learn", {}),
    ]
    assert resp.finish_reason == "tool_calls" and resp.usage == allm.Usage(701, 98, 0, 0, None, 799)


def test_structured_output_and_vision_bodies() -> None:
    resp = fold_response(body_events(load_case("anthropic", "structured-output-json-schema").body))
    assert orjson.loads(resp.output_text) == {"name": "John", "age": 30}
    vis = fold_response(body_events(load_case("anthropic", "vision-image-base64").body))
    assert "ruby" in vis.output_text.lower() and vis.finish_reason == "stop" and vis.usage.input_tokens == 43


def test_in_stream_overloaded_error() -> None:
    events = stream_events(load_case("anthropic", "stream-error-event-overloaded").body)
    assert [type(e) for e in events] == [Error]
    err = events[0].error
    assert isinstance(err, AdapterError)
    assert (err.reason, err.message, err.provider, err.status) == ("provider_unavailable", "Overloaded", "anthropic", None)
    assert err.retryable and err.metadata["error_type"] == "overloaded_error"
    resp = fold_response(events)
    assert resp.finish_reason == "error" and resp.metadata["error"] == err


@pytest.mark.parametrize(
    ("name", "reason", "retry_after"),
    [
        ("error-400-prompt-too-long", "context_length_exceeded", None),
        ("error-401-authentication", "authentication_failed", None),
        ("error-429-rate-limit-retry-after", "rate_limited", 65.0),
        ("error-529-overloaded", "provider_unavailable", None),
    ],
)
def test_recorded_errors(name: str, reason: str, retry_after: float | None) -> None:
    case = load_case("anthropic", name)
    err = A.error(case.status, case.headers, case.body)
    body = orjson.loads(case.body)
    assert isinstance(err, AdapterError)
    assert (err.reason, err.status, err.provider, err.retry_after) == (reason, case.status, "anthropic", retry_after)
    assert err.message == body["error"]["message"]
    assert err.metadata["error_type"] == body["error"]["type"]
    assert err.request_id == case.headers["Request-Id"]  # the header (a recorder placeholder here)
    assert err.retryable == (reason in ("rate_limited", "provider_unavailable"))
    # Without the header, the body's request_id is used.
    no_header = {k: v for k, v in case.headers.items() if k.lower() != "request-id"}
    assert A.error(case.status, no_header, case.body).request_id == body.get("request_id")


def test_other_error_shapes() -> None:
    # Error types decide the reason where the status alone would not.
    for etype, status, reason in [
        ("billing_error", 402, "permission_denied"),
        ("timeout_error", 504, "timeout"),
        ("api_error", 500, "provider_unavailable"),
        ("not_found_error", 404, "not_found"),
        ("permission_error", 403, "permission_denied"),
        ("request_too_large", 413, "invalid_request"),
    ]:
        body = orjson.dumps({"type": "error", "error": {"type": etype, "message": "m"}})
        assert A.error(status, {}, body).reason == reason, etype
    ctx = b'{"type":"error","error":{"type":"invalid_request_error","message":"input length and `max_tokens` exceed context limit: 197626 + 8192 > 200000"}}'
    assert A.error(400, {}, ctx).reason == "context_length_exceeded"
    err = A.error(502, {"retry-after-ms": "1500"}, b"<html>Bad gateway</html>")
    assert err.reason == "provider_unavailable" and "Bad gateway" in err.message and err.retry_after == 1.5
    assert A.error(503, {}, b"").message == "HTTP 503"
    # A key echoed back by a proxy never survives into the error.
    leaked = A.error(401, {}, b'{"type":"error","error":{"type":"authentication_error","message":"bad key sk-ant-api03-abcdefghijkl"}}')
    assert "sk-ant" not in str(leaked) and "sk-ant" not in repr(leaked)


def test_models_list() -> None:
    case = load_case("anthropic", "models-list")
    models = A.decode_list_models(case.body)
    assert models == [m["id"] for m in orjson.loads(case.body)["data"]] and "claude-haiku-4-5-20251001" in models
    call = A.encode_list_models()
    assert call.method == "GET" and case.request_line == "GET https://api.anthropic.com/v1/models"
    assert call.url == "https://api.anthropic.com/v1/models?limit=1000"
    assert call.headers["anthropic-version"] == "2023-06-01" and call.body is None
    assert Anthropic(base_url="http://127.0.0.1:9/v1/").encode_list_models().url == "http://127.0.0.1:9/v1/models?limit=1000"
    with pytest.raises(AdapterError, match="no data array") as info:
        A.decode_list_models(b'{"models": []}')
    assert info.value.reason == "malformed_response"
    with pytest.raises(AdapterError):
        A.decode_list_models(b"<html>")


# ------------------------------------------------------------------------------ llama-server /v1/messages captures

MESSAGES_CAPTURES = [n for n in ("g1-messages-nonstream", "g2-messages-stream", "g3-messages-tools-nonstream", "g4-messages-tools-stream")]


def test_capture_list() -> None:
    names = [n for n in sorted(p.name for p in (FIXTURES / "llama-server").glob("g*.response.body"))]
    assert [n.split(".")[0] for n in names] == [*MESSAGES_CAPTURES, "g5-messages-count-tokens"]


@pytest.mark.parametrize("name", MESSAGES_CAPTURES)
def test_llama_server_message_captures(name: str) -> None:
    cap = load_capture(name)
    assert cap.path == "/v1/messages" and cap.status == 200
    events = stream_events(cap.body) if cap.request.get("stream") else body_events(cap.body)
    assert not any(isinstance(e, Error) for e in events), events
    resp = fold_response(events)
    assert resp.model == "gemma-3-270m" and resp.id and resp.id.startswith("chatcmpl-")
    assert resp.output_text
    # llama.cpp reports prompt-cache hits as cache_read_input_tokens; ours includes them.
    usage = (accumulate(cap.body) if cap.request.get("stream") else orjson.loads(cap.body))["usage"]
    assert resp.usage.input_tokens == usage["input_tokens"] + usage["cache_read_input_tokens"]
    assert resp.usage.cached_input_tokens == usage["cache_read_input_tokens"] and resp.usage.cache_write_input_tokens is None
    assert resp.usage.output_tokens == usage["output_tokens"] == cap.request["max_tokens"]
    assert resp.raw_finish_reason == "max_tokens"
    if cap.request.get("tools"):
        # The quirk: stop_reason max_tokens with complete tool calls -> derived tool_calls.
        assert resp.finish_reason == "tool_calls"
        assert [(t.name, dict(t.arguments)) for t in resp.tool_calls] == [
            ("get_weather", {"city": "Paris", "unit": "celsius"}),
            ("get_weather", {"city": "Paris", "unit": "fahrenheit"}),
        ]
        assert all(not t.id.startswith("toolu_") and len(t.id) == 32 for t in resp.tool_calls)
    else:
        assert resp.finish_reason == "length" and not resp.tool_calls


def test_llama_interleaved_blocks_each_assemble() -> None:
    """g4 keeps the text block and both tool_use blocks open until the very end."""
    body = load_capture("g4-messages-tools-stream").body
    stops = [e["index"] for e in sse_events(body) if e["type"] == "content_block_stop"]
    assert stops == [0, 1, 2]
    events = stream_events(body)
    done = [e for e in events if isinstance(e, ToolCallCompleted)]
    assert [d.index for d in done] == [0, 1]
    texts = [e for e in events if isinstance(e, TextCompleted)]
    assert len(texts) == 1 and texts[0].id == "0" and texts[0].text.startswith("# Tools")


def test_count_tokens_capture() -> None:
    cap = load_capture("g5-messages-count-tokens")
    assert A.decode_count_tokens(cap.body) == 14
    llama = Anthropic(base_url="http://127.0.0.1:8088/v1")
    call = llama.encode_count_tokens(allm.request(cap.request["messages"][0]["content"], model="gemma-3-270m"))
    assert (call.method, call.url) == ("POST", "http://127.0.0.1:8088" + cap.path)
    assert norm(orjson.loads(call.body)) == norm(cap.request)
    for bad in (b"{}", b'{"input_tokens": "14"}', b"nope"):
        with pytest.raises(AdapterError) as info:
            A.decode_count_tokens(bad)
        assert info.value.reason == "malformed_response"


# ------------------------------------------------------------------------------ chunking and stream/body agreement

ALL_STREAMS = [load_case("anthropic", n).body for n in [*STREAM_CASES, "stream-error-event-overloaded"]] + [
    load_capture(n).body for n in ("g2-messages-stream", "g4-messages-tools-stream")
]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(ALL_STREAMS).flatmap(lambda b: splits(b)))
def test_any_split_gives_the_same_events(parts: list[bytes]) -> None:
    whole = stream_events(b"".join(parts), include_raw=True)
    call = A.encode(allm.request("x", model="m"), stream=True)
    assert feed_all(A.decoder(call, include_raw=True), parts) == whole


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(ALL_STREAMS).flatmap(lambda b: splits(b.replace(b"\n", b"\r\n"), max_cuts=80)))
def test_crlf_framing_and_splits_give_the_same_events(parts: list[bytes]) -> None:
    call = A.encode(allm.request("x", model="m"), stream=True)
    crlf = feed_all(A.decoder(call), parts)
    assert crlf == stream_events(b"".join(parts).replace(b"\r\n", b"\n"))


def _same_response(s: allm.Response, b: allm.Response) -> None:
    assert (s.id, s.model, s.output_text, s.reasoning_text) == (b.id, b.model, b.output_text, b.reasoning_text)
    assert s.message.reasoning == b.message.reasoning
    assert [(t.id, t.name, t.arguments) for t in s.tool_calls] == [(t.id, t.name, t.arguments) for t in b.tool_calls]
    assert (s.finish_reason, s.raw_finish_reason) == (b.finish_reason, b.raw_finish_reason)
    assert s.usage == b.usage


@pytest.mark.parametrize(
    "body",
    [pytest.param(load_case("anthropic", n).body, id=n) for n in STREAM_CASES]
    + [pytest.param(load_capture(n).body, id=n) for n in ("g2-messages-stream", "g4-messages-tools-stream")],
)
def test_fold_of_stream_equals_decode_of_its_message(body: bytes) -> None:
    """The documented non-streaming shape of each recorded stream decodes to the same response."""
    message = accumulate(body)
    _same_response(fold_response(stream_events(body)), fold_response(body_events(orjson.dumps(message))))


def test_fold_of_stream_equals_decode_of_body_llama_pair() -> None:
    """g3 (body) and g4 (stream): the same request at temperature 0, answered by the real server."""
    b = fold_response(body_events(load_capture("g3-messages-tools-nonstream").body))
    s = fold_response(stream_events(load_capture("g4-messages-tools-stream").body))
    assert s.output_text == b.output_text
    assert [(t.name, t.arguments) for t in s.tool_calls] == [(t.name, t.arguments) for t in b.tool_calls]
    assert (s.finish_reason, s.raw_finish_reason) == (b.finish_reason, b.raw_finish_reason) == ("tool_calls", "max_tokens")
    assert (s.usage.input_tokens, s.usage.output_tokens) == (b.usage.input_tokens, b.usage.output_tokens) == (212, 96)


# ------------------------------------------------------------------------------ request encoding vs recorded requests


def _blocks(content: Any) -> Any:
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def norm(body: dict[str, Any]) -> dict[str, Any]:
    """Equivalent spellings made equal: ``stream: false`` = absent; a string = one text block."""
    b = dict(body)
    if b.get("stream") is False:
        del b["stream"]
    if "system" in b:
        b["system"] = _blocks(b["system"])
    msgs = []
    for m in b.get("messages", []):
        content = [
            {**blk, "content": _blocks(blk["content"])} if blk.get("type") == "tool_result" and "content" in blk else blk
            for blk in _blocks(m["content"])
        ]
        msgs.append({**m, "content": content})
    b["messages"] = msgs
    return b


def text_of(rec: dict[str, Any], i: int, j: int = 0) -> str:
    content = rec["messages"][i]["content"]
    return content if isinstance(content, str) else content[j]["text"]


def tool_from(spec: dict[str, Any]) -> allm.Tool:
    return allm.Tool(spec["name"], spec.get("description", ""), spec["input_schema"])


def build_request(name: str, rec: dict[str, Any]) -> tuple[Anthropic, allm.Request]:
    """The allm request a user would write for each recorded conversation."""
    model, max_tokens = rec["model"], rec["max_tokens"]
    tools = [tool_from(t) for t in rec.get("tools", [])]
    if name in ("nonstream-text", "stream-text", "error-401-authentication"):
        return A, allm.request(text_of(rec, 0), model=model, max_tokens=max_tokens)
    if name in ("nonstream-thinking", "stream-thinking"):
        return Anthropic(thinking_budget=1024), allm.request(text_of(rec, 0), model=model, max_tokens=max_tokens)
    if name in ("nonstream-parallel-tool-use", "stream-tool-use"):
        return A, allm.request(text_of(rec, 0), model=model, max_tokens=max_tokens, tools=tools)
    if name == "stream-tool-use-no-params":
        msgs = [allm.system(rec["system"][0]["text"]), allm.user(text_of(rec, 0))]
        return A, allm.request(msgs, model=model, max_tokens=max_tokens, tools=tools)
    if name == "stream-tool-result-followup":
        # The assistant turn is the real decoded answer of the stream-tool-use recording.
        first = fold_response(stream_events(load_case("anthropic", "stream-tool-use").body))
        result = rec["messages"][2]["content"][0]
        msgs = [allm.user(text_of(rec, 0)), first.message, allm.tool_result(first.tool_calls[0].id, result["content"][0]["text"])]
        return A, allm.request(msgs, model=model, max_tokens=max_tokens, tools=tools)
    if name == "stream-error-event-overloaded":
        said, use = rec["messages"][1]["content"]
        call = allm.ToolCall(use["id"], use["name"], use["input"])
        result = rec["messages"][2]["content"][0]["content"]
        msgs = [allm.user(text_of(rec, 0)), allm.assistant(said["text"], tool_calls=[call]), allm.tool_result(call.id, result)]
        return A, allm.request(msgs, model=model, max_tokens=max_tokens, temperature=rec["temperature"], tools=tools)
    if name == "structured-output-json-schema":
        schema = rec["output_config"]["format"]["schema"]
        return A, allm.request(text_of(rec, 0), model=model, max_tokens=max_tokens, response_format=allm.json_schema("person", schema))
    if name == "vision-image-base64":
        src = rec["messages"][0]["content"][1]["source"]
        parts = [allm.TextPart(text_of(rec, 0)), allm.ImagePart.from_base64(src["data"], src["media_type"])]
        return A, allm.request([allm.user(parts)], model=model, max_tokens=max_tokens)
    if name == "error-529-overloaded":
        return A, allm.request(text_of(rec, 0), model=model, max_tokens=max_tokens, temperature=rec["temperature"], tools=tools)
    if name in ("error-400-prompt-too-long", "error-429-rate-limit-retry-after"):
        msgs = [allm.Message(m["role"], text_of(rec, i)) for i, m in enumerate(rec["messages"])]
        return A, allm.request(msgs, model=model, max_tokens=max_tokens, temperature=rec.get("temperature"))
    raise AssertionError(f"no request builder for {name}")


RECORDED_REQUESTS = [n for n in case_names("anthropic") if n != "models-list"]


@pytest.mark.parametrize("name", RECORDED_REQUESTS)
def test_encoding_matches_recorded_request(name: str) -> None:
    case = load_case("anthropic", name)
    adapter, req = build_request(name, case.request)
    stream = bool(case.request.get("stream"))
    call = adapter.encode(req, stream=stream)
    assert f"{call.method} {call.url}" == case.request_line
    ours, recorded = norm(orjson.loads(call.body)), norm(case.request)
    assert sorted(ours) == sorted(recorded)
    for field in recorded:
        assert ours[field] == recorded[field], field
    headers = dict(line.split(": ", 1) for line in (FIXTURES / "anthropic" / name / "request_headers.txt").read_text().splitlines() if ": " in line)
    assert call.headers["anthropic-version"] == headers["Anthropic-Version"]
    assert call.headers["content-type"] == headers["Content-Type"]
    assert call.warnings == ()


LLAMA = Anthropic(base_url="http://127.0.0.1:8088/v1")


@pytest.mark.parametrize("name", MESSAGES_CAPTURES)
def test_encoding_matches_llama_server_requests(name: str) -> None:
    cap = load_capture(name)
    rec = cap.request
    msgs = [allm.system(rec["system"])] if "system" in rec else []
    msgs += [allm.user(m["content"]) for m in rec["messages"]]
    req = allm.request(
        msgs,
        model=rec["model"],
        max_tokens=rec["max_tokens"],
        temperature=rec["temperature"],
        tools=[tool_from(t) for t in rec.get("tools", [])],
        tool_choice="required" if "tool_choice" in rec else None,
    )
    call = LLAMA.encode(req, stream=bool(rec.get("stream")))
    assert (call.method, call.url) == (cap.method, "http://127.0.0.1:8088" + cap.path)
    assert norm(orjson.loads(call.body)) == norm(rec)


# ------------------------------------------------------------------------------ encoding rules


def body_of(req: allm.Request, adapter: Anthropic = A, stream: bool = True) -> dict[str, Any]:
    return orjson.loads(adapter.encode(req, stream=stream).body)


def test_thinking_round_trip_sends_blocks_back_exactly() -> None:
    case = load_case("anthropic", "stream-thinking")
    first = fold_response(stream_events(case.body))
    thinking, text = accumulate(case.body)["content"]
    thread = [allm.user("q"), first.message, allm.user("And then?")]
    body = body_of(allm.request(thread, model=MODEL), Anthropic(thinking_budget=1024))
    assert body["messages"][1] == {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": thinking["thinking"], "signature": thinking["signature"]},
            {"type": "text", "text": text["text"]},
        ],
    }
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert body["max_tokens"] == 4096 + 1024


def test_reasoning_of_other_providers_is_not_sent() -> None:
    parts = (
        allm.ReasoningPart("mine", signature="sig-a", provider="anthropic"),
        allm.ReasoningPart("", redacted_data="opaque", provider="anthropic"),
        allm.ReasoningPart("gemini thought", signature="g-sig", provider="gemini"),
        allm.ReasoningPart("summary", id="rs_1", encrypted_content="enc", provider="openai"),
        allm.ReasoningPart("unknown origin"),
        allm.TextPart("answer"),
    )
    body = body_of(allm.request([allm.user("a"), allm.Message("assistant", parts)], model="m"))
    assert body["messages"][1]["content"] == [
        {"type": "thinking", "thinking": "mine", "signature": "sig-a"},
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "text", "text": "answer"},
    ]


def test_tool_results_group_into_one_user_message() -> None:
    calls = [allm.ToolCall("toolu_1", "a", {"x": 1}), allm.ToolCall("toolu_2", "b", {})]
    thread = [
        allm.user("go"),
        allm.assistant("Calling both.", tool_calls=calls),
        allm.tool_result("toolu_1", "one"),
        allm.tool_result("toolu_2", "failed", is_error=True),
        allm.user("now summarise"),
        allm.assistant("ok"),
        allm.user("thanks"),
    ]
    msgs = body_of(allm.request(thread, model="m"))["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant", "user"]
    assert msgs[1]["content"] == [
        {"type": "text", "text": "Calling both."},
        {"type": "tool_use", "id": "toolu_1", "name": "a", "input": {"x": 1}},
        {"type": "tool_use", "id": "toolu_2", "name": "b", "input": {}},
    ]
    assert msgs[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "one"}]},
        {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "failed"}], "is_error": True},
        {"type": "text", "text": "now summarise"},
    ]
    assert msgs[4] == {"role": "user", "content": [{"type": "text", "text": "thanks"}]}


def test_foreign_tool_ids_are_rewritten_the_same_way_for_call_and_result() -> None:
    foreign = ["call_abc.123", "functions.get_weather:0", "id with spaces", "é", ""]
    for tid in foreign:
        w = wire_tool_id(tid)
        assert re.fullmatch(r"[a-zA-Z0-9_-]+", w) and w == wire_tool_id(tid) and w != tid
    assert len({wire_tool_id(t) for t in foreign}) == len(foreign)
    assert wire_tool_id("call.1") != wire_tool_id("call_1") and wire_tool_id("call_1") == "call_1"
    assert wire_tool_id("toolu_01MKSN7NHsBVKr7Jvw5pqCQq") == "toolu_01MKSN7NHsBVKr7Jvw5pqCQq"
    thread = [
        allm.user("go"),
        allm.assistant(tool_calls=[allm.ToolCall("functions.get_weather:0", "get_weather", {"city": "Paris"})]),
        allm.tool_result("functions.get_weather:0", "18 C"),
    ]
    msgs = body_of(allm.request(thread, model="m"))["messages"]
    use, result = msgs[1]["content"][0], msgs[2]["content"][0]
    assert use["id"] == result["tool_use_id"] == wire_tool_id("functions.get_weather:0")
    assert use["id"].startswith("functions_get_weather_0_")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80), st.text(max_size=80))
def test_wire_tool_id_is_valid_deterministic_and_keeps_ids_apart(a: str, b: str) -> None:
    wa = wire_tool_id(a)
    assert re.fullmatch(r"[a-zA-Z0-9_-]+", wa) and len(wa) <= 80 and wa == wire_tool_id(a)
    if a != b:
        assert wa != wire_tool_id(b)


def test_system_messages_and_images() -> None:
    png = allm.ImagePart.from_bytes(b"\x89PNG\r\n", "image/png")
    url = allm.ImagePart.from_url("https://example.org/cat.jpg", detail="high")
    thread = [allm.system("Be brief."), allm.system("Use metric units."), allm.user([allm.TextPart("What is this?"), png, url])]
    call = A.encode(allm.request(thread, model="m"), stream=True)
    body = orjson.loads(call.body)
    assert body["system"] == [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Use metric units."}]
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png.image.base64}},
        {"type": "image", "source": {"type": "url", "url": "https://example.org/cat.jpg"}},
    ]
    assert [(w.kind, w.setting, w.provider, str(w)) for w in call.warnings] == [
        ("unsupported_feature", "detail", "anthropic", "image detail is not supported by Anthropic and was not sent")
    ]
    # A system message later in the thread moves up, with a note.
    late = A.encode(allm.request([allm.user("hi"), allm.system("late rule"), allm.user("again")], model="m"), stream=True)
    assert orjson.loads(late.body)["system"] == [{"type": "text", "text": "late rule"}]
    assert len(late.warnings) == 1 and "moved to the top-level system prompt" in late.warnings[0].message
    assert (late.warnings[0].kind, late.warnings[0].setting) == ("moved_content", "system")


def test_invalid_messages_are_rejected_before_sending() -> None:
    png = allm.ImagePart.from_bytes(b"\x89PNG", "image/png")
    cases = [
        ([allm.Message("system", (png,))], "system message"),
        ([allm.Message("tool", "x")], "tool_call_id"),
        ([allm.user("a"), allm.Message("assistant", (png,))], "not in an assistant message"),
        ([allm.user(allm.ImagePart.from_bytes(b"%PDF", "application/pdf"))], "image/png"),
    ]
    for msgs, match in cases:
        with pytest.raises(ValidationError, match=match):
            A.encode(allm.request(msgs, model="m"), stream=True)
    with pytest.raises(ValidationError, match="needs a schema"):
        A.encode(allm.request("x", model="m", response_format=allm.ResponseFormat("json_schema")), stream=True)
    with pytest.raises(ValidationError, match="thinking budget"):
        Anthropic(thinking_budget=2048).encode(allm.request("x", model="m", max_tokens=1024), stream=True)


def test_empty_text_is_not_sent() -> None:
    thread = [allm.user("a"), allm.assistant(""), allm.user([allm.TextPart(""), allm.TextPart("b")])]
    msgs = body_of(allm.request(thread, model="m"))["messages"]
    assert msgs == [{"role": "user", "content": [{"type": "text", "text": "a"}]}, {"role": "user", "content": [{"type": "text", "text": "b"}]}]


def test_tool_choice_and_tools() -> None:
    tool = allm.Tool("get_weather", "Weather for a city", {"type": "object", "properties": {"city": {"type": "string"}}}, strict=True)
    for choice, wire in [("auto", {"type": "auto"}), ("none", {"type": "none"}), ("required", {"type": "any"}), ("get_weather", {"type": "tool", "name": "get_weather"})]:
        body = body_of(allm.request("x", model="m", tools=[tool], tool_choice=choice))
        assert body["tool_choice"] == wire
    assert body["tools"] == [{"name": "get_weather", "description": "Weather for a city", "input_schema": dict(tool.schema), "strict": True}]
    assert "tool_choice" not in body_of(allm.request("x", model="m", tools=[tool]))


def test_sampling_fields_defaults_and_warnings() -> None:
    req = allm.request(
        "hi",
        model="m",
        temperature=0.2,
        top_p=0.9,
        top_k=40,
        stop_sequences=["END"],
        seed=7,
        frequency_penalty=0.1,
        presence_penalty=0.3,
    )
    call = A.encode(req, stream=True)
    body = orjson.loads(call.body)
    assert (body["temperature"], body["top_p"], body["top_k"], body["stop_sequences"]) == (0.2, 0.9, 40, ["END"])
    assert body["max_tokens"] == 4096 and body["stream"] is True
    assert not {"seed", "frequency_penalty", "presence_penalty", "stop"} & set(body)
    assert [w.message for w in call.warnings] == [
        "seed is not supported by Anthropic and was not sent",
        "frequency_penalty is not supported by Anthropic and was not sent",
        "presence_penalty is not supported by Anthropic and was not sent",
    ]
    assert {(w.kind, w.provider) for w in call.warnings} == {("dropped_setting", "anthropic")}
    assert [w.setting for w in call.warnings] == ["seed", "frequency_penalty", "presence_penalty"]
    # The warnings reach the response through the decoded stream.
    resp = fold_response(feed_all(A.decoder(call), [load_case("anthropic", "stream-text").body]))
    assert resp.warnings == call.warnings and resp.output_text == "1\n2\n3"
    assert body_of(allm.request("hi", model="m", max_tokens=12), Anthropic(default_max_tokens=100))["max_tokens"] == 12
    assert body_of(allm.request("hi", model="m"), Anthropic(default_max_tokens=100))["max_tokens"] == 100
    assert "stream" not in body_of(allm.request("hi", model="m"), stream=False)


def test_thinking_drops_sampling_it_does_not_allow() -> None:
    call = Anthropic(thinking_budget=2000).encode(allm.request("x", model="m", temperature=0, top_k=5, top_p=0.5), stream=False)
    body = orjson.loads(call.body)
    assert not {"temperature", "top_k", "top_p"} & set(body)
    assert [w.setting for w in call.warnings] == ["temperature", "top_p", "top_k"]
    assert all("extended thinking" in w.message for w in call.warnings)
    kept = orjson.loads(Anthropic(thinking_budget=2000).encode(allm.request("x", model="m", top_p=0.97), stream=False).body)
    assert kept["top_p"] == 0.97
    # A request's own thinking setting wins over the adapter's.
    own = body_of(allm.request("x", model="m", temperature=0.5, options={"thinking": {"type": "disabled"}}), Anthropic(thinking_budget=2000))
    assert own["thinking"] == {"type": "disabled"} and own["temperature"] == 0.5 and own["max_tokens"] == 4096


def test_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"], "additionalProperties": False}
    body = body_of(allm.request("x", model="m", response_format=allm.json_schema("thing", schema)))
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    call = A.encode(allm.request("x", model="m", response_format=allm.ResponseFormat("json_object")), stream=True)
    assert "output_config" not in orjson.loads(call.body) and "json_object" in call.warnings[0].message
    assert (call.warnings[0].kind, call.warnings[0].setting) == ("unsupported_feature", "response_format")
    assert "output_config" not in body_of(allm.request("x", model="m", response_format=allm.ResponseFormat("text")))


def test_headers_betas_and_options() -> None:
    adapter = Anthropic(beta=("prompt-caching-2024-07-31", "interleaved-thinking-2025-05-14"), version="2023-06-01")
    req = allm.request("x", model="m", options={"anthropic_beta": ["interleaved-thinking-2025-05-14", "files-api-2025-04-14"], "metadata": {"user_id": "u1"}})
    call = adapter.encode(req, stream=True)
    assert call.headers["anthropic-beta"] == "prompt-caching-2024-07-31,interleaved-thinking-2025-05-14,files-api-2025-04-14"
    assert call.headers["anthropic-version"] == "2023-06-01" and call.headers["accept"] == "text/event-stream"
    body = orjson.loads(call.body)
    assert body["metadata"] == {"user_id": "u1"} and "anthropic_beta" not in body
    assert Anthropic(beta="a, b").beta == ("a", "b")
    assert "anthropic-beta" not in A.encode(allm.request("x", model="m"), stream=False).headers
    assert A.encode(allm.request("x", model="m"), stream=False).headers["accept"] == "application/json"
    assert A.encode(allm.request("x", model="m", options={"anthropic_beta": "one"}), stream=True).headers["anthropic-beta"] == "one"
    with pytest.raises(ValidationError, match="anthropic_beta"):
        A.encode(allm.request("x", model="m", options={"anthropic_beta": 5}), stream=True)


def test_prompt_caching() -> None:
    auto = body_of(allm.request("x", model="m"), Anthropic(cache_control=True))
    assert auto["cache_control"] == {"type": "ephemeral"}
    assert body_of(allm.request("x", model="m"), Anthropic(cache_control=True, cache_ttl="1h"))["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    assert "cache_control" not in body_of(allm.request("x", model="m"))
    mark = {"anthropic": {"cache_control": {"type": "ephemeral"}}}
    tool = allm.Tool("t", "d", metadata=mark)
    thread = [
        allm.Message("system", "long instructions", metadata=mark),
        allm.Message("user", (allm.TextPart("doc"), allm.TextPart("question")), metadata=mark),
    ]
    body = body_of(allm.request(thread, model="m", tools=[tool]))
    assert body["system"] == [{"type": "text", "text": "long instructions", "cache_control": {"type": "ephemeral"}}]
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "doc"},
        {"type": "text", "text": "question", "cache_control": {"type": "ephemeral"}},
    ]
    assert body["tools"][0]["cache_control"] == {"type": "ephemeral"}
    with pytest.raises(ValueError, match="cache_ttl"):
        Anthropic(cache_control=True, cache_ttl="2h")


def test_keys_and_auth() -> None:
    assert A.key_spec == allm.providers.base.KeySpec("anthropic", ("ANTHROPIC_API_KEY",), True)
    assert A.auth_headers("sk-ant-test") == {"x-api-key": "sk-ant-test"} and A.auth_headers(None) == {}
    local = Anthropic(base_url="http://127.0.0.1:8080/v1")
    assert not local.key_spec.required and local.key_spec.provider == "anthropic"
    assert Anthropic(base_url="https://api.anthropic.com/v1/").key_spec.required
    assert Anthropic(base_url="https://gateway.example/v1", key_required=True).key_spec.required
    assert not Anthropic(key_required=False).key_spec.required
    call = A.encode(allm.request("x", model="m"), stream=True)
    assert not {"x-api-key", "authorization"} & {k.lower() for k in call.headers}
    with pytest.raises(ValueError, match="default_max_tokens"):
        Anthropic(default_max_tokens=0)
    with pytest.raises(ValueError, match="thinking_budget"):
        Anthropic(thinking_budget=0)


def test_missing_key_for_the_official_api_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    engine = allm.Engine(adapter=A, model=MODEL)
    with pytest.raises(allm.EngineError) as info:
        allm.stream_generate(engine, "hi")
    assert info.value.reason == "missing_key" and "ANTHROPIC_API_KEY" in str(info.value)


def test_engine_round_trips_through_json_and_pickle() -> None:
    for adapter in (A, Anthropic(base_url="http://127.0.0.1:8080/v1", beta=["x"], default_max_tokens=512, thinking_budget=2048, cache_control=True, cache_ttl="5m", key_required=False)):
        engine = allm.Engine(adapter=adapter, model=MODEL, defaults={"temperature": 0})
        data = codec.dumps(engine)
        back = codec.loads(data, allm.Engine)
        assert back == engine and type(back.adapter) is Anthropic
        assert codec.dumps(back) == data
        assert pickle.loads(pickle.dumps(engine)) == engine
    assert orjson.loads(codec.dumps(allm.Engine(adapter=A)))["value"]["adapter"] == {"adapter": "Anthropic"}


# ------------------------------------------------------------------------------ decoding: finish, usage, odd shapes


def sse(*events: dict[str, Any]) -> bytes:
    return b"".join(b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events)


START = {"type": "message_start", "message": {"id": "msg_1", "model": "m", "usage": {"input_tokens": 10, "output_tokens": 1}}}
STOP = {"type": "message_stop"}


def text_block(i: int, text: str) -> list[dict[str, Any]]:
    return [
        {"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": text}},
        {"type": "content_block_stop", "index": i},
    ]


def delta(stop_reason: str | None, **usage: int) -> dict[str, Any]:
    return {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None}, "usage": usage}


def test_stop_reasons() -> None:
    assert [map_stop_reason(r) for r in ("end_turn", "stop_sequence", "max_tokens", "model_context_window_exceeded", "tool_use", "refusal", "pause_turn", "new_reason", None)] == [
        "stop", "stop", "length", "length", "tool_calls", "content_filter", "other", "other", None,
    ]  # fmt: skip
    refusal = fold_response(stream_events(sse(START, *text_block(0, "I can't help with that."), delta("refusal", output_tokens=7), STOP)))
    assert (refusal.finish_reason, refusal.raw_finish_reason) == ("content_filter", "refusal")
    stop_seq = {"type": "message_delta", "delta": {"stop_reason": "stop_sequence", "stop_sequence": "END"}, "usage": {"output_tokens": 2}}
    resp = fold_response(stream_events(sse(START, *text_block(0, "ab"), stop_seq, STOP)))
    assert resp.finish_reason == "stop" and resp.metadata == {"stop_sequence": "END"}


def test_usage_mapping_and_merge() -> None:
    assert map_usage({"input_tokens": 5, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20, "output_tokens": 3}) == allm.Usage(125, 3, 100, 20, None, 128)
    assert map_usage({"output_tokens": 3}) == allm.Usage(None, 3)
    assert map_usage({}) == allm.Usage()
    dropped: dict[str, object] = {}
    assert map_usage({"input_tokens": "5", "output_tokens": True}, dropped) == allm.Usage(5)  # a numeric string is read
    assert dropped == {"output_tokens": True}  # an unreadable counter is None, and recorded
    # message_delta carries cumulative counts that replace message_start's.
    body = sse(START, *text_block(0, "hi"), delta("end_turn", input_tokens=10, cache_read_input_tokens=50, output_tokens=4), STOP)
    assert fold_response(stream_events(body)).usage == allm.Usage(60, 4, 50, None, None, 64)


def test_unknown_events_and_deltas_are_skipped() -> None:
    body = sse(
        START,
        {"type": "ping"},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": '{"query": "x"}'}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "citations_delta", "citation": {"type": "char_location"}}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "found it"}},
        {"type": "content_block_stop", "index": 1},
        {"type": "future_event", "data": 1},
        delta("end_turn", output_tokens=3),
        STOP,
    )
    resp = fold_response(stream_events(body))
    assert resp.output_text == "found it" and resp.tool_calls == () and resp.finish_reason == "stop"


def test_redacted_thinking_and_whole_tool_input() -> None:
    body = sse(
        START,
        {"type": "content_block_start", "index": 0, "content_block": {"type": "redacted_thinking", "data": "EmwKAhgBEgy..."}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_9", "name": "f", "input": {"a": 1}}},
        {"type": "content_block_stop", "index": 1},
        delta("tool_use", output_tokens=3),
        STOP,
    )
    resp = fold_response(stream_events(body))
    assert resp.message.reasoning == (allm.ReasoningPart("", None, "EmwKAhgBEgy...", None, None, "anthropic"),)
    assert [(t.id, dict(t.arguments)) for t in resp.tool_calls] == [("toolu_9", {"a": 1})]
    body_msg = {"id": "msg_1", "model": "m", "content": [{"type": "redacted_thinking", "data": "EmwKAhgBEgy..."}, {"type": "tool_use", "id": "toolu_9", "name": "f", "input": {"a": 1}}], "stop_reason": "tool_use", "usage": {"input_tokens": 10, "output_tokens": 3}}
    _same_response(resp, fold_response(body_events(orjson.dumps(body_msg))))
    # Sent back as received.
    sent = body_of(allm.request([allm.user("q"), resp.message], model="m"))["messages"][1]["content"]
    assert sent == [{"type": "redacted_thinking", "data": "EmwKAhgBEgy..."}, {"type": "tool_use", "id": "toolu_9", "name": "f", "input": {"a": 1}}]


def test_invalid_tool_arguments_are_kept_with_a_parse_error() -> None:
    body = sse(
        START,
        {"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": '{"a": '}},
        {"type": "content_block_stop", "index": 0},
        delta("tool_use", output_tokens=3),
        STOP,
    )
    (tc,) = fold_response(stream_events(body)).tool_calls
    assert tc.arguments == {} and tc.raw_arguments == '{"a": ' and tc.parse_error and "not valid JSON" in tc.parse_error


def test_include_raw_chunks() -> None:
    body = load_case("anthropic", "stream-tool-use").body
    events = stream_events(body, include_raw=True)
    raw = [e for e in events if isinstance(e, RawChunk) and e.usage is None]
    pings = sum(1 for e in sse_events(body) if e["type"] == "ping")
    assert [r.data for r in raw] == [e for e in sse_events(body) if e["type"] != "ping"]
    assert pings == 1
    assert sum(1 for e in events if isinstance(e, RawChunk) and e.usage is not None) == 2  # message_start, message_delta
    nonraw = [e for e in stream_events(body) if not isinstance(e, RawChunk)]
    assert [e for e in events if not isinstance(e, RawChunk)] == nonraw
    b = body_events(load_case("anthropic", "nonstream-text").body, include_raw=True)
    assert [type(e) for e in b[:2]] == [MessageStarted, RawChunk] and b[1].data == orjson.loads(load_case("anthropic", "nonstream-text").body)


# ------------------------------------------------------------------------------ failure modes


def test_stream_without_message_stop_is_an_error() -> None:
    body = load_case("anthropic", "stream-thinking").body
    truncated = body[: body.rindex(b"event: message_stop")]
    events = stream_events(truncated)
    assert isinstance(events[-1], Error) and events[-1].error.reason == "malformed_response"
    assert "message_stop" in events[-1].error.message
    assert not any(isinstance(e, MessageCompleted) for e in events)
    resp = fold_response(events)
    full = fold_response(stream_events(body))
    assert resp.finish_reason == "error" and resp.output_text == full.output_text  # partial output kept
    assert resp.usage.output_tokens == 638  # and the usage received so far


def test_stream_cut_mid_block_keeps_what_arrived() -> None:
    body = load_case("anthropic", "stream-tool-result-followup").body
    cut = body[: body.index(b"breeze")]
    resp = fold_response(stream_events(cut))
    assert resp.finish_reason == "error" and resp.metadata["error"].reason == "malformed_response"
    assert resp.output_text.startswith("The weather in Berlin is currently:")
    assert fold_response(stream_events(b"")).metadata["error"].reason == "malformed_response"


def test_invalid_json_event_is_a_typed_error() -> None:
    body = sse(START, *text_block(0, "a")[:2]) + b"event: content_block_delta\ndata: {nope\n\n"
    events = stream_events(body)
    assert [type(e).__name__ for e in events] == ["MessageStarted", "RawChunk", "TextDelta", "Error"]
    assert events[-1].error.reason == "malformed_response"


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        ({"type": "overloaded_error", "message": "Overloaded"}, "provider_unavailable"),
        ({"type": "api_error", "message": "Internal server error"}, "provider_unavailable"),
        ({"type": "rate_limit_error", "message": "slow down"}, "rate_limited"),
        ({"type": "invalid_request_error", "message": "prompt is too long: 300000 tokens > 200000 maximum"}, "context_length_exceeded"),
        ({"type": "something_new", "message": "?"}, "unknown"),
        ("a bare string", "unknown"),
    ],
)
def test_error_event_after_content(error: Any, reason: str) -> None:
    body = sse(START, *text_block(0, "partial answer"), {"type": "error", "error": error})
    events = stream_events(body)
    assert isinstance(events[-1], Error) and events[-1].error.reason == reason
    resp = fold_response(events)
    assert resp.finish_reason == "error" and resp.output_text == "partial answer"


@pytest.mark.parametrize(
    "bad",
    [
        [1, 2],
        {"type": "message_start", "message": "no"},
        {"type": "content_block_start", "content_block": {"type": "text"}},
        {"type": "content_block_start", "index": "0", "content_block": {"type": "text"}},
        {"type": "content_block_start", "index": 0, "content_block": []},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": 5}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta"}},
        {"type": "content_block_delta", "index": 0, "delta": "x"},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": None}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "redacted_thinking"}},
        {"type": "message_delta", "delta": {"stop_reason": 3}},
        {"type": "message_delta", "delta": {}, "usage": [1]},
    ],
)
def test_unexpected_shapes_are_typed_errors(bad: Any) -> None:
    body = sse(START) + b"data: " + orjson.dumps(bad) + b"\n\n" + sse(STOP)
    events = stream_events(body)
    assert isinstance(events[-1], Error) and events[-1].error.reason == "malformed_response", events
    assert not any(isinstance(e, MessageCompleted) for e in events)


def test_feeding_after_the_end_gives_nothing() -> None:
    call = A.encode(allm.request("x", model="m"), stream=True)
    dec = A.decoder(call)
    events = dec.feed(load_case("anthropic", "stream-text").body)
    assert isinstance(events[-1], MessageCompleted) and dec.finished and not dec.failed
    assert dec.feed(sse(START)) == [] and dec.close() == []
    failed = A.decoder(call)
    assert isinstance(failed.feed(b"data: {nope\n\n")[-1], Error) and failed.failed
    assert failed.feed(sse(START)) == [] and failed.close() == []


def test_body_failure_modes() -> None:
    assert body_events(b"not json")[0].error.reason == "malformed_response"
    assert body_events(b"[1]")[0].error.reason == "malformed_response"
    err = body_events(b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}')
    assert [type(e) for e in err] == [Error] and err[0].error.reason == "provider_unavailable"
    for bad in (
        {"id": "msg_1", "content": "text"},
        {"id": "msg_1", "content": [1]},
        {"id": "msg_1", "content": [{"type": "text"}]},
        {"id": "msg_1", "content": [{"type": "text", "text": 5}]},
        {"id": "msg_1"},
    ):
        events = body_events(orjson.dumps(bad))
        assert isinstance(events[-1], Error) and events[-1].error.reason == "malformed_response", bad
        assert not any(isinstance(e, MessageCompleted) for e in events)
