"""Malformed payloads: a FormatError naming where, never another exception."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from allm import formats
from allm.formats import FormatError
from tests import strategies as S

READERS = [f for f in formats.FORMATS]

# JSON shaped roughly like the payloads, with wrong types and odd values in every place.
keys = st.sampled_from(
    [
        "messages", "input", "contents", "system", "systemInstruction", "instructions", "role", "content", "type",
        "text", "parts", "tool_calls", "function", "arguments", "name", "id", "call_id", "output", "tool_call_id",
        "tool_use_id", "input_schema", "thinking", "signature", "data", "source", "media_type", "url", "image_url",
        "functionCall", "functionResponse", "args", "response", "thought", "thoughtSignature", "inlineData",
        "mimeType", "fileData", "fileUri", "summary", "encrypted_content", "is_error", "detail", "phase", "refusal",
        "reasoning_content", "cache_control", "allm_schema", "value",
    ]
)
values = st.sampled_from(
    ["user", "assistant", "system", "tool", "model", "developer", "text", "image", "image_url", "tool_use",
     "tool_result", "thinking", "redacted_thinking", "function_call", "function_call_output", "reasoning",
     "message", "input_text", "input_image", "output_text", "base64", "url", "function", "data:image/png;base64,AAAA",
     "data:x", "https://e.org/a.png", "image/png", "{\"a\": 1}", "", "auto"]
)
json_like: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | values,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=25,
)


def _paths(v: Any, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [here]
    if isinstance(v, dict):
        for k, x in v.items():
            out += _paths(x, (*here, k))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            out += _paths(x, (*here, i))
    return out


def _replace(v: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(v, dict):
        out = dict(v)
        if new is _DELETE and not rest:
            del out[head]
        else:
            out[head] = _replace(v[head], rest, new)
        return out
    out_l = list(v)
    if new is _DELETE and not rest:
        del out_l[head]
    else:
        out_l[head] = _replace(v[head], rest, new)
    return out_l


_DELETE = object()
THREADS = st.one_of(S.portable_threads, S.anthropic_threads, S.gemini_threads, S.responses_threads, S.chat_threads)


@st.composite
def broken_payloads(draw: Any, fmt: str) -> Any:
    """A valid payload of ``fmt`` with one to three parts replaced by odd JSON, or deleted."""
    payload, _ = formats.to_payload(draw(THREADS), fmt)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(payload)
        path = draw(st.sampled_from(paths))
        new = _DELETE if path and draw(st.booleans()) else draw(json_like)
        payload = _replace(payload, path, new)
    return payload


@pytest.mark.parametrize("fmt", READERS)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_broken_payloads_are_read_or_refused_with_a_format_error(fmt: str, data: st.DataObject) -> None:
    payload = data.draw(broken_payloads(fmt))
    _read_or_refuse(fmt, payload)


@pytest.mark.parametrize("fmt", READERS)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=json_like)
def test_any_json_is_read_or_refused_with_a_format_error(fmt: str, payload: Any) -> None:
    _read_or_refuse(fmt, payload)


def _read_or_refuse(fmt: str, payload: Any) -> None:
    for strict in (False, True):
        try:
            thread, warnings = formats.from_payload(payload, fmt, strict=strict)
        except FormatError as exc:
            assert exc.reason in ("invalid_payload", "unrepresentable", "unsupported_version")
        else:
            assert all(isinstance(w, formats.FormatWarning) for w in warnings)
            formats.to_payload(thread, fmt)  # what was read can be written back


@pytest.mark.parametrize("fmt", READERS)
@settings(max_examples=100, deadline=None)
@given(thread=S.history_threads)
def test_any_thread_is_written(fmt: str, thread: Any) -> None:
    payload, _warnings = formats.to_payload(thread, fmt)
    formats.from_payload(payload, fmt)


@pytest.mark.parametrize(
    ("fmt", "payload", "where"),
    [
        ("openai_chat", {"messages": "hi"}, "messages"),
        ("openai_chat", {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, "messages[0].content[0].image_url"),
        ("openai_chat", {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@"}}]}]}, "messages[0].content[0]"),
        ("openai_chat", {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://e.org/a.png", "detail": "max"}}]}]}, "messages[0].content[0]"),
        ("openai_chat", {"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"arguments": "{}"}}]}]}, "messages[0].tool_calls[0].function"),
        ("openai_chat", {"messages": [{"role": "tool", "content": "x"}]}, "messages[0]"),
        ("openai_chat", {"messages": [7]}, "messages[0]"),
        ("openai_responses", {"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, "input[0]"),
        ("openai_responses", {"instructions": 3, "input": []}, "instructions"),
        ("openai_responses", {"input": [{"type": "reasoning", "summary": [{"type": "summary_text"}]}]}, "input[0].summary[0]"),
        ("anthropic", {"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "data": "AAAA"}}]}]}, "messages[0].content[0].source"),
        ("anthropic", {"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "is_error": "yes"}]}]}, "messages[0].content[0]"),
        ("anthropic", {"messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": [1]}]}]}, "messages[0].content[0].input"),
        ("anthropic", {"system": 5, "messages": []}, "system"),
        ("gemini", {"contents": [{"role": "model", "parts": [{"functionCall": {"args": {}}}]}]}, "contents[0].parts[0].functionCall"),
        ("gemini", {"contents": [{"role": "user", "parts": [{"inlineData": {"mimeType": "image/png", "data": "@@"}}]}]}, "contents[0].parts[0]"),
        ("gemini", {"contents": [{"role": "model", "parts": [{"text": "a", "thoughtSignature": 5}]}]}, "contents[0].parts[0]"),
        ("gemini", {"contents": {"role": "user"}}, "contents"),
    ],
)
def test_the_error_names_the_path(fmt: str, payload: Any, where: str) -> None:
    with pytest.raises(FormatError) as exc:
        formats.from_payload(payload, fmt)
    assert exc.value.reason == "invalid_payload"
    assert exc.value.message.startswith(where + ":"), exc.value.message
