"""Hypothesis strategies for allm values (JSON-native metadata, any text)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

import allm
from allm.errors import AdapterError, EngineError, ToolError

texts = st.text(max_size=30)
ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=12)
json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False) | texts
json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
)
metadata = st.dictionaries(texts, json_values, max_size=3)
opt_int = st.none() | st.integers(0, 10**7)

usages = st.builds(allm.Usage, opt_int, opt_int, opt_int, opt_int, opt_int, opt_int)
tool_calls = st.builds(
    allm.ToolCall,
    id=ids,
    name=ids,
    arguments=st.dictionaries(texts, json_values, max_size=3),
    raw_arguments=texts,
    parse_error=st.none() | texts,
    metadata=metadata,
)
images = st.one_of(
    st.builds(allm.Image.from_bytes, st.binary(max_size=40), st.sampled_from(["image/png", "image/jpeg"])),
    st.builds(allm.Image.from_url, st.just("https://example.org/") .map(lambda u: u) | texts.map(lambda t: "https://e.org/" + t)),
)
parts = st.one_of(
    st.builds(allm.TextPart, texts),
    st.builds(allm.ImagePart, images, st.none() | st.sampled_from(["auto", "low", "high"])),
    st.builds(
        allm.ReasoningPart,
        texts,
        st.none() | texts,
        st.none() | texts,
        st.none() | texts,
        st.none() | ids,
        st.none() | st.sampled_from(["anthropic", "gemini", "openai"]),
    ),
)
messages = st.sampled_from(["system", "user", "assistant", "tool"]).flatmap(
    lambda role: st.builds(
        allm.Message,
        role=st.just(role),
        content=texts | st.lists(parts, max_size=3).map(tuple),
        # Only an assistant message carries tool calls (Message refuses them elsewhere).
        tool_calls=st.lists(tool_calls, max_size=2).map(tuple) if role == "assistant" else st.just(()),
        tool_call_id=st.none() | ids,
        name=st.none() | ids,
        is_error=st.booleans(),
        metadata=metadata,
    )
)
threads = st.builds(allm.Thread, st.lists(messages, max_size=4).map(tuple), metadata)
tools = st.builds(
    allm.Tool,
    name=ids,
    description=texts,
    schema=st.just({"type": "object", "properties": {"x": {"type": "string"}}}),
    manual=st.booleans(),
    strict=st.none() | st.booleans(),
    metadata=metadata,
)
formats = st.none() | st.builds(
    allm.ResponseFormat,
    st.sampled_from(["text", "json_object", "json_schema"]),
    st.none() | ids,
    st.none() | st.just({"type": "object"}),
    st.booleans(),
)
floats = st.none() | st.floats(0, 2, allow_nan=False)
requests = st.builds(
    allm.Request,
    messages=st.lists(messages, max_size=3).map(tuple),
    model=st.none() | ids,
    tools=st.lists(tools, max_size=2).map(tuple),
    tool_choice=st.none() | st.sampled_from(["auto", "none", "required", "lookup"]),
    temperature=floats,
    top_p=st.none() | st.floats(0, 1, allow_nan=False),
    top_k=st.none() | st.integers(1, 100),
    max_tokens=st.none() | st.integers(1, 10000),
    stop_sequences=st.lists(st.text(min_size=1, max_size=30), max_size=2).map(tuple),
    seed=st.none() | st.integers(0, 2**31),
    frequency_penalty=floats,
    presence_penalty=floats,
    response_format=formats,
    options=metadata,
    metadata=metadata,
)
errors = st.builds(
    lambda cls, reason, msg, status: cls(msg, reason=reason, status=status),
    st.just(AdapterError),
    st.sampled_from(sorted(AdapterError.reasons)),
    texts,
    st.none() | st.integers(400, 599),
) | st.builds(lambda m: EngineError(m, reason="missing_key"), texts) | st.builds(lambda m: ToolError(m, reason="timeout"), texts)
responses = st.builds(
    allm.Response,
    message=messages,
    id=st.none() | ids,
    request_id=st.none() | ids,
    model=st.none() | ids,
    output_text=texts,
    tool_calls=st.lists(tool_calls, max_size=2).map(tuple),
    finish_reason=st.none() | st.sampled_from(["stop", "length", "tool_calls", "content_filter", "error", "other"]),
    raw_finish_reason=st.none() | texts,
    usage=usages,
    warnings=st.lists(
        st.builds(
            allm.types.CallWarning,
            st.sampled_from(["dropped_setting", "unsupported_feature", "dropped_content", "moved_content", "other"]),
            st.none() | ids,
            st.none() | ids,
            texts,
        ),
        max_size=2,
    ).map(tuple),
    metadata=metadata | st.builds(lambda e: {"error": e}, errors),
)
steps = st.builds(
    allm.Step,
    response=responses,
    thread=threads,
    tool_results=st.lists(messages, max_size=2).map(tuple),
    mode=st.sampled_from(["auto", "manual"]),
    done=st.booleans(),
    halted_reason=st.none() | texts,
    metadata=metadata,
)
chat_results = st.builds(
    allm.ChatResult,
    thread=threads,
    final_response=st.none() | responses,
    steps=st.lists(steps, max_size=2).map(tuple),
    halted_reason=st.sampled_from(["completed", "error", "max_turns", "ask_user", "cancelled"]),
    pending_question=st.none() | texts,
    pending_tool_call_id=st.none() | ids,
    metadata=metadata,
)
embeddings = st.builds(
    allm.Embeddings,
    st.lists(st.lists(st.floats(-1, 1, width=32), max_size=4).map(tuple), max_size=3).map(tuple),
    st.none() | ids,
    usages,
)
values = st.one_of(messages, threads, requests, responses, usages, tool_calls, tools, steps, chat_results, embeddings)
