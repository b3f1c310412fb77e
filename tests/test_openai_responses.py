"""The Responses API adapter and OpenAI's per-model routing, on recorded OpenAI and llama-server traffic."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import allm
from allm import codec
from allm.api import prepare
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
from allm.plan import Plan
from allm.providers import OpenAI, OpenAIResponses
from allm.providers.base import HttpCall, KeySpec
from allm.providers.openai import Dialect, prefers_responses
from allm.providers.openai.chat import ChatDecoder
from allm.providers.openai.responses import ResponsesDecoder
from tests.conftest import capture_names, case_names, feed_all, load_capture, load_case, splits
from tests.loopback import LoopbackServer, Req, Writer, serve

RESP = OpenAIResponses()
LLAMA = OpenAIResponses.compatible("http://127.0.0.1:8080/v1", "llama.cpp")
P = "openai-responses"


def stream_events(adapter: Any, body: bytes, **kw: Any) -> list[Any]:
    call = adapter.encode(allm.request("x", model="m"), stream=True)
    return feed_all(adapter.decoder(call, **kw), [body])


def body_events(adapter: Any, body: bytes, **kw: Any) -> list[Any]:
    call = adapter.encode(allm.request("x", model="m"), stream=False)
    events: list[Any] = adapter.decode_body(call, body, **kw)
    return events


def jb(body: bytes | None) -> Any:
    """A request body as JSON."""
    assert body is not None
    return orjson.loads(body)


def sse(*events: dict[str, Any]) -> bytes:
    return b"".join(b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events)


def sse_payloads(body: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line[6:]) for line in body.splitlines() if line.startswith(b"data: ")]


def completed_response(body: bytes) -> dict[str, Any]:
    """The ``response`` object inside a stream's ``response.completed`` event (the non-streaming shape)."""
    last = sse_payloads(body)[-1]
    assert last["type"] == "response.completed"
    r: dict[str, Any] = last["response"]
    return r


def summary(resp: allm.Response) -> tuple[Any, ...]:
    return (
        resp.output_text,
        [(t.id, t.name, dict(t.arguments), t.raw_arguments, dict(t.metadata)) for t in resp.tool_calls],
        resp.usage,
        resp.finish_reason,
        resp.raw_finish_reason,
        [p.id for p in resp.message.reasoning],
        resp.reasoning_text,
    )


# ------------------------------------------------------------------------------ recorded OpenAI cases

STREAM_CASES = case_names(P, "stream-")
BODY_CASES = [*case_names(P, "nonstream-"), "structured-output-json-schema"]
ERROR_CASES = case_names(P, "error-")


def test_every_recorded_case_is_covered() -> None:
    assert sorted(STREAM_CASES + BODY_CASES + ERROR_CASES) == case_names(P)
    assert len(STREAM_CASES) == 3 and len(BODY_CASES) == 4 and len(ERROR_CASES) == 3


@pytest.mark.parametrize("name", STREAM_CASES)
def test_recorded_streams_decode(name: str) -> None:
    case = load_case(P, name)
    events = stream_events(RESP, case.body)
    assert not any(isinstance(e, Error) for e in events)
    assert isinstance(events[0], MessageStarted) and isinstance(events[-1], MessageCompleted)
    resp = fold_response(events)
    first = sse_payloads(case.body)[0]["response"]
    assert resp.id is not None and resp.id == first["id"] and resp.id.startswith("resp_")
    assert resp.model == "gpt-5-nano-2025-08-07"
    u = completed_response(case.body)["usage"]
    assert resp.usage == allm.Usage(
        u["input_tokens"],
        u["output_tokens"],
        u["input_tokens_details"]["cached_tokens"],
        u["input_tokens_details"]["cache_write_tokens"],
        u["output_tokens_details"]["reasoning_tokens"],
        u["total_tokens"],
    )
    # Every recorded answer starts with a reasoning item carrying encrypted content.
    (part,) = resp.message.reasoning
    assert part.provider == "openai" and part.id and part.id.startswith("rs_") and part.encrypted_content


@pytest.mark.parametrize("name", STREAM_CASES)
def test_fold_of_stream_equals_decode_of_its_final_response(name: str) -> None:
    """The ``response`` in ``response.completed`` is the non-streaming shape of the same answer."""
    body = load_case(P, name).body
    s = fold_response(stream_events(RESP, body))
    b = fold_response(body_events(RESP, orjson.dumps(completed_response(body))))
    assert summary(s) == summary(b)
    assert s.message.text == b.message.text and s.id == b.id and s.model == b.model


@pytest.mark.parametrize("name", BODY_CASES)
def test_recorded_bodies_decode_the_same_as_a_stream_of_their_final_event(name: str) -> None:
    """Non-streamed, and re-played as a stream that sends only ``response.completed``
    (a server that skips the item events): both give the same response."""
    body = load_case(P, name).body
    b = fold_response(body_events(RESP, body))
    only_final = sse({"type": "response.completed", "response": orjson.loads(body)})
    s = fold_response(stream_events(RESP, only_final))
    assert summary(s) == summary(b)
    assert [p.encrypted_content for p in s.message.reasoning] == [p.encrypted_content for p in b.message.reasoning]
    assert b.finish_reason in ("stop", "tool_calls") and b.usage.total_tokens


def test_stream_text() -> None:
    events = stream_events(RESP, load_case(P, "stream-text").body)
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert "".join(d.delta for d in deltas) == "1, 2, 3"
    assert {d.id for d in deltas} == {"msg_042970a2418ca0d2016a85bef012a8819db185c29f5b9f0e2b"}
    resp = fold_response(events)
    assert resp.output_text == "1, 2, 3" and resp.finish_reason == "stop" and resp.raw_finish_reason == "completed"
    # Reasoning block first, text after: the order of the output items.
    kinds = [type(p).__name__ for p in resp.message.parts]
    assert kinds == ["ReasoningPart", "TextPart"]
    assert [type(e) for e in events].index(ReasoningCompleted) < [type(e) for e in events].index(TextDelta)


def test_stream_function_call_with_reasoning() -> None:
    body = load_case(P, "stream-function-call-with-reasoning").body
    events = stream_events(RESP, body)
    started = [e for e in events if isinstance(e, ToolCallStarted)]
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    (done,) = [e for e in events if isinstance(e, ToolCallCompleted)]
    assert [(s.tool_call_id, s.name, s.index) for s in started] == [("call_E9m0fralKLjUmND1MuTXjnqm", "weather", 0)]
    assert len(deltas) == 15 and all(d.tool_call_id == "call_E9m0fralKLjUmND1MuTXjnqm" for d in deltas)
    tc = done.tool_call
    assert tc.arguments == {"latitude": "52.5200", "longitude": "13.4050"}
    assert tc.raw_arguments == "".join(d.arguments_delta for d in deltas)
    assert tc.metadata == {"openai": {"item_id": "fc_07ee8752f9940d57016a85bfae6bc487d29b9724d95753d435"}}
    resp = fold_response(events)
    assert resp.finish_reason == "tool_calls" and resp.raw_finish_reason == "completed" and resp.output_text == ""
    # The encrypted content kept is the one of output_item.done (the added event carries an earlier one).
    items = [p["item"] for p in sse_payloads(body) if p["type"] == "response.output_item.done"]
    assert resp.message.reasoning[0].encrypted_content == items[0]["encrypted_content"]
    kinds = [type(e) for e in events]
    assert kinds.index(ToolCallStarted) < kinds.index(ToolCallDelta) < kinds.index(ToolCallCompleted) < kinds.index(MessageCompleted)


def test_nonstream_parallel_function_calls() -> None:
    resp = fold_response(body_events(RESP, load_case(P, "nonstream-parallel-function-calls").body))
    assert [(t.id, t.name, dict(t.arguments)) for t in resp.tool_calls] == [
        ("call_NeNP7bv8VH3cJTxFagvafR2L", "weather", {"latitude": "52.5200", "longitude": "13.4050"}),
        ("call_oAtUHJKdNzt8gEH4M6P3Grd3", "best_language_to_learn", {}),
    ]
    assert resp.finish_reason == "tool_calls"
    assert resp.usage == allm.Usage(112, 284, 0, 0, 192, 396)


def test_nonstream_text_reasoning_and_structured_output() -> None:
    text = fold_response(body_events(RESP, load_case(P, "nonstream-text").body))
    assert text.output_text == "4" and text.usage.reasoning_tokens == 128
    reasoning = fold_response(body_events(RESP, load_case(P, "nonstream-reasoning").body))
    assert reasoning.model == "gpt-5.4-2026-03-05" and reasoning.output_text.startswith("Ask it:")
    assert len(reasoning.message.reasoning[0].encrypted_content or "") == 8056
    structured = fold_response(body_events(RESP, load_case(P, "structured-output-json-schema").body))
    assert orjson.loads(structured.output_text) == {"name": "John", "age": 30}


@pytest.mark.parametrize(
    ("name", "reason", "status"),
    [
        ("error-400-context-window", "context_length_exceeded", 400),
        ("error-401-invalid-api-key", "authentication_failed", 401),
        ("error-500-server-error", "provider_unavailable", 500),
    ],
)
def test_recorded_errors_map_to_reasons(name: str, reason: str, status: int) -> None:
    case = load_case(P, name)
    for adapter in (RESP, OpenAI()):  # both APIs share the error shape
        err = adapter.error(case.status, case.headers, case.body)
        assert isinstance(err, AdapterError)
        assert (err.reason, err.status, err.provider) == (reason, status, "openai")
        assert err.request_id == case.headers["X-Request-Id"] == "<X_REQUEST_ID>"
        assert err.retry_after is None  # none of the recordings sent Retry-After
        assert err.message == orjson.loads(case.body)["error"]["message"]
    assert RESP.error(case.status, case.headers, case.body).retryable == (reason == "provider_unavailable")


def test_error_retry_after_and_request_id_headers() -> None:
    body = b'{"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}'
    err = RESP.error(429, {"x-request-id": "req_9", "retry-after": "7"}, body)
    assert (err.reason, err.request_id, err.retry_after, err.retryable) == ("rate_limited", "req_9", 7.0, True)
    assert RESP.error(502, {"Retry-After-Ms": "250"}, b"<html>bad gateway</html>").retry_after == 0.25


# ------------------------------------------------------------------------------ request encoding against recordings


def body_of(adapter: Any, req: allm.Request, *, stream: bool) -> dict[str, Any]:
    out: dict[str, Any] = jb(adapter.encode(req, stream=stream).body)
    return out


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
    strict=False,
)
BEST = allm.Tool(
    "best_language_to_learn",
    "Gets the best language to learn",
    {"type": "object", "properties": {}, "required": [], "additionalProperties": False, "strict": True},
    strict=False,
)
PERSON = allm.json_schema(
    "response",
    {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    },
)


def _thread_from_recorded_input(items: list[dict[str, Any]]) -> list[allm.Message]:
    out = []
    for it in items:
        c = it["content"]
        out.append(allm.Message(it["role"], c if isinstance(c, str) else "".join(p["text"] for p in c)))
    return out


ENCODING_CASES: dict[str, dict[str, Any]] = {
    "nonstream-text": {},
    "stream-text": {},
    "error-401-invalid-api-key": {},
    "error-400-context-window": {},
    "nonstream-reasoning": {"adapter": OpenAIResponses(reasoning_effort="medium")},
    "nonstream-parallel-function-calls": {"tools": [WEATHER, BEST]},
    "stream-function-call-with-reasoning": {"tools": [WEATHER]},
    "structured-output-json-schema": {"response_format": PERSON},
}


@pytest.mark.parametrize("name", sorted(ENCODING_CASES))
def test_encoding_equals_the_recorded_request_body(name: str) -> None:
    case = load_case(P, name)
    spec = dict(ENCODING_CASES[name])
    adapter = spec.pop("adapter", RESP)
    req = allm.request(_thread_from_recorded_input(case.request["input"]), model=case.request["model"], **spec)
    assert body_of(adapter, req, stream=case.request["stream"]) == case.request


def test_encoding_of_the_function_call_output_followup() -> None:
    """Decode the recorded first turn, add the tool result, encode: the recorded second request, exactly."""
    case = load_case(P, "stream-function-call-output-followup")
    first = fold_response(stream_events(RESP, load_case(P, "stream-function-call-with-reasoning").body))
    output = case.request["input"][-1]["output"]
    thread = allm.Thread(
        [allm.user("What's the weather in Berlin? (52.5200, 13.4050)"), first.message, allm.tool_result(first.tool_calls[0].id, output)]
    )
    body = body_of(RESP, allm.request(thread, model="gpt-5-nano", tools=[WEATHER]), stream=True)
    assert body == case.request
    kinds = [it.get("type", "message") for it in body["input"]]
    assert kinds == ["message", "reasoning", "function_call", "function_call_output"]
    assert "id" not in body["input"][1] and "id" not in body["input"][2]  # no item ids with store=false


def test_encoding_of_the_older_message_item_shape_is_equivalent() -> None:
    """error-500 was recorded from a client that wrapped every message as a typed item with a
    status; ours sends the plain role form. The conversation is the same."""
    case = load_case(P, "error-500-server-error")
    recorded = case.request["input"]
    req = allm.request([allm.Message(it["role"], it["content"]) for it in recorded], model=case.request["model"])
    body = body_of(OpenAIResponses(store=None), req, stream=False)
    assert body["model"] == case.request["model"] and body["stream"] is False
    assert "store" not in body and "include" not in body and "store" not in case.request
    got = [(it["role"], it["content"] if isinstance(it["content"], str) else it["content"][0]["text"]) for it in body["input"]]
    assert got == [(it["role"], it["content"]) for it in recorded]


def test_sampling_fields_and_warnings() -> None:
    req = allm.request(
        "hi",
        model="gpt-5-nano",
        temperature=0.2,
        top_p=0.9,
        top_k=40,
        max_tokens=64,
        stop_sequences=["END"],
        seed=7,
        frequency_penalty=0.1,
        presence_penalty=0.3,
    )
    call = RESP.encode(req, stream=True)
    body = jb(call.body)
    assert (body["temperature"], body["top_p"], body["max_output_tokens"]) == (0.2, 0.9, 64)
    for dropped in ("top_k", "seed", "frequency_penalty", "presence_penalty", "stop", "stop_sequences", "max_tokens"):
        assert dropped not in body
    assert [w.message for w in call.warnings] == [
        "top_k is not supported by the Responses API and was not sent",
        "seed is not supported by the Responses API and was not sent",
        "frequency_penalty is not supported by the Responses API and was not sent",
        "presence_penalty is not supported by the Responses API and was not sent",
        "stop_sequences is not supported by the Responses API and was not sent",
    ]
    assert [w.setting for w in call.warnings] == ["top_k", "seed", "frequency_penalty", "presence_penalty", "stop_sequences"]
    assert {(w.kind, w.provider) for w in call.warnings} == {("dropped_setting", "openai")}
    # The warnings reach the caller on the first event.
    started = next(e for e in stream_events(RESP, load_case(P, "stream-text").body) if isinstance(e, MessageStarted))
    assert started.warnings == ()
    dec = RESP.decoder(call)
    assert feed_all(dec, [load_case(P, "stream-text").body])[0].warnings == call.warnings


def test_instructions_images_tools_choice_and_options() -> None:
    img = allm.ImagePart.from_bytes(b"\x89PNG", "image/png", detail="low")
    msgs = [
        allm.system("Be brief."),
        allm.system("Use metric units."),
        allm.user([allm.TextPart("What is this?"), img, allm.ImagePart.from_url("https://e.org/a.jpg")]),
        allm.assistant("A logo."),
        allm.system("Now answer in French."),
        allm.user("Merci"),
    ]
    req = allm.request(
        msgs,
        model="o3",
        tools=[allm.Tool("f", schema={"type": "object"})],
        tool_choice="f",
        options={"previous_response_id": "resp_1", "parallel_tool_calls": False},
    )
    body = body_of(OpenAIResponses(store=True, reasoning_effort="high", reasoning_summary="auto"), req, stream=False)
    assert body["instructions"] == "Be brief.\n\nUse metric units."
    assert body["input"] == [
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "What is this?"},
                {"type": "input_image", "image_url": "data:image/png;base64,iVBORw==", "detail": "low"},
                {"type": "input_image", "image_url": "https://e.org/a.jpg", "detail": "auto"},
            ],
        },
        {"role": "assistant", "content": [{"type": "output_text", "text": "A logo."}]},
        {"role": "system", "content": "Now answer in French."},
        {"role": "user", "content": "Merci"},
    ]
    assert body["tools"] == [{"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": False}]
    assert body["tool_choice"] == {"type": "function", "name": "f"}
    assert body["store"] is True and "include" not in body
    assert body["reasoning"] == {"effort": "high", "summary": "auto"}
    assert body["previous_response_id"] == "resp_1" and body["parallel_tool_calls"] is False
    for choice in ("auto", "none", "required"):
        req = allm.request("x", model="m", tools=[allm.Tool("g")], tool_choice=choice)
        assert body_of(RESP, req, stream=True)["tool_choice"] == choice
    assert body_of(RESP, allm.request("x", model="m", tools=[allm.Tool("g", strict=True)]), stream=True)["tools"][0]["strict"] is True
    fmt = body_of(RESP, allm.request("x", model="m", response_format=allm.ResponseFormat("json_object")), stream=True)
    assert fmt["text"] == {"format": {"type": "json_object"}} and "response_format" not in fmt


def test_reasoning_carry_back_rules() -> None:
    """Only this provider's reasoning with encrypted content goes back, without its item id."""
    mine = allm.ReasoningPart("Thinking about Berlin.", encrypted_content="gAAA", id="rs_1", provider="openai")
    no_content = allm.ReasoningPart("summary only", id="rs_2", provider="openai")
    foreign = allm.ReasoningPart("thinking", signature="sig", provider="anthropic")
    foreign_enc = allm.ReasoningPart("", encrypted_content="zzz", provider="gemini")
    call = allm.ToolCall("call_1", "f", {"a": 1}, '{"a": 1}', metadata={"openai": {"item_id": "fc_1"}})
    msg = allm.Message("assistant", (foreign, mine, allm.TextPart("Let me check."), no_content, foreign_enc), tool_calls=(call,))
    body = body_of(RESP, allm.request([allm.user("q"), msg, allm.tool_result("call_1", "sunny")], model="gpt-5"), stream=True)
    assert body["input"][1:] == [
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Thinking about Berlin."}], "encrypted_content": "gAAA"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Let me check."}]},
        {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": '{"a": 1}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
    ]
    # A compatible server's own provider name decides what it takes back.
    llama_body = body_of(LLAMA, allm.request([allm.user("q"), msg], model="m"), stream=True)
    assert all(it.get("type") != "reasoning" for it in llama_body["input"])


def test_invalid_messages_are_rejected_before_sending() -> None:
    img = allm.ImagePart.from_bytes(b"\x89PNG", "image/png")
    with pytest.raises(ValidationError, match="not allowed in a system message") as exc:
        RESP.encode(allm.request([allm.Message("system", (img,))], model="m"), stream=True)
    assert exc.value.reason == "invalid_image"
    with pytest.raises(ValidationError, match="tool_call_id"):
        RESP.encode(allm.request([allm.Message("tool", "x")], model="m"), stream=True)
    named = RESP.encode(allm.request([allm.Message("user", "x", name="ann")], model="m"), stream=True)
    assert [(w.kind, w.setting, str(w)) for w in named.warnings] == [
        ("unsupported_feature", "name", "message name is not supported by the Responses API and was not sent")
    ]


def test_adapter_values_headers_and_dialects() -> None:
    call = OpenAIResponses(organization="org", project="p").encode(allm.request("x", model="m"), stream=True)
    assert call.url == "https://api.openai.com/v1/responses" and call.method == "POST" and call.stream
    assert call.headers["openai-organization"] == "org" and call.headers["openai-project"] == "p"
    assert call.headers["accept"] == "text/event-stream" and call.provider == "openai" and call.model == "m"
    assert RESP.key_spec == KeySpec("openai", ("OPENAI_API_KEY",), True)
    assert RESP.auth_headers("sk-abc") == {"authorization": "Bearer sk-abc"} and LLAMA.auth_headers(None) == {}
    assert not LLAMA.key_spec.required and LLAMA.key_spec.provider == "llama_cpp"
    assert LLAMA.encode(allm.request("x", model="m"), stream=False).url == "http://127.0.0.1:8080/v1/responses"
    generic = OpenAIResponses.compatible("http://h:1/v1/")
    gbody = body_of(generic, allm.request("x", model="m", response_format=PERSON), stream=False)
    assert "store" not in gbody and "include" not in gbody and "response_format" not in gbody
    assert generic.key_spec.provider == "openai_compatible" and not generic.key_spec.required
    custom = OpenAIResponses.compatible("http://h/v1", Dialect("mine", "mine", headers={"x-app": "1"}))
    assert custom.encode(allm.request("x", model="m"), stream=True).headers["x-app"] == "1"
    with pytest.raises(ValueError, match="base_url"):
        OpenAIResponses.compatible()
    with pytest.raises(ValueError, match="unknown dialect"):
        OpenAIResponses(dialect="nope")
    with pytest.raises(ValueError, match="key"):
        OpenAIResponses(headers={"Authorization": "Bearer sk-secret-value"})


def test_llama_dialect_also_sends_the_chat_response_format() -> None:
    body = body_of(LLAMA, allm.request("x", model="m", response_format=PERSON), stream=True)
    assert body["text"]["format"]["type"] == "json_schema"
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": PERSON.schema, "strict": True},
    }
    obj = body_of(LLAMA, allm.request("x", model="m", response_format=allm.ResponseFormat("json_object")), stream=True)
    assert obj["response_format"] == {"type": "json_object"}
    assert "response_format" not in body_of(LLAMA, allm.request("x", model="m", response_format=allm.ResponseFormat("text")), stream=True)


# ------------------------------------------------------------------------------ llama-server captures

RESPONSES_CAPTURES = [n for n in capture_names() if load_capture(n).path == "/v1/responses"]


def test_responses_capture_list() -> None:
    assert RESPONSES_CAPTURES == ["h1-responses-nonstream", "h2-responses-stream", "h3-responses-tools-nonstream"]


@pytest.mark.parametrize("name", RESPONSES_CAPTURES)
def test_llama_server_responses_captures(name: str) -> None:
    cap = load_capture(name)
    assert cap.status == 200
    events = stream_events(LLAMA, cap.body) if cap.request.get("stream") else body_events(LLAMA, cap.body)
    assert not any(isinstance(e, Error) for e in events), events
    resp = fold_response(events)
    assert resp.id and resp.id.startswith("resp_")
    u = resp.usage
    assert u.input_tokens and u.output_tokens and u.total_tokens == u.input_tokens + u.output_tokens
    assert u.cached_input_tokens is not None and u.reasoning_tokens is None  # not reported: None
    assert u.output_tokens == cap.request["max_output_tokens"]  # the small model used every token
    assert resp.finish_reason == ("tool_calls" if name.startswith("h3") else "stop")


def test_llama_server_h1_h2_h3_contents() -> None:
    h1 = fold_response(body_events(LLAMA, load_capture("h1-responses-nonstream").body))
    assert h1.output_text.startswith("Name three primary colors.") and h1.model == "gemma-3-270m"
    h2 = load_capture("h2-responses-stream").body
    s = fold_response(stream_events(LLAMA, h2))
    assert s.output_text == "1.0.0.0.0.0.0.0.0.0.0.0."
    # llama-server's deltas carry no output_index / content_index: keyed by item id.
    assert {e.id for e in stream_events(LLAMA, h2) if isinstance(e, TextDelta)} == {"msg_zc1hcDmBgcyAV7GKyFLFH8yegDCMz4Os"}
    # Its response.completed holds the final response: the same answer decoded as a body.
    b = fold_response(body_events(LLAMA, orjson.dumps(completed_response(h2))))
    assert summary(s) == summary(b)
    h3 = fold_response(body_events(LLAMA, load_capture("h3-responses-tools-nonstream").body))
    assert h3.output_text.startswith("# Tools") and h3.raw_finish_reason == "completed"
    assert [(t.id, t.name, dict(t.arguments)) for t in h3.tool_calls] == [
        ("call_9BKh8qOnS29ZByB7uGZVbb36CE7VS5mr", "get_weather", {"city": "Paris", "unit": "celsius"}),
        ("call_AML2GECbvZseM91xzVGZXcQG2AsEzoaD", "get_weather", {"city": "Paris", "unit": "fahrenheit"}),
    ]


def test_llama_server_error_shape() -> None:
    body = b'{"error":{"code":400,"message":"Cannot determine type of \'item\'","type":"invalid_request_error"}}'
    err = LLAMA.error(400, {}, body)
    assert (err.reason, err.provider, err.status) == ("invalid_request", "llama_cpp", 400)


# ------------------------------------------------------------------------------ any split, same events

ALL_STREAMS = [load_case(P, n).body for n in STREAM_CASES] + [load_capture("h2-responses-stream").body]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(ALL_STREAMS).flatmap(lambda b: splits(b)))
def test_any_split_gives_the_same_events(parts: list[bytes]) -> None:
    call = RESP.encode(allm.request("x", model="m"), stream=True)
    whole = feed_all(RESP.decoder(call, include_raw=True), [b"".join(parts)])
    assert feed_all(RESP.decoder(call, include_raw=True), parts) == whole
    assert isinstance(whole[-1], MessageCompleted)


# ------------------------------------------------------------------------------ failure modes

CREATED = {"type": "response.created", "response": {"id": "resp_x", "model": "m", "status": "in_progress", "output": []}}


def msg_added(item_id: str = "msg_1", index: int = 0) -> dict[str, Any]:
    item = {"id": item_id, "type": "message", "role": "assistant", "status": "in_progress", "content": []}
    return {"type": "response.output_item.added", "output_index": index, "item": item}


def text_delta(delta: str, item_id: str = "msg_1") -> dict[str, Any]:
    return {"type": "response.output_text.delta", "item_id": item_id, "output_index": 0, "content_index": 0, "delta": delta}


@pytest.mark.parametrize("name", STREAM_CASES)
def test_truncated_streams_are_errors_with_partial_output(name: str) -> None:
    body = load_case(P, name).body
    truncated = body[: body.rindex(b"event: response.completed")]
    events = stream_events(RESP, truncated)
    assert isinstance(events[-1], Error) and events[-1].error.reason == "malformed_response"
    assert "response.completed" in events[-1].error.message
    assert not any(isinstance(e, MessageCompleted) for e in events)
    resp = fold_response(events)
    assert resp.finish_reason == "error" and resp.metadata["error"].reason == "malformed_response"
    full = fold_response(stream_events(RESP, body))
    assert resp.output_text == full.output_text  # every text delta had arrived
    # Cut in the middle of an event as well.
    half = stream_events(RESP, body[: len(body) // 2])
    assert isinstance(half[-1], Error) and half[-1].error.reason == "malformed_response"


def test_empty_stream_and_done_marker_before_the_end() -> None:
    empty = stream_events(RESP, b"")
    assert [type(e) for e in empty] == [Error] and empty[0].error.reason == "malformed_response"
    early = stream_events(RESP, sse(CREATED, msg_added(), text_delta("Hi")) + b"data: [DONE]\n\n")
    assert isinstance(early[-1], Error) and early[-1].error.reason == "malformed_response"
    assert fold_response(early).output_text == "Hi"


def test_done_marker_after_the_terminal_event_is_ignored() -> None:
    completed = {"type": "response.completed", "response": {"id": "resp_x", "status": "completed", "output": []}}
    dec = RESP.decoder(RESP.encode(allm.request("x", model="m"), stream=True))
    events = feed_all(dec, [sse(CREATED, msg_added(), text_delta("Hi"), completed), b"data: [DONE]\n\n"])
    assert isinstance(events[-1], MessageCompleted) and dec.finished and not dec.failed
    assert dec.feed(b"event: whatever\ndata: {}\n\n") == []


def test_invalid_json_and_unexpected_shapes_are_typed_errors() -> None:
    bad = [
        b"data: {nope\n\n",
        b"data: []\n\n",
        b'data: {"no_type": 1}\n\n',
        sse({"type": "response.output_item.added", "output_index": 0, "item": "not an item"}),
        sse(CREATED, {"type": "response.output_text.delta", "item_id": "m", "delta": 5}),
        sse(CREATED, {"type": "response.output_text.delta", "item_id": "m"}),
        sse(CREATED, {"type": "response.function_call_arguments.delta", "item_id": "fc", "delta": ["x"]}),
        sse(CREATED, {"type": "response.completed", "response": {"status": "completed", "output": ["x"]}}),
    ]
    for data in bad:
        events = stream_events(RESP, data)
        assert isinstance(events[-1], Error) and events[-1].error.reason == "malformed_response", data
        assert sum(isinstance(e, Error) for e in events) == 1
    for body in (b"not json", b"[1]", b'{"status": "completed", "output": 3}', b'{"status": "weird", "output": []}'):
        events = body_events(RESP, body)
        assert isinstance(events[-1], Error) and events[-1].error.reason == "malformed_response", body


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        ({"code": "server_error", "message": "boom"}, "provider_unavailable"),
        ({"code": "rate_limit_exceeded", "message": "slow down"}, "rate_limited"),
        ({"code": "invalid_prompt", "message": "flagged"}, "invalid_request"),
        ({"code": "invalid_image_url", "message": "bad url"}, "invalid_request"),
        ({"code": "image_content_policy_violation", "message": "no"}, "content_filter"),
        ({"code": "context_length_exceeded", "message": "too long"}, "context_length_exceeded"),
        ({"code": "vector_store_timeout", "message": "slow"}, "timeout"),
        ({"code": "something_new", "message": "?"}, "unknown"),
    ],
)
def test_response_failed_is_a_typed_error(error: dict[str, Any], reason: str) -> None:
    failed = {"type": "response.failed", "response": {"id": "resp_x", "status": "failed", "error": error, "usage": {"input_tokens": 3, "output_tokens": 1, "total_tokens": 4}}}
    events = stream_events(RESP, sse(CREATED, msg_added(), text_delta("Par"), failed))
    assert isinstance(events[-1], Error)
    err = events[-1].error
    assert (err.reason, err.message, err.provider) == (reason, error["message"], "openai")
    resp = fold_response(events)
    assert resp.finish_reason == "error" and resp.output_text == "Par" and resp.usage.total_tokens == 4
    # The same failure as a non-streaming body.
    body_ev = body_events(RESP, orjson.dumps(failed["response"]))
    assert isinstance(body_ev[-1], Error) and body_ev[-1].error.reason == reason


def test_error_events() -> None:
    first = stream_events(RESP, sse({"type": "error", "code": "rate_limit_exceeded", "message": "Rate limit", "param": None, "sequence_number": 0}))
    assert [type(e) for e in first] == [Error] and first[0].error.reason == "rate_limited"
    mid = stream_events(RESP, sse(CREATED, msg_added(), text_delta("a"), {"type": "error", "code": None, "message": "odd", "param": None}))
    assert isinstance(mid[-1], Error) and mid[-1].error.reason == "unknown" and mid[-1].error.message == "odd"
    nested = stream_events(RESP, b'data: {"error": {"code": 500, "message": "llama died", "type": "server_error"}}\n\n')
    assert nested[-1].error.reason == "provider_unavailable" and nested[-1].error.status == 500
    assert body_events(RESP, b'{"error": {"message": "nope", "code": "invalid_prompt"}}')[0].error.reason == "invalid_request"


@pytest.mark.parametrize(("why", "finish"), [("max_output_tokens", "length"), ("content_filter", "content_filter"), (None, "other")])
def test_incomplete_responses(why: str | None, finish: str) -> None:
    resp_obj = {
        "id": "resp_x",
        "status": "incomplete",
        "incomplete_details": {"reason": why} if why else None,
        "output": [{"id": "msg_1", "type": "message", "role": "assistant", "status": "incomplete", "content": [{"type": "output_text", "text": "Paris is"}]}],
        "usage": {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7},
    }
    events = stream_events(RESP, sse(CREATED, msg_added(), text_delta("Paris"), text_delta(" is"), {"type": "response.incomplete", "response": resp_obj}))
    s = fold_response(events)
    assert (s.finish_reason, s.raw_finish_reason, s.output_text) == (finish, why or "incomplete", "Paris is")
    b = fold_response(body_events(RESP, orjson.dumps(resp_obj)))
    assert summary(s) == summary(b)


def test_background_bodies_are_not_supported() -> None:
    for status in ("queued", "in_progress"):
        (ev,) = body_events(RESP, orjson.dumps({"id": "resp_x", "status": status, "output": []}))
        assert isinstance(ev, Error) and ev.error.reason == "unsupported_feature"


def test_reasoning_summaries_and_reasoning_text() -> None:
    rs = "rs_1"
    item = {"id": rs, "type": "reasoning", "summary": [], "encrypted_content": "enc-early"}
    final_item = {
        "id": rs,
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": "First part."}, {"type": "summary_text", "text": "Second."}],
        "encrypted_content": "enc-final",
    }
    stream = sse(
        CREATED,
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        {"type": "response.reasoning_summary_part.added", "item_id": rs, "output_index": 0, "summary_index": 0, "part": {"type": "summary_text", "text": ""}},
        {"type": "response.reasoning_summary_text.delta", "item_id": rs, "output_index": 0, "summary_index": 0, "delta": "First "},
        {"type": "response.reasoning_summary_text.delta", "item_id": rs, "output_index": 0, "summary_index": 0, "delta": "part."},
        {"type": "response.reasoning_summary_text.done", "item_id": rs, "output_index": 0, "summary_index": 0, "text": "First part."},
        {"type": "response.reasoning_summary_part.done", "item_id": rs, "output_index": 0, "summary_index": 0},
        {"type": "response.reasoning_summary_part.added", "item_id": rs, "output_index": 0, "summary_index": 1},
        {"type": "response.reasoning_summary_text.delta", "item_id": rs, "output_index": 0, "summary_index": 1, "delta": "Second."},
        {"type": "response.output_item.done", "output_index": 0, "item": final_item},
        msg_added("msg_1", 1),
        {"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 1, "content_index": 0, "delta": "42"},
        {"type": "response.completed", "response": {"id": "resp_x", "status": "completed", "output": [final_item, {"id": "msg_1", "type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "42"}]}]}},
    )
    events = stream_events(RESP, stream)
    assert "".join(e.delta for e in events if isinstance(e, ReasoningDelta)) == "First part.\n\nSecond."
    s = fold_response(events)
    (part,) = s.message.reasoning
    assert (part.text, part.id, part.encrypted_content, part.provider) == ("First part.\n\nSecond.", rs, "enc-final", "openai")
    assert s.output_text == "42"
    b = fold_response(body_events(RESP, orjson.dumps(completed_response(stream))))
    assert summary(s) == summary(b) and b.message.reasoning == s.message.reasoning
    # Summaries go back as one summary_text, with the encrypted content.
    body = body_of(RESP, allm.request([allm.user("q"), s.message, allm.user("and?")], model="o3"), stream=True)
    assert body["input"][1] == {"type": "reasoning", "summary": [{"type": "summary_text", "text": "First part.\n\nSecond."}], "encrypted_content": "enc-final"}
    # Raw reasoning text (open models) arrives as reasoning_text.
    rt = sse(
        CREATED,
        {"type": "response.reasoning_text.delta", "item_id": "rs_2", "output_index": 0, "content_index": 0, "delta": "hmm"},
        {"type": "response.reasoning_text.done", "item_id": "rs_2", "output_index": 0, "content_index": 0, "text": "hmm, ok"},
        {"type": "response.completed", "response": {"status": "completed", "output": []}},
    )
    assert fold_response(stream_events(RESP, rt)).reasoning_text == "hmm, ok"


def test_servers_that_send_only_done_events_or_no_ids() -> None:
    fc_item = {"type": "function_call", "call_id": "call_9", "name": "f", "arguments": '{"x": 1}'}
    stream = sse(
        {"type": "response.output_item.added", "output_index": 0, "item": {"type": "message", "role": "assistant", "content": []}},
        {"type": "response.output_text.done", "output_index": 0, "content_index": 0, "text": "Hello"},
        {"type": "response.output_item.added", "output_index": 1, "item": {**fc_item, "arguments": ""}},
        {"type": "response.function_call_arguments.done", "output_index": 1, "arguments": '{"x": 1}'},
        {"type": "response.output_item.done", "output_index": 1, "item": fc_item},
        {"type": "response.completed", "response": {"status": "completed", "output": []}},
    )
    events = stream_events(RESP, stream)
    resp = fold_response(events)
    assert resp.output_text == "Hello" and [e.id for e in events if isinstance(e, TextCompleted)] == ["#0"]
    assert [(t.id, t.name, dict(t.arguments), dict(t.metadata)) for t in resp.tool_calls] == [("call_9", "f", {"x": 1}, {})]
    assert resp.id is None and resp.finish_reason == "tool_calls"


def test_deltas_after_their_done_event_are_ignored() -> None:
    stream = sse(
        CREATED,
        msg_added(),
        text_delta("Hel"),
        {"type": "response.output_text.done", "item_id": "msg_1", "output_index": 0, "content_index": 0, "text": "Hello"},
        text_delta("lo again"),
        {"type": "response.completed", "response": {"id": "resp_x", "status": "completed", "output": []}},
    )
    events = stream_events(RESP, stream)
    assert [e.delta for e in events if isinstance(e, TextDelta)] == ["Hel", "lo"]
    assert [e.text for e in events if isinstance(e, TextCompleted)] == ["Hello"]
    assert fold_response(events).output_text == "Hello"


def test_refusal_is_text_with_content_filter() -> None:
    refusal = {"id": "msg_1", "type": "message", "role": "assistant", "content": [{"type": "refusal", "refusal": "I can't help with that."}]}
    stream = sse(
        CREATED,
        msg_added(),
        {"type": "response.refusal.delta", "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "I can't"},
        {"type": "response.refusal.done", "item_id": "msg_1", "output_index": 0, "content_index": 0, "refusal": "I can't help with that."},
        {"type": "response.completed", "response": {"id": "resp_x", "status": "completed", "output": [refusal]}},
    )
    s = fold_response(stream_events(RESP, stream))
    b = fold_response(body_events(RESP, orjson.dumps({"id": "resp_x", "status": "completed", "output": [refusal]})))
    assert (s.output_text, s.finish_reason, s.raw_finish_reason) == ("I can't help with that.", "content_filter", "refusal")
    assert summary(s) == summary(b)


def test_include_raw_chunks() -> None:
    body = load_case(P, "stream-text").body
    raw = [e for e in stream_events(RESP, body, include_raw=True) if isinstance(e, RawChunk)]
    assert [r.data["type"] for r in raw if r.usage is None] == [p["type"] for p in sse_payloads(body)]
    assert [r.usage for r in raw if r.usage is not None] == [fold_response(stream_events(RESP, body)).usage]
    assert not [e for e in stream_events(RESP, body) if isinstance(e, RawChunk) and e.usage is None]
    b = [e for e in body_events(RESP, load_case(P, "nonstream-text").body, include_raw=True) if isinstance(e, RawChunk)]
    assert b[0].data["id"].startswith("resp_")


# ------------------------------------------------------------------------------ routing


@pytest.mark.parametrize(
    "model",
    ["o1", "o1-mini", "o3", "o3-mini", "o3-pro", "o4-mini", "o4-mini-deep-research", "gpt-5", "gpt-5-mini", "gpt-5-nano",
     "gpt-5.1", "gpt-5.4", "gpt-5-codex", "codex-mini-latest", "computer-use-preview", "ft:o4-mini-2025-04-16:org::id",
     "openai/o3", "O3-MINI"],
)
def test_reasoning_first_models_go_to_responses(model: str) -> None:
    assert prefers_responses(model)
    assert OpenAI().api_for(model) == "responses"


@pytest.mark.parametrize(
    "model",
    ["gpt-4.1-mini", "gpt-4.1", "gpt-4o", "gpt-4o-mini", "chatgpt-4o-latest", "gpt-3.5-turbo", "omni-moderation-latest",
     "gpt-50", "o", "opus", "text-embedding-3-small", "", None],
)
def test_other_models_go_to_chat_completions(model: str | None) -> None:
    assert not prefers_responses(model)
    assert OpenAI().api_for(model) == "chat"


def planned_call(engine: allm.Engine, request: Any) -> HttpCall:
    """The HTTP call the engine would make (pure: nothing is sent)."""
    plan = prepare(engine, request, api_key="sk-test-key-123456")
    assert isinstance(plan, Plan)
    assert plan.headers["authorization"] == "Bearer sk-test-key-123456" and "sk-test" not in repr(plan.call)
    return plan.call


def test_engine_with_openai_encodes_per_model() -> None:
    engine = allm.Engine(adapter=OpenAI(), model="o3-mini")
    call = planned_call(engine, "hi")
    assert call.url == "https://api.openai.com/v1/responses"
    body = jb(call.body)
    assert body["input"] == [{"role": "user", "content": "hi"}] and body["store"] is False
    assert body["include"] == ["reasoning.encrypted_content"]
    chat = planned_call(engine.with_model("gpt-4.1-mini"), "hi")
    assert chat.url == "https://api.openai.com/v1/chat/completions"
    assert jb(chat.body)["messages"] == [{"role": "user", "content": "hi"}]
    # A request's own model decides, not only the engine's.
    assert planned_call(engine, allm.request("hi", model="gpt-4o")).url.endswith("/chat/completions")


def test_api_can_be_forced_per_adapter() -> None:
    req = allm.request("hi", model="o3-mini")
    assert OpenAI(api="chat").encode(req, stream=True).url.endswith("/chat/completions")
    assert OpenAI(api="responses").encode(allm.request("hi", model="gpt-4.1-mini"), stream=True).url.endswith("/responses")
    assert OpenAI(api="chat").api_for("o3") == "chat" and OpenAI(api="responses").api_for("gpt-4o") == "responses"
    with pytest.raises(ValueError, match="api"):
        OpenAI(api="completions")  # type: ignore[arg-type]


def test_openai_settings_reach_the_responses_call() -> None:
    a = OpenAI(base_url="http://proxy/v1", organization="org", project="p", store=True, reasoning_effort="low", reasoning_summary="auto")
    call = a.encode(allm.request("hi", model="o4-mini"), stream=False)
    assert call.url == "http://proxy/v1/responses"
    assert call.headers["openai-organization"] == "org" and call.headers["openai-project"] == "p"
    body = jb(call.body)
    assert body["store"] is True and body["reasoning"] == {"effort": "low", "summary": "auto"} and "include" not in body
    assert a.responses() == OpenAIResponses("http://proxy/v1", "org", "p", True, "low", "auto")
    # On Chat Completions the effort is the reasoning_effort field; a request's own option wins.
    chat = jb(OpenAI(api="chat", reasoning_effort="low").encode(allm.request("hi", model="o3"), stream=True).body)
    assert chat["reasoning_effort"] == "low" and "reasoning" not in chat
    own = allm.request("hi", model="o3", options={"reasoning_effort": "high"})
    assert jb(OpenAI(api="chat", reasoning_effort="low").encode(own, stream=True).body)["reasoning_effort"] == "high"
    assert "reasoning_effort" not in jb(OpenAI().encode(allm.request("hi", model="gpt-4o"), stream=True).body)


def test_decoders_follow_the_call() -> None:
    openai = OpenAI()
    rcall = openai.encode(allm.request("hi", model="gpt-5-nano"), stream=True)
    ccall = openai.encode(allm.request("hi", model="gpt-4.1-nano"), stream=True)
    assert isinstance(openai.decoder(rcall), ResponsesDecoder) and isinstance(openai.decoder(ccall), ChatDecoder)
    via_openai = fold_response(feed_all(openai.decoder(rcall), [load_case(P, "stream-text").body]))
    direct = fold_response(stream_events(RESP, load_case(P, "stream-text").body))
    assert summary(via_openai) == summary(direct)
    bcall = openai.encode(allm.request("hi", model="gpt-5-nano"), stream=False)
    assert summary(fold_response(openai.decode_body(bcall, load_case(P, "nonstream-text").body))) == summary(
        fold_response(body_events(RESP, load_case(P, "nonstream-text").body))
    )
    chat = fold_response(openai.decode_body(openai.encode(allm.request("hi", model="gpt-4.1-nano"), stream=False), load_case("openai-chat", "nonstream-parallel-tool-calls").body))
    assert [t.name for t in chat.tool_calls] == ["weather", "best_language_to_learn"]


# ------------------------------------------------------------------------------ values


@pytest.mark.parametrize(
    "adapter",
    [
        OpenAIResponses(),
        OpenAIResponses(store=True, reasoning_effort="high", reasoning_summary="detailed", organization="o", project="p"),
        OpenAIResponses.compatible("http://127.0.0.1:8080/v1", "llama.cpp"),
        OpenAIResponses.compatible("http://h/v1", Dialect("mine", "mine", key_env=("MINE_KEY",))),
        OpenAI(api="responses", store=None, reasoning_effort="low"),
        OpenAI(api="chat"),
    ],
)
def test_engines_round_trip_through_codec_and_pickle(adapter: Any) -> None:
    engine = allm.Engine(adapter=adapter, model="o3-mini")
    assert codec.loads(codec.dumps(engine), allm.Engine) == engine
    assert pickle.loads(pickle.dumps(engine)) == engine
    assert "sk-" not in repr(engine)


# ------------------------------------------------------------------------------ end to end over HTTP (loopback)


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with serve() as s:
        yield s


def test_routing_and_a_tool_turn_end_to_end(server: LoopbackServer) -> None:
    """OpenAI() against a loopback server replaying the recorded traffic: o-series/gpt-5 calls
    reach /v1/responses and the follow-up request is the recorded one, byte for byte in meaning."""
    first = load_case(P, "stream-function-call-with-reasoning")
    second = load_case(P, "stream-function-call-output-followup")
    chat = load_case("openai-chat", "nonstream-parallel-tool-calls")

    async def handler(req: Req, w: Writer) -> None:
        if req.path == "/v1/chat/completions":
            await w.respond(200, chat.body)
            return
        assert req.path == "/v1/responses"
        body = orjson.loads(req.body)
        case = second if body["input"][-1].get("type") == "function_call_output" else first
        if body != case.request:
            await w.respond(400, b'{"error": {"message": "unexpected request", "type": "invalid_request_error"}}')
            return
        await w.start_stream()
        data = case.body
        for i in range(0, len(data), 700):
            await w.chunk(data[i : i + 700])
        await w.end_stream()

    server.handler = handler
    engine = allm.Engine(adapter=OpenAI(base_url=server.url + "/v1"), model="gpt-5-nano", tools=[WEATHER])
    question = allm.user("What's the weather in Berlin? (52.5200, 13.4050)")
    r1 = allm.generate(engine, allm.request([question]), api_key="sk-test-0000000000")
    assert r1.finish_reason == "tool_calls" and r1.tool_calls[0].name == "weather"
    output = second.request["input"][-1]["output"]
    r2 = allm.generate(engine, allm.request([question, r1.message, allm.tool_result(r1.tool_calls[0].id, output)]), api_key="sk-test-0000000000")
    assert r2.output_text == "Berlin (52.5200, 13.4050): 15°C, wind 10 km/h." and r2.finish_reason == "stop"
    assert [q.path for q in server.requests] == ["/v1/responses", "/v1/responses"]
    assert server.requests[0].headers["authorization"] == "Bearer sk-test-0000000000"
    r3 = allm.generate(engine.with_model("gpt-4.1-nano"), "hi", api_key="sk-test-0000000000", http_streaming=False)
    assert server.requests[-1].path == "/v1/chat/completions" and len(r3.tool_calls) == 2


def test_http_errors_are_typed_end_to_end(server: LoopbackServer) -> None:
    case = load_case(P, "error-400-context-window")

    async def handler(req: Req, w: Writer) -> None:
        await w.respond(case.status, case.body, {"x-request-id": "req_abc"})

    server.handler = handler
    engine = allm.Engine(adapter=OpenAIResponses(base_url=server.url + "/v1"), model="gpt-5-nano")
    with pytest.raises(AdapterError) as exc:
        allm.generate(engine, "Hi", api_key="sk-test-0000000000")
    assert (exc.value.reason, exc.value.status, exc.value.request_id) == ("context_length_exceeded", 400, "req_abc")
    assert "sk-test" not in str(exc.value) and "sk-test" not in repr(exc.value)


# ------------------------------------------------------------------------------ live: llama-server's /v1/responses

QUESTION = [allm.system("Be brief."), allm.user("What is the capital of France?")]


@pytest.fixture(scope="module")
def live(llama_server: Any) -> allm.Engine:
    return allm.Engine(
        adapter=OpenAIResponses.compatible(llama_server.base_url, "llama.cpp"),
        model="smollm2",
        defaults={"temperature": 0.0},
    )


@pytest.mark.live
def test_live_answer_streamed_and_not(live: allm.Engine) -> None:
    events = list(allm.stream_generate(live, allm.request(QUESTION, max_tokens=40)))
    assert isinstance(events[0], MessageStarted) and isinstance(events[-1], MessageCompleted)
    deltas = [e.delta for e in events if isinstance(e, TextDelta)]
    streamed = fold_response(events)
    assert len(deltas) > 3 and "".join(deltas) == streamed.output_text
    assert "Paris" in streamed.output_text
    assert streamed.id and streamed.id.startswith("resp_") and streamed.finish_reason in ("stop", "length")
    u = streamed.usage
    assert u.input_tokens and u.input_tokens > 5 and u.output_tokens and u.total_tokens == u.input_tokens + u.output_tokens
    body = allm.generate(live, allm.request(QUESTION, max_tokens=40), http_streaming=False)
    assert body.output_text == streamed.output_text and body.model == "smollm2"
    assert (body.usage.input_tokens, body.usage.output_tokens) == (u.input_tokens, u.output_tokens)


@pytest.mark.live
async def test_live_async(live: allm.Engine) -> None:
    resp = await allm.agenerate(live, allm.request(QUESTION, max_tokens=40))
    assert "Paris" in resp.output_text


@pytest.mark.live
def test_live_json_schema_output(live: allm.Engine) -> None:
    """llama-server ignores text.format on /responses; the llama.cpp dialect also sends
    response_format, which constrains the output to the schema."""
    req = allm.request("Generate a person named John who is 30 years old.", max_tokens=64, response_format=PERSON)
    for http_streaming in (True, False):
        resp = allm.generate(live, req, http_streaming=http_streaming)
        value = orjson.loads(resp.output_text)
        assert set(value) == {"name", "age"} and isinstance(value["name"], str) and isinstance(value["age"], int)


@pytest.mark.live
def test_live_bad_request_is_a_typed_error(live: allm.Engine) -> None:
    with pytest.raises(AdapterError) as exc:
        allm.generate(live, allm.request("x", max_tokens=4, options={"input": [{"type": "bogus"}]}))
    assert (exc.value.reason, exc.value.status, exc.value.provider) == ("invalid_request", 400, "llama_cpp")
    assert "type" in exc.value.message


# ------------------------------------------------------------------------------ the example

EXAMPLE = Path(__file__).parent.parent / "examples" / "responses_local.py"


def run_example(**env: str) -> subprocess.CompletedProcess[str]:
    root = str(EXAMPLE.parent.parent)
    return subprocess.run(
        [sys.executable, str(EXAMPLE)],
        env={**os.environ, "PYTHONPATH": root, **env},
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_example_without_a_server_explains_and_exits_0() -> None:
    r = run_example(ALLM_LLAMA_SERVER="/nonexistent/llama-server")
    assert r.returncode == 0, r.stderr
    assert "o3-mini -> https://api.openai.com/v1/responses" in r.stdout
    assert "No local llama-server" in r.stdout and "ALLM_LLAMA_URL" in r.stdout


@pytest.mark.live
def test_example_against_the_live_server(llama_server: Any) -> None:
    r = run_example(ALLM_LLAMA_URL=llama_server.url)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Paris" in r.stdout and r.stdout.endswith("ok\n")
