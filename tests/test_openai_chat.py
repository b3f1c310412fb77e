"""The Chat Completions adapter against recorded OpenAI and llama-server traffic."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import allm
from allm.errors import AdapterError, ValidationError
from allm.events import Error, MessageCompleted, RawChunk, TextDelta, ToolCallCompleted, ToolCallDelta, ToolCallStarted
from allm.fold import fold_response
from allm.providers import OpenAI, OpenAICompatible
from allm.providers.openai import DIALECTS, Dialect
from allm.types import CallWarning
from tests.conftest import capture_names, case_names, feed_all, load_capture, load_case, splits

OPENAI = OpenAI()
LLAMA = OpenAICompatible.llama_cpp("http://127.0.0.1:8080/v1")


def stream_events(adapter: Any, body: bytes, model: str = "m", **kw: Any) -> list[Any]:
    call = adapter.encode(allm.request("x", model=model), stream=True)
    return feed_all(adapter.decoder(call, **kw), [body])


def body_events(adapter: Any, body: bytes) -> list[Any]:
    call = adapter.encode(allm.request("x", model="m"), stream=False)
    return adapter.decode_body(call, body)


# ------------------------------------------------------------------------------ OpenAI recorded cases

STREAM_CASES = case_names("openai-chat", "stream-")
BODY_CASES = [*case_names("openai-chat", "nonstream-"), "vision-image-base64"]
ERROR_CASES = case_names("openai-chat", "error-")


def test_every_recorded_case_is_covered() -> None:
    assert sorted(STREAM_CASES + BODY_CASES + ERROR_CASES) == case_names("openai-chat")


@pytest.mark.parametrize("name", STREAM_CASES)
def test_recorded_streams_decode_to_a_complete_message(name: str) -> None:
    case = load_case("openai-chat", name)
    events = stream_events(OPENAI, case.body)
    assert not any(isinstance(e, Error) for e in events)
    assert isinstance(events[-1], MessageCompleted)
    resp = fold_response(events)
    assert resp.id and resp.id.startswith("chatcmpl-")
    assert resp.model == "gpt-4.1-nano-2025-04-14"
    # include_usage was requested in every recorded stream: usage arrives in the last chunk.
    assert resp.usage.input_tokens and resp.usage.output_tokens
    assert resp.usage.total_tokens == resp.usage.input_tokens + resp.usage.output_tokens
    assert resp.usage.cached_input_tokens == 0
    assert resp.usage.reasoning_tokens == 0


def test_stream_text_with_usage() -> None:
    events = stream_events(OPENAI, load_case("openai-chat", "stream-text-include-usage-2").body)
    deltas = [e.delta for e in events if isinstance(e, TextDelta)]
    resp = fold_response(events)
    assert resp.output_text == "".join(deltas)
    assert resp.output_text.startswith("1, 2")
    assert resp.finish_reason == "stop" and resp.raw_finish_reason == "stop"
    assert resp.tool_calls == ()


def test_stream_single_tool_call_assembles_from_fragments() -> None:
    events = stream_events(OPENAI, load_case("openai-chat", "stream-tool-call-single").body)
    started = [e for e in events if isinstance(e, ToolCallStarted)]
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    done = [e for e in events if isinstance(e, ToolCallCompleted)]
    assert [s.name for s in started] == ["weather"]
    assert len(deltas) > 3 and all(d.tool_call_id == started[0].tool_call_id for d in deltas)
    assert len(done) == 1
    tc = done[0].tool_call
    assert tc.id == "call_Ri18CzwNncOY61C3aLD9JKX1"
    assert tc.arguments == {"latitude": "52.5200", "longitude": "13.4050"}
    assert tc.raw_arguments == "".join(d.arguments_delta for d in deltas)
    resp = fold_response(events)
    assert resp.finish_reason == "tool_calls" and resp.tool_calls == (tc,)
    assert resp.message.tool_calls == (tc,) and resp.output_text == ""
    # Event order: started before its deltas, completed before the message.
    kinds = [type(e) for e in events]
    assert kinds.index(ToolCallStarted) < kinds.index(ToolCallDelta) < kinds.index(ToolCallCompleted)
    assert kinds.index(ToolCallCompleted) < kinds.index(MessageCompleted)


def test_stream_tool_call_without_arguments() -> None:
    resp = fold_response(stream_events(OPENAI, load_case("openai-chat", "stream-tool-call-no-arguments").body))
    assert [(t.name, dict(t.arguments)) for t in resp.tool_calls] == [("best_language_to_learn", {})]
    assert resp.tool_calls[0].parse_error is None


def test_nonstream_parallel_tool_calls() -> None:
    events = body_events(OPENAI, load_case("openai-chat", "nonstream-parallel-tool-calls").body)
    resp = fold_response(events)
    assert [t.name for t in resp.tool_calls] == ["weather", "best_language_to_learn"]
    assert resp.tool_calls[0].arguments == {"latitude": "52.5200", "longitude": "13.4050"}
    assert resp.tool_calls[1].arguments == {}
    assert resp.finish_reason == "tool_calls"
    assert resp.usage == allm.Usage(113, 54, 0, None, 0, 167)


def test_nonstream_single_tool_call_and_vision_text() -> None:
    resp = fold_response(body_events(OPENAI, load_case("openai-chat", "nonstream-tool-call").body))
    assert [t.id for t in resp.tool_calls] == ["call_Og7v77uIUeIdy1ff3ntB9Vh7"]
    vis = fold_response(body_events(OPENAI, load_case("openai-chat", "vision-image-base64").body))
    assert "red" in vis.output_text and vis.finish_reason == "stop"
    assert vis.usage.input_tokens == 56 and vis.usage.output_tokens == 37


@pytest.mark.parametrize(
    ("name", "reason", "status"),
    [
        ("error-400-invalid-type", "invalid_request", 400),
        ("error-401-invalid-api-key", "authentication_failed", 401),
        ("error-429-request-too-large", "context_length_exceeded", 429),
    ],
)
def test_recorded_errors_map_to_reasons(name: str, reason: str, status: int) -> None:
    case = load_case("openai-chat", name)
    err = OPENAI.error(case.status, case.headers, case.body)
    assert isinstance(err, AdapterError)
    assert (err.reason, err.status, err.provider) == (reason, status, "openai")
    assert err.message == orjson.loads(case.body)["error"]["message"] or "[redacted]" in err.message
    assert not err.retryable or reason != "context_length_exceeded"


def test_error_request_id_and_retry_after_headers() -> None:
    body = b'{"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}'
    err = OPENAI.error(429, {"x-request-id": "req_1", "retry-after-ms": "1500"}, body)
    assert (err.reason, err.request_id, err.retry_after) == ("rate_limited", "req_1", 1.5)
    assert err.retryable


def test_error_bodies_that_are_not_json() -> None:
    err = OPENAI.error(502, {}, b"<html>Bad gateway</html>")
    assert err.reason == "provider_unavailable" and "Bad gateway" in err.message
    assert OPENAI.error(503, {}, b"").message == "HTTP 503"


# ------------------------------------------------------------------------------ request encoding


def body_of(adapter: Any, req: allm.Request, stream: bool = True) -> dict[str, Any]:
    call = adapter.encode(req, stream=stream)
    return orjson.loads(call.body)


WEATHER = allm.Tool(
    "weather",
    "Gets current weather for a location",
    {
        "type": "object",
        "properties": {
            "latitude": {"type": "string", "description": "Latitude (e.g., 52.5200)"},
            "longitude": {"type": "string", "description": "Longitude (e.g., 13.4050)"},
        },
        "required": ["latitude", "longitude"],
        "additionalProperties": False,
        "strict": True,
    },
)


def test_encoding_matches_recorded_tool_request() -> None:
    case = load_case("openai-chat", "stream-tool-call-single")
    req = allm.request([allm.user("What's the weather in Berlin? (52.5200, 13.4050)")], model="gpt-4.1-nano", tools=[WEATHER])
    body = body_of(OPENAI, req)
    for field in ("model", "messages", "stream", "stream_options", "tools"):
        assert body[field] == case.request[field], field


def test_encoding_matches_recorded_tool_result_followup() -> None:
    case = load_case("openai-chat", "stream-tool-result-followup")
    first = fold_response(stream_events(OPENAI, load_case("openai-chat", "stream-tool-call-single").body))
    recorded_tool = case.request["messages"][2]
    thread = allm.Thread(
        [
            allm.user("What's the weather in Berlin? (52.5200, 13.4050)"),
            first.message,
            allm.tool_result(recorded_tool["tool_call_id"], recorded_tool["content"]),
        ]
    )
    body = body_of(OPENAI, allm.request(thread, model="gpt-4.1-nano", tools=[WEATHER]))
    assert body["messages"][0] == case.request["messages"][0]
    got_a, rec_a = body["messages"][1], case.request["messages"][1]
    assert got_a["role"] == rec_a["role"] == "assistant"
    # Field by field: the recorder re-serialised the arguments; we send them back exactly as received.
    for g, r in zip(got_a["tool_calls"], rec_a["tool_calls"], strict=True):
        assert (g["id"], g["type"], g["function"]["name"]) == (r["id"], r["type"], r["function"]["name"])
        assert orjson.loads(g["function"]["arguments"]) == orjson.loads(r["function"]["arguments"])
    assert not got_a.get("content") and not rec_a.get("content")
    assert body["messages"][2] == case.request["messages"][2]


def test_encoding_matches_recorded_vision_request() -> None:
    case = load_case("openai-chat", "vision-image-base64")
    rec = case.request["messages"][0]["content"]
    url = rec[1]["image_url"]["url"]
    req = allm.request([allm.user([allm.TextPart(rec[0]["text"]), allm.ImagePart.from_url(url)])], model="gpt-4.1-nano")
    body = body_of(OPENAI, req, stream=False)
    assert body["messages"][0]["content"] == rec
    assert "stream" not in body


def test_sampling_fields_and_warnings() -> None:
    req = allm.request(
        "hi",
        model="gpt-4.1-mini",
        temperature=0.2,
        top_p=0.9,
        top_k=40,
        max_tokens=64,
        stop_sequences=["END"],
        seed=7,
        frequency_penalty=0.1,
        presence_penalty=0.3,
    )
    call = OPENAI.encode(req, stream=True)
    body = orjson.loads(call.body)
    assert body["temperature"] == 0.2 and body["top_p"] == 0.9 and body["seed"] == 7
    assert body["max_completion_tokens"] == 64 and body["stop"] == ["END"]
    assert body["frequency_penalty"] == 0.1 and body["presence_penalty"] == 0.3
    assert "top_k" not in body
    assert call.warnings == (CallWarning("dropped_setting", "top_k", "openai", "top_k is not supported by openai and was not sent"),)
    # llama.cpp accepts top_k and uses max_tokens.
    lbody = body_of(LLAMA, req)
    assert lbody["top_k"] == 40 and lbody["max_tokens"] == 64 and "max_completion_tokens" not in lbody


def test_tool_choice_response_format_options() -> None:
    req = allm.request(
        "hi",
        model="m",
        tools=[WEATHER],
        tool_choice="weather",
        response_format=allm.json_schema("answer", {"type": "object"}),
        options={"logprobs": True},
    )
    body = body_of(OPENAI, req)
    assert body["tool_choice"] == {"type": "function", "function": {"name": "weather"}}
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
    }
    assert body["logprobs"] is True
    assert body_of(OPENAI, allm.request("hi", model="m", tools=[WEATHER], tool_choice="required"))["tool_choice"] == "required"


def test_invalid_messages_are_rejected_before_sending() -> None:
    img = allm.ImagePart.from_bytes(b"\x89PNG", "image/png")
    with pytest.raises(ValidationError, match="system message"):
        OPENAI.encode(allm.request([allm.Message("system", (img,))], model="m"), stream=True)
    with pytest.raises(ValidationError, match="tool_call_id"):
        OPENAI.encode(allm.request([allm.Message("tool", "x")], model="m"), stream=True)


def test_reasoning_parts_are_not_sent_back_to_chat_completions() -> None:
    msg = allm.Message("assistant", (allm.ReasoningPart("thinking", signature="sig", provider="anthropic"), allm.TextPart("hi")))
    body = body_of(OPENAI, allm.request([allm.user("a"), msg], model="m"))
    assert body["messages"][1] == {"role": "assistant", "content": "hi"}


def test_dialects_and_headers() -> None:
    r = OpenAICompatible.openrouter(app_url="https://example.org", app_title="Demo")
    call = r.encode(allm.request("hi", model="openai/gpt-4.1-mini", top_k=3), stream=True)
    assert call.url == "https://openrouter.ai/api/v1/chat/completions"
    assert call.headers["HTTP-Referer"] == "https://example.org" and call.headers["X-Title"] == "Demo"
    assert orjson.loads(call.body)["top_k"] == 3 and call.warnings == ()
    assert r.key_spec.provider == "openrouter" and r.key_spec.env == ("OPENROUTER_API_KEY",)
    assert OpenAICompatible.ollama().encode(allm.request("x", model="m"), stream=True).url.endswith(":11434/v1/chat/completions")
    assert not OpenAICompatible.llama_cpp().key_spec.required
    custom = Dialect("mine", "mine", "http://h/v1", sampling=frozenset({"temperature"}), stream_usage=False)
    c = OpenAICompatible(dialect=custom).encode(allm.request("x", model="m", top_p=0.5), stream=True)
    assert "stream_options" not in orjson.loads(c.body)
    assert [(w.setting, w.provider, str(w)) for w in c.warnings] == [("top_p", "mine", "top_p is not supported by mine and was not sent")]
    with pytest.raises(ValueError, match="base_url"):
        OpenAICompatible()
    with pytest.raises(ValueError, match="unknown dialect"):
        OpenAICompatible("http://h", dialect="nope")
    with pytest.raises(ValueError, match="key"):
        OpenAICompatible("http://h", headers={"Authorization": "Bearer x"})
    assert set(DIALECTS) >= {"openai", "openrouter", "ollama", "llama.cpp", "vllm", "generic"}


def test_auth_headers() -> None:
    assert OPENAI.auth_headers("k") == {"authorization": "Bearer k"}
    assert LLAMA.auth_headers(None) == {}
    h = OpenAI(organization="org", project="p").encode(allm.request("x", model="m"), stream=False).headers
    assert h["openai-organization"] == "org" and h["openai-project"] == "p"


# ------------------------------------------------------------------------------ llama-server captures

CHAT_CAPTURES = [n for n in capture_names() if load_capture(n).path == "/v1/chat/completions" and load_capture(n).method == "POST"]


def test_chat_capture_list() -> None:
    assert len(CHAT_CAPTURES) == 30


@pytest.mark.parametrize("name", CHAT_CAPTURES)
def test_llama_server_chat_captures(name: str) -> None:
    cap = load_capture(name)
    if cap.status >= 400:
        err = LLAMA.error(cap.status, cap.headers, cap.body)
        assert err.provider == "llama_cpp" and err.status == cap.status
        assert err.message == orjson.loads(cap.body)["error"]["message"]
        return
    events = stream_events(LLAMA, cap.body) if cap.request.get("stream") else body_events(LLAMA, cap.body)
    assert not any(isinstance(e, Error) for e in events), events
    resp = fold_response(events)
    assert resp.model == "gemma-3-270m"
    assert resp.output_text or resp.tool_calls
    if not cap.request.get("stream") or cap.request.get("stream_options"):
        assert resp.usage.input_tokens and resp.usage.output_tokens
    else:
        assert resp.usage == allm.Usage()  # not reported: None, never 0


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("i1-error-malformed-json", "invalid_request"),
        ("i3-error-missing-messages", "invalid_request"),
        ("i6-error-context-overflow", "context_length_exceeded"),
        ("i10-error-context-overflow-stream", "context_length_exceeded"),
        ("i9-error-image-on-text-model", "provider_unavailable"),
        ("k1-auth-missing-key", "authentication_failed"),
        ("k2-auth-wrong-key", "authentication_failed"),
    ],
)
def test_llama_server_errors(name: str, reason: str) -> None:
    cap = load_capture(name)
    assert LLAMA.error(cap.status, cap.headers, cap.body).reason == reason


def test_llama_quirk_length_with_tool_calls_is_tool_calls() -> None:
    resp = fold_response(body_events(LLAMA, load_capture("c1-tools-auto-nonstream").body))
    assert resp.raw_finish_reason == "length" and resp.finish_reason == "tool_calls"
    assert [t.arguments for t in resp.tool_calls] == [
        {"city": "Paris", "unit": "celsius"},
        {"city": "Paris", "unit": "fahrenheit"},
    ]
    assert not resp.tool_calls[0].id.startswith("call_")  # kept as the server sent it


@pytest.mark.parametrize(
    ("body_case", "stream_case"),
    [("c1-tools-auto-nonstream", "c2-tools-auto-stream"), ("c3-tools-required-nonstream", "c4-tools-required-stream"), ("d1-json-schema-nonstream", "d2-json-schema-stream")],
)
def test_fold_of_stream_equals_decode_of_body(body_case: str, stream_case: str) -> None:
    b = fold_response(body_events(LLAMA, load_capture(body_case).body))
    s = fold_response(stream_events(LLAMA, load_capture(stream_case).body))
    assert s.output_text == b.output_text
    assert [(t.name, t.arguments) for t in s.tool_calls] == [(t.name, t.arguments) for t in b.tool_calls]
    assert (s.finish_reason, s.raw_finish_reason) == (b.finish_reason, b.raw_finish_reason)
    if load_capture(stream_case).request.get("stream_options"):
        assert (s.usage.input_tokens, s.usage.output_tokens) == (b.usage.input_tokens, b.usage.output_tokens)


def test_embeddings_and_models_captures() -> None:
    e2 = LLAMA.decode_embed(load_capture("e2-embeddings").body)
    e3 = LLAMA.decode_embed(load_capture("e3-embeddings-base64").body)
    assert len(e2.vectors) == 2 and len(e2.vectors[0]) == len(e3.vectors[0]) > 100
    assert e2.usage.input_tokens == 8 and e3.usage.input_tokens == 3
    assert all(isinstance(x, float) for x in e3.vectors[0])
    assert LLAMA.decode_list_models(load_capture("f1-models").body) == ["gemma-3-270m"]
    assert LLAMA.error(501, {}, load_capture("e1-embeddings-on-chat-server").body).reason == "provider_unavailable"
    misc = load_case("openai-misc", "embeddings-multiple-inputs")
    emb = OPENAI.decode_embed(misc.body)
    assert len(emb.vectors) == 3 and all(len(v) == 768 for v in emb.vectors)
    assert emb.model == "text-embedding-3-small" and emb.usage.input_tokens == 3
    models = OPENAI.decode_list_models(load_case("openai-misc", "models-list").body)
    assert "gpt-4.1-nano" in models or any(m.startswith("gpt-") for m in models)


# ------------------------------------------------------------------------------ properties and failure modes

ALL_STREAMS = [load_case("openai-chat", n).body for n in STREAM_CASES] + [
    load_capture(n).body for n in CHAT_CAPTURES if load_capture(n).status == 200 and (load_capture(n).request or {}).get("stream")
]


@settings(max_examples=120, deadline=None)
@given(st.sampled_from(ALL_STREAMS).flatmap(lambda b: splits(b)))
def test_any_split_gives_the_same_events(parts: list[bytes]) -> None:
    call = LLAMA.encode(allm.request("x", model="m"), stream=True)
    whole = feed_all(LLAMA.decoder(call), [b"".join(parts)])
    assert feed_all(LLAMA.decoder(call), parts) == whole


def test_stream_without_done_is_an_error() -> None:
    body = load_case("openai-chat", "stream-text-include-usage-2").body
    truncated = body[: body.rindex(b"data: [DONE]")]
    events = stream_events(OPENAI, truncated)
    assert isinstance(events[-1], Error) and events[-1].error.reason == "malformed_response"
    resp = fold_response(events)
    assert resp.finish_reason == "error" and resp.output_text.startswith("1, 2")
    assert resp.usage.total_tokens  # partial usage kept


def test_invalid_json_chunk_is_a_typed_error() -> None:
    events = stream_events(OPENAI, b'data: {"id":"x","choices":[{"delta":{"content":"a"}}]}\n\ndata: {nope\n\n')
    assert [type(e).__name__ for e in events] == ["MessageStarted", "TextDelta", "Error"]
    assert events[-1].error.reason == "malformed_response"


def test_error_object_inside_the_stream() -> None:
    data = b'data: {"id":"x","choices":[{"delta":{"content":"a"}}]}\n\ndata: {"error":{"message":"overloaded","type":"server_error","code":503}}\n\n'
    events = stream_events(OPENAI, data)
    assert isinstance(events[-1], Error) and events[-1].error.reason == "provider_unavailable"
    first = stream_events(OPENAI, b'data: {"error":{"message":"Rate limit","type":"rate_limit_exceeded"}}\n\n')
    assert [type(e) for e in first] == [Error] and first[0].error.reason == "rate_limited"


def test_unexpected_shapes_are_typed_errors() -> None:
    for data in (b"data: []\n\n", b'data: {"choices":[{"delta":{"tool_calls":[{"index":0,"function":5}]}}]}\n\n', b'data: {"choices": 3}\n\n'):
        events = stream_events(OPENAI, data)
        assert isinstance(events[-1], Error) and events[-1].error.reason == "malformed_response", data
    assert body_events(OPENAI, b"not json")[0].error.reason == "malformed_response"  # type: ignore[attr-defined]
    assert body_events(OPENAI, b"[1]")[-1].error.reason == "malformed_response"  # type: ignore[attr-defined]


def test_tool_call_whose_id_never_arrives_gets_a_deterministic_one() -> None:
    data = (
        b'data: {"id":"chatcmpl-abc","choices":[{"delta":{"tool_calls":[{"index":0,"function":{"name":"f","arguments":"{\\"a\\""}}]}}]}\n\n'
        b'data: {"id":"chatcmpl-abc","choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":":1}"}}]},"finish_reason":"stop"}]}\n\n'
        b"data: [DONE]\n\n"
    )
    a = fold_response(stream_events(OPENAI, data))
    b = fold_response(stream_events(OPENAI, data))
    assert a.tool_calls[0].id == b.tool_calls[0].id == "call_chatcmpl-abc_0"
    assert a.tool_calls[0].arguments == {"a": 1} and a.finish_reason == "tool_calls"


def test_id_arriving_after_arguments_is_used_for_every_event() -> None:
    data = (
        b'data: {"id":"c","choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]}}]}\n\n'
        b'data: {"id":"c","choices":[{"delta":{"tool_calls":[{"index":0,"id":"late","function":{"name":"f"}}]}}]}\n\n'
        b"data: [DONE]\n\n"
    )
    events = stream_events(OPENAI, data)
    ids = {e.tool_call_id for e in events if isinstance(e, (ToolCallStarted, ToolCallDelta, ToolCallCompleted))}
    assert ids == {"late"}


def test_invalid_tool_arguments_are_kept_with_a_parse_error() -> None:
    data = (
        b'data: {"id":"c","choices":[{"delta":{"tool_calls":[{"index":0,"id":"t","function":{"name":"f","arguments":"{oops"}}]}}]}\n\n'
        b"data: [DONE]\n\n"
    )
    tc = fold_response(stream_events(OPENAI, data)).tool_calls[0]
    assert tc.arguments == {} and tc.raw_arguments == "{oops" and tc.parse_error and "not valid JSON" in tc.parse_error
    tc2 = fold_response(stream_events(OPENAI, data.replace(b"{oops", b"[1]"))).tool_calls[0]
    assert tc2.parse_error and "JSON object" in tc2.parse_error


def test_reasoning_content_of_compatible_servers() -> None:
    data = (
        b'data: {"id":"c","choices":[{"delta":{"reasoning_content":"think "}}]}\n\n'
        b'data: {"id":"c","choices":[{"delta":{"reasoning_content":"more"}}]}\n\n'
        b'data: {"id":"c","choices":[{"delta":{"content":"answer"},"finish_reason":"stop"}]}\n\n'
        b"data: [DONE]\n\n"
    )
    resp = fold_response(stream_events(LLAMA, data))
    assert resp.output_text == "answer" and resp.reasoning_text == "think more"
    assert resp.message.reasoning[0].provider == "llama_cpp"
    # The OpenAI dialect does not read reasoning_content.
    assert fold_response(stream_events(OPENAI, data)).reasoning_text == ""


def test_include_raw_chunks() -> None:
    body = load_case("openai-chat", "stream-tool-call-no-arguments").body
    raw = [e for e in stream_events(OPENAI, body, include_raw=True) if isinstance(e, RawChunk)]
    assert len(raw) == 4 + 1  # four chunks, plus the usage report
    assert all(isinstance(r.data, dict) for r in raw if r.usage is None)


def test_second_choice_is_ignored() -> None:
    resp = fold_response(body_events(LLAMA, load_capture("i8-error-n-greater-than-1").body))
    assert resp.output_text == "Say hi. szpital\nSay hi."
