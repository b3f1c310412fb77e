"""Decoding the OpenAI Responses API: its streaming events and its ``response`` object.

Follows https://platform.openai.com/docs/api-reference/responses-streaming and the
Open Responses specification. Output items become our events (``message`` -> text,
``reasoning`` -> reasoning with its summary / reasoning text, ``function_call`` -> tool
call with ``ToolCall.id`` = ``call_id`` and the item id in
``metadata["openai"]["item_id"]``). ``response.completed`` and ``response.incomplete``
end the stream; ``response.failed`` and ``error`` become an ``Error`` event. A
non-streaming body is decoded by the same code, so it yields the same events.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...errors import AdapterError, from_status
from ...events import Error, Event, RawChunk
from ...types import CallWarning, Usage
from .._wire import SSEStreamDecoder, body_events, malformed, usage_count
from ..assembler import Assembler

__all__ = ["ResponsesDecoder", "decode_body", "failure_error", "map_usage"]


def map_usage(u: Mapping[str, Any], dropped: dict[str, Any] | None = None) -> Usage:
    """Responses ``usage`` to :class:`Usage` (``input_tokens`` includes cached input;
    ``output_tokens`` includes reasoning). Counters are read by
    :func:`~allm.providers._wire.usage_count` (unreadable ones recorded in ``dropped``)."""
    idt = u.get("input_tokens_details")
    odt = u.get("output_tokens_details")
    idt = idt if isinstance(idt, Mapping) else {}
    odt = odt if isinstance(odt, Mapping) else {}
    return Usage(
        input_tokens=usage_count(u, "input_tokens", dropped),
        output_tokens=usage_count(u, "output_tokens", dropped),
        cached_input_tokens=usage_count(idt, "cached_tokens", dropped),
        cache_write_input_tokens=usage_count(idt, "cache_write_tokens", dropped),
        reasoning_tokens=usage_count(odt, "reasoning_tokens", dropped),
        total_tokens=usage_count(u, "total_tokens", dropped),
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
    item = "event"

    def __init__(self, provider: str, warnings: tuple[CallWarning, ...] = (), include_raw: bool = False) -> None:
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
        for name, data in items:
            if data == b"[DONE]":
                self._fail(out, malformed(self.provider, "the stream ended before response.completed"))
                return
            self._json_item(name, data, out)
            if self.finished:
                return

    def _on_json(self, name: str | None, obj: Any, out: list[Event]) -> None:
        self.on_event(obj, out)

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
                out.append(asm.add_usage(map_usage(u, asm.dropped_usage)))
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
        if not isinstance(resp.get("output"), list) and not (self._by_index or self._acc or self._closed):
            self._fail(out, malformed(self.provider, "the response carried no answer (no output)"))
            return
        out.extend(asm.start(resp.get("id"), resp.get("model")))
        for i, item in enumerate(resp.get("output") or []):
            self.item_done(item, i, out)
        u = resp.get("usage")
        if u:
            out.append(asm.add_usage(map_usage(u, asm.dropped_usage)))
        finish, raw = _finish(resp, self._refused)
        self.finished = True
        out.extend(asm.finish(finish, raw))


def _missing(have: str, final: str) -> str:
    """What ``final`` adds to the ``have`` received so far ('' when deltas already gave it)."""
    if not have:
        return final
    return final[len(have) :] if final.startswith(have) else ""


def decode_body(
    provider: str, body: bytes, warnings: tuple[CallWarning, ...] = (), include_raw: bool = False
) -> list[Event]:
    """A non-streaming ``response`` object as the same events a stream gives.

    ``status`` ``completed`` / ``incomplete`` finish the message; ``failed`` (or an
    ``{"error": ...}`` body) is an ``Error`` event; ``queued`` / ``in_progress``
    (background mode) is an ``unsupported_feature`` error.
    """

    def read(obj: Any, out: list[Event]) -> None:
        if not isinstance(obj, dict):
            raise TypeError("body is not a JSON object")
        status = obj.get("status")
        if "output" not in obj and obj.get("error"):
            out.append(Error(failure_error(provider, obj["error"])))
            return
        asm = dec._asm
        if status == "failed":
            out.extend(asm.start(obj.get("id"), obj.get("model")))
            u = obj.get("usage")
            if u:
                out.append(asm.add_usage(map_usage(u, asm.dropped_usage)))
            out.append(Error(failure_error(provider, obj.get("error") or {"message": "the response failed"})))
            return
        if status in ("queued", "in_progress"):
            why = f"the response is still {status} (background mode is not supported)"
            out.append(Error(AdapterError(why, reason="unsupported_feature", provider=provider)))
            return
        if status not in (None, "completed", "incomplete"):
            raise ValueError(f"unexpected response status {status!r}")
        if not isinstance(obj.get("output", []), list):
            raise TypeError("output is not a list")
        out.extend(asm.start(obj.get("id"), obj.get("model")))
        if include_raw:
            out.append(RawChunk(obj))
        dec.terminal(obj, out)

    dec = ResponsesDecoder(provider, warnings, include_raw)
    return body_events(provider, body, read)
