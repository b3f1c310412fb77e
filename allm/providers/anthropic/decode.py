"""Decoding the Anthropic Messages API: its SSE stream and a whole ``message`` body.

Follows https://docs.anthropic.com/en/docs/build-with-claude/streaming (the
``message_start`` ... ``message_stop`` events, content block deltas) and the
``message`` object of https://docs.anthropic.com/en/api/messages. A non-streaming
body is replayed as the stream events that build it, so both share every line of
assembly. Usage: our ``input_tokens`` = Anthropic ``input_tokens`` +
``cache_read_input_tokens`` + ``cache_creation_input_tokens``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from ...events import Error, Event, MessageStarted, RawChunk
from ...types import CallWarning, Usage
from .._wire import SHAPE_ERRORS, SSEStreamDecoder, body_events, malformed, usage_count
from ..assembler import Assembler
from .errors import PROVIDER, stream_error

__all__ = ["MessagesDecoder", "decode_body", "map_stop_reason", "map_usage"]

_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "other",
}

# Error ``type`` (https://docs.anthropic.com/en/api/errors) -> AdapterError reason.
def map_stop_reason(raw: str | None) -> str | None:
    """Anthropic ``stop_reason`` -> our finish reason.

    ``end_turn`` / ``stop_sequence`` -> ``stop``; ``max_tokens`` /
    ``model_context_window_exceeded`` -> ``length``; ``tool_use`` ->
    ``tool_calls``; ``refusal`` -> ``content_filter``; ``pause_turn`` and anything
    else -> ``other``; ``None`` stays ``None``.
    """
    if raw is None:
        return None
    return _STOP_REASONS.get(raw, "other")


_INPUTS = frozenset({"input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"})


def map_usage(u: Mapping[str, Any], dropped: dict[str, Any] | None = None) -> Usage:
    """An Anthropic ``usage`` object as :class:`Usage`.

    ``input_tokens`` here includes cached input: Anthropic ``input_tokens`` +
    ``cache_read_input_tokens`` + ``cache_creation_input_tokens``;
    ``cached_input_tokens`` = ``cache_read_input_tokens``;
    ``cache_write_input_tokens`` = ``cache_creation_input_tokens``;
    ``reasoning_tokens`` = ``output_tokens_details.thinking_tokens`` when reported;
    ``total_tokens`` = input + output. Counters not reported stay ``None``; a numeric
    string is its number, and a counter that cannot be read is ``None`` and recorded in
    ``dropped`` (see :func:`~allm.providers._wire.usage_count`).
    """
    bad: dict[str, Any] = {}
    inp = usage_count(u, "input_tokens", bad)
    read = usage_count(u, "cache_read_input_tokens", bad)
    write = usage_count(u, "cache_creation_input_tokens", bad)
    output = usage_count(u, "output_tokens", bad)
    details = u.get("output_tokens_details")
    reasoning = usage_count(details, "thinking_tokens", bad) if isinstance(details, Mapping) else None
    if bad and dropped is not None:
        dropped.update(bad)
    # A sum with an unreadable part is unknown, not the other parts alone.
    input_tokens = inp + (read or 0) + (write or 0) if inp is not None and not bad.keys() & _INPUTS else None
    total = input_tokens + output if input_tokens is not None and output is not None else None
    return Usage(input_tokens, output, read, write, reasoning, total)


def _str(v: Any, what: str) -> str:
    if not isinstance(v, str):
        raise TypeError(f"{what} is not a string")
    return v


def _index(obj: Mapping[str, Any]) -> int:
    idx = obj["index"]
    if not isinstance(idx, int) or isinstance(idx, bool):
        raise TypeError("index is not an integer")
    return idx


class MessagesDecoder(SSEStreamDecoder):
    """Incremental decoder of a Messages API SSE stream.

    Handles ``message_start`` (id, model, usage), ``content_block_start`` /
    ``content_block_delta`` (``text_delta``, ``input_json_delta``,
    ``thinking_delta``, ``signature_delta``) / ``content_block_stop`` per block
    index (blocks may be open at the same time), ``message_delta`` (stop reason,
    usage: merged with ``message_start``'s), ``message_stop`` (the terminal
    marker), ``ping``, and ``error`` (an ``Error`` event with a typed reason).
    Event types it does not know are skipped. A stream that ends before
    ``message_stop`` ends with an ``Error`` (``malformed_response``).

    Text and reasoning blocks are reported with ``id`` = the block index as text
    (``"0"``, ``"1"``...); tool calls keep Anthropic's ``toolu_...`` ids.
    """

    __slots__ = (
        "_args_seen",
        "_asm",
        "_began",
        "_inputs",
        "_kinds",
        "_raw",
        "_stop",
        "_stop_sequence",
        "_usage",
    )

    terminal_marker = "message_stop"
    item = "event"

    def __init__(
        self, warnings: tuple[CallWarning, ...] = (), include_raw: bool = False, provider: str = PROVIDER
    ) -> None:
        super().__init__(provider)
        self._asm = Assembler(PROVIDER, warnings)
        self._raw = include_raw
        self._kinds: dict[int, str] = {}
        self._inputs: dict[int, Any] = {}
        self._args_seen: set[int] = set()
        self._usage: dict[str, Any] = {}
        self._stop: str | None = None
        self._stop_sequence: str | None = None
        self._began = False  # message_start or a content block was seen

    # -- byte interface

    def dispatch(self, name: str | None, obj: Any, out: list[Event]) -> None:
        """Handle one decoded event (``name`` from ``event:``, ``obj`` its JSON data)."""
        if self.finished:
            return
        try:
            self._on_json(name, obj, out)
        except SHAPE_ERRORS as exc:
            self._bad_shape(out, exc)

    # -- events

    def _on_json(self, name: str | None, obj: Any, out: list[Event]) -> None:
        if not isinstance(obj, dict):
            raise TypeError("event data is not a JSON object")
        t = obj.get("type") or name
        if t == "ping":
            return
        if t == "error":
            self._fail(out, stream_error(obj.get("error"), self.provider))
            return
        asm = self._asm
        if t == "message_start":
            msg = obj["message"]
            if not isinstance(msg, dict):
                raise TypeError("message is not an object")
            out.extend(asm.start(msg.get("id"), msg.get("model")))
            self._began = True
            if self._raw:
                out.append(RawChunk(obj))
            u = msg.get("usage")
            if u:
                self._add_usage(u, out)
            return
        if not asm.started:
            out.extend(asm.start())
        if self._raw:
            out.append(RawChunk(obj))
        if isinstance(t, str) and t.startswith("content_block"):
            self._began = True
        if t == "content_block_start":
            block = obj["content_block"]
            if not isinstance(block, dict):
                raise TypeError("content_block is not an object")
            self._block_start(_index(obj), block, out)
        elif t == "content_block_delta":
            delta = obj["delta"]
            if not isinstance(delta, dict):
                raise TypeError("delta is not an object")
            idx = obj["index"]
            if type(idx) is not int:  # the common case, checked inline; _index says why not
                idx = _index(obj)
            self._block_delta(idx, delta, out)
        elif t == "content_block_stop":
            self._block_stop(_index(obj), out)
        elif t == "message_delta":
            d = obj.get("delta") or {}
            sr = d.get("stop_reason")
            if sr:
                self._stop = _str(sr, "stop_reason")
            ss = d.get("stop_sequence")
            if ss:
                self._stop_sequence = _str(ss, "stop_sequence")
            u = obj.get("usage")
            if u:
                self._add_usage(u, out)
        elif t == "message_stop":
            if not self._began:
                self._fail(out, malformed(self.provider, "the stream carried no answer (message_stop without message_start)"))
                return
            for idx in list(self._kinds):
                if self._kinds[idx] == "tool":
                    self._flush_input(idx, out)
            self.finished = True
            meta = {"stop_sequence": self._stop_sequence} if self._stop_sequence else None
            out.extend(asm.finish(map_stop_reason(self._stop), self._stop, meta))
        # Other event types are skipped: the stream format may grow.

    def _add_usage(self, u: Any, out: list[Event]) -> None:
        if not isinstance(u, dict):
            raise TypeError("usage is not an object")
        for k, v in u.items():
            if v is not None:
                self._usage[k] = v
        out.append(self._asm.add_usage(map_usage(self._usage, self._asm.dropped_usage)))

    def _block_start(self, idx: int, block: dict[str, Any], out: list[Event]) -> None:
        asm = self._asm
        bt = block["type"]
        key = str(idx)
        if bt == "text":
            self._kinds[idx] = "text"
            text = block.get("text")
            if text:
                out.append(asm.text(_str(text, "text"), key))
        elif bt == "thinking":
            self._kinds[idx] = "reasoning"
            sig = block.get("signature")
            asm.reasoning_signature(key, signature=_str(sig, "signature") if sig else None)
            text = block.get("thinking")
            if text:
                out.append(asm.reasoning(_str(text, "thinking"), key))
        elif bt == "redacted_thinking":
            self._kinds[idx] = "reasoning"
            asm.reasoning_signature(key, redacted_data=_str(block["data"], "data"))
        elif bt == "tool_use":
            self._kinds[idx] = "tool"
            out.extend(asm.tool_call(idx, id=block.get("id"), name=block.get("name")))
            inp = block.get("input")
            if inp:
                self._inputs[idx] = inp
        else:
            # Server tools (web search, code execution...) and their results run on
            # Anthropic's side: not calls for the caller to make.
            self._kinds[idx] = "other"

    def _block_delta(self, idx: int, delta: dict[str, Any], out: list[Event]) -> None:
        asm = self._asm
        dt = delta["type"]
        key = str(idx)
        kind = self._kinds.get(idx)
        if kind == "other":
            return  # a server tool block: not assembled
        if dt == "text_delta":
            if kind is None:
                self._kinds[idx] = "text"
            text = delta["text"]
            if type(text) is not str:
                raise TypeError("text is not a string")
            if text:
                out.append(asm.text(text, key))
        elif dt == "input_json_delta":
            if kind is None:
                self._kinds[idx] = "tool"
            pj = _str(delta.get("partial_json") or "", "partial_json")
            if pj:
                self._args_seen.add(idx)
                out.extend(asm.tool_arguments(idx, pj))
        elif dt == "thinking_delta":
            if kind is None:
                self._kinds[idx] = "reasoning"
            text = _str(delta["thinking"], "thinking")
            if text:
                out.append(asm.reasoning(text, key))
        elif dt == "signature_delta":
            if kind is None:
                self._kinds[idx] = "reasoning"
            asm.reasoning_signature(key, signature=_str(delta["signature"], "signature"))
        # citations_delta and unknown deltas carry nothing to assemble.

    def _flush_input(self, idx: int, out: list[Event]) -> None:
        """A tool_use whose ``input`` came whole in ``content_block_start`` (no deltas)."""
        inp = self._inputs.pop(idx, None)
        if inp is not None and idx not in self._args_seen:
            out.extend(self._asm.tool_arguments(idx, orjson.dumps(inp).decode("utf-8")))

    def _block_stop(self, idx: int, out: list[Event]) -> None:
        kind = self._kinds.pop(idx, None)
        if kind == "tool":
            self._flush_input(idx, out)
            out.extend(self._asm.close_block(idx, "tool"))
        elif kind == "text" or kind == "reasoning":
            out.extend(self._asm.close_block(str(idx), kind))


def _body_as_events(obj: dict[str, Any]) -> Iterable[dict[str, Any]]:
    """A non-streaming ``message`` body as the stream events that build it."""
    content = obj["content"]
    if not isinstance(content, list):
        raise TypeError("content is not a list")
    head = {k: v for k, v in obj.items() if k not in ("content", "stop_reason", "stop_sequence")}
    yield {"type": "message_start", "message": {**head, "content": []}}
    for idx, block in enumerate(content):
        if not isinstance(block, dict):
            raise TypeError("a content block is not an object")
        bt = block.get("type")
        if bt == "text":
            yield {"type": "content_block_start", "index": idx, "content_block": {"type": "text", "text": ""}}
            yield {"type": "content_block_delta", "index": idx, "delta": {"type": "text_delta", "text": block["text"]}}
        elif bt == "thinking":
            yield {"type": "content_block_start", "index": idx, "content_block": {"type": "thinking", "thinking": ""}}
            yield {"type": "content_block_delta", "index": idx, "delta": {"type": "thinking_delta", "thinking": block["thinking"]}}
            if block.get("signature"):
                yield {"type": "content_block_delta", "index": idx, "delta": {"type": "signature_delta", "signature": block["signature"]}}
        elif bt == "tool_use":
            start: dict[str, Any] = {"type": "tool_use", "id": block.get("id"), "name": block.get("name"), "input": {}}
            yield {"type": "content_block_start", "index": idx, "content_block": start}
            inp = block.get("input")
            if inp:
                args = orjson.dumps(inp).decode("utf-8")
                yield {"type": "content_block_delta", "index": idx, "delta": {"type": "input_json_delta", "partial_json": args}}
        else:  # redacted_thinking, server tool blocks...: started whole
            yield {"type": "content_block_start", "index": idx, "content_block": block}
        yield {"type": "content_block_stop", "index": idx}
    yield {"type": "message_delta", "delta": {"stop_reason": obj.get("stop_reason"), "stop_sequence": obj.get("stop_sequence")}}
    yield {"type": "message_stop"}


def decode_body(
    body: bytes, warnings: tuple[CallWarning, ...] = (), include_raw: bool = False, provider: str = PROVIDER
) -> list[Event]:
    """A non-streaming ``message`` body as the same events its stream would give.

    The body is replayed as the equivalent stream events through
    :class:`MessagesDecoder`, so both paths share every line of assembly. A 200
    body of ``type: error`` gives an ``Error`` event; an unreadable body a
    ``malformed_response`` ``Error``.
    """
    def read(obj: Any, out: list[Event]) -> None:
        if not isinstance(obj, dict):
            out.append(Error(malformed(provider, "the response body is not a JSON object")))
        elif obj.get("type") == "error" or ("error" in obj and "content" not in obj):
            out.append(Error(stream_error(obj.get("error"), provider)))
        else:
            dec = MessagesDecoder(warnings, False, provider)
            for i, ev in enumerate(_body_as_events(obj)):
                dec.dispatch(None, ev, out)
                if i == 0 and include_raw and out and isinstance(out[0], MessageStarted):
                    out.insert(1, RawChunk(obj))  # right after MessageStarted, as a stream's first chunk
                if dec.failed:
                    break

    return body_events(provider, body, read)
