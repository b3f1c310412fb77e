"""The exact bytes the benchmark server sends, modelled on the recorded fixtures.

Each provider's stream and body is built once per ``(n_text, n_tool)`` and kept, so
serving is a single ``write`` of ready bytes. Streams are sent with chunked
transfer encoding, one HTTP chunk per SSE event, as the real services do.

- OpenAI Chat Completions (``tests/fixtures/openai-chat/stream-text-include-usage-2``,
  ``stream-tool-call-single``): a role chunk, one ``chat.completion.chunk`` per text
  delta, then one tool call whose ``arguments`` arrive in ``n_tool`` fragments, a
  finish chunk, a usage chunk (``choices: []``) and ``data: [DONE]``.
- Anthropic Messages (``tests/fixtures/anthropic/stream-text``, ``stream-tool-use``):
  ``message_start``, a text block of ``n_text`` ``text_delta`` events, a
  ``tool_use`` block of ``n_tool`` ``input_json_delta`` events, ``message_delta``,
  ``message_stop`` (with ``event:`` lines and a ``ping``).
- Gemini (``tests/fixtures/gemini/stream-sse-text``, ``stream-sse-function-call``):
  CRLF line ends, one ``GenerateContentResponse`` per text delta carrying
  ``usageMetadata``, then ``n_tool`` chunks each holding one whole ``functionCall``
  (Gemini does not stream arguments), the last chunk with ``finishReason``.

:func:`expected` gives the text (and tool-call arguments) every contestant must
reassemble, so each run is checked, not just timed.
"""

from __future__ import annotations

from typing import Any

import orjson

MODEL = {"openai": "gpt-4.1-nano-2025-04-14", "anthropic": "claude-haiku-4-5-20251001", "gemini": "gemini-2.5-flash"}
_WORDS = (" The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", ",", " and", " then",
          " it", " rests", ".", "\n")


def text_delta(i: int) -> str:
    """The ``i``-th text delta: a word, punctuation or a line end."""
    return _WORDS[i % len(_WORDS)]


def arg_fragments(n: int) -> list[str]:
    """``n`` fragments (``n >= 2``) of one tool call's JSON arguments, in order."""
    if n < 2:
        return ['{"query": "x"}'][: max(n, 0)] if n else []
    middle = [f"w{i % 10}" for i in range(n - 2)]
    return ['{"query": "', *middle, '"}']


def expected(n_text: int, n_tool: int, provider: str = "openai") -> tuple[str, str]:
    """``(text, arguments)`` a contestant must reassemble (for Gemini ``arguments`` is each
    call's JSON object joined by nothing)."""
    text = "".join(text_delta(i) for i in range(n_text))
    if provider == "gemini":
        args = "".join(orjson.dumps({"query": f"q{i}"}).decode() for i in range(n_tool))
    else:
        args = "".join(arg_fragments(n_tool))
    return text, args


def _chunked(events: list[bytes]) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events if e) + b"0\r\n\r\n"


def _head(status: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


_STREAM_HEADERS = [
    ("Content-Type", "text/event-stream; charset=utf-8"),
    ("Transfer-Encoding", "chunked"),
    ("Connection", "keep-alive"),
    ("Cache-Control", "no-cache"),
    ("X-Request-Id", "req_0123456789abcdef"),
]


def _stream_response(events: list[bytes]) -> bytes:
    return _head("200 OK", _STREAM_HEADERS) + _chunked(events)


def _body_response(body: bytes) -> bytes:
    headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("Connection", "keep-alive"),
        ("X-Request-Id", "req_0123456789abcdef"),
    ]
    return _head("200 OK", headers) + body


def _json(obj: Any) -> str:
    return orjson.dumps(obj).decode()


# ------------------------------------------------------------------------------ OpenAI Chat Completions


def _oai_chunk(delta: str, finish: str | None = None, obf: str = "nhq8y1o9M") -> bytes:
    return (
        '{"id":"chatcmpl-Cw7WStFqBjUmKH9vLD97AiG6Wdduh","object":"chat.completion.chunk","created":1767967976,'
        '"model":"gpt-4.1-nano-2025-04-14","service_tier":"default","system_fingerprint":"fp_7f8eb7d1f9",'
        '"choices":[{"index":0,"delta":' + delta + ',"logprobs":null,"finish_reason":' + _json(finish) + "}],"
        '"usage":null,"obfuscation":"' + obf + '"}'
    ).encode()


def openai_stream(n_text: int, n_tool: int) -> bytes:
    ev = [b"data: " + _oai_chunk('{"role":"assistant","content":"","refusal":null}') + b"\n\n"]
    for i in range(n_text):
        ev.append(b"data: " + _oai_chunk('{"content":' + _json(text_delta(i)) + "}") + b"\n\n")
    if n_tool:
        start = {"tool_calls": [{"index": 0, "id": "call_Ri18CzwNncOY61C3aLD9JKX1", "type": "function",
                                 "function": {"name": "search", "arguments": ""}}]}
        ev.append(b"data: " + _oai_chunk(_json(start)) + b"\n\n")
        for frag in arg_fragments(n_tool):
            d = {"tool_calls": [{"index": 0, "function": {"arguments": frag}}]}
            ev.append(b"data: " + _oai_chunk(_json(d)) + b"\n\n")
    ev.append(b"data: " + _oai_chunk("{}", "tool_calls" if n_tool else "stop", "jsdT") + b"\n\n")
    usage = {"prompt_tokens": 14, "completion_tokens": n_text + n_tool, "total_tokens": 14 + n_text + n_tool,
             "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
             "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                           "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}
    ev.append(
        b'data: {"id":"chatcmpl-Cw7WStFqBjUmKH9vLD97AiG6Wdduh","object":"chat.completion.chunk","created":1767967976,'
        b'"model":"gpt-4.1-nano-2025-04-14","service_tier":"default","system_fingerprint":"fp_7f8eb7d1f9",'
        b'"choices":[],"usage":' + orjson.dumps(usage) + b',"obfuscation":"ew9TqCp1wO"}\n\n'
    )
    ev.append(b"data: [DONE]\n\n")
    return _stream_response(ev)


def openai_body(n_text: int, n_tool: int) -> bytes:
    text, args = expected(n_text, n_tool)
    msg: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None, "annotations": []}
    if n_tool:
        msg["tool_calls"] = [{"id": "call_Og7v77uIUeIdy1ff3ntB9Vh7", "type": "function",
                              "function": {"name": "search", "arguments": args}}]
    body = {
        "id": "chatcmpl-Cw7WssaAa7SjwSxLrg4SoZJnrWf2h", "object": "chat.completion", "created": 1767968002,
        "model": MODEL["openai"],
        "choices": [{"index": 0, "message": msg, "logprobs": None, "finish_reason": "tool_calls" if n_tool else "stop"}],
        "usage": {"prompt_tokens": 88, "completion_tokens": 39, "total_tokens": 127,
                  "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}},
        "service_tier": "default", "system_fingerprint": "fp_7f8eb7d1f9",
    }
    return _body_response(orjson.dumps(body, option=orjson.OPT_INDENT_2))


# ------------------------------------------------------------------------------ Anthropic Messages


def _sse(name: str, data: str) -> bytes:
    return f"event: {name}\ndata: {data}\n\n".encode()


def anthropic_stream(n_text: int, n_tool: int) -> bytes:
    start = {"type": "message_start", "message": {
        "model": MODEL["anthropic"], "id": "msg_011CeCGmCzjcUtmtEmMdEiM2", "type": "message", "role": "assistant",
        "content": [], "stop_reason": None, "stop_sequence": None, "stop_details": None,
        "usage": {"input_tokens": 15, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                  "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
                  "output_tokens": 1, "service_tier": "standard", "inference_geo": "not_available"}}}
    ev = [_sse("message_start", _json(start))]

    def block_delta(idx: int, delta: dict[str, Any]) -> bytes:
        return _sse("content_block_delta", _json({"type": "content_block_delta", "index": idx, "delta": delta}))

    def block_stop(idx: int) -> bytes:
        return _sse("content_block_stop", _json({"type": "content_block_stop", "index": idx}))

    idx = 0
    if n_text:
        block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
        ev.append(_sse("content_block_start", _json(block)))
        ev.append(_sse("ping", '{"type": "ping"}'))
        ev.extend(block_delta(0, {"type": "text_delta", "text": text_delta(i)}) for i in range(n_text))
        ev.append(block_stop(0))
        idx = 1
    if n_tool:
        use = {"type": "tool_use", "id": "toolu_01MKSN7NHsBVKr7Jvw5pqCQq", "name": "search", "input": {},
               "caller": {"type": "direct"}}
        ev.append(_sse("content_block_start", _json({"type": "content_block_start", "index": idx, "content_block": use})))
        ev.extend(block_delta(idx, {"type": "input_json_delta", "partial_json": f}) for f in arg_fragments(n_tool))
        ev.append(block_stop(idx))
    end = {"type": "message_delta",
           "delta": {"stop_reason": "tool_use" if n_tool else "end_turn", "stop_sequence": None, "stop_details": None},
           "usage": {"input_tokens": 15, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                     "output_tokens": n_text + n_tool}}
    ev.append(_sse("message_delta", _json(end)))
    ev.append(_sse("message_stop", '{"type":"message_stop"}'))
    return _stream_response(ev)


def anthropic_body(n_text: int, n_tool: int) -> bytes:
    text, args = expected(n_text, n_tool)
    content: list[dict[str, Any]] = []
    if text:
        content.append({"type": "text", "text": text})
    if n_tool:
        content.append({"type": "tool_use", "id": "toolu_01TjHdHxyQNDy4DipRieJU5n", "name": "search",
                        "input": orjson.loads(args), "caller": {"type": "direct"}})
    body = {"model": MODEL["anthropic"], "id": "msg_011CeCGmD8uwD58unxgBN8Qx", "type": "message", "role": "assistant",
            "content": content, "stop_reason": "tool_use" if n_tool else "end_turn", "stop_sequence": None,
            "stop_details": None,
            "usage": {"input_tokens": 16, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                      "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
                      "output_tokens": 13, "service_tier": "standard", "inference_geo": "not_available"}}
    return _body_response(orjson.dumps(body))


# ------------------------------------------------------------------------------ Gemini


def _gemini_chunk(parts: list[dict[str, Any]], n: int, finish: bool) -> bytes:
    cand = '{"content": {"parts": ' + _json(parts) + ',"role": "model"}' + (',"finishReason": "STOP"' if finish else "") + ',"index": 0}'
    usage = (f'{{"promptTokenCount": 8,"candidatesTokenCount": {n},"totalTokenCount": {n + 8},"promptTokensDetails": '
             '[{"modality": "TEXT","tokenCount": 8}],"serviceTier": "standard"}')
    obj = ('{"candidates": [' + cand + '],"usageMetadata": ' + usage
           + ',"modelVersion": "gemini-2.5-flash","responseId": "6r6FarDODNmynsEP8cLCoQk"}')
    return b"data: " + obj.encode() + b"\r\n\r\n"


def gemini_stream(n_text: int, n_tool: int) -> bytes:
    total = n_text + n_tool
    ev = []
    for i in range(n_text):
        ev.append(_gemini_chunk([{"text": text_delta(i)}], i + 1, finish=i + 1 == total))
    for j in range(n_tool):
        call = {"functionCall": {"name": "search", "args": {"query": f"q{j}"}}}
        ev.append(_gemini_chunk([call], n_text + j + 1, finish=n_text + j + 1 == total))
    if not total:
        ev.append(_gemini_chunk([{"text": ""}], 0, finish=True))
    return _stream_response(ev)


def gemini_body(n_text: int, n_tool: int) -> bytes:
    text, _ = expected(n_text, 0)
    parts: list[dict[str, Any]] = [{"text": text}] if text else []
    parts += [{"functionCall": {"name": "search", "args": {"query": f"q{j}"}}} for j in range(n_tool)]
    body = {"candidates": [{"content": {"parts": parts, "role": "model"}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 8, "totalTokenCount": 41,
                              "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 10}],
                              "thoughtsTokenCount": 23, "serviceTier": "standard"},
            "modelVersion": MODEL["gemini"], "responseId": "Cr-FaqLbNpfYkdUP-bmpoAw"}
    return _body_response(orjson.dumps(body, option=orjson.OPT_INDENT_2))


BUILDERS = {
    ("openai", True): openai_stream,
    ("openai", False): openai_body,
    ("anthropic", True): anthropic_stream,
    ("anthropic", False): anthropic_body,
    ("gemini", True): gemini_stream,
    ("gemini", False): gemini_body,
}
