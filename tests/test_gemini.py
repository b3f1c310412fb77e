"""The Gemini adapter against real recorded traffic (tests/fixtures/gemini/)."""

from __future__ import annotations

import base64
import copy
import itertools
import pickle
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
    TextDelta,
    ToolCallCompleted,
    ToolCallStarted,
)
from allm.fold import fold_response
from allm.providers.gemini import Gemini, map_finish_reason, map_usage
from allm.types import (
    CallWarning,
    Image,
    ImagePart,
    Message,
    ReasoningPart,
    Request,
    Response,
    TextPart,
    Tool,
    ToolCall,
    assistant,
    json_schema,
    system,
    tool_result,
    user,
)
from tests.conftest import case_names, feed_all, load_case, splits

G = Gemini()
CASES = case_names("gemini")
STREAM_CASES = [n for n in CASES if n.startswith("stream-")]
BODY_CASES = [n for n in CASES if load_case("gemini", n).ok and not n.startswith("stream-") and n != "models-list"]
ERROR_CASES = [n for n in CASES if not load_case("gemini", n).ok]


# ------------------------------------------------------------------------------ helpers


def call(stream: bool = True, warnings: tuple[CallWarning, ...] = ()) -> Any:
    c = G.encode(Request(messages=(user("x"),), model="gemini-2.5-flash"), stream=stream)
    return c if not warnings else type(c)(c.method, c.url, c.headers, c.body, c.stream, c.provider, c.model, warnings)


def stream_events(body: bytes, include_raw: bool = False) -> list[Any]:
    return feed_all(G.decoder(call(), include_raw=include_raw), [body])


def body_events(body: bytes, include_raw: bool = False) -> list[Any]:
    return G.decode_body(call(False), body, include_raw=include_raw)


def fold(events: list[Any]) -> Response:
    return fold_response(events)


def sse_chunks(raw: bytes) -> list[dict[str, Any]]:
    """The JSON objects of a recorded SSE stream, read without the adapter's SSE decoder."""
    out = []
    for block in raw.split(b"\r\n\r\n"):
        block = block.strip()
        if block:
            assert block.startswith(b"data: ")
            out.append(orjson.loads(block[len(b"data: ") :]))
    return out


def sse_of(objs: list[dict[str, Any]]) -> bytes:
    """Objects as Gemini sends them on ``alt=sse`` (one ``data:`` line each, CRLF)."""
    return b"".join(b"data: " + orjson.dumps(o) + b"\r\n\r\n" for o in objs)


def merged_body(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``generateContent`` body that corresponds to a stream: consecutive text (or
    thought) pieces joined into one part, a signature staying on the part it closes,
    the last finishReason and usage. This is how Gemini's unary answer is shaped
    (compare generate-thoughts with stream-sse-thoughts)."""
    parts: list[dict[str, Any]] = []
    cand: dict[str, Any] = {"index": 0}
    last: dict[str, Any] = {}
    for ch in chunks:
        last = ch
        for c in ch.get("candidates") or []:
            for p in (c.get("content") or {}).get("parts") or []:
                prev = parts[-1] if parts else None
                if (
                    prev is not None
                    and "text" in p
                    and "text" in prev
                    and bool(p.get("thought")) == bool(prev.get("thought"))
                    and "thoughtSignature" not in prev
                ):
                    prev["text"] += p["text"]
                    if "thoughtSignature" in p:
                        prev["thoughtSignature"] = p["thoughtSignature"]
                else:
                    parts.append(dict(p))
            for k in ("finishReason", "finishMessage"):
                if k in c:
                    cand[k] = c[k]
    cand["content"] = {"parts": parts, "role": "model"}
    body = {"candidates": [cand], "usageMetadata": last.get("usageMetadata")}
    for k in ("modelVersion", "responseId"):
        if k in last:
            body[k] = last[k]
    return body


def split_body(body: dict[str, Any]) -> list[dict[str, Any]]:
    """A ``generateContent`` body re-cut into stream chunks: every text split in three pieces,
    one part per chunk, a signature on the last piece of its part, finishReason and usage last."""
    cand = body["candidates"][0]
    meta = {k: body[k] for k in ("modelVersion", "responseId") if k in body}
    pieces: list[dict[str, Any]] = []
    for p in cand["content"]["parts"]:
        if "text" in p and len(p["text"]) >= 3:
            t = p["text"]
            cuts = [0, len(t) // 3, 2 * len(t) // 3, len(t)]
            for a, b in itertools.pairwise(cuts):
                piece = {k: v for k, v in p.items() if k != "thoughtSignature"}
                piece["text"] = t[a:b]
                pieces.append(piece)
            if "thoughtSignature" in p:
                pieces[-1]["thoughtSignature"] = p["thoughtSignature"]
        else:
            pieces.append(p)
    chunks = [{"candidates": [{"content": {"parts": [pc], "role": "model"}, "index": 0}], **meta} for pc in pieces]
    last_cand = chunks[-1]["candidates"][0]
    for k in ("finishReason", "finishMessage"):
        if k in cand:
            last_cand[k] = cand[k]
    chunks[-1]["usageMetadata"] = body["usageMetadata"]
    return chunks


def expected_usage(u: dict[str, Any]) -> allm.Usage:
    """Usage computed from usageMetadata by the documented rule, independently of the adapter."""
    cand = u.get("candidatesTokenCount")
    thoughts = u.get("thoughtsTokenCount")
    out = None if cand is None and thoughts is None else (cand or 0) + (thoughts or 0)
    return allm.Usage(
        input_tokens=u.get("promptTokenCount"),
        output_tokens=out,
        cached_input_tokens=u.get("cachedContentTokenCount"),
        reasoning_tokens=thoughts,
        total_tokens=u.get("totalTokenCount"),
    )


def recorded_answer(chunks: list[dict[str, Any]]) -> tuple[str, str, list[dict[str, Any]]]:
    """(answer text, thought text, function calls) of recorded chunks, read directly."""
    text, thought, calls = "", "", []
    for ch in chunks:
        for c in ch.get("candidates") or []:
            for p in c["content"]["parts"]:
                if "functionCall" in p:
                    calls.append(p["functionCall"])
                elif p.get("thought"):
                    thought += p.get("text", "")
                else:
                    text += p.get("text", "")
    return text, thought, calls


def case_chunks(name: str) -> list[dict[str, Any]]:
    c = load_case("gemini", name)
    return sse_chunks(c.body) if name.startswith("stream-") else [orjson.loads(c.body)]


# ------------------------------------------------------------------------------ replay: every case


@pytest.mark.parametrize("name", STREAM_CASES + BODY_CASES)
def test_every_recorded_answer_decodes_to_what_it_says(name: str) -> None:
    chunks = case_chunks(name)
    body = load_case("gemini", name).body
    events = stream_events(body) if name.startswith("stream-") else body_events(body)
    assert not [e for e in events if isinstance(e, Error)]
    assert isinstance(events[0], MessageStarted) and isinstance(events[-1], MessageCompleted)
    r = fold(events)
    text, thought, calls = recorded_answer(chunks)
    last = chunks[-1]
    assert r.output_text == text
    assert r.reasoning_text == thought
    assert r.id == last["responseId"] and r.model == last["modelVersion"]
    assert r.usage == expected_usage(last["usageMetadata"])
    assert r.raw_finish_reason == last["candidates"][0]["finishReason"] == "STOP"
    assert r.finish_reason == ("tool_calls" if calls else "stop")
    assert [(tc.name, dict(tc.arguments)) for tc in r.tool_calls] == [(c["name"], c["args"]) for c in calls]
    for tc in r.tool_calls:
        assert orjson.loads(tc.raw_arguments) == tc.arguments and tc.parse_error is None
    # Every signature Gemini sent is kept, once, somewhere we send back.
    sent = [p["thoughtSignature"] for ch in chunks for c in ch["candidates"] for p in c["content"]["parts"] if "thoughtSignature" in p]
    kept = [p.signature for p in r.message.reasoning if p.signature] + [
        tc.metadata["gemini"]["thought_signature"] for tc in r.tool_calls if "thought_signature" in tc.metadata.get("gemini", {})
    ]
    assert sorted(kept) == sorted(sent)
    assert all(p.provider == "gemini" for p in r.message.reasoning)


@pytest.mark.parametrize("name", STREAM_CASES)
def test_stream_fold_equals_decode_of_the_matching_body(name: str) -> None:
    chunks = sse_chunks(load_case("gemini", name).body)
    streamed = fold(stream_events(load_case("gemini", name).body))
    unary = fold(body_events(orjson.dumps(merged_body(chunks))))
    assert streamed == unary


@pytest.mark.parametrize("name", BODY_CASES)
def test_body_decode_equals_fold_of_the_same_answer_streamed(name: str) -> None:
    body = orjson.loads(load_case("gemini", name).body)
    unary_events = body_events(load_case("gemini", name).body)
    # The body as a one-chunk stream gives the very same events...
    assert stream_events(sse_of([body])) == unary_events
    # ...and cut into many chunks, the same response.
    assert fold(stream_events(sse_of(split_body(body)))) == fold(unary_events)


def _shape(r: Response) -> list[tuple[str, bool, bool]]:
    return [(type(p).__name__, bool(getattr(p, "text", "")), bool(getattr(p, "signature", None))) for p in r.message.parts]


def test_same_conversation_streamed_and_unary_thoughts_have_the_same_structure() -> None:
    s, g = load_case("gemini", "stream-sse-thoughts"), load_case("gemini", "generate-thoughts")
    assert s.request == g.request  # the same conversation, sampled twice
    rs, rg = fold(stream_events(s.body)), fold(body_events(g.body))
    # thought summary, answer, then the signature that closed the answer
    assert _shape(rs) == _shape(rg) == [("ReasoningPart", True, False), ("TextPart", True, False), ("ReasoningPart", False, True)]
    assert (rs.finish_reason, rs.raw_finish_reason) == (rg.finish_reason, rg.raw_finish_reason) == ("stop", "STOP")
    for r in (rs, rg):
        u = r.usage
        assert None not in (u.input_tokens, u.output_tokens, u.reasoning_tokens, u.total_tokens)
        assert u.input_tokens + u.output_tokens == u.total_tokens  # type: ignore[operator]


def test_weather_call_streamed_and_unary_agree() -> None:
    s = fold(stream_events(load_case("gemini", "stream-sse-function-call").body))
    for other in ("generate-function-call-thought-signature", "generate-parallel-function-calls"):
        g = fold(body_events(load_case("gemini", other).body))
        assert (s.tool_calls[0].name, s.tool_calls[0].arguments) == (g.tool_calls[0].name, g.tool_calls[0].arguments)
        assert s.finish_reason == g.finish_reason == "tool_calls"
        assert s.metadata == g.metadata == {"finish_message": "Model generated function call(s)."}
        for r in (s, g):
            assert r.tool_calls[0].metadata["gemini"]["thought_signature"]


def test_text_streamed_and_unary_agree_in_structure() -> None:
    s = fold(stream_events(load_case("gemini", "stream-sse-text").body))
    g = fold(body_events(load_case("gemini", "generate-text").body))
    for r in (s, g):
        assert isinstance(r.message.content, str) and r.message.content == r.output_text != ""
        assert r.finish_reason == "stop" and not r.tool_calls
        assert r.usage.reasoning_tokens is not None
        assert r.usage.output_tokens > r.usage.reasoning_tokens  # type: ignore[operator]


def test_thoughts_stream_as_reasoning_events() -> None:
    events = stream_events(load_case("gemini", "stream-sse-thoughts").body)
    deltas = [e for e in events if isinstance(e, ReasoningDelta)]
    assert len(deltas) == 3 and all(d.id == "thought-0" for d in deltas)
    done = [e for e in events if isinstance(e, ReasoningCompleted)]
    assert [bool(e.part.text) for e in done] == [True, False]
    assert done[0].part.text == "".join(d.delta for d in deltas)
    # the answer's text deltas come after the thoughts are completed
    first_text = next(i for i, e in enumerate(events) if isinstance(e, TextDelta))
    assert events.index(done[0]) < first_text


def test_usage_is_reported_as_it_arrives_and_output_includes_thoughts() -> None:
    events = stream_events(load_case("gemini", "stream-sse-thoughts-token-accounting").body)
    usages = [e.usage for e in events if isinstance(e, RawChunk) and e.usage is not None]
    assert len(usages) == 2
    # 71 candidate tokens + 137 thought tokens; 13 + 208 == 221 total
    assert usages[-1] == allm.Usage(input_tokens=13, output_tokens=208, reasoning_tokens=137, total_tokens=221)
    # an early chunk with no candidate count reports no output (None, never 0)
    first = map_usage(sse_chunks(load_case("gemini", "stream-sse-thoughts").body)[0]["usageMetadata"])
    assert first.output_tokens is None and first.reasoning_tokens is None and first.input_tokens == 44


def test_usage_mapping_of_every_counter() -> None:
    u = map_usage(
        {
            "promptTokenCount": 100,
            "cachedContentTokenCount": 60,
            "toolUsePromptTokenCount": 5,
            "candidatesTokenCount": 7,
            "thoughtsTokenCount": 11,
            "totalTokenCount": 123,
        }
    )
    assert u == allm.Usage(input_tokens=105, output_tokens=18, cached_input_tokens=60, reasoning_tokens=11, total_tokens=123)
    assert map_usage({}) == allm.Usage()


_COUNTERS = ("promptTokenCount", "toolUsePromptTokenCount", "candidatesTokenCount", "thoughtsTokenCount",
             "cachedContentTokenCount", "totalTokenCount")
_COUNT_VALUES = st.one_of(st.none(), st.integers(-3, 10**12), st.booleans(), st.sampled_from(["12", " 7", "x", 1.5]))


_PLAIN_USAGE = st.fixed_dictionaries(
    {k: st.integers(0, 10**9) for k in ("promptTokenCount", "candidatesTokenCount", "totalTokenCount")},
    optional={k: st.one_of(st.none(), st.integers(0, 10**9)) for k in ("toolUsePromptTokenCount", "thoughtsTokenCount", "cachedContentTokenCount")},
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(_PLAIN_USAGE, st.dictionaries(st.sampled_from(_COUNTERS), _COUNT_VALUES)))
def test_usage_mapping_agrees_with_reading_each_counter(u: dict[str, Any]) -> None:
    # map_usage builds the usual chunk's usage straight away; every shape must give what
    # reading the counters one by one gives.
    from allm.providers._wire import usage_count

    dropped: dict[str, Any] = {}
    got = map_usage(u, dropped)
    bad: dict[str, Any] = {}
    prompt, tool, cand, thoughts, cached, total = (usage_count(u, k, bad) for k in _COUNTERS)

    def add(a: int | None, b: int | None, *names: str) -> int | None:
        if bad.keys() & set(names):
            return None
        return b if a is None else a if b is None else a + b

    want = allm.Usage(
        add(prompt, tool, "promptTokenCount", "toolUsePromptTokenCount"),
        add(cand, thoughts, "candidatesTokenCount", "thoughtsTokenCount"),
        cached, None, thoughts, total,
    )
    assert got == want
    assert dropped == bad


def test_include_raw_gives_one_raw_chunk_per_sse_event() -> None:
    body = load_case("gemini", "stream-sse-thoughts").body
    raws = [e for e in stream_events(body, include_raw=True) if isinstance(e, RawChunk) and e.data is not None]
    assert [r.data for r in raws] == sse_chunks(body)
    assert not [e for e in stream_events(body) if isinstance(e, RawChunk) and e.data is not None]


# ------------------------------------------------------------------------------ byte boundaries


@pytest.mark.parametrize("name", STREAM_CASES + BODY_CASES)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_any_split_of_the_bytes_gives_the_same_events(name: str, data: st.DataObject) -> None:
    raw = load_case("gemini", name).body
    body = raw if name.startswith("stream-") else sse_of(split_body(orjson.loads(raw)))
    include_raw = data.draw(st.booleans())
    reference = feed_all(G.decoder(call(), include_raw=include_raw), [body])
    parts = data.draw(splits(body))
    assert feed_all(G.decoder(call(), include_raw=include_raw), parts) == reference


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_a_stream_cut_anywhere_is_complete_or_an_error_never_an_exception(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(STREAM_CASES))
    body = load_case("gemini", name).body
    cut = data.draw(st.integers(0, len(body)))
    events = feed_all(G.decoder(call()), data.draw(splits(body[:cut], max_cuts=5)))
    full = stream_events(body)
    last_event_end = len(body.rstrip(b"\r\n"))
    if cut >= last_event_end:
        assert events == full
    else:
        assert isinstance(events[-1], Error) and events[-1].error.reason == "malformed_response"
        assert not [e for e in events if isinstance(e, MessageCompleted)]


# ------------------------------------------------------------------------------ malformed and truncated


def _last_error(events: list[Any]) -> AdapterError:
    assert isinstance(events[-1], Error), events
    err = events[-1].error
    assert isinstance(err, AdapterError)
    return err


def test_a_stream_without_finish_reason_is_an_error() -> None:
    chunks = sse_chunks(load_case("gemini", "stream-sse-function-response-followup").body)
    events = stream_events(sse_of(chunks[:1]))
    err = _last_error(events)
    assert err.reason == "malformed_response" and "finishReason" in err.message
    r = fold(events)
    assert r.finish_reason == "error" and r.output_text == "The weather in Berlin"  # partial output kept


def test_an_empty_stream_is_an_error() -> None:
    assert _last_error(stream_events(b"")).reason == "malformed_response"
    assert _last_error(stream_events(b": keep-alive\r\n\r\n")).reason == "malformed_response"


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"data: {not json\r\n\r\n", "not valid JSON"),
        (b"data: [1, 2]\r\n\r\n", "not a JSON object"),
        (b'data: {"candidates": [{"content": {"parts": {"text": "x"}}}]}\r\n\r\n', "parts is not a list"),
        (b'data: {"candidates": [{"content": {"parts": ["x"]}}]}\r\n\r\n', "part is not a JSON object"),
        (b'data: {"candidates": [{"content": {"parts": [{"text": 5}]}}]}\r\n\r\n', "text is not a string"),
        (b'data: {"candidates": [{"content": {"parts": [{"functionCall": {"args": {}}}]}}]}\r\n\r\n', "no name"),
        (b'data: {"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": [1]}}]}}]}\r\n\r\n', "args"),
        (b'data: {"candidates": [{"content": {"parts": [{"text": "a", "thoughtSignature": 3}]}}]}\r\n\r\n', "thoughtSignature"),
        (b'data: {"candidates": "nope"}\r\n\r\n', "unexpected chunk shape"),
    ],
)
def test_malformed_chunks_are_typed_errors(data: bytes, why: str) -> None:
    dec = G.decoder(call())
    events = dec.feed(data)
    err = _last_error(events)
    assert err.reason == "malformed_response" and why in err.message
    assert dec.failed and dec.finished
    assert dec.feed(sse_of(sse_chunks(load_case("gemini", "stream-sse-text").body))) == [] and dec.close() == []


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(
        ["candidates", "content", "parts", "text", "thought", "thoughtSignature", "functionCall", "name", "args", "id",
         "finishReason", "index", "usageMetadata", "promptTokenCount", "promptFeedback", "blockReason", "error", "x"]
    ), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(_JSON, max_size=4), junk=st.binary(max_size=40))
def test_arbitrary_input_never_raises(chunks: list[Any], junk: bytes) -> None:
    data = b"".join(b"data: " + orjson.dumps(c) + b"\r\n\r\n" for c in chunks) + junk
    events = stream_events(data)
    assert isinstance(events[-1], (Error, MessageCompleted))
    for e in events:
        if isinstance(e, Error):
            assert isinstance(e.error, AdapterError)
    body = body_events(orjson.dumps(chunks[0]) if chunks else junk)
    assert isinstance(body[-1], (Error, MessageCompleted))

def test_an_error_chunk_mid_stream_is_a_typed_error_and_keeps_the_partial_answer() -> None:
    chunks = sse_chunks(load_case("gemini", "stream-sse-function-response-followup").body)
    err_chunk = {"error": {"code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}}
    events = stream_events(sse_of([chunks[0], err_chunk, chunks[1]]))
    err = _last_error(events)
    assert (err.reason, err.status, err.retryable) == ("provider_unavailable", 503, True)
    r = fold(events)
    assert r.finish_reason == "error" and r.output_text == "The weather in Berlin"
    assert r.metadata["error"] == err


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"<html>502</html>", "not valid JSON"),
        (b"[]", "not a JSON object"),
        (b'{"candidates": [{"content": {"parts": [{"text": "hi"}]}, "index": 0}]}', "finishReason"),
    ],
)
def test_malformed_bodies_are_typed_errors(body: bytes, why: str) -> None:
    err = _last_error(body_events(body))
    assert err.reason == "malformed_response" and why in err.message


def test_an_error_object_in_a_200_body_is_a_typed_error() -> None:
    err = _last_error(body_events(b'{"error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED"}}'))
    assert (err.reason, err.status) == ("rate_limited", 429)


# ------------------------------------------------------------------------------ finish reasons and blocks


@pytest.mark.parametrize(
    ("raw", "ours"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("IMAGE_SAFETY", "content_filter"),
        ("MALFORMED_FUNCTION_CALL", "other"),
        ("UNEXPECTED_TOOL_CALL", "other"),
        ("TOO_MANY_TOOL_CALLS", "other"),
        ("LANGUAGE", "other"),
        ("OTHER", "other"),
        ("FINISH_REASON_UNSPECIFIED", "other"),
    ],
)
def test_finish_reasons_are_mapped_with_the_raw_value_kept(raw: str, ours: str) -> None:
    assert map_finish_reason(raw) == ours
    body = orjson.loads(load_case("gemini", "generate-text").body)
    body["candidates"][0]["finishReason"] = raw
    r = fold(body_events(orjson.dumps(body)))
    assert (r.finish_reason, r.raw_finish_reason) == (ours, raw)
    assert r.output_text == "2 + 2 = **4**"


def test_a_blocked_prompt_is_a_content_filter_result_not_an_error() -> None:
    blocked = {
        "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
        "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9},
        "modelVersion": "gemini-2.5-flash",
        "responseId": "abc",
    }
    for events in (body_events(orjson.dumps(blocked)), stream_events(sse_of([blocked]))):
        assert not [e for e in events if isinstance(e, Error)]
        r = fold(events)
        assert (r.finish_reason, r.raw_finish_reason) == ("content_filter", "PROHIBITED_CONTENT")
        assert r.metadata == {"block_reason": "PROHIBITED_CONTENT"} and r.output_text == ""
        assert r.usage == allm.Usage(input_tokens=9, total_tokens=9)


def test_a_safety_stop_mid_stream_keeps_the_text_so_far() -> None:
    chunks = sse_chunks(load_case("gemini", "stream-sse-function-response-followup").body)
    last = copy.deepcopy(chunks[1])
    last["candidates"][0] = {"finishReason": "SAFETY", "index": 0, "safetyRatings": []}
    r = fold(stream_events(sse_of([chunks[0], last])))
    assert (r.finish_reason, r.raw_finish_reason, r.output_text) == ("content_filter", "SAFETY", "The weather in Berlin")


def test_other_candidates_are_ignored() -> None:
    body = orjson.loads(load_case("gemini", "generate-text").body)
    other = copy.deepcopy(body["candidates"][0])
    other["index"] = 1
    other["content"]["parts"][0]["text"] = "five"
    body["candidates"].append(other)
    assert fold(body_events(orjson.dumps(body))).output_text == "2 + 2 = **4**"


# ------------------------------------------------------------------------------ ids for function calls


def test_function_calls_get_deterministic_ids_from_the_response_id_and_position() -> None:
    body = load_case("gemini", "generate-parallel-function-calls").body
    r1, r2 = fold(body_events(body)), fold(stream_events(sse_of([orjson.loads(body)])))
    rid = orjson.loads(body)["responseId"]
    assert [tc.id for tc in r1.tool_calls] == [f"call_{rid}_0", f"call_{rid}_1"]
    assert r1.tool_calls == r2.tool_calls
    assert len({tc.id for tc in r1.tool_calls}) == 2
    # only the first parallel call carries a signature, exactly as Gemini sent it
    assert "thought_signature" in r1.tool_calls[0].metadata["gemini"] and r1.tool_calls[1].metadata == {}


def test_synthesised_ids_use_only_safe_characters() -> None:
    body = orjson.loads(load_case("gemini", "generate-parallel-function-calls").body)
    body["responseId"] = "a+b/c=="
    assert [tc.id for tc in fold(body_events(orjson.dumps(body))).tool_calls] == ["call_a_b_c___0", "call_a_b_c___1"]
    del body["responseId"]
    assert [tc.id for tc in fold(body_events(orjson.dumps(body))).tool_calls] == ["call_0", "call_1"]

def test_an_id_gemini_gives_is_kept() -> None:
    r = fold(body_events(load_case("gemini", "generate-function-call-thought-signature").body))
    tc = r.tool_calls[0]
    assert tc.id == "call_883098" and tc.metadata["gemini"]["id"] == "call_883098"


def test_calls_of_one_stream_are_numbered_across_chunks() -> None:
    body = orjson.loads(load_case("gemini", "generate-parallel-function-calls").body)
    chunks = split_body(body)
    assert len(chunks) == 2
    events = stream_events(sse_of(chunks))
    started = [e for e in events if isinstance(e, ToolCallStarted)]
    assert [(e.index, e.name) for e in started] == [(0, "weather"), (1, "best_language_to_learn")]
    done = [e for e in events if isinstance(e, ToolCallCompleted)]
    assert [e.tool_call.id for e in done] == [f"call_{body['responseId']}_{i}" for i in range(2)]


def test_a_trailing_signature_after_unsigned_calls_goes_to_the_first_call() -> None:
    body = orjson.loads(load_case("gemini", "generate-parallel-function-calls").body)
    parts = body["candidates"][0]["content"]["parts"]
    sig = parts[0].pop("thoughtSignature")
    chunks = [*split_body(body)]
    chunks.insert(-1, {"candidates": [{"content": {"parts": [{"text": "", "thoughtSignature": sig}], "role": "model"}, "index": 0}]})
    r = fold(stream_events(sse_of(chunks)))
    assert r.tool_calls[0].metadata["gemini"]["thought_signature"] == sig
    assert r.message.reasoning == ()


# ------------------------------------------------------------------------------ request encoding vs recorded


WEATHER = Tool(
    "weather",
    "Gets current weather for a location",
    {
        "type": "object",
        "properties": {
            "latitude": {"type": "string", "description": "Latitude (e.g., 52.5200)"},
            "longitude": {"type": "string", "description": "Longitude (e.g., 13.4050)"},
        },
        "required": ["latitude", "longitude"],
    },
)
BEST_LANGUAGE = Tool(
    "best_language_to_learn", "Gets the best language to learn", {"type": "object", "properties": {}, "required": []}
)
MIRROR = (
    "If a magic mirror shows your future self, but only if you ask a question it cannot answer truthfully, what "
    "question do you ask to see your future, and what would the mirror reveal about the answer it gives?"
)
THINK_LOW = Gemini(include_thoughts=True, thinking_level="low")


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(w.title() for w in rest)


def normalized_recording(value: Any, in_schema: bool = False) -> Any:
    """The recorded body in the spelling we send, meaning unchanged:

    - snake_case keys (``inline_data``, ``mime_type``) -> camelCase (the API takes both);
    - ``parameters`` in OpenAPI form (``"type": "OBJECT"``) -> ``parametersJsonSchema``
      in JSON Schema form (``"type": "object"``), which we send.
    """
    if isinstance(value, list):
        return [normalized_recording(v, in_schema) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for k, v in value.items():
        if in_schema:
            if k == "type" and isinstance(v, str):
                out[k] = v.lower()
            elif k == "properties":
                out[k] = {name: normalized_recording(s, True) for name, s in v.items()}
            else:
                out[k] = normalized_recording(v, True)
        elif k == "parameters":
            out["parametersJsonSchema"] = normalized_recording(v, True)
        else:
            out[_camel(k)] = normalized_recording(v)
    return out


def conversation(name: str) -> tuple[Gemini, Request, bool]:
    """The conversation each recorded request carried, written the way a user would."""
    c = load_case("gemini", name)
    stream = "alt=sse" in c.request_line
    model = c.request_line.split("/models/")[1].split(":")[0]
    if name in ("generate-text",):
        return G, allm.request("What's 2 + 2?", model=model), stream
    if name == "stream-sse-text":
        return G, allm.request("Count from 1 to 3", model=model), stream
    if name == "stream-sse-thoughts-token-accounting":
        return G, allm.request("What is 2+2? Think step by step.", model=model), stream
    if name == "error-400-api-key-invalid":
        return G, allm.request("Hello", model=model), stream
    if name == "error-429-resource-exhausted":
        msgs = [user("<MASSIVE_TEXT>") if i % 2 == 0 else assistant("<MASSIVE_TEXT>") for i in range(10)]
        return G, allm.request([*msgs, user("Hi")], model=model), stream
    if name in ("generate-thoughts", "stream-sse-thoughts"):
        return THINK_LOW, allm.request(MIRROR, model=model), stream
    if name == "generate-function-call-thought-signature":
        return THINK_LOW, allm.request("What's the weather in Berlin? (52.5200, 13.4050)", model=model, tools=[WEATHER]), stream
    if name == "stream-sse-function-call":
        return G, allm.request("What's the weather in Berlin? (52.5200, 13.4050)", model=model, tools=[WEATHER]), stream
    if name == "generate-parallel-function-calls":
        q = "What's the weather in Berlin (52.5200, 13.4050) and what's the best language to learn?"
        return G, allm.request(q, model=model, tools=[WEATHER, BEST_LANGUAGE]), stream
    if name == "structured-output-response-schema":
        schema = {
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name", "age"],
            "additionalProperties": False,
        }
        return G, allm.request(
            "Generate a person named John who is 30 years old", model=model, response_format=json_schema("person", schema)
        ), stream
    if name == "vision-inline-data":
        recorded = c.request["contents"][0]["parts"][1]["inline_data"]
        img = ImagePart(Image.from_base64(recorded["data"], "image/png"))
        return G, allm.request([user([TextPart("What do you see in this image?"), img])], model=model), stream
    if name == "stream-sse-function-response-followup":
        return G, followup_request(), stream
    raise AssertionError(f"no conversation written for {name}")


def followup_request() -> Request:
    """The tool turn of the recorded multi-turn conversation, built from our own decode of
    the recorded function-call stream (no hand-written ids or signatures)."""
    first = fold(stream_events(load_case("gemini", "stream-sse-function-call").body))
    tc = first.tool_calls[0]
    thread = [
        user("What's the weather in Berlin? (52.5200, 13.4050)"),
        first.message,
        tool_result(tc.id, "Current weather at 52.5200, 13.4050: 15°C, Wind: 10 km/h"),
    ]
    return allm.request(thread, model="gemini-2.5-flash", tools=[WEATHER])


REQUEST_CASES = [n for n in CASES if n != "models-list"]


@pytest.mark.parametrize("name", REQUEST_CASES)
def test_request_encoding_matches_the_recorded_request(name: str) -> None:
    c = load_case("gemini", name)
    adapter, req, stream = conversation(name)
    http = adapter.encode(req, stream=stream)
    assert f"{http.method} {http.url}" == c.request_line
    assert http.headers["content-type"] == "application/json"
    assert http.warnings == ()
    sent = orjson.loads(http.body or b"")
    expected = normalized_recording(c.request)
    if name == "stream-sse-function-response-followup":
        # By design we answer with the documented {"output": ...} form; the recording
        # used its own {"name", "content": [{"text"}]} form. Same function, same text.
        recorded = expected["contents"][2]["parts"][0]["functionResponse"]
        ours = sent["contents"][2]["parts"][0]["functionResponse"]
        assert ours["response"] == {"output": recorded["response"]["content"][0]["text"]}
        recorded["response"] = ours["response"]
    assert sent == expected


def test_the_thread_of_a_tool_turn_sends_the_call_back_with_its_signature() -> None:
    recorded = load_case("gemini", "stream-sse-function-response-followup").request
    sent = orjson.loads(G.encode(followup_request(), stream=True).body or b"")
    model_turn, tool_turn = sent["contents"][1], sent["contents"][2]
    assert model_turn == recorded["contents"][1]  # byte-for-byte: functionCall + thoughtSignature
    assert model_turn["parts"][0]["thoughtSignature"] == recorded["contents"][1]["parts"][0]["thoughtSignature"]
    assert tool_turn["role"] == "user"
    assert tool_turn["parts"][0]["functionResponse"]["name"] == "weather"
    assert "id" not in tool_turn["parts"][0]["functionResponse"]  # Gemini gave no id, so none is sent


def test_a_tool_turn_with_gemini_ids_and_thoughts_round_trips() -> None:
    first = fold(body_events(load_case("gemini", "generate-function-call-thought-signature").body))
    tc = first.tool_calls[0]
    req = allm.request(
        [user("What's the weather in Berlin?"), first.message, tool_result(tc.id, "15°C")],
        model="gemini-3.1-pro-preview",
        tools=[WEATHER],
    )
    sent = orjson.loads(THINK_LOW.encode(req, stream=False).body or b"")
    recorded = orjson.loads(load_case("gemini", "generate-function-call-thought-signature").body)
    # the model turn goes back exactly as Gemini produced it
    assert sent["contents"][1] == {"role": "model", "parts": recorded["candidates"][0]["content"]["parts"]}
    assert sent["contents"][2]["parts"] == [
        {"functionResponse": {"name": "weather", "response": {"output": "15°C"}, "id": "call_883098"}}
    ]


@pytest.mark.parametrize("name", ["generate-thoughts", "structured-output-response-schema"])
def test_a_text_answer_goes_back_exactly_as_received(name: str) -> None:
    r = fold(body_events(load_case("gemini", name).body))
    sent = orjson.loads(G.encode(allm.request([user("q"), r.message, user("more")], model="m"), stream=True).body or b"")
    recorded = orjson.loads(load_case("gemini", name).body)
    assert sent["contents"][1] == {"role": "model", "parts": recorded["candidates"][0]["content"]["parts"]}


def test_a_streamed_answer_goes_back_as_its_unary_shape() -> None:
    chunks = sse_chunks(load_case("gemini", "stream-sse-thoughts").body)
    r = fold(stream_events(load_case("gemini", "stream-sse-thoughts").body))
    sent = orjson.loads(G.encode(allm.request([user("q"), r.message, user("more")], model="m"), stream=True).body or b"")
    assert sent["contents"][1]["parts"] == merged_body(chunks)["candidates"][0]["content"]["parts"]


def test_parallel_results_go_back_in_one_turn_named_by_their_calls() -> None:
    first = fold(body_events(load_case("gemini", "generate-parallel-function-calls").body))
    a, b = first.tool_calls
    req = allm.request(
        [user("q"), first.message, tool_result(b.id, "Python"), tool_result(a.id, "15°C", is_error=False)],
        model="gemini-2.5-flash",
    )
    sent = orjson.loads(G.encode(req, stream=True).body or b"")
    assert len(sent["contents"]) == 3
    assert sent["contents"][2] == {
        "role": "user",
        "parts": [
            {"functionResponse": {"name": "best_language_to_learn", "response": {"output": "Python"}}},
            {"functionResponse": {"name": "weather", "response": {"output": "15°C"}}},
        ],
    }
    calls = [p["functionCall"] for p in sent["contents"][1]["parts"]]
    assert calls == [{"name": "weather", "args": {"latitude": "52.5200", "longitude": "13.4050"}}, {"name": "best_language_to_learn", "args": {}}]


def test_a_failed_tool_is_reported_under_error() -> None:
    tc = ToolCall("call_1", "weather", {"latitude": "1"})
    req = allm.request([user("q"), assistant(tool_calls=[tc]), tool_result("call_1", "boom", is_error=True)], model="m")
    sent = orjson.loads(G.encode(req, stream=True).body or b"")
    assert sent["contents"][2]["parts"][0]["functionResponse"] == {"name": "weather", "response": {"error": "boom"}}


def test_the_most_recent_call_with_an_id_names_the_result() -> None:
    old = ToolCall("call_0", "old_tool")
    new = ToolCall("call_0", "new_tool")
    req = allm.request(
        [user("a"), assistant(tool_calls=[old]), tool_result("call_0", "1"), user("b"), assistant(tool_calls=[new]), tool_result("call_0", "2")],
        model="m",
    )
    sent = orjson.loads(G.encode(req, stream=True).body or b"")
    names = [p["functionResponse"]["name"] for c in sent["contents"] for p in c["parts"] if "functionResponse" in p]
    assert names == ["old_tool", "new_tool"]


def test_an_unanswerable_tool_result_is_a_clear_error() -> None:
    # A tool result without its call is refused by every adapter (allm.providers._threads),
    # with or without name=: Gemini, like the others, refuses a result without its call.
    for result in (tool_result("call_x", "1"), tool_result("call_x", "1", name="lookup")):
        with pytest.raises(ValidationError) as ei:
            G.encode(allm.request([user("q"), result], model="m"), stream=True)
        assert ei.value.reason == "invalid_thread" and "call_x" in ei.value.message
    # A call with no name (a provider that sent none): the result's name= names it.
    nameless = ToolCall("call_x", "")
    req = allm.request([user("q"), assistant(tool_calls=[nameless]), tool_result("call_x", "1")], model="m")
    with pytest.raises(ValidationError, match="name="):
        G.encode(req, stream=True)
    named = allm.request([user("q"), assistant(tool_calls=[nameless]), tool_result("call_x", "1", name="lookup")], model="m")
    sent = orjson.loads(G.encode(named, stream=True).body or b"")
    assert sent["contents"][2]["parts"][0]["functionResponse"]["name"] == "lookup"
    with pytest.raises(ValidationError):
        G.encode(allm.request([user("q"), Message("tool", "1")], model="m"), stream=True)


def test_reasoning_and_signatures_of_other_providers_are_not_sent() -> None:
    foreign = Message(
        "assistant",
        (ReasoningPart("thinking", signature="anthropic-sig", provider="anthropic"), ReasoningPart("s", provider=None), TextPart("Hi")),
        tool_calls=[ToolCall("toolu_1", "weather", {"latitude": "1"}, metadata={"anthropic": {"x": 1}})],
    )
    sent = orjson.loads(G.encode(allm.request([user("q"), foreign], model="m"), stream=True).body or b"")
    assert sent["contents"][1]["parts"] == [
        {"text": "Hi"},
        {"functionCall": {"name": "weather", "args": {"latitude": "1"}}},
    ]
    assert b"anthropic-sig" not in (G.encode(allm.request([user("q"), foreign], model="m"), stream=True).body or b"")


def test_an_orphan_signature_is_sent_on_an_empty_part() -> None:
    msg = Message("assistant", (ReasoningPart("", signature="SIG", provider="gemini"),), tool_calls=[ToolCall("c", "f")])
    sent = orjson.loads(G.encode(allm.request([user("q"), msg], model="m"), stream=True).body or b"")
    assert sent["contents"][1]["parts"] == [{"text": "", "thoughtSignature": "SIG"}, {"functionCall": {"name": "f", "args": {}}}]


# ------------------------------------------------------------------------------ encoding: settings


def body_of(req: Request, adapter: Gemini = G) -> tuple[dict[str, Any], tuple[CallWarning, ...]]:
    c = adapter.encode(req, stream=True)
    return orjson.loads(c.body or b""), c.warnings


def test_system_messages_become_the_system_instruction() -> None:
    body, _ = body_of(allm.request([system("Be brief."), user("Hi"), system("Use French.")], model="m"))
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}, {"text": "Use French."}]}
    assert body["contents"] == [{"role": "user", "parts": [{"text": "Hi"}]}]


def test_generation_config_fields() -> None:
    req = allm.request("Hi", model="m", temperature=0.2, top_p=0.9, top_k=40, max_tokens=64, stop_sequences=["END"], seed=7)
    body, warnings = body_of(req, Gemini(thinking_budget=1024, include_thoughts=False))
    assert body["generationConfig"] == {
        "temperature": 0.2,
        "topP": 0.9,
        "topK": 40,
        "maxOutputTokens": 64,
        "stopSequences": ["END"],
        "seed": 7,
        "thinkingConfig": {"includeThoughts": False, "thinkingBudget": 1024},
    }
    assert warnings == ()


def test_unsupported_settings_are_dropped_with_a_warning() -> None:
    img = ImagePart.from_bytes(b"\x89PNG", "image/png", detail="high")
    tool = Tool("f", "d", strict=True)
    req = allm.request([user([TextPart("look"), img])], model="m", frequency_penalty=0.5, presence_penalty=0.1, tools=[tool])
    body, warnings = body_of(req)
    assert "frequencyPenalty" not in body["generationConfig"] and "presencePenalty" not in body["generationConfig"]
    assert [(w.kind, w.setting, w.message) for w in warnings] == [
        ("unsupported_feature", "detail", "image detail is not supported by Gemini and was not sent"),
        ("dropped_setting", "frequency_penalty", "frequency_penalty is not supported by Gemini models and was not sent"),
        ("dropped_setting", "presence_penalty", "presence_penalty is not supported by Gemini models and was not sent"),
        ("unsupported_feature", "strict", "tool strict is not supported by Gemini and was not sent"),
    ]
    assert {w.provider for w in warnings} == {"gemini"}
    events = G.decoder(G.encode(req, stream=True)).feed(load_case("gemini", "stream-sse-text").body)
    assert isinstance(events[0], MessageStarted) and events[0].warnings == warnings


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        ("weather", {"mode": "ANY", "allowedFunctionNames": ["weather"]}),
    ],
)
def test_tool_choice(choice: str, config: dict[str, Any]) -> None:
    body, _ = body_of(allm.request("Hi", model="m", tools=[WEATHER], tool_choice=choice))
    assert body["toolConfig"] == {"functionCallingConfig": config}
    assert body["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"] == WEATHER.schema


@pytest.mark.parametrize(
    ("fmt", "config"),
    [
        (allm.ResponseFormat("json_object"), {"responseMimeType": "application/json"}),
        (allm.ResponseFormat("text"), {"responseMimeType": "text/plain"}),
        (json_schema("p", {"type": "string"}), {"responseMimeType": "application/json", "responseJsonSchema": {"type": "string"}}),
    ],
)
def test_response_format(fmt: allm.ResponseFormat, config: dict[str, Any]) -> None:
    body, _ = body_of(allm.request("Hi", model="m", response_format=fmt))
    assert body["generationConfig"] == config


def test_options_are_deep_merged_last() -> None:
    opts = {"generationConfig": {"candidateCount": 1, "thinkingConfig": {"thinkingBudget": 0}}, "safetySettings": [{"category": "X"}]}
    body, _ = body_of(allm.request("Hi", model="m", temperature=1.0, options=opts), Gemini(include_thoughts=True))
    assert body["generationConfig"] == {
        "temperature": 1.0,
        "candidateCount": 1,
        "thinkingConfig": {"includeThoughts": True, "thinkingBudget": 0},
    }
    assert body["safetySettings"] == [{"category": "X"}]


def test_an_image_with_only_a_url_is_rejected_before_sending() -> None:
    req = allm.request([user([TextPart("what is this"), ImagePart.from_url("https://example.com/a.png")])], model="m")
    with pytest.raises(ValidationError) as ei:
        G.encode(req, stream=True)
    assert ei.value.reason == "invalid_image" and "inline" in ei.value.message and "messages[0]" in ei.value.message


def test_data_urls_and_files_are_inlined(tmp_path: Any) -> None:
    png = base64.b64decode(load_case("gemini", "vision-inline-data").request["contents"][0]["parts"][1]["inline_data"]["data"])
    p = tmp_path / "ruby.png"
    p.write_bytes(png)
    for part in (ImagePart.from_file(p), ImagePart.from_url("data:image/png;base64," + base64.b64encode(png).decode())):
        body, _ = body_of(allm.request([user([part])], model="m"))
        assert body["contents"][0]["parts"] == [{"inlineData": {"mimeType": "image/png", "data": base64.b64encode(png).decode()}}]


def test_images_in_system_messages_and_inline_images_without_type_are_rejected() -> None:
    with pytest.raises(ValidationError, match="system"):
        G.encode(allm.request([Message("system", (ImagePart.from_bytes(b"x", "image/png"),)), user("q")], model="m"), stream=True)
    with pytest.raises(ValidationError, match="mime_type"):
        G.encode(allm.request([user([ImagePart(Image(data=b"x"))])], model="m"), stream=True)


def test_an_empty_message_is_skipped_with_a_warning() -> None:
    body, warnings = body_of(allm.request([user("q"), assistant(""), user("again")], model="m"))
    assert [c["role"] for c in body["contents"]] == ["user", "user"]
    assert [(w.kind, str(w)) for w in warnings] == [
        ("dropped_content", "messages[1] has no content Gemini can read and was not sent")
    ]


@pytest.mark.parametrize(
    ("model", "path"),
    [
        ("gemini-2.5-flash", "models/gemini-2.5-flash"),
        ("models/gemini-2.5-flash", "models/gemini-2.5-flash"),
        ("tunedModels/my-model-1", "tunedModels/my-model-1"),
    ],
)
def test_model_names(model: str, path: str) -> None:
    c = G.encode(allm.request("Hi", model=model), stream=False)
    assert c.url == f"https://generativelanguage.googleapis.com/v1beta/{path}:generateContent"
    assert c.model == path.split("/")[1]


@pytest.mark.parametrize("model", ["", "../secrets", "gemini?key=x", "models/a/b", "a b", None])
def test_bad_model_names_are_rejected(model: str | None) -> None:
    with pytest.raises(ValidationError):
        G.encode(Request(messages=(user("Hi"),), model=model), stream=False)


def test_base_url_is_configurable() -> None:
    c = Gemini(base_url="http://127.0.0.1:9/v1beta/").encode(allm.request("Hi", model="m"), stream=True)
    assert c.url == "http://127.0.0.1:9/v1beta/models/m:streamGenerateContent?alt=sse"


# ------------------------------------------------------------------------------ keys


def test_the_key_goes_in_the_goog_header_only() -> None:
    key = "AIzaSyTHISisNOTaREALkey00000000000000"
    c = G.encode(allm.request("Hi", model="m"), stream=True)
    assert G.auth_headers(key) == {"x-goog-api-key": key}
    assert G.auth_headers(None) == {}
    assert key not in c.url and key.encode() not in (c.body or b"") and key not in repr(c)
    assert "key=" not in c.url


def test_key_spec_reads_gemini_then_google(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = G.key_spec
    assert (spec.provider, spec.env, spec.required) == ("gemini", ("GEMINI_API_KEY", "GOOGLE_API_KEY"), True)
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.setenv("GOOGLE_API_KEY", "from-google")
    assert allm.keys.resolve(spec.provider, spec.env) == "from-google"
    monkeypatch.setenv("GEMINI_API_KEY", "from-gemini")
    assert allm.keys.resolve(spec.provider, spec.env) == "from-gemini"


def test_an_engine_with_the_adapter_round_trips() -> None:
    engine = allm.Engine(adapter=Gemini(thinking_budget=512, thinking_level=None, include_thoughts=True), model="gemini-2.5-flash")
    assert codec.loads(codec.dumps(engine)) == engine
    assert pickle.loads(pickle.dumps(engine)) == engine
    plain = allm.Engine(adapter=Gemini(), model="gemini-2.5-flash")
    assert codec.loads(codec.dumps(plain), allm.Engine) == plain


def test_decoded_values_round_trip() -> None:
    for name in ("stream-sse-thoughts", "generate-parallel-function-calls", "generate-function-call-thought-signature"):
        c = load_case("gemini", name)
        r = fold(stream_events(c.body) if name.startswith("stream-") else body_events(c.body))
        assert codec.loads(codec.dumps(r)) == r
        assert pickle.loads(pickle.dumps(r)) == r


# ------------------------------------------------------------------------------ errors


def test_invalid_key_is_an_authentication_failure() -> None:
    c = load_case("gemini", "error-400-api-key-invalid")
    err = G.error(c.status, c.headers, c.body)
    assert (err.reason, err.status, err.provider) == ("authentication_failed", 400, "gemini")
    assert err.message == "API key not valid. Please pass a valid API key."
    assert err.metadata == {"google_status": "INVALID_ARGUMENT", "google_reason": "API_KEY_INVALID"}
    assert not err.retryable and err.retry_after is None


def test_quota_exhaustion_is_rate_limited_with_the_body_retry_delay() -> None:
    c = load_case("gemini", "error-429-resource-exhausted")
    err = G.error(c.status, c.headers, c.body)
    assert (err.reason, err.status, err.retry_after, err.retryable) == ("rate_limited", 429, 48.0, True)
    assert err.metadata == {"google_status": "RESOURCE_EXHAUSTED"}
    assert "Quota exceeded" in err.message


def _rpc(code: int, status: str, message: str, *details: dict[str, Any]) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message, "status": status, "details": list(details)}})


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (403, _rpc(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers."), "permission_denied"),
        (401, _rpc(401, "UNAUTHENTICATED", "Request had invalid authentication credentials."), "authentication_failed"),
        (404, _rpc(404, "NOT_FOUND", "models/gemini-9 is not found for API version v1beta"), "not_found"),
        (400, _rpc(400, "INVALID_ARGUMENT", "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576)."), "context_length_exceeded"),
        (400, _rpc(400, "INVALID_ARGUMENT", "Penalty is not enabled for models/gemini-2.5-flash"), "invalid_request"),
        (400, _rpc(400, "FAILED_PRECONDITION", "User location is not supported for the API use."), "invalid_request"),
        (500, _rpc(500, "INTERNAL", "An internal error has occurred."), "provider_unavailable"),
        (503, _rpc(503, "UNAVAILABLE", "The model is overloaded. Please try again later."), "provider_unavailable"),
        (504, _rpc(504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete."), "timeout"),
        (502, b"<html><body>Bad Gateway</body></html>", "provider_unavailable"),
        (429, b"", "rate_limited"),
    ],
)
def test_error_statuses(status: int, body: bytes, reason: str) -> None:
    err = G.error(status, {}, body)
    assert (err.reason, err.status, err.provider) == (reason, status, "gemini")
    assert err.message


def test_retry_after_falls_back_to_the_header_and_errors_may_come_wrapped_in_a_list() -> None:
    body = b"[" + _rpc(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).") + b"]"
    err = G.error(429, {"Retry-After": "7"}, body)
    assert (err.reason, err.retry_after) == ("rate_limited", 7.0)
    info = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"}
    assert G.error(429, {"Retry-After": "7"}, _rpc(429, "RESOURCE_EXHAUSTED", "x", info)).retry_after == 1.5


def test_a_key_echoed_in_an_error_is_redacted() -> None:
    key = "AIzaSyTHISisNOTaREALkey00000000000000"
    err = G.error(400, {}, _rpc(400, "INVALID_ARGUMENT", f"API key {key} not valid.", {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}))
    assert key not in err.message and key not in repr(err) and key not in str(err.to_dict())
    assert err.reason == "authentication_failed"


# ------------------------------------------------------------------------------ models


def test_model_list_replays() -> None:
    c = load_case("gemini", "models-list")
    http = G.encode_list_models()
    assert (http.method, http.url.split("?")[0]) == tuple(c.request_line.split(" "))
    assert http.url.endswith("?pageSize=1000") and http.body is None
    ids = G.decode_list_models(c.body)
    recorded = [m["name"] for m in orjson.loads(c.body)["models"]]
    assert len(ids) == len(recorded) == 45
    assert ids == [n.removeprefix("models/") for n in recorded]
    assert "gemini-2.5-flash" in ids and "gemini-embedding-001" in ids
    assert not any("/" in i for i in ids)
    # every listed id is accepted by model= and names the same resource
    for i, name in zip(ids, recorded, strict=True):
        assert f"/{name}:" in G.encode(allm.request("Hi", model=i), stream=False).url


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"models": {}}'])
def test_a_malformed_model_list_is_a_typed_error(body: bytes) -> None:
    with pytest.raises(AdapterError) as ei:
        G.decode_list_models(body)
    assert ei.value.reason == "malformed_response"


# ------------------------------------------------------------------------------ embeddings (no recorded traffic)


def test_embedding_request_has_the_documented_batch_shape() -> None:
    # https://ai.google.dev/api/embeddings#method:-models.batchembedcontents
    c = G.encode_embed(["hello", "world"], model="gemini-embedding-001", dimensions=768)
    assert (c.method, c.url) == ("POST", "https://generativelanguage.googleapis.com/v1beta/models/gemini-embedding-001:batchEmbedContents")
    assert orjson.loads(c.body or b"") == {
        "requests": [
            {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "hello"}]}, "outputDimensionality": 768},
            {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "world"}]}, "outputDimensionality": 768},
        ]
    }
    plain = orjson.loads(G.encode_embed(["a"], model="models/text-embedding-004").body or b"")
    assert plain == {"requests": [{"model": "models/text-embedding-004", "content": {"parts": [{"text": "a"}]}}]}
    assert G.embed_batch_size == 100
    with pytest.raises(ValidationError):
        G.encode_embed(["a", 3], model="m")  # type: ignore[list-item]


def test_embedding_response_decodes_the_documented_shape() -> None:
    # BatchEmbedContentsResponse: {"embeddings": [ContentEmbedding {"values": [number]}]}, in request order.
    body = b'{"embeddings": [{"values": [0.013168523, -0.008711934, -0.046782676]}, {"values": [-0.0040, 0.0512, 0]}]}'
    e = G.decode_embed(body)
    assert e.vectors == ((0.013168523, -0.008711934, -0.046782676), (-0.004, 0.0512, 0.0))
    assert e.usage == allm.Usage() and e.model is None


@pytest.mark.parametrize("body", [b"", b"{}", b'{"embeddings": [{"value": [1]}]}', b'{"embeddings": [{"values": ["x"]}]}', b"[1]"])
def test_a_malformed_embedding_body_is_a_typed_error(body: bytes) -> None:
    with pytest.raises(AdapterError) as ei:
        G.decode_embed(body)
    assert ei.value.reason == "malformed_response"


# ------------------------------------------------------------------------------ the example


def test_the_replay_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    import runpy
    from pathlib import Path

    runpy.run_path(str(Path(__file__).resolve().parent.parent / "examples" / "gemini_replay.py"), run_name="__main__")
    assert "follow-up request carries functionCall + thoughtSignature + functionResponse: ok" in capsys.readouterr().out

