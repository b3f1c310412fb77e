"""Builds events and the final message from a provider's deltas: :class:`Assembler`.

Every decoder (and the Fake) feeds its provider's deltas to an :class:`Assembler`, which
emits the event union and derives the finish reason; :func:`parse_arguments` parses
tool-call JSON. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import orjson

from ..events import (
    Event,
    MessageCompleted,
    MessageStarted,
    RawChunk,
    ReasoningCompleted,
    ReasoningDelta,
    TextCompleted,
    TextDelta,
    ToolCallCompleted,
    ToolCallDelta,
    ToolCallStarted,
)
from ..types import CallWarning, Message, Part, ReasoningPart, TextPart, ToolCall, Usage, unchecked

__all__ = ["Assembler", "distinct_id", "parse_arguments"]

# The per-delta events, built by their fields alone (they have no checks to run): a stream
# makes one per chunk, and attrs' frozen __init__ costs a third more.
_text_delta = unchecked(TextDelta)
_tool_call_delta = unchecked(ToolCallDelta)
_usage_chunk = unchecked(RawChunk)


def parse_arguments(raw: str) -> tuple[dict[str, Any], str | None]:
    """Parse tool-call arguments: ``(object, None)`` or ``({}, why)`` when not a JSON object.

    Empty or blank text means no arguments (``{}``), as several providers send for
    parameterless tools.
    """
    if not raw or raw.isspace():
        return {}, None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return {}, f"arguments are not valid JSON: {exc}"
    if not isinstance(value, dict):
        return {}, f"arguments must be a JSON object, got {type(value).__name__}"
    return value, None


def _covers(new: Usage, old: Usage) -> bool:
    """Whether ``new`` reports every counter ``old`` reports (then ``old.merge(new) == new``)."""
    return (
        (new.input_tokens is not None or old.input_tokens is None)
        and (new.output_tokens is not None or old.output_tokens is None)
        and (new.cached_input_tokens is not None or old.cached_input_tokens is None)
        and (new.cache_write_input_tokens is not None or old.cache_write_input_tokens is None)
        and (new.reasoning_tokens is not None or old.reasoning_tokens is None)
        and (new.total_tokens is not None or old.total_tokens is None)
    )


class _Text:
    __slots__ = ("done", "frags", "key")

    def __init__(self, key: str | None) -> None:
        self.key = key
        self.frags: list[str] = []
        self.done = False


class _Reasoning:
    __slots__ = ("done", "encrypted_content", "frags", "item_id", "key", "redacted_data", "signature")

    def __init__(self, key: str | None) -> None:
        self.key = key
        self.frags: list[str] = []
        self.signature: str | None = None
        self.redacted_data: str | None = None
        self.encrypted_content: str | None = None
        self.item_id: str | None = None
        self.done = False


class _Tool:
    __slots__ = ("call", "done", "frags", "id", "index", "key", "metadata", "name", "pending", "started")

    def __init__(self, key: object, index: int) -> None:
        self.key = key
        self.index = index
        self.id: str | None = None
        self.name: str | None = None
        self.frags: list[str] = []
        self.pending: list[str] = []  # fragments seen before id and name were known
        self.started = False
        self.done = False
        self.call: ToolCall | None = None
        self.metadata: dict[str, Any] = {}


_Block = _Text | _Reasoning | _Tool


def distinct_id(call_id: str, seen: set[str]) -> str:
    """``call_id``, or ``call_id_2``, ``_3``... when a call of the message already has it; added to ``seen``."""
    if call_id in seen:
        n = 2
        while f"{call_id}_{n}" in seen:
            n += 1
        call_id = f"{call_id}_{n}"
    seen.add(call_id)
    return call_id

class Assembler:
    """Builds events and the final message from a provider's deltas.

    Decoders call :meth:`start`, :meth:`text`, :meth:`reasoning`,
    :meth:`tool_call` / :meth:`tool_arguments`, :meth:`close_block` and
    :meth:`finish`; each returns the events to emit. Keys name content blocks in
    the provider's own terms (an index, an item id); text blocks keyed ``None`` are
    reported with ``id=None``.

    Finish reason is derived here: any completed tool call makes it ``tool_calls``.
    Tool-call ids are unique within a message: a missing id is synthesised, and an id
    the provider repeated (a misbehaving server) gets a ``_<n>`` suffix on its later
    calls, so every call is run, answered and stored on its own.
    """

    __slots__ = (
        "_blocks",
        "_cur_text",
        "_reasonings",
        "_texts",
        "_tool_ids",
        "_tools",
        "dropped_usage",
        "finished",
        "id",
        "model",
        "provider",
        "started",
        "usage",
        "warnings",
    )

    def __init__(self, provider: str, warnings: tuple[CallWarning, ...] = ()) -> None:
        self.provider = provider
        self.warnings = warnings
        self.started = False
        self.finished = False
        self.id: str | None = None
        self.model: str | None = None
        self.usage: Usage | None = None
        self._blocks: list[_Block] = []
        self._texts: dict[str | None, _Text] = {}
        self._cur_text: _Text | None = None
        self._reasonings: dict[str | None, _Reasoning] = {}
        self._tools: dict[object, _Tool] = {}
        self._tool_ids: set[str] = set()
        # Usage counters the provider sent in a form that cannot be read ({field: value}),
        # filled by the decoders' ``map_usage``; reported in MessageCompleted.metadata.
        self.dropped_usage: dict[str, Any] = {}

    # -- lifecycle

    def start(self, id: str | None = None, model: str | None = None) -> list[Event]:
        """``[MessageStarted]`` the first time, ``[]`` after."""
        if self.started:
            if id and not self.id:
                self.id = id
            if model and not self.model:
                self.model = model
            return []
        self.started = True
        self.id = id
        self.model = model
        return [MessageStarted(id, model, self.warnings)]

    # -- text

    def text(self, delta: str, key: str | None = None) -> TextDelta:
        cur = self._cur_text
        if cur is None or cur.key != key or cur.done:
            cur = self._texts.get(key)
            if cur is None or cur.done:
                cur = _Text(key)
                self._texts[key] = cur
                self._blocks.append(cur)
            self._cur_text = cur
        cur.frags.append(delta)
        return _text_delta(delta, key)

    # -- reasoning

    def _reasoning_block(self, key: str | None) -> _Reasoning:
        r = self._reasonings.get(key)
        if r is None or r.done:
            r = _Reasoning(key)
            self._reasonings[key] = r
            self._blocks.append(r)
        return r

    def reasoning(self, delta: str, key: str | None = None) -> ReasoningDelta:
        self._reasoning_block(key).frags.append(delta)
        return ReasoningDelta(delta, key)

    def reasoning_signature(
        self,
        key: str | None = None,
        *,
        signature: str | None = None,
        redacted_data: str | None = None,
        encrypted_content: str | None = None,
        item_id: str | None = None,
    ) -> None:
        """Attach what must be sent back with a reasoning block (no event)."""
        r = self._reasoning_block(key)
        if signature is not None:
            r.signature = (r.signature or "") + signature
        if redacted_data is not None:
            r.redacted_data = redacted_data
        if encrypted_content is not None:
            r.encrypted_content = encrypted_content
        if item_id is not None:
            r.item_id = item_id

    # -- tool calls

    def tool_call(
        self,
        key: object,
        *,
        id: str | None = None,
        name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> list[Event]:
        """Open (or add the id/name of) the tool call ``key``."""
        t = self._tools.get(key)
        if t is None or t.done:
            t = _Tool(key, len(self._tools))
            self._tools[key] = t
            self._blocks.append(t)
        if id and not t.id:
            t.id = id
        if name and not t.name:
            t.name = name
        if metadata:
            t.metadata.update(metadata)
        if not t.started and t.id and t.name:
            return self._start_tool(t)
        return []

    def _start_tool(self, t: _Tool) -> list[Event]:
        t.started = True
        assert t.id is not None and t.name is not None
        t.id = distinct_id(t.id, self._tool_ids)
        out: list[Event] = [ToolCallStarted(t.id, t.name, t.index)]
        if t.pending:
            joined = "".join(t.pending)
            t.pending.clear()
            if joined:
                t.frags.append(joined)
                out.append(ToolCallDelta(t.id, joined, t.index))
        return out

    def tool_arguments(self, key: object, delta: str) -> list[Event]:
        t = self._tools.get(key)
        if t is None or t.done:
            self.tool_call(key)
            t = self._tools[key]
        if not delta:
            return []
        if not t.started:
            t.pending.append(delta)
            return []
        t.frags.append(delta)
        assert t.id is not None
        return [_tool_call_delta(t.id, delta, t.index)]

    def has_tool(self, key: object) -> bool:
        t = self._tools.get(key)
        return t is not None and not t.done

    def tool_keys(self) -> list[object]:
        return [k for k, t in self._tools.items() if not t.done]

    # -- closing blocks

    def close_block(self, block_key: object, kind: str) -> list[Event]:
        """Complete one block: ``kind`` is ``"text"``, ``"reasoning"`` or ``"tool"``."""
        if kind == "text":
            tb = self._texts.get(cast("str | None", block_key))
            return self._close(tb) if tb is not None and not tb.done else []
        if kind == "reasoning":
            rb = self._reasonings.get(cast("str | None", block_key))
            return self._close(rb) if rb is not None and not rb.done else []
        tool = self._tools.get(block_key)
        return self._close(tool) if tool is not None and not tool.done else []

    def _close(self, b: _Block) -> list[Event]:
        b.done = True
        if type(b) is _Text:
            if b is self._cur_text:
                self._cur_text = None
            return [TextCompleted("".join(b.frags), b.key)]
        if type(b) is _Reasoning:
            return [ReasoningCompleted(self._reasoning_part(b), b.key)]
        assert type(b) is _Tool
        out: list[Event] = []
        if not b.name:
            b.name = ""
        if not b.started:
            if not b.id:
                b.id = self._synth_id(b.index)
            out.extend(self._start_tool(b))
        raw = "".join(b.frags)
        args, err = parse_arguments(raw)
        assert b.id is not None
        b.call = ToolCall(b.id, b.name, args, raw or "{}", err, dict(b.metadata) if b.metadata else {})
        out.append(ToolCallCompleted(b.call, b.index))
        return out

    def _synth_id(self, index: int) -> str:
        base = self.id or ""
        return f"call_{base[-12:]}_{index}" if base else f"call_{index}"

    def _reasoning_part(self, b: _Reasoning) -> ReasoningPart:
        return ReasoningPart(
            "".join(b.frags), b.signature, b.redacted_data, b.encrypted_content, b.item_id, self.provider
        )

    # -- usage and finish

    def add_usage(self, usage: Usage) -> RawChunk:
        cur = self.usage
        # ``merge`` would give a value equal to ``usage`` when it reports every counter
        # ``cur`` has (Gemini repeats usage on every chunk): skip building it then.
        if cur is None or _covers(usage, cur):
            self.usage = usage
        else:
            self.usage = cur.merge(usage)
        return _usage_chunk(None, usage)

    def finish(
        self,
        finish_reason: str | None,
        raw_finish_reason: str | None,
        metadata: Mapping[str, Any] | None = None,
    ) -> list[Event]:
        """Close every open block, then ``MessageCompleted`` with the derived finish reason.

        Usage counters that could not be read (:attr:`dropped_usage`) are listed in its
        ``metadata["dropped_usage"]`` (``{provider field: value as sent}``)."""
        out: list[Event] = []
        if not self.started:
            out.extend(self.start())
        for b in self._blocks:
            if not b.done:
                out.extend(self._close(b))
        calls = tuple(b.call for b in self._blocks if type(b) is _Tool and b.call is not None)
        if calls:
            finish_reason = "tool_calls"
        self.finished = True
        if self.dropped_usage:
            metadata = {**(metadata or {}), "dropped_usage": dict(self.dropped_usage)}
        out.append(
            MessageCompleted(self.message(calls), finish_reason, raw_finish_reason, self.usage, metadata or {})
        )
        return out

    def message(self, calls: tuple[ToolCall, ...] | None = None) -> Message:
        parts: list[Part] = []
        for b in self._blocks:
            if type(b) is _Text:
                if b.frags:
                    parts.append(TextPart("".join(b.frags)))
            elif type(b) is _Reasoning:
                parts.append(self._reasoning_part(b))
        if calls is None:
            calls = tuple(b.call for b in self._blocks if type(b) is _Tool and b.call is not None)
        content: str | tuple[Part, ...]
        if not parts:
            content = ""
        elif len(parts) == 1 and type(parts[0]) is TextPart:
            content = parts[0].text
        elif all(type(p) is TextPart for p in parts):
            content = "".join(p.text for p in parts)  # type: ignore[union-attr]
        else:
            content = tuple(parts)
        return Message("assistant", content, tool_calls=calls)
