"""The pure mapping: request checks, items -> thread, allm events -> Open Responses events, errors."""

from __future__ import annotations

import orjson
import pytest

import allm
from allm.errors import AdapterError, EngineError, ToolError, ValidationError
from allm.events import (
    Error,
    MessageCompleted,
    MessageStarted,
    ReasoningCompleted,
    ReasoningDelta,
    TextCompleted,
    TextDelta,
    ToolCallCompleted,
    ToolCallDelta,
    ToolCallStarted,
    ToolResultEncoded,
)
from allm.server.translate import (
    ApiError,
    EventMapper,
    decode_compaction,
    encode_compaction,
    error_from_allm,
    items_to_thread,
    parse_create,
    sse,
)
from allm.types import CallWarning, Message, ReasoningPart, ToolCall, Usage


def test_mapper_orders_items_and_numbers_every_event() -> None:
    m = EventMapper(parse_create({"model": "m", "input": "x"}), "resp_1", 100)
    out = m.start()
    tc = ToolCall("call_1", "f", {"a": 1}, '{"a":1}')
    for ev in [
        MessageStarted(warnings=(CallWarning("unsupported_setting", "top_k", message="top_k dropped"),)),
        ReasoningDelta("hm"), ReasoningCompleted(ReasoningPart("hm")),
        TextDelta("Hel"), TextDelta("lo"), TextCompleted("Hello"),
        ToolCallStarted("call_1", "f"), ToolCallDelta("call_1", '{"a":'), ToolCallDelta("call_1", "1}"),
        ToolCallCompleted(tc),
        MessageCompleted(Message("assistant", "Hello", tool_calls=[tc]), "tool_calls",
                         usage=Usage(input_tokens=3, output_tokens=4, cached_input_tokens=1, reasoning_tokens=2)),
        ToolResultEncoded("call_1", "2"),
    ]:
        out += m.feed(ev)
    out += m.finish(now=101)
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    assert [e["type"] for e in out] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added", "response.reasoning.delta",
        "response.reasoning.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.content_part.added", "response.output_text.delta",
        "response.output_text.delta", "response.output_text.done", "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.output_item.added", "response.output_item.done",
        "response.completed",
    ]
    final = out[-1]["response"]
    assert [o["type"] for o in final["output"]] == ["reasoning", "message", "function_call", "function_call_output"]
    assert [e["output_index"] for e in out if e["type"] == "response.output_item.added"] == [0, 1, 2, 3]
    assert final["usage"] == {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7,
                              "input_tokens_details": {"cached_tokens": 1, "cache_write_tokens": 0},
                              "output_tokens_details": {"reasoning_tokens": 2}}
    assert final["metadata"] == {"allm_warnings": "top_k dropped"}
    assert final["completed_at"] == 101 and final["status"] == "completed"


def test_text_without_deltas_and_length_finish() -> None:
    m = EventMapper(parse_create({"model": "m", "input": "x", "max_output_tokens": 5}), "resp_1", 1)
    out = m.feed(TextCompleted("whole"))
    assert [e["type"] for e in out] == ["response.output_item.added", "response.content_part.added",
                                        "response.output_text.delta", "response.output_text.done",
                                        "response.content_part.done", "response.output_item.done"]
    m.feed(MessageCompleted(Message("assistant", "whole"), "length"))
    end = m.finish(now=2)[-1]
    assert end["type"] == "response.incomplete"
    assert end["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert end["response"]["completed_at"] is None


def test_error_mid_stream_closes_items_then_error_then_failed() -> None:
    m = EventMapper(parse_create({"model": "m", "input": "x"}), "resp_1", 1)
    m.start()
    m.feed(TextDelta("part"))
    out = m.feed(Error(AdapterError("gone", reason="network_error")))
    assert [e["type"] for e in out][-1] == "error" and out[-1]["error"]["code"] == "upstream_error"
    assert "response.output_item.done" in [e["type"] for e in out]
    end = m.finish(now=2)
    assert [e["type"] for e in end] == ["response.failed"]
    assert end[0]["response"]["error"]["code"] == "upstream_error"


def test_sse_frame_is_one_write_of_one_line_json() -> None:
    frame = sse({"type": "response.output_text.delta", "sequence_number": 3, "delta": "a\nb"})
    head, data, blank, end = frame.split(b"\n")
    assert head == b"event: response.output_text.delta" and blank == b"" and end == b""
    assert orjson.loads(data[6:])["delta"] == "a\nb"


@pytest.mark.parametrize(("exc", "status", "code"), [
    (AdapterError("x", reason="rate_limited", retry_after=1.2), 429, "rate_limit_exceeded"),
    (AdapterError("x", reason="provider_unavailable", status=500), 502, "upstream_error"),
    (AdapterError("x", reason="timeout"), 504, "upstream_timeout"),
    (AdapterError("x", reason="authentication_failed", status=401), 502, "upstream_authentication_failed"),
    (AdapterError("x", reason="not_found", status=404), 404, "model_not_found"),
    (AdapterError("x", reason="context_length_exceeded", status=400), 400, "context_length_exceeded"),
    (ValidationError("x", reason="invalid_tool"), 400, "invalid_tool"),
    (EngineError("x", reason="missing_key"), 500, "missing_key"),
    (ToolError("x", reason="timeout"), 500, "tool_timeout"),
])
def test_error_mapping(exc: allm.AllmError, status: int, code: str) -> None:
    api = error_from_allm(exc)
    assert (api.status, api.code) == (status, code)
    assert set(api.body()["error"]) == {"message", "type", "param", "code"}
    if status == 429:
        assert api.headers == {"retry-after": "2"}


def test_parse_create_checks() -> None:
    p = parse_create({"model": "m", "input": "hi", "temperature": 0, "tools": [], "metadata": {"k": "v"}})
    assert p.input == ({"type": "message", "role": "user", "content": "hi"},) and p.temperature == 0.0
    for body, param in [({}, "model"), ({"model": 1}, "model"), ({"model": "m", "input": [1]}, "input[0]"),
                        ({"model": "m", "top_p": True}, "top_p"), ({"model": "m", "conversation": "c"}, "conversation")]:
        with pytest.raises(ApiError) as info:
            parse_create(body)
        assert info.value.status == 400 and info.value.param == param
    with pytest.raises(ApiError):
        parse_create({"model": "m"}, websocket=True)  # no type: response.create


def test_items_to_thread_and_compaction() -> None:
    thread = items_to_thread([
        {"type": "message", "role": "developer", "content": "rules"},
        {"role": "user", "content": "q"},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "r"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "a"}], "phase": "final_answer"},
    ])
    assert [m.role for m in thread.messages] == ["system", "user", "assistant", "tool", "assistant"]
    packed = encode_compaction(thread)
    assert decode_compaction(packed, "x") == thread
    again = items_to_thread([{"type": "compaction", "encrypted_content": packed}, {"role": "user", "content": "next"}])
    assert again.messages == (*thread.messages, Message("user", "next"))
    with pytest.raises(ApiError):
        items_to_thread([{"type": "function_call", "call_id": 5}])
