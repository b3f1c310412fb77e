"""The OpenAI Responses API (``POST /responses``), and servers that speak it (llama.cpp's ``llama-server``).

Follows https://platform.openai.com/docs/api-reference/responses (request body,
the ``response`` object, the streaming events) and the Open Responses
specification. Sans-IO: nothing here touches the network.

Mapping of a :class:`~allm.types.Request` to the request body:

- leading ``system`` messages -> ``instructions`` (joined with a blank line); a
  later system message stays in ``input`` as a ``system`` message item.
- ``user`` -> ``{"role": "user", "content": ...}`` (a string, or ``input_text`` /
  ``input_image`` parts); ``assistant`` text -> ``output_text``; an assistant's
  tool calls -> ``function_call`` items (``call_id``, ``name``, ``arguments``);
  ``tool`` messages -> ``function_call_output`` items.
- An assistant's :class:`~allm.types.ReasoningPart` with ``provider`` equal to this
  adapter's provider and ``encrypted_content`` -> a ``reasoning`` item (summary and
  encrypted content, *no* item id: ids only resolve against stored responses and
  trip the API's item-pairing checks). Other reasoning is not sent.
- ``tools`` -> function tools (``strict`` sent as given; ``None`` is sent as
  ``false`` because the Responses API otherwise defaults to strict schemas);
  ``tool_choice``; ``response_format`` -> ``text.format``; ``max_tokens`` ->
  ``max_output_tokens``; ``temperature``/``top_p``. ``top_k``, ``seed``,
  ``frequency_penalty``, ``presence_penalty`` and ``stop_sequences`` do not exist
  in this API: they are dropped and reported in ``HttpCall.warnings``.
- ``store`` and ``reasoning`` (``effort``, ``summary``) come from the adapter; with
  ``store=False`` the body asks for ``include: ["reasoning.encrypted_content"]`` so
  reasoning can be carried back statelessly. ``Request.options`` are merged into
  the body last (e.g. ``{"previous_response_id": "resp_..."}``).
- llama.cpp's ``llama-server`` ignores ``text.format`` on ``/responses``; with the
  ``"llama.cpp"`` dialect a JSON format is also sent as a Chat Completions style
  ``response_format``, which it does honour.

Decoding: output items become our events (``message`` -> text, ``reasoning`` ->
reasoning with its summary / reasoning text, ``function_call`` -> tool call with
``ToolCall.id`` = ``call_id`` and the item id in ``metadata["openai"]["item_id"]``).
``response.completed`` and ``response.incomplete`` end the stream;
``response.failed`` and ``error`` become an ``Error`` event. A non-streaming body is
decoded by the same code, so it yields the same events.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import orjson

from ..errors import AdapterError, ValidationError, from_status
from ..events import Error, Event, RawChunk
from ..types import (
    Embeddings,
    ImagePart,
    ImageRequest,
    ImageResponse,
    Message,
    ReasoningPart,
    Request,
    TextPart,
    Tool,
    Usage,
)
from .base import Assembler, HttpCall, KeySpec, SSEStreamDecoder, malformed
from .media import COMPATIBLE_IMAGES, OPENAI_IMAGES, check_images
from .openai_chat import (
    DIALECTS,
    Dialect,
    OpenAI,
    OpenAICompatible,
    check_endpoint,
    encode_tool_choice,
    error_from_body,
)

__all__ = [
    "CHAT_RESPONSE_FORMAT_DIALECTS",
    "OpenAIResponses",
    "ResponsesDecoder",
    "decode_body",
    "encode_body",
    "encode_input",
    "map_usage",
]

_SAMPLING = ("temperature", "top_p")
# Servers whose /responses ignores ``text.format`` but honours a Chat Completions style
# ``response_format`` passed through to their sampler (llama.cpp's llama-server, checked
# against a live server): for them the format is sent both ways.
CHAT_RESPONSE_FORMAT_DIALECTS = frozenset({"llama.cpp"})
_UNSUPPORTED = ("top_k", "seed", "frequency_penalty", "presence_penalty")
_ENCRYPTED = "reasoning.encrypted_content"

# ------------------------------------------------------------------------------ encoding


def _input_parts(msg: Message) -> str | list[dict[str, Any]]:
    c = msg.content
    if isinstance(c, str):
        return c
    out: list[dict[str, Any]] = []
    for p in c:
        if type(p) is TextPart:
            out.append({"type": "input_text", "text": p.text})
        elif type(p) is ImagePart:
            out.append({"type": "input_image", "image_url": p.image.data_url(), "detail": p.detail or "auto"})
        # Reasoning parts never belong to a user message: not sent.
    if all(d["type"] == "input_text" for d in out):
        return "".join(d["text"] for d in out)
    return out


def _reasoning_item(part: ReasoningPart) -> dict[str, Any]:
    summary = [{"type": "summary_text", "text": part.text}] if part.text else []
    return {"type": "reasoning", "summary": summary, "encrypted_content": part.encrypted_content}


def _assistant_items(msg: Message, provider: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    text: list[str] = []

    def flush() -> None:
        joined = "".join(text)
        text.clear()
        if joined:
            items.append({"role": "assistant", "content": [{"type": "output_text", "text": joined}]})

    for p in msg.parts:
        if type(p) is TextPart:
            text.append(p.text)
        elif type(p) is ReasoningPart and p.provider == provider and p.encrypted_content:
            flush()
            items.append(_reasoning_item(p))
    flush()
    for tc in msg.tool_calls:
        items.append(
            {"type": "function_call", "call_id": tc.id, "name": tc.name, "arguments": tc.raw_arguments or "{}"}
        )
    return items


def encode_input(
    messages: tuple[Message, ...], provider: str = "openai"
) -> tuple[str | None, list[dict[str, Any]], list[str]]:
    """``(instructions, input items, warnings)`` for ``messages``.

    ``provider`` is the family whose reasoning is carried back (see the module
    docstring). Raises :class:`~allm.errors.ValidationError` for an image outside a
    user message or a tool message without ``tool_call_id``.
    """
    warnings: list[str] = []
    instructions: list[str] = []
    items: list[dict[str, Any]] = []
    leading = True
    for i, m in enumerate(messages):
        role = m.role
        if role != "system":
            leading = False
        if m.name and role == "user":
            warnings.append("message name is not supported by the Responses API and was not sent")
        if role in ("system", "assistant") and any(type(p) is ImagePart for p in m.parts):
            raise ValidationError(f"messages[{i}]: images are only allowed in user messages", reason="invalid_image")
        if role == "system":
            if leading:
                instructions.append(m.text)
            else:
                items.append({"role": "system", "content": m.text})
        elif role == "user":
            items.append({"role": "user", "content": _input_parts(m)})
        elif role == "assistant":
            items.extend(_assistant_items(m, provider))
        else:
            if not m.tool_call_id:
                raise ValidationError(f"messages[{i}]: a tool message needs tool_call_id", reason="invalid_message")
            items.append({"type": "function_call_output", "call_id": m.tool_call_id, "output": m.text})
    return ("\n\n".join(instructions) if instructions else None), items, warnings


def encode_tool(tool: Tool) -> dict[str, Any]:
    """A function tool. ``strict=None`` is sent as ``false`` (the Responses API defaults to ``true``)."""
    d: dict[str, Any] = {"type": "function", "name": tool.name}
    if tool.description:
        d["description"] = tool.description
    d["parameters"] = dict(tool.schema)
    d["strict"] = bool(tool.strict)
    return d


def _tool_choice(choice: str) -> str | dict[str, Any]:
    c = encode_tool_choice(choice)
    return c if isinstance(c, str) else {"type": "function", "name": choice}


def encode_body(
    request: Request,
    *,
    stream: bool,
    provider: str = "openai",
    store: bool | None = False,
    reasoning_effort: str | None = None,
    reasoning_summary: str | None = None,
    chat_response_format: bool = False,
) -> tuple[dict[str, Any], list[str]]:
    """The JSON body of ``POST /responses`` and the warnings for settings that were dropped.

    ``chat_response_format`` also sends a JSON ``response_format`` in the Chat
    Completions shape (see :data:`CHAT_RESPONSE_FORMAT_DIALECTS`).
    """
    image_warnings = check_images(request.messages, OPENAI_IMAGES if provider == "openai" else COMPATIBLE_IMAGES)
    instructions, items, warnings = encode_input(request.messages, provider)
    warnings[:0] = image_warnings
    body: dict[str, Any] = {"model": request.model}
    if instructions is not None:
        body["instructions"] = instructions
    body["input"] = items
    body["stream"] = stream
    if store is not None:
        body["store"] = store
        if store is False:
            body["include"] = [_ENCRYPTED]
    for name in _SAMPLING:
        value = getattr(request, name)
        if value is not None:
            body[name] = value
    for name in _UNSUPPORTED:
        if getattr(request, name) is not None:
            warnings.append(f"{name} is not supported by the Responses API and was not sent")
    if request.stop_sequences:
        warnings.append("stop_sequences is not supported by the Responses API and was not sent")
    if request.max_tokens is not None:
        body["max_output_tokens"] = request.max_tokens
    if request.tools:
        body["tools"] = [encode_tool(t) for t in request.tools]
    if request.tool_choice is not None:
        body["tool_choice"] = _tool_choice(request.tool_choice)
    rf = request.response_format
    if rf is not None:
        if rf.type == "json_schema":
            fmt: dict[str, Any] = {
                "type": "json_schema",
                "name": rf.name or "response",
                "schema": dict(rf.schema or {}),
                "strict": rf.strict,
            }
        else:
            fmt = {"type": rf.type}
        body["text"] = {"format": fmt}
        if chat_response_format and rf.type != "text":
            if rf.type == "json_schema":
                js = {"name": fmt["name"], "schema": fmt["schema"], "strict": rf.strict}
                body["response_format"] = {"type": "json_schema", "json_schema": js}
            else:
                body["response_format"] = {"type": rf.type}
    if reasoning_effort is not None or reasoning_summary is not None:
        r: dict[str, Any] = {}
        if reasoning_effort is not None:
            r["effort"] = reasoning_effort
        if reasoning_summary is not None:
            r["summary"] = reasoning_summary
        body["reasoning"] = r
    if request.options:
        body.update(request.options)
    return body, warnings


# ------------------------------------------------------------------------------ decoding


def map_usage(u: Mapping[str, Any]) -> Usage:
    """Responses ``usage`` to :class:`Usage` (``input_tokens`` includes cached input;
    ``output_tokens`` includes reasoning)."""
    idt = u.get("input_tokens_details") or {}
    odt = u.get("output_tokens_details") or {}
    return Usage(
        input_tokens=u.get("input_tokens"),
        output_tokens=u.get("output_tokens"),
        cached_input_tokens=idt.get("cached_tokens"),
        cache_write_input_tokens=idt.get("cache_write_tokens"),
        reasoning_tokens=odt.get("reasoning_tokens"),
        total_tokens=u.get("total_tokens"),
    )


_INCOMPLETE = {"max_output_tokens": "length", "content_filter": "content_filter"}

# Failure codes of ``response.failed`` / ``error`` events, as the HTTP status they mean.
_CODE_STATUS = {
    "server_error": 500,
    "rate_limit_exceeded": 429,
    "invalid_prompt": 400,
    "vector_store_timeout": 408,
    "context_length_exceeded": 400,
    "insufficient_quota": 429,
}
_CLIENT_CODE_PREFIXES = ("invalid_", "image_", "unsupported_", "empty_", "failed_to_download")


def failure_error(provider: str, err: Any) -> AdapterError:
    """A ``response.failed`` ``error`` object or an ``error`` event as a typed error.

    ``{"code", "message"}`` (also nested under ``"error"``). Codes map to reasons
    through the HTTP status they stand for (``server_error`` -> provider_unavailable,
    ``rate_limit_exceeded`` -> rate_limited, ``invalid_*`` -> invalid_request,
    ``image_content_policy_violation`` -> content_filter); an unknown code is
    ``unknown``.
    """
    if isinstance(err, dict) and isinstance(err.get("error"), dict):
        err = err["error"]
    if not isinstance(err, dict):
        return AdapterError(str(err) or "the response failed", reason="unknown", provider=provider)
    message = str(err.get("message") or "the response failed")
    code = err.get("code")
    etype = err.get("type")
    status: int | None = code if isinstance(code, int) else None
    codes = " ".join(x for x in (code, etype) if isinstance(x, str)) or None
    if isinstance(code, str):
        if code == "image_content_policy_violation":
            return AdapterError(message, reason="content_filter", provider=provider)
        status = _CODE_STATUS.get(code)
        if status is None and code.startswith(_CLIENT_CODE_PREFIXES):
            status = 400
    if status is None and isinstance(etype, str):
        status = {"server_error": 500, "invalid_request_error": 400, "rate_limit_error": 429}.get(etype)
    e = from_status(status or 0, message, provider=provider, code=codes)
    if status is None:
        e = AdapterError(e.message, reason=e.reason, provider=provider)
    return e


def _finish(resp: Mapping[str, Any], refused: bool) -> tuple[str, str]:
    """``(finish_reason, raw_finish_reason)`` of a completed or incomplete response."""
    status = resp.get("status")
    if status == "incomplete":
        details = resp.get("incomplete_details") or {}
        reason = details.get("reason") if isinstance(details, dict) else None
        return _INCOMPLETE.get(str(reason), "other"), str(reason or "incomplete")
    if refused:
        return "content_filter", "refusal"
    return "stop", str(status or "completed")


def _sub(key: str, index: Any) -> str:
    return key if index in (None, 0) else f"{key}:{index}"


class ResponsesDecoder(SSEStreamDecoder):
    """Incremental decoder of a Responses SSE stream (also used for a whole body).

    Blocks are keyed by output item id (``msg_...``, ``rs_...``, ``fc_...``; an
    ``output_index`` stands in when a server sends no id). Text, argument and
    reasoning deltas are reconciled with the ``*.done`` events and the final items,
    so a server that sends only the finished items gives the same result. The
    stream must end with ``response.completed`` or ``response.incomplete``; ending
    otherwise is a ``malformed_response`` error.
    """

    __slots__ = (
        "_acc",
        "_asm",
        "_by_index",
        "_closed",
        "_raw",
        "_refused",
        "_rlast",
    )

    terminal_marker = "response.completed"

    def __init__(self, provider: str, warnings: tuple[str, ...] = (), include_raw: bool = False) -> None:
        super().__init__(provider)
        self._asm = Assembler(provider, warnings)
        self._raw = include_raw
        self._by_index: dict[int, str] = {}
        self._acc: dict[tuple[Any, ...], str] = {}  # text received so far per (kind, key, sub-part)
        self._closed: set[tuple[str, str]] = set()
        self._rlast: dict[str, tuple[str, Any]] = {}  # reasoning key -> last (kind, index) written
        self._refused = False

    # -- byte interface

    def _on_items(self, items: list[tuple[str | None, bytes]], out: list[Event]) -> None:
        for _name, data in items:
            self._on_data(data, out)
            if self.finished:
                return

    def _on_data(self, data: bytes, out: list[Event]) -> None:
        if data == b"[DONE]":
            self._fail(out, malformed(self.provider, "the stream ended before response.completed"))
            return
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            self._fail(out, malformed(self.provider, f"a stream event is not valid JSON: {exc}"))
            return
        try:
            self.on_event(obj, out)
        except (KeyError, TypeError, AttributeError, IndexError, ValueError) as exc:
            self._fail(out, malformed(self.provider, f"unexpected event shape ({type(exc).__name__}: {exc})"))

    # -- events

    def on_event(self, obj: Any, out: list[Event]) -> None:
        """Apply one decoded event object (a JSON object with ``type``)."""
        if not isinstance(obj, dict):
            raise TypeError("event is not a JSON object")
        t = obj.get("type")
        if t == "error" or (t is None and "error" in obj):
            self._fail(out, failure_error(self.provider, obj))
            return
        if not isinstance(t, str):
            raise TypeError("event has no type")
        asm = self._asm
        resp = obj.get("response")
        if isinstance(resp, dict):
            out.extend(asm.start(resp.get("id"), resp.get("model")))
        else:
            out.extend(asm.start())
        if self._raw:
            out.append(RawChunk(obj))
        if t in ("response.completed", "response.incomplete"):
            self.terminal(resp if isinstance(resp, dict) else {}, out)
        elif t == "response.failed":
            r = resp if isinstance(resp, dict) else {}
            u = r.get("usage")
            if u:
                out.append(asm.add_usage(map_usage(u)))
            self._fail(out, failure_error(self.provider, r.get("error") or {"message": "the response failed"}))
        elif t == "response.output_item.added":
            self._item_added(obj["item"], obj.get("output_index"), out)
        elif t == "response.output_item.done":
            self.item_done(obj["item"], obj.get("output_index"), out)
        elif t in ("response.output_text.delta", "response.refusal.delta"):
            if t == "response.refusal.delta":
                self._refused = True
            self._text(self._tkey(obj), obj["delta"], out)
        elif t in ("response.output_text.done", "response.refusal.done"):
            key = self._tkey(obj)
            if t == "response.refusal.done":
                self._refused = True
                final = obj.get("refusal")
            else:
                final = obj.get("text")
            self._text_done(key, final, out)
        elif t == "response.content_part.done":
            part = obj.get("part") or {}
            key = self._tkey(obj)
            if part.get("type") == "refusal":
                self._refused = True
                self._text_done(key, part.get("refusal"), out)
            elif part.get("type") == "output_text":
                self._text_done(key, part.get("text"), out)
        elif t == "response.function_call_arguments.delta":
            self._args(self._key(obj), obj["delta"], out)
        elif t == "response.function_call_arguments.done":
            self._args_final(self._key(obj), obj.get("arguments"), out)
        elif t == "response.reasoning_summary_part.added":
            self._reasoning_part(self._key(obj), ("summary", obj.get("summary_index")), out)
        elif t == "response.reasoning_summary_text.delta":
            self._reasoning(self._key(obj), ("summary", obj.get("summary_index")), obj["delta"], out)
        elif t == "response.reasoning_summary_text.done":
            self._reasoning_final(self._key(obj), ("summary", obj.get("summary_index")), obj.get("text"), out)
        elif t == "response.reasoning_text.delta":
            self._reasoning(self._key(obj), ("text", obj.get("content_index")), obj["delta"], out)
        elif t == "response.reasoning_text.done":
            self._reasoning_final(self._key(obj), ("text", obj.get("content_index")), obj.get("text"), out)
        # response.created / in_progress / queued, content_part.added, summary_part.done,
        # annotations and hosted-tool progress events carry nothing we keep.

    # -- keys

    def _key(self, obj: Mapping[str, Any]) -> str:
        item_id = obj.get("item_id")
        if isinstance(item_id, str) and item_id:
            return item_id
        idx = obj.get("output_index")
        if isinstance(idx, int):
            return self._by_index.get(idx, f"#{idx}")
        return "#"

    def _tkey(self, obj: Mapping[str, Any]) -> str:
        return _sub(self._key(obj), obj.get("content_index"))

    def _item_key(self, item: Mapping[str, Any], output_index: Any) -> str:
        item_id = item.get("id")
        if isinstance(item_id, str) and item_id:
            if isinstance(output_index, int):
                self._by_index[output_index] = item_id
            return item_id
        return f"#{output_index}" if isinstance(output_index, int) else "#"

    # -- text

    def _text(self, key: str, delta: str, out: list[Event]) -> None:
        if not isinstance(delta, str):
            raise TypeError("delta is not a string")
        if ("t", key) in self._closed or not delta:
            return
        self._acc[("t", key)] = self._acc.get(("t", key), "") + delta
        out.append(self._asm.text(delta, key))

    def _text_done(self, key: str, final: Any, out: list[Event]) -> None:
        if ("t", key) in self._closed:
            return
        if isinstance(final, str):
            self._text(key, _missing(self._acc.get(("t", key), ""), final), out)
        self._closed.add(("t", key))
        out.extend(self._asm.close_block(key, "text"))

    # -- tool calls

    def _args(self, key: str, delta: str, out: list[Event]) -> None:
        if not isinstance(delta, str):
            raise TypeError("delta is not a string")
        if ("a", key) in self._closed or not delta:
            return
        self._acc[("a", key)] = self._acc.get(("a", key), "") + delta
        out.extend(self._asm.tool_arguments(key, delta))

    def _args_final(self, key: str, final: Any, out: list[Event]) -> None:
        if isinstance(final, str) and ("a", key) not in self._closed:
            self._args(key, _missing(self._acc.get(("a", key), ""), final), out)

    def _call(self, key: str, item: Mapping[str, Any], out: list[Event]) -> None:
        item_id = item.get("id")
        meta = {"openai": {"item_id": item_id}} if isinstance(item_id, str) and item_id else None
        out.extend(self._asm.tool_call(key, id=item.get("call_id") or None, name=item.get("name") or None, metadata=meta))

    # -- reasoning

    def _reasoning_part(self, key: str, part: tuple[str, Any], out: list[Event]) -> None:
        last = self._rlast.get(key)
        if last is not None and last != part and self._acc.get(("r", key)):
            self._acc[("r", key)] += "\n\n"
            out.append(self._asm.reasoning("\n\n", key))
        self._rlast[key] = part

    def _reasoning(self, key: str, part: tuple[str, Any], delta: str, out: list[Event]) -> None:
        if not isinstance(delta, str):
            raise TypeError("delta is not a string")
        if ("r", key) in self._closed or not delta:
            return
        self._reasoning_part(key, part, out)
        self._acc[("r", key)] = self._acc.get(("r", key), "") + delta
        self._acc[("r", key, *part)] = self._acc.get(("r", key, *part), "") + delta
        out.append(self._asm.reasoning(delta, key))

    def _reasoning_final(self, key: str, part: tuple[str, Any], final: Any, out: list[Event]) -> None:
        if isinstance(final, str) and ("r", key) not in self._closed:
            self._reasoning(key, part, _missing(self._acc.get(("r", key, *part), ""), final), out)

    # -- items

    def _item_added(self, item: Any, output_index: Any, out: list[Event]) -> None:
        if not isinstance(item, dict):
            raise TypeError("item is not a JSON object")
        key = self._item_key(item, output_index)
        kind = item.get("type")
        if kind == "function_call":
            self._call(key, item, out)
        elif kind == "reasoning":
            # Open the block now so it keeps its place before the items that follow.
            self._asm.reasoning_signature(key, item_id=item.get("id"))

    def item_done(self, item: Any, output_index: Any, out: list[Event]) -> None:
        """Complete one output item, adding whatever its deltas did not already give."""
        if not isinstance(item, dict):
            raise TypeError("item is not a JSON object")
        key = self._item_key(item, output_index)
        kind = item.get("type")
        if kind == "message":
            for ci, part in enumerate(item.get("content") or []):
                ptype = part.get("type")
                if ptype == "output_text":
                    self._text_done(_sub(key, ci), part.get("text"), out)
                elif ptype == "refusal":
                    self._refused = True
                    self._text_done(_sub(key, ci), part.get("refusal"), out)
        elif kind == "function_call":
            if ("a", key) in self._closed:
                return
            self._call(key, item, out)
            self._args_final(key, item.get("arguments"), out)
            self._closed.add(("a", key))
            out.extend(self._asm.close_block(key, "tool"))
        elif kind == "reasoning":
            if ("r", key) in self._closed:
                return
            for si, s in enumerate(item.get("summary") or []):
                self._reasoning_final(key, ("summary", si), s.get("text"), out)
            for ci, c in enumerate(item.get("content") or []):
                if c.get("type") == "reasoning_text":
                    self._reasoning_final(key, ("text", ci), c.get("text"), out)
            enc = item.get("encrypted_content")
            self._asm.reasoning_signature(
                key, encrypted_content=enc if isinstance(enc, str) else None, item_id=item.get("id")
            )
            self._closed.add(("r", key))
            out.extend(self._asm.close_block(key, "reasoning"))
        # Hosted-tool items (web_search_call, file_search_call...) are not requested by
        # this adapter and are not mapped.

    def terminal(self, resp: Mapping[str, Any], out: list[Event]) -> None:
        """``response.completed`` / ``response.incomplete``: finish items, usage, ``MessageCompleted``."""
        asm = self._asm
        out.extend(asm.start(resp.get("id"), resp.get("model")))
        for i, item in enumerate(resp.get("output") or []):
            self.item_done(item, i, out)
        u = resp.get("usage")
        if u:
            out.append(asm.add_usage(map_usage(u)))
        finish, raw = _finish(resp, self._refused)
        self.finished = True
        out.extend(asm.finish(finish, raw))


def _missing(have: str, final: str) -> str:
    """What ``final`` adds to the ``have`` received so far ('' when deltas already gave it)."""
    if not have:
        return final
    return final[len(have) :] if final.startswith(have) else ""


def decode_body(provider: str, body: bytes, warnings: tuple[str, ...] = (), include_raw: bool = False) -> list[Event]:
    """A non-streaming ``response`` object as the same events a stream gives.

    ``status`` ``completed`` / ``incomplete`` finish the message; ``failed`` (or an
    ``{"error": ...}`` body) is an ``Error`` event; ``queued`` / ``in_progress``
    (background mode) is an ``unsupported_feature`` error.
    """
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return [Error(malformed(provider, f"the response body is not valid JSON: {exc}"))]
    dec = ResponsesDecoder(provider, warnings, include_raw)
    out: list[Event] = []
    try:
        if not isinstance(obj, dict):
            raise TypeError("body is not a JSON object")
        status = obj.get("status")
        if "output" not in obj and obj.get("error"):
            return [Error(failure_error(provider, obj["error"]))]
        if status == "failed":
            out.extend(dec._asm.start(obj.get("id"), obj.get("model")))
            u = obj.get("usage")
            if u:
                out.append(dec._asm.add_usage(map_usage(u)))
            out.append(Error(failure_error(provider, obj.get("error") or {"message": "the response failed"})))
            return out
        if status in ("queued", "in_progress"):
            return [
                Error(
                    AdapterError(
                        f"the response is still {status} (background mode is not supported)",
                        reason="unsupported_feature",
                        provider=provider,
                    )
                )
            ]
        if status not in (None, "completed", "incomplete"):
            raise ValueError(f"unexpected response status {status!r}")
        if not isinstance(obj.get("output", []), list):
            raise TypeError("output is not a list")
        out.extend(dec._asm.start(obj.get("id"), obj.get("model")))
        if include_raw:
            out.append(RawChunk(obj))
        dec.terminal(obj, out)
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as exc:
        out.append(Error(malformed(provider, f"unexpected body shape ({type(exc).__name__}: {exc})")))
    return out


# ------------------------------------------------------------------------------ adapter


@attrs.frozen
class OpenAIResponses:
    """The Responses API (``POST {base_url}/responses``) as a sans-IO adapter.

    - ``base_url``: defaults to the dialect's (``https://api.openai.com/v1``).
    - ``organization`` / ``project``: the ``OpenAI-Organization`` / ``OpenAI-Project``
      headers.
    - ``store``: sent as ``store``; ``False`` (the default) keeps nothing on the
      server and asks for ``include: ["reasoning.encrypted_content"]`` so reasoning
      travels back with the thread; ``True`` lets ``previous_response_id`` work;
      ``None`` sends neither field (the server's default).
    - ``reasoning_effort`` (``"minimal"``, ``"low"``, ``"medium"``, ``"high"``...) and
      ``reasoning_summary`` (``"auto"``, ``"concise"``, ``"detailed"``): the
      ``reasoning`` object, sent when set.
    - ``dialect``: ``"openai"`` (key ``OPENAI_API_KEY``, required) or an
      OpenAI-compatible server from :data:`allm.providers.openai_chat.DIALECTS`
      (``"llama.cpp"``, ``"vllm"``, ``"ollama"``, ``"generic"``...), which needs no
      key; only its provider name, key variables, default URL and headers are used.
      :meth:`compatible` builds one.
    - ``headers``: added to every call (never a key: use ``api_key=`` or
      :mod:`allm.keys`).
    """

    base_url: str | None = None
    organization: str | None = None
    project: str | None = None
    store: bool | None = False
    reasoning_effort: str | None = None
    reasoning_summary: str | None = None
    dialect: str | Dialect = "openai"
    headers: Mapping[str, str] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        check_endpoint("OpenAIResponses", self._dialect(), self.base_url, self.headers)

    @classmethod
    def compatible(
        cls, base_url: str | None = None, dialect: str | Dialect = "generic", *, store: bool | None = None
    ) -> OpenAIResponses:
        """Another server's ``/responses`` (llama-server, vLLM...): no key needed, ``store`` not sent.

        ``base_url`` includes ``/v1`` (``http://127.0.0.1:8080/v1``); with a named
        dialect it defaults to that server's usual address.
        """
        return cls(base_url=base_url, store=store, dialect=dialect)

    def _dialect(self) -> Dialect:
        d = self.dialect
        if isinstance(d, Dialect):
            return d
        try:
            return DIALECTS[d]
        except KeyError:
            raise ValueError(f"unknown dialect {d!r}; known: {sorted(DIALECTS)}") from None

    @property
    def key_spec(self) -> KeySpec:
        d = self._dialect()
        return KeySpec(d.provider, d.key_env, d.key_required)

    @property
    def provider(self) -> str:
        return self._dialect().provider

    def _headers(self, stream: bool) -> dict[str, str]:
        h = {"content-type": "application/json", "accept": "text/event-stream" if stream else "application/json"}
        h.update(self._dialect().headers)
        if self.organization:
            h["openai-organization"] = self.organization
        if self.project:
            h["openai-project"] = self.project
        h.update(self.headers)
        return h

    def encode(self, request: Request, *, stream: bool) -> HttpCall:
        """``POST {base_url}/responses``. Raises :class:`~allm.errors.ValidationError` for bad messages."""
        d = self._dialect()
        body, warnings = encode_body(
            request,
            stream=stream,
            provider=d.provider,
            store=self.store,
            reasoning_effort=self.reasoning_effort,
            reasoning_summary=self.reasoning_summary,
            chat_response_format=d.name in CHAT_RESPONSE_FORMAT_DIALECTS,
        )
        url = (self.base_url or d.base_url or "").rstrip("/") + "/responses"
        return HttpCall(
            "POST", url, self._headers(stream), orjson.dumps(body), stream, d.provider, request.model, tuple(warnings)
        )

    def auth_headers(self, key: str | None) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"} if key else {}

    def decoder(self, call: HttpCall, *, include_raw: bool = False) -> ResponsesDecoder:
        return ResponsesDecoder(call.provider, call.warnings, include_raw)

    def decode_body(self, call: HttpCall, body: bytes, *, include_raw: bool = False) -> list[Event]:
        return decode_body(call.provider, body, call.warnings, include_raw)

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> AdapterError:
        """An HTTP error (OpenAI error shape ``{"error": {"message", "type", "code"}}``) as a typed error."""
        return error_from_body(self._dialect().provider, status, headers, body)

    # -- the endpoints beside /responses: models, embeddings, images (the Chat adapter's code)

    def chat_adapter(self) -> OpenAI | OpenAICompatible:
        """The Chat Completions adapter for the same server, URL and headers."""
        d = self._dialect()
        if d.name == "openai":
            return OpenAI(self.base_url or d.base_url or "", self.organization, self.project, api="chat")
        return OpenAICompatible(self.base_url, d if isinstance(self.dialect, Dialect) else d.name, dict(self.headers))

    def encode_list_models(self) -> HttpCall:
        """``GET {base_url}/models``."""
        return self.chat_adapter().encode_list_models()

    def decode_list_models(self, body: bytes) -> list[str]:
        return self.chat_adapter().decode_list_models(body)

    embed_batch_size = 2048

    def encode_embed(self, texts: Sequence[str], *, model: str, dimensions: int | None = None) -> HttpCall:
        """``POST {base_url}/embeddings``."""
        return self.chat_adapter().encode_embed(texts, model=model, dimensions=dimensions)

    def decode_embed(self, body: bytes) -> Embeddings:
        return self.chat_adapter().decode_embed(body)

    image_operations = frozenset({"generate", "edit", "variations"})

    def encode_image(self, operation: str, request: ImageRequest) -> HttpCall:
        """One Images API call (see :mod:`allm.providers.openai_images`)."""
        return self.chat_adapter().encode_image(operation, request)

    def decode_image(self, call: HttpCall, body: bytes) -> ImageResponse:
        return self.chat_adapter().decode_image(call, body)

    def image_error(self, status: int, headers: Mapping[str, str], body: bytes) -> AdapterError:
        return self.chat_adapter().image_error(status, headers, body)
