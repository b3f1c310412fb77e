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


# ------------------------------------------------------------------------------ conversations (history formats)
# Threads shaped like real conversations, with consistent tool calls (``raw_arguments`` is the
# JSON text of ``arguments``, or unparseable text with ``parse_error`` set), for the round trips
# of ``allm.formats``.

import orjson as _orjson  # noqa: E402

wire_ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", min_size=1, max_size=12)
words = st.text(min_size=1, max_size=30)
json_objects = st.dictionaries(texts, json_values, max_size=3)
png_or_jpeg = st.builds(allm.Image.from_bytes, st.binary(min_size=1, max_size=40), st.sampled_from(["image/png", "image/jpeg"]))
url_images = texts.map(lambda t: allm.Image.from_url("https://example.org/" + t.replace(" ", "_")))


@st.composite
def consistent_tool_calls(draw: Any, id: Any = None, metadata: Any = None, unparseable: bool = True) -> allm.ToolCall:
    call_id = draw(id if id is not None else ids)
    name = draw(wire_ids)
    meta = draw(metadata) if metadata is not None else {}
    if unparseable and draw(st.integers(0, 7)) == 0:
        raw = draw(st.sampled_from(['{"city": ', "not json", "[1, 2]", "3"]))
        return allm.ToolCall(call_id, name, {}, raw, "arguments are not a JSON object", meta)
    args = draw(json_objects)
    spaced = draw(st.booleans())
    raw = _orjson.dumps(args).decode() if not spaced else __import__("json").dumps(args)
    return allm.ToolCall(call_id, name, args, raw, None, meta)


any_reasoning = st.builds(
    allm.ReasoningPart,
    texts,
    st.none() | texts,
    st.none() | texts,
    st.none() | texts,
    st.none() | ids,
    st.none() | st.sampled_from(["anthropic", "gemini", "openai"]),
)
any_parts = st.one_of(st.builds(allm.TextPart, texts), st.builds(allm.ImagePart, images, st.none() | st.sampled_from(["auto", "low", "high"])), any_reasoning)
any_history_messages = st.sampled_from(["system", "user", "assistant", "tool"]).flatmap(
    lambda role: st.builds(
        allm.Message,
        role=st.just(role),
        content=texts | st.lists(any_parts, max_size=3).map(tuple),
        tool_calls=st.lists(consistent_tool_calls(), max_size=2).map(tuple) if role == "assistant" else st.just(()),
        tool_call_id=st.none() | ids,
        name=st.none() | ids,
        is_error=st.booleans(),
        metadata=st.just({}) | metadata,
    )
)


@st.composite
def conversation_threads(
    draw: Any,
    user_content: Any,
    assistant_parts: Any,
    result_content: Any,
    *,
    call_metadata: Any = None,
    message_metadata: Any = None,
    assistant_metadata: Any = None,
    is_error: Any = None,
    systems: int = 1,
    issued_ids: bool = False,
    unparseable: bool = False,
) -> allm.Thread:
    """system*, then turns of: user, [assistant with tool calls, one result per call in order],
    assistant answer (at least one text part)."""
    msgs: list[allm.Message] = []
    meta = message_metadata if message_metadata is not None else st.just({})
    ameta = assistant_metadata if assistant_metadata is not None else meta
    for _ in range(draw(st.integers(0, systems))):
        msgs.append(allm.Message("system", draw(words), metadata=draw(meta)))
    n = 0
    for _ in range(draw(st.integers(1, 3))):
        msgs.append(allm.Message("user", draw(user_content), metadata=draw(meta)))
        if draw(st.booleans()):
            calls = []
            for _ in range(draw(st.integers(1, 3))):
                n += 1
                tc = draw(consistent_tool_calls(st.just(f"call_{n}"), call_metadata, unparseable))
                if issued_ids:
                    g = {**tc.metadata.get("gemini", {}), "id": tc.id}
                    tc = allm.ToolCall(tc.id, tc.name, tc.arguments, tc.raw_arguments, tc.parse_error, {"gemini": g})
                calls.append(tc)
            pre = draw(st.lists(assistant_parts, max_size=2))
            pre_meta = draw(ameta) if any(type(p) is allm.TextPart for p in pre) else draw(meta)
            msgs.append(allm.Message("assistant", tuple(pre), tool_calls=tuple(calls), metadata=pre_meta))
            for tc in calls:
                err = draw(is_error) if is_error is not None else False
                msgs.append(allm.Message("tool", draw(result_content), tool_call_id=tc.id, is_error=err, metadata=draw(meta)))
        answer = [*draw(st.lists(assistant_parts, max_size=2)), allm.TextPart(draw(words))]
        msgs.append(allm.Message("assistant", tuple(draw(st.permutations(answer))), metadata=draw(ameta)))
    return allm.Thread(tuple(msgs))


portable_user = words | st.lists(
    st.builds(allm.TextPart, words) | st.builds(allm.ImagePart, png_or_jpeg | url_images), min_size=1, max_size=3
).map(tuple)
portable_threads = conversation_threads(portable_user, st.builds(allm.TextPart, words), texts)
"""What every provider format can hold: a leading system prompt, user text and images (bytes or
URL, no detail), assistant text and tool calls, tool results as text."""

signatures = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=", min_size=4, max_size=40)
anthropic_threads = conversation_threads(
    portable_user,
    st.builds(allm.TextPart, words)
    | st.builds(lambda t, s: allm.ReasoningPart(t, s, provider="anthropic"), texts, st.none() | signatures)
    | st.builds(lambda d: allm.ReasoningPart(redacted_data=d, provider="anthropic"), signatures),
    words | st.lists(st.builds(allm.TextPart, words) | st.builds(allm.ImagePart, png_or_jpeg), min_size=1, max_size=2).map(tuple),
    message_metadata=st.just({}) | st.just({"anthropic": {"cache_control": {"type": "ephemeral"}}}),
    is_error=st.booleans(),
    systems=2,
)
gemini_threads = conversation_threads(
    words | st.lists(st.builds(allm.TextPart, words) | st.builds(allm.ImagePart, png_or_jpeg), min_size=1, max_size=3).map(tuple),
    st.builds(allm.TextPart, words)
    | st.builds(lambda t, s: allm.ReasoningPart(t, s, provider="gemini"), words, st.none() | signatures)
    | st.builds(allm.ImagePart, png_or_jpeg),
    texts,
    call_metadata=st.just({}) | signatures.map(lambda s: {"gemini": {"thought_signature": s}}),
    is_error=st.booleans(),
    systems=2,
    issued_ids=True,
)
responses_threads = conversation_threads(
    words
    | st.lists(
        st.builds(allm.TextPart, words) | st.builds(allm.ImagePart, png_or_jpeg | url_images, st.sampled_from(["low", "high"])),
        min_size=1,
        max_size=3,
    ).map(tuple),
    st.builds(allm.TextPart, words)
    | st.builds(lambda t, e: allm.ReasoningPart(t, encrypted_content=e, provider="openai"), texts, signatures),
    texts,
    assistant_metadata=st.just({}) | st.sampled_from(["commentary", "final_answer"]).map(lambda p: {"openai": {"phase": p}}),
    unparseable=True,
)
chat_threads = conversation_threads(
    st.lists(
        st.builds(allm.TextPart, words) | st.builds(allm.ImagePart, png_or_jpeg | url_images, st.sampled_from(["auto", "low", "high"])),
        min_size=1,
        max_size=3,
    ).map(tuple),
    st.builds(allm.TextPart, words),
    texts,
    systems=2,
    unparseable=True,
)
history_threads = st.builds(allm.Thread, st.lists(any_history_messages, max_size=5).map(tuple), st.just({}) | metadata)
"""Anything a Thread can hold, tool calls kept consistent: for the "nothing lost silently" law."""


@st.composite
def one_change(draw: Any, base: Any) -> allm.Thread:
    """A thread from ``base`` with one random change: a field set, a part added, a message
    inserted, or thread metadata. The base round-trips cleanly, so any warning (or loss)
    after a round trip is the change's."""
    import attrs as _attrs

    thread = draw(base)
    msgs = list(thread.messages)
    kind = draw(st.sampled_from(["name", "is_error", "metadata", "tool_call_id", "part", "call_metadata", "insert", "thread"]))
    if kind == "thread" or not msgs:
        return allm.Thread(tuple(msgs), draw(metadata.filter(bool)))
    if kind == "insert":
        msgs.insert(draw(st.integers(0, len(msgs))), draw(any_history_messages))
        return allm.Thread(tuple(msgs))
    i = draw(st.integers(0, len(msgs) - 1))
    m = msgs[i]
    if kind == "name":
        m = _attrs.evolve(m, name=draw(ids))
    elif kind == "is_error":
        m = _attrs.evolve(m, is_error=True)
    elif kind == "metadata":
        m = _attrs.evolve(m, metadata=draw(metadata.filter(bool)))
    elif kind == "tool_call_id":
        m = _attrs.evolve(m, tool_call_id=draw(ids))
    elif kind == "part":
        parts = list(m.parts)
        parts.insert(draw(st.integers(0, len(parts))), draw(any_parts))
        m = _attrs.evolve(m, content=tuple(parts))
    elif m.tool_calls:
        k = draw(st.integers(0, len(m.tool_calls) - 1))
        calls = list(m.tool_calls)
        calls[k] = _attrs.evolve(calls[k], metadata=draw(metadata.filter(bool)))
        m = _attrs.evolve(m, tool_calls=tuple(calls))
    elif m.role == "assistant":
        m = _attrs.evolve(m, tool_calls=(draw(consistent_tool_calls()),))
    else:
        m = _attrs.evolve(m, metadata=draw(metadata.filter(bool)))
    msgs[i] = m
    return allm.Thread(tuple(msgs), thread.metadata)
