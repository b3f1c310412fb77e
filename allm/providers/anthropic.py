"""Anthropic Messages API (``POST /v1/messages``), and servers that speak it.

Follows the Messages API reference (https://docs.anthropic.com/en/api/messages:
request body, content blocks, ``tool_use`` / ``tool_result``, ``tool_choice``,
extended thinking, prompt caching, structured outputs, errors) and the streaming
guide (https://docs.anthropic.com/en/docs/build-with-claude/streaming: the
``message_start`` ... ``message_stop`` SSE events). The same adapter talks to any
server that implements ``/v1/messages`` (llama.cpp's ``llama-server``, gateways)
through ``base_url``. Sans-IO: nothing here touches the network.

Mapping, in short (``guides/provider_anthropic.md`` has the full table):

- system messages -> top-level ``system`` text blocks; user / assistant / tool
  messages -> ``messages`` with content blocks; consecutive tool results -> the
  ``tool_result`` blocks of ONE user message.
- Anthropic's own reasoning (``ReasoningPart(provider="anthropic")``) goes back as
  ``thinking`` / ``redacted_thinking`` blocks exactly as received; other
  providers' reasoning is not sent.
- Tool-call ids outside ``^[a-zA-Z0-9_-]+$`` are rewritten by
  :func:`wire_tool_id` (deterministic, the same for a call and its result).
- ``seed``, ``frequency_penalty``, ``presence_penalty`` (and ``temperature`` /
  ``top_k`` while thinking is on) are not sent; each is reported in
  ``Response.warnings``.
- Usage: our ``input_tokens`` = Anthropic ``input_tokens`` +
  ``cache_read_input_tokens`` + ``cache_creation_input_tokens``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import orjson

from ..errors import AdapterError, ValidationError, from_status, parse_retry_after
from ..events import Error, Event, MessageStarted, RawChunk
from ..types import ImagePart, Message, ReasoningPart, Request, TextPart, Tool, Usage
from .base import Assembler, HttpCall, KeySpec, SSEStreamDecoder, malformed
from .media import ANTHROPIC_IMAGES, check_images, check_request_size

__all__ = [
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_VERSION",
    "DEFAULT_MAX_TOKENS",
    "IMAGE_MEDIA_TYPES",
    "Anthropic",
    "MessagesDecoder",
    "decode_body",
    "encode_messages",
    "encode_tool",
    "encode_tool_choice",
    "error_from_body",
    "map_stop_reason",
    "map_usage",
    "stream_error",
    "wire_tool_id",
]

PROVIDER = "anthropic"
ANTHROPIC_BASE_URL = "https://api.anthropic.com/v1"
ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
"""``max_tokens`` sent when a request sets none (the API requires one)."""

IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
"""The inline image types the Messages API accepts."""

_CACHE_TTLS = (None, "5m", "1h")


# ------------------------------------------------------------------------------ encoding

_TOOL_ID = re.compile(r"[a-zA-Z0-9_-]+")
_NOT_TOOL_ID = re.compile(r"[^a-zA-Z0-9_-]")


def wire_tool_id(tool_call_id: str) -> str:
    """``tool_call_id`` as Anthropic accepts it (``^[a-zA-Z0-9_-]+$``).

    A valid id is returned unchanged. Another (``call.1``, ``functions.get:0``, an
    id from another provider) becomes its allowed characters (the others replaced
    by ``_``, at most 48 kept), ``_`` and 12 hex digits of its SHA-256: a pure
    function, so a ``tool_use`` and its ``tool_result`` get the same id, and
    distinct ids stay distinct.
    """
    if _TOOL_ID.fullmatch(tool_call_id):
        return tool_call_id
    digest = hashlib.sha256(tool_call_id.encode("utf-8")).hexdigest()[:12]
    cleaned = _NOT_TOOL_ID.sub("_", tool_call_id)[:48]
    return f"{cleaned}_{digest}" if cleaned else f"toolu_{digest}"


def _cache_control(metadata: Mapping[str, Any]) -> Any:
    """``metadata["anthropic"]["cache_control"]`` of a message or tool, if set."""
    a = metadata.get("anthropic") if metadata else None
    return a.get("cache_control") if isinstance(a, Mapping) else None


def _image_block(part: ImagePart, where: str) -> dict[str, Any]:
    img = part.image
    if img.url is not None:
        return {"type": "image", "source": {"type": "url", "url": img.url}}
    if img.mime_type not in IMAGE_MEDIA_TYPES:
        raise ValidationError(
            f"{where}: Anthropic accepts images of type {', '.join(sorted(IMAGE_MEDIA_TYPES))}, "
            f"not {img.mime_type!r}",
            reason="invalid_image",
        )
    return {"type": "image", "source": {"type": "base64", "media_type": img.mime_type, "data": img.base64}}


def _user_blocks(msg: Message, where: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in msg.parts:
        if type(p) is TextPart:
            if p.text:  # the API rejects empty text blocks
                out.append({"type": "text", "text": p.text})
        elif type(p) is ImagePart:
            out.append(_image_block(p, where))
        # Reasoning has no place in a user turn: nothing to send.
    return out


def _reasoning_block(p: ReasoningPart) -> dict[str, Any]:
    if p.redacted_data is not None:
        return {"type": "redacted_thinking", "data": p.redacted_data}
    block: dict[str, Any] = {"type": "thinking", "thinking": p.text}
    if p.signature is not None:
        block["signature"] = p.signature
    return block


def _assistant_blocks(msg: Message, where: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in msg.parts:
        if type(p) is ReasoningPart:
            # Only Anthropic's own reasoning, exactly as received; other providers'
            # signatures would be rejected.
            if p.provider == PROVIDER:
                out.append(_reasoning_block(p))
        elif type(p) is TextPart:
            if p.text:
                out.append({"type": "text", "text": p.text})
        else:
            raise ValidationError(f"{where}: an assistant message cannot carry images", reason="invalid_message")
    for tc in msg.tool_calls:
        out.append({"type": "tool_use", "id": wire_tool_id(tc.id), "name": tc.name, "input": dict(tc.arguments)})
    return out


def _tool_result_block(msg: Message, where: str) -> dict[str, Any]:
    if not msg.tool_call_id:
        raise ValidationError(f"{where}: a tool message needs tool_call_id", reason="invalid_message")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": wire_tool_id(msg.tool_call_id)}
    content = _user_blocks(msg, where)
    if content:
        block["content"] = content
    if msg.is_error:
        block["is_error"] = True
    return block


def encode_messages(
    messages: Iterable[Message], warnings: list[str] | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Our messages as ``(system, messages)`` of a Messages API body.

    ``system`` is a list of text blocks, one per system message (Anthropic has no
    system role inside ``messages``; a system message after the first turn is moved
    there too, with a note added to ``warnings``). Consecutive tool messages become
    the ``tool_result`` blocks of one user message, and a user message right after
    them joins it (tool results first, as the API requires). Empty text blocks and
    messages left with no blocks are not sent. ``metadata={"anthropic":
    {"cache_control": {...}}}`` on a message puts that cache breakpoint on its last
    block. Raises :class:`ValidationError` for an image in a system or assistant
    message, an unsupported image type, or a tool message without ``tool_call_id``.
    """
    system: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    in_results = False  # the last wire message is a user turn opened by tool results
    moved = False
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        cc = _cache_control(m.metadata)
        if m.role == "system":
            if any(type(p) is ImagePart for p in m.parts):
                raise ValidationError(f"{where}: images are not allowed in a system message", reason="invalid_image")
            if out and not moved and warnings is not None:
                warnings.append(
                    "a system message after the first turn was moved to the top-level system prompt "
                    "(Anthropic has no system role inside messages)"
                )
                moved = True
            if m.text:
                block: dict[str, Any] = {"type": "text", "text": m.text}
                if cc:
                    block["cache_control"] = cc
                system.append(block)
            continue
        if m.role == "tool":
            blocks = [_tool_result_block(m, where)]
        elif m.role == "user":
            blocks = _user_blocks(m, where)
        else:
            blocks = _assistant_blocks(m, where)
        if not blocks:
            continue
        if cc:
            blocks[-1]["cache_control"] = cc
        if m.role == "assistant":
            out.append({"role": "assistant", "content": blocks})
            in_results = False
        elif in_results:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": "user", "content": blocks})
            in_results = m.role == "tool"
    return system, out


def encode_tool(tool: Tool) -> dict[str, Any]:
    """A :class:`Tool` as a Messages API tool (``name``, ``description``, ``input_schema``).

    ``strict`` is sent when set; ``metadata={"anthropic": {"cache_control": {...}}}``
    adds a cache breakpoint on the tool.
    """
    d: dict[str, Any] = {"name": tool.name}
    if tool.description:
        d["description"] = tool.description
    d["input_schema"] = dict(tool.schema)
    if tool.strict is not None:
        d["strict"] = tool.strict
    cc = _cache_control(tool.metadata)
    if cc:
        d["cache_control"] = cc
    return d


def encode_tool_choice(choice: str) -> dict[str, Any]:
    """``auto`` / ``none`` / ``required`` (Anthropic ``any``) / a tool name (``{"type": "tool"}``)."""
    if choice == "required":
        return {"type": "any"}
    if choice in ("auto", "none"):
        return {"type": choice}
    return {"type": "tool", "name": choice}


def _betas(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(s.strip() for s in value.split(",") if s.strip())
    if isinstance(value, Iterable):
        return tuple(str(s) for s in value)
    raise ValidationError("anthropic_beta must be a string or a list of strings", reason="invalid_request")


# ------------------------------------------------------------------------------ decoding

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
_ERROR_REASONS = {
    "invalid_request_error": "invalid_request",
    "authentication_error": "authentication_failed",
    "permission_error": "permission_denied",
    "billing_error": "permission_denied",
    "not_found_error": "not_found",
    "request_too_large": "invalid_request",
    "rate_limit_error": "rate_limited",
    "api_error": "provider_unavailable",
    "overloaded_error": "provider_unavailable",
    "timeout_error": "timeout",
}


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


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def map_usage(u: Mapping[str, Any]) -> Usage:
    """An Anthropic ``usage`` object as :class:`Usage`.

    ``input_tokens`` here includes cached input: Anthropic ``input_tokens`` +
    ``cache_read_input_tokens`` + ``cache_creation_input_tokens``;
    ``cached_input_tokens`` = ``cache_read_input_tokens``;
    ``cache_write_input_tokens`` = ``cache_creation_input_tokens``;
    ``reasoning_tokens`` = ``output_tokens_details.thinking_tokens`` when reported;
    ``total_tokens`` = input + output. Counters not reported stay ``None``.
    """
    inp = _int(u.get("input_tokens"))
    read = _int(u.get("cache_read_input_tokens"))
    write = _int(u.get("cache_creation_input_tokens"))
    output = _int(u.get("output_tokens"))
    details = u.get("output_tokens_details")
    reasoning = _int(details.get("thinking_tokens")) if isinstance(details, Mapping) else None
    input_tokens = inp + (read or 0) + (write or 0) if inp is not None else None
    total = input_tokens + output if input_tokens is not None and output is not None else None
    return Usage(input_tokens, output, read, write, reasoning, total)


def _context_exceeded(message: str) -> bool:
    m = message.lower()
    return "prompt is too long" in m or "exceed context limit" in m or "context window" in m


def _reason(base: str, error_type: str | None, message: str) -> str:
    if base == "context_length_exceeded" or _context_exceeded(message):
        return "context_length_exceeded"
    return _ERROR_REASONS.get(error_type or "", base)


def stream_error(err: Any, provider: str = PROVIDER) -> AdapterError:
    """An ``error`` event (or a 200 body of ``type: error``) as a typed error.

    ``overloaded_error`` and ``api_error`` -> ``provider_unavailable``,
    ``rate_limit_error`` -> ``rate_limited``... (see :func:`error_from_body`).
    """
    if not isinstance(err, Mapping):
        return AdapterError(str(err) if err else "error event without details", reason="unknown", provider=provider)
    message = str(err.get("message") or "error in stream")
    t = err.get("type")
    etype = t if isinstance(t, str) else None
    return AdapterError(
        message,
        reason=_reason("unknown", etype, message),
        provider=provider,
        metadata={"error_type": etype} if etype else None,
    )


def error_from_body(
    status: int, headers: Mapping[str, str], body: bytes, provider: str = PROVIDER
) -> AdapterError:
    """An HTTP error response as a typed :class:`AdapterError`.

    Reads Anthropic's ``{"type": "error", "error": {"type", "message"},
    "request_id"}`` and the OpenAI shape some compatible servers use. The reason
    comes from the error ``type`` (``authentication_error`` ->
    ``authentication_failed``, ``rate_limit_error`` -> ``rate_limited``,
    ``overloaded_error`` (529) / ``api_error`` -> ``provider_unavailable``,
    ``timeout_error`` -> ``timeout``...) or else the status; a prompt over the
    context window (``prompt is too long``) is ``context_length_exceeded``.
    ``retry_after`` (seconds) from ``retry-after-ms`` / ``retry-after``;
    ``request_id`` from the ``request-id`` header, else the body's ``request_id``.
    """
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        data = None
    err = data.get("error") if isinstance(data, dict) else None
    etype: str | None = None
    if isinstance(err, dict):
        message = str(err.get("message") or "")
        t = err.get("type")
        etype = t if isinstance(t, str) else None
    elif isinstance(err, str):
        message = err
    else:
        message = body[:500].decode("utf-8", "replace")
    lower = {k.lower(): v for k, v in headers.items()}
    request_id = lower.get("request-id") or lower.get("x-request-id")
    if not request_id and isinstance(data, dict) and isinstance(data.get("request_id"), str):
        request_id = data["request_id"]
    base = from_status(status, message or f"HTTP {status}", provider=provider, code=etype)
    return AdapterError(
        base.message,
        reason=_reason(base.reason, etype, message),
        provider=provider,
        status=status,
        retry_after=parse_retry_after(headers),
        request_id=request_id,
        metadata={"error_type": etype} if etype else None,
    )


def _str(v: Any, what: str) -> str:
    if not isinstance(v, str):
        raise TypeError(f"{what} is not a string")
    return v


def _index(obj: Mapping[str, Any]) -> int:
    idx = obj["index"]
    if not isinstance(idx, int) or isinstance(idx, bool):
        raise TypeError("index is not an integer")
    return idx


_SHAPE_ERRORS = (KeyError, TypeError, AttributeError, IndexError, ValueError)


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
        "_inputs",
        "_kinds",
        "_raw",
        "_stop",
        "_stop_sequence",
        "_usage",
    )

    terminal_marker = "message_stop"

    def __init__(self, warnings: tuple[str, ...] = (), include_raw: bool = False, provider: str = PROVIDER) -> None:
        super().__init__(provider)
        self._asm = Assembler(PROVIDER, warnings)
        self._raw = include_raw
        self._kinds: dict[int, str] = {}
        self._inputs: dict[int, Any] = {}
        self._args_seen: set[int] = set()
        self._usage: dict[str, Any] = {}
        self._stop: str | None = None
        self._stop_sequence: str | None = None

    # -- byte interface

    def _on_items(self, items: list[tuple[str | None, bytes]], out: list[Event]) -> None:
        # One loop for feed and close, the per-event work inline: it runs once per streamed event.
        for name, data in items:
            try:
                obj = orjson.loads(data)
            except orjson.JSONDecodeError as exc:
                self._fail(out, malformed(self.provider, f"a stream event is not valid JSON: {exc}"))
                return
            try:
                self._on_event(name, obj, out)
            except _SHAPE_ERRORS as exc:
                self._fail(out, malformed(self.provider, f"unexpected event shape ({type(exc).__name__}: {exc})"))
            if self.finished:
                return

    def dispatch(self, name: str | None, obj: Any, out: list[Event]) -> None:
        """Handle one decoded event (``name`` from ``event:``, ``obj`` its JSON data)."""
        if self.finished:
            return
        try:
            self._on_event(name, obj, out)
        except _SHAPE_ERRORS as exc:
            self._fail(out, malformed(self.provider, f"unexpected event shape ({type(exc).__name__}: {exc})"))

    # -- events

    def _on_event(self, name: str | None, obj: Any, out: list[Event]) -> None:
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
        out.append(self._asm.add_usage(map_usage(self._usage)))

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
    body: bytes, warnings: tuple[str, ...] = (), include_raw: bool = False, provider: str = PROVIDER
) -> list[Event]:
    """A non-streaming ``message`` body as the same events its stream would give.

    The body is replayed as the equivalent stream events through
    :class:`MessagesDecoder`, so both paths share every line of assembly. A 200
    body of ``type: error`` gives an ``Error`` event; an unreadable body a
    ``malformed_response`` ``Error``.
    """
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return [Error(malformed(provider, f"the response body is not valid JSON: {exc}"))]
    if not isinstance(obj, dict):
        return [Error(malformed(provider, "the response body is not a JSON object"))]
    if obj.get("type") == "error" or ("error" in obj and "content" not in obj):
        return [Error(stream_error(obj.get("error"), provider))]
    dec = MessagesDecoder(warnings, False, provider)
    out: list[Event] = []
    try:
        for i, ev in enumerate(_body_as_events(obj)):
            dec.dispatch(None, ev, out)
            if i == 0 and include_raw and out and isinstance(out[0], MessageStarted):
                out.insert(1, RawChunk(obj))  # right after MessageStarted, as a stream's first chunk
            if dec.failed:
                break
    except _SHAPE_ERRORS as exc:
        out.append(Error(malformed(provider, f"unexpected body shape ({type(exc).__name__}: {exc})")))
    return out


# ------------------------------------------------------------------------------ the adapter


def _join_betas(*groups: tuple[str, ...]) -> str:
    seen: dict[str, None] = {}
    for g in groups:
        for b in g:
            seen.setdefault(b, None)
    return ",".join(seen)


@attrs.frozen
class Anthropic:
    """The Anthropic Messages API (or any server that speaks it, via ``base_url``).

    - ``base_url``: ``https://api.anthropic.com/v1``; ``/messages`` and ``/models``
      are appended.
    - ``version``: the ``anthropic-version`` header (``2023-06-01``).
    - ``beta``: beta names joined into one ``anthropic-beta`` header (a request
      adds its own with ``options={"anthropic_beta": [...]}``).
    - ``default_max_tokens``: ``max_tokens`` when a request sets none (4096; the
      API requires the field). With thinking on, the thinking budget is added to it.
    - ``thinking_budget``: extended thinking, ``{"type": "enabled",
      "budget_tokens": N}`` (tokens; the API's minimum is 1024). A request may send
      its own with ``options={"thinking": {...}}``.
    - ``cache_control``: automatic prompt caching (a top-level ``cache_control:
      {"type": "ephemeral"}``; the API places the breakpoint on the last cacheable
      block); ``cache_ttl``: ``"5m"`` or ``"1h"``. Explicit breakpoints: put
      ``{"anthropic": {"cache_control": {"type": "ephemeral"}}}`` in a message's or
      tool's ``metadata`` (at most 4 per request, the API's limit).
    - ``key_required``: ``None`` (the default) means a key is required for the
      official ``base_url`` and optional elsewhere (a local ``llama-server`` needs
      none). The key (provider ``anthropic``, env ``ANTHROPIC_API_KEY``) goes in the
      ``x-api-key`` header; note that for another ``base_url`` an
      ``ANTHROPIC_API_KEY`` found in the environment is sent there too.
    """

    base_url: str = ANTHROPIC_BASE_URL
    version: str = ANTHROPIC_VERSION
    beta: tuple[str, ...] = attrs.field(default=(), converter=_betas)
    default_max_tokens: int = DEFAULT_MAX_TOKENS
    thinking_budget: int | None = None
    cache_control: bool = False
    cache_ttl: str | None = None
    key_required: bool | None = None

    def __attrs_post_init__(self) -> None:
        if self.default_max_tokens < 1:
            raise ValueError("default_max_tokens must be at least 1")
        if self.thinking_budget is not None and self.thinking_budget < 1:
            raise ValueError("thinking_budget must be a positive number of tokens")
        if self.cache_ttl not in _CACHE_TTLS:
            raise ValueError(f"cache_ttl must be '5m' or '1h', not {self.cache_ttl!r}")

    # -- identity and keys

    @property
    def provider(self) -> str:
        return PROVIDER

    @property
    def official(self) -> bool:
        """Whether ``base_url`` is Anthropic's own API."""
        return self.base_url.rstrip("/") == ANTHROPIC_BASE_URL

    @property
    def key_spec(self) -> KeySpec:
        required = self.official if self.key_required is None else self.key_required
        return KeySpec(PROVIDER, ("ANTHROPIC_API_KEY",), required)

    def auth_headers(self, key: str | None) -> dict[str, str]:
        """``{"x-api-key": key}``, or nothing without a key."""
        return {"x-api-key": key} if key else {}

    def _headers(self, accept: str, extra_betas: tuple[str, ...] = ()) -> dict[str, str]:
        h = {"accept": accept, "anthropic-version": self.version}
        betas = _join_betas(self.beta, extra_betas)
        if betas:
            h["anthropic-beta"] = betas
        return h

    def _url(self, path: str) -> str:
        return self.base_url.rstrip("/") + path

    # -- requests

    def encode_body(self, request: Request, *, stream: bool) -> tuple[dict[str, Any], list[str], tuple[str, ...]]:
        """``(body, warnings, betas from the request)`` for ``POST /messages``.

        Raises :class:`ValidationError` for messages Anthropic cannot take (see
        :func:`encode_messages`), a ``json_schema`` format without a schema, or a
        ``max_tokens`` not above the thinking budget.
        """
        warnings = check_images(request.messages, ANTHROPIC_IMAGES)
        system, messages = encode_messages(request.messages, warnings)
        options = dict(request.options)
        extra_betas = _betas(options.pop("anthropic_beta", None))
        if "thinking" in options:
            thinking = options.pop("thinking")
        elif self.thinking_budget is not None:
            thinking = {"type": "enabled", "budget_tokens": self.thinking_budget}
        else:
            thinking = None
        thinking_on = isinstance(thinking, Mapping) and thinking.get("type") in ("enabled", "adaptive")
        budget = _int(thinking.get("budget_tokens")) if thinking_on and isinstance(thinking, Mapping) else None

        max_tokens = request.max_tokens
        if max_tokens is None:
            max_tokens = self.default_max_tokens + (budget or 0)
        elif budget is not None and max_tokens <= budget:
            raise ValidationError(
                f"max_tokens ({max_tokens}) must be greater than the thinking budget ({budget} tokens)",
                reason="invalid_request",
            )
        body: dict[str, Any] = {"model": request.model, "max_tokens": max_tokens}
        if system:
            body["system"] = system
        body["messages"] = messages
        if request.stop_sequences:
            body["stop_sequences"] = list(request.stop_sequences)
        for name in ("temperature", "top_p", "top_k"):
            value = getattr(request, name)
            if value is None:
                continue
            if thinking_on and (name != "top_p" or value < 0.95):
                warnings.append(f"{name} is not supported by Anthropic with extended thinking and was not sent")
                continue
            body[name] = value
        for name in ("seed", "frequency_penalty", "presence_penalty"):
            if getattr(request, name) is not None:
                warnings.append(f"{name} is not supported by Anthropic and was not sent")
        if request.tools:
            body["tools"] = [encode_tool(t) for t in request.tools]
        if request.tool_choice is not None:
            body["tool_choice"] = encode_tool_choice(request.tool_choice)
        rf = request.response_format
        if rf is not None:
            if rf.type == "json_schema":
                if rf.schema is None:
                    raise ValidationError("response_format json_schema needs a schema", reason="invalid_request")
                body["output_config"] = {"format": {"type": "json_schema", "schema": dict(rf.schema)}}
            elif rf.type == "json_object":
                warnings.append(
                    "response_format json_object is not supported by Anthropic (it has no JSON mode) "
                    "and was not sent; use a json_schema response format"
                )
        if thinking is not None:
            body["thinking"] = thinking
        if self.cache_control:
            cc = {"type": "ephemeral"}
            if self.cache_ttl:
                cc["ttl"] = self.cache_ttl
            body["cache_control"] = cc
        if stream:
            body["stream"] = True
        body.update(options)
        return body, warnings, extra_betas

    def encode(self, request: Request, *, stream: bool) -> HttpCall:
        """``POST {base_url}/messages`` for ``request`` (no key: see :meth:`auth_headers`)."""
        body, warnings, betas = self.encode_body(request, stream=stream)
        headers = {"content-type": "application/json", **self._headers("text/event-stream" if stream else "application/json", betas)}
        data = orjson.dumps(body)
        check_request_size(len(data), request.messages, ANTHROPIC_IMAGES)
        return HttpCall("POST", self._url("/messages"), headers, data, stream, PROVIDER, request.model, tuple(warnings))

    def decoder(self, call: HttpCall, *, include_raw: bool = False) -> MessagesDecoder:
        return MessagesDecoder(call.warnings, include_raw, call.provider)

    def decode_body(self, call: HttpCall, body: bytes, *, include_raw: bool = False) -> list[Event]:
        return decode_body(body, call.warnings, include_raw, call.provider)

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> AdapterError:
        return error_from_body(status, headers, body, PROVIDER)

    # -- models (GET /models), https://docs.anthropic.com/en/api/models-list

    def encode_list_models(self) -> HttpCall:
        """``GET {base_url}/models?limit=1000`` (one page holds every model)."""
        return HttpCall("GET", self._url("/models?limit=1000"), self._headers("application/json"), None, False, PROVIDER)

    def decode_list_models(self, body: bytes) -> list[str]:
        """Model ids of a ``{"data": [{"id": ...}, ...]}`` body; raises ``malformed_response``."""
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise malformed(PROVIDER, f"the model list is not valid JSON: {exc}") from None
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise malformed(PROVIDER, "a model list has no data array")
        return [str(m["id"]) for m in items if isinstance(m, dict) and "id" in m]

    # -- token counting (POST /messages/count_tokens)

    def encode_count_tokens(self, request: Request) -> HttpCall:
        """``POST {base_url}/messages/count_tokens``: the input tokens ``request`` would use."""
        body, _warnings, betas = self.encode_body(request, stream=False)
        keep = ("model", "system", "messages", "tools", "tool_choice", "thinking")
        counted = {k: body[k] for k in keep if k in body}
        headers = {"content-type": "application/json", **self._headers("application/json", betas)}
        return HttpCall("POST", self._url("/messages/count_tokens"), headers, orjson.dumps(counted), False, PROVIDER, request.model)

    def decode_count_tokens(self, body: bytes) -> int:
        """``input_tokens`` of a count_tokens body; raises ``malformed_response``."""
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise malformed(PROVIDER, f"the token count is not valid JSON: {exc}") from None
        n = _int(data.get("input_tokens")) if isinstance(data, dict) else None
        if n is None:
            raise malformed(PROVIDER, "a token count has no input_tokens")
        return n
