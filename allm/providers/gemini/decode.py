"""Decoding the Gemini API: ``streamGenerateContent?alt=sse`` chunks and a whole
``generateContent`` body, into the same events.

Follows https://ai.google.dev/api/generate-content (``GenerateContentResponse``,
``Candidate``, ``Part``, ``UsageMetadata``, ``FinishReason``, ``PromptFeedback``).

Gemini gives function calls no id on most models: the decoder makes
``call_<responseId>_<n>`` (``n`` counts the calls of one response from 0; characters
outside ``[A-Za-z0-9_-]`` become ``_``). When Gemini does give an id, it is kept
(``ToolCall.metadata["gemini"]["id"]``) and sent back. Thought signatures are kept
where the encoder puts them back (see :mod:`~allm.providers.gemini.encode`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from ...errors import AdapterError
from ...events import Error, Event, RawChunk
from ...types import CallWarning, Usage, unchecked
from .._wire import SSEStreamDecoder, body_events, malformed, usage_count
from ..assembler import Assembler
from .errors import PROVIDER, error_from_object

__all__ = ["GeminiDecoder", "decode_body", "map_finish_reason", "map_usage"]

_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")

_CONTENT_FILTER = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)


def map_finish_reason(raw: str | None) -> str | None:
    """Gemini ``FinishReason`` -> ours.

    ``STOP`` -> ``stop``; ``MAX_TOKENS`` -> ``length``; ``SAFETY``, ``RECITATION``,
    ``BLOCKLIST``, ``PROHIBITED_CONTENT``, ``SPII`` and the ``IMAGE_*`` filters ->
    ``content_filter``; everything else (``MALFORMED_FUNCTION_CALL``,
    ``UNEXPECTED_TOOL_CALL``, ``TOO_MANY_TOOL_CALLS``, ``LANGUAGE``, ``OTHER``...)
    -> ``other``. The raw value is kept as ``raw_finish_reason``.
    """
    if raw is None:
        return None
    if raw == "STOP":
        return "stop"
    if raw == "MAX_TOKENS":
        return "length"
    if raw in _CONTENT_FILTER:
        return "content_filter"
    return "other"


def _add(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return a + b


_PLAIN = frozenset((int, type(None)))
_COUNTS = (
    "promptTokenCount",
    "toolUsePromptTokenCount",
    "candidatesTokenCount",
    "thoughtsTokenCount",
    "cachedContentTokenCount",
    "totalTokenCount",
)


def map_usage(u: Mapping[str, Any], dropped: dict[str, Any] | None = None) -> Usage:
    """``usageMetadata`` -> :class:`Usage` (token counts).

    - ``input_tokens`` = ``promptTokenCount`` (+ ``toolUsePromptTokenCount``); it
      includes ``cachedContentTokenCount`` (-> ``cached_input_tokens``).
    - ``output_tokens`` = ``candidatesTokenCount`` + ``thoughtsTokenCount``: output
      includes thinking, as everywhere in allm; ``reasoning_tokens`` =
      ``thoughtsTokenCount``.
    - ``total_tokens`` = ``totalTokenCount``.

    A counter Gemini did not send stays ``None``; a numeric string is its number, and
    a counter that cannot be read is ``None`` and recorded in ``dropped`` (see
    :func:`~allm.providers._wire.usage_count`).
    """
    get = u.get
    prompt = get("promptTokenCount")
    cand = get("candidatesTokenCount")
    total = get("totalTokenCount")
    tool = get("toolUsePromptTokenCount")
    thoughts = get("thoughtsTokenCount")
    cached = get("cachedContentTokenCount")
    # Every stream chunk carries usage: the usual one (prompt, candidates and total, maybe
    # thoughts, as plain counts) is built straight away, the rest is checked below.
    if (
        tool is None
        and cached is None
        and type(prompt) is int
        and type(cand) is int
        and type(total) is int
        and prompt >= 0
        and cand >= 0
        and total >= 0
    ):
        if thoughts is None:
            return _usage(prompt, cand, None, None, None, total)
        if type(thoughts) is int and thoughts >= 0:
            return _usage(prompt, cand + thoughts, None, None, thoughts, total)
    # Ints or None (bools excluded by type), and no negative one (a bitwise OR of ints is
    # negative when one of them is).
    if not {type(prompt), type(tool), type(cand), type(thoughts), type(cached), type(total)} <= _PLAIN or (
        (prompt or 0) | (tool or 0) | (cand or 0) | (thoughts or 0) | (cached or 0) | (total or 0)
    ) < 0:
        bad: dict[str, Any] = {}
        prompt, tool, cand, thoughts, cached, total = [usage_count(u, k, bad) for k in _COUNTS]
        if bad:
            if dropped is not None:
                dropped.update(bad)
            # A sum with an unreadable part is unknown, not the other part alone.
            inp = None if bad.keys() & {"promptTokenCount", "toolUsePromptTokenCount"} else _add(prompt, tool)
            out = None if bad.keys() & {"candidatesTokenCount", "thoughtsTokenCount"} else _add(cand, thoughts)
            return Usage(inp, out, cached, None, thoughts, total)
    # The counters are checked above: built without Usage's own check.
    return _usage(_add(prompt, tool), _add(cand, thoughts), cached, None, thoughts, total)


_usage = unchecked(Usage)


class _Reader:
    """Reads ``GenerateContentResponse`` objects (a stream chunk or a whole body) into events."""

    __slots__ = (
        "_calls",
        "_n_reasoning",
        "_open",
        "_raw",
        "_rkey",
        "asm",
        "block_reason",
        "finish",
        "finish_message",
        "provider",
    )

    def __init__(self, provider: str, warnings: tuple[CallWarning, ...], include_raw: bool) -> None:
        self.provider = provider
        self.asm = Assembler(provider, warnings)
        self._raw = include_raw
        self.finish: str | None = None
        self.finish_message: str | None = None
        self.block_reason: str | None = None
        self._open: str | None = None  # "text" or "reasoning": the block parts are appended to
        self._rkey: str | None = None
        self._n_reasoning = 0
        self._calls: list[tuple[object, dict[str, Any]]] = []  # (assembler key, gemini metadata)

    @property
    def terminal(self) -> bool:
        """A candidate ``finishReason`` or a ``promptFeedback.blockReason`` was seen."""
        return self.finish is not None or self.block_reason is not None

    def read(self, obj: Any, out: list[Event]) -> AdapterError | None:
        """Append the events of one response object; an ``error`` object is returned instead."""
        if not isinstance(obj, dict):
            raise TypeError("the response is not a JSON object")
        err = obj.get("error")
        if err is not None:
            return error_from_object(self.provider, err)
        asm = self.asm
        if not asm.started or asm.id is None or asm.model is None:  # else start() has nothing to do
            rid = obj.get("responseId")
            mv = obj.get("modelVersion")
            out.extend(asm.start(rid if isinstance(rid, str) else None, mv if isinstance(mv, str) else None))
        if self._raw:
            out.append(RawChunk(obj))
        pf = obj.get("promptFeedback")
        if pf:
            br = pf.get("blockReason")
            if br:
                self.block_reason = str(br)
        for cand in obj.get("candidates") or ():
            if cand.get("index", 0) != 0:
                continue  # one candidate is asked for; any other is ignored
            content = cand.get("content") or {}
            parts = content.get("parts") or []
            if not isinstance(parts, list):
                raise TypeError("content.parts is not a list")
            for part in parts:
                text = part.get("text") if type(part) is dict and len(part) == 1 else None
                if type(text) is str and text and self._open == "text":
                    out.append(asm.text(text))  # the usual part, one more piece of the open text
                else:
                    self._part(part, out)
            fr = cand.get("finishReason")
            if fr:
                self.finish = str(fr)
            fm = cand.get("finishMessage")
            if fm:
                self.finish_message = str(fm)
        u = obj.get("usageMetadata")
        if u:
            out.append(asm.add_usage(map_usage(u, asm.dropped_usage)))
        return None

    # -- parts

    def _close_open(self, out: list[Event]) -> None:
        if self._open == "text":
            out.extend(self.asm.close_block(None, "text"))
        elif self._open == "reasoning":
            out.extend(self.asm.close_block(self._rkey, "reasoning"))
        self._open = None

    def _new_reasoning(self, out: list[Event]) -> str:
        self._close_open(out)
        key = f"thought-{self._n_reasoning}"
        self._n_reasoning += 1
        self._rkey = key
        self._open = "reasoning"
        return key

    def _part(self, part: Any, out: list[Event]) -> None:
        if not isinstance(part, dict):
            raise TypeError("a part is not a JSON object")
        sig = part.get("thoughtSignature")
        if sig is not None and not isinstance(sig, str):
            raise TypeError("thoughtSignature is not a string")
        if "functionCall" in part:
            self._close_open(out)
            self._function_call(part["functionCall"], sig, out)
            return
        text = part.get("text")
        if text is not None and not isinstance(text, str):
            raise TypeError("a part's text is not a string")
        asm = self.asm
        if part.get("thought"):
            if text:
                key = self._rkey if self._open == "reasoning" else self._new_reasoning(out)
                out.append(asm.reasoning(text, key))
            if sig:
                key = self._rkey if self._open == "reasoning" else self._new_reasoning(out)
                asm.reasoning_signature(key, signature=sig)
                self._close_open(out)  # a signature ends its thought block
            return
        if text:
            if self._open != "text":
                self._close_open(out)
                self._open = "text"
            out.append(asm.text(text))
        if sig:
            self._close_open(out)
            if not text and self._sign_unsigned_call(sig):
                return
            key = self._new_reasoning(out)
            asm.reasoning_signature(key, signature=sig)
            self._close_open(out)
        # Other parts (inlineData, executableCode, codeExecutionResult...) are not read.

    def _sign_unsigned_call(self, sig: str) -> bool:
        """A signature on an empty part after this response's function calls, none of them
        signed: it belongs to the first call (Gemini validates the first call of a step)."""
        if not self._calls or any("thought_signature" in meta for _k, meta in self._calls):
            return False
        key, meta = self._calls[0]
        meta["thought_signature"] = sig
        self.asm.tool_call(key, metadata={PROVIDER: dict(meta)})
        return True

    def _function_call(self, fc: Any, sig: str | None, out: list[Event]) -> None:
        if not isinstance(fc, dict):
            raise TypeError("functionCall is not a JSON object")
        name = fc.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError("a functionCall has no name")
        args = fc.get("args")
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise TypeError("functionCall.args is not a JSON object")
        gid = fc.get("id")
        n = len(self._calls)
        meta: dict[str, Any] = {}
        if isinstance(gid, str) and gid:
            call_id = gid
            meta["id"] = gid
        else:
            rid = _ID_UNSAFE.sub("_", self.asm.id or "")
            call_id = f"call_{rid}_{n}" if rid else f"call_{n}"
        if sig:
            meta["thought_signature"] = sig
        key = ("call", n)
        self._calls.append((key, meta))
        out.extend(self.asm.tool_call(key, id=call_id, name=name, metadata={PROVIDER: dict(meta)} if meta else None))
        out.extend(self.asm.tool_arguments(key, orjson.dumps(args).decode("utf-8")))

    # -- end

    def finish_events(self) -> list[Event]:
        out: list[Event] = []
        self._close_open(out)
        metadata: dict[str, Any] = {}
        if self.finish is None and self.block_reason is not None:
            finish: str | None = "content_filter"
            raw: str | None = self.block_reason
        else:
            raw = self.finish
            finish = map_finish_reason(raw)
        if self.block_reason is not None:
            metadata["block_reason"] = self.block_reason
        if self.finish_message is not None:
            metadata["finish_message"] = self.finish_message
        out.extend(self.asm.finish(finish, raw, metadata))
        return out


_NO_FINISH = "ended without a chunk carrying finishReason (or promptFeedback.blockReason)"


class GeminiDecoder(SSEStreamDecoder):
    """Incremental decoder of a ``streamGenerateContent?alt=sse`` stream.

    Each SSE ``data:`` line (CRLF line ends) holds one ``GenerateContentResponse``.
    Gemini sends no ``[DONE]``: the terminal marker is a candidate's
    ``finishReason`` (or, for a blocked prompt, ``promptFeedback.blockReason``).
    ``MessageCompleted`` is emitted at :meth:`close`; a stream that closes without
    the marker ends in an ``Error`` (``malformed_response``). An ``{"error": ...}``
    chunk becomes an ``Error`` with the mapped reason.
    """

    __slots__ = ("_reader",)

    terminal_marker = "a chunk with finishReason"

    def __init__(
        self, provider: str = PROVIDER, warnings: tuple[CallWarning, ...] = (), include_raw: bool = False
    ) -> None:
        super().__init__(provider)
        self._reader = _Reader(provider, warnings, include_raw)

    def _end(self, out: list[Event]) -> None:
        # No [DONE] in Gemini streams: the message completes when the stream closes.
        self.finished = True
        if not self._reader.terminal:
            self.failed = True
            out.append(Error(malformed(self.provider, f"the stream {_NO_FINISH}")))
            return
        out.extend(self._reader.finish_events())

    def _on_items(self, items: list[tuple[str | None, bytes]], out: list[Event]) -> None:
        for name, data in items:
            if data and not data.isspace():  # keep-alive blank lines carry nothing
                self._json_item(name, data, out)
                if self.finished:
                    return

    def _on_json(self, name: str | None, obj: Any, out: list[Event]) -> AdapterError | None:
        return self._reader.read(obj, out)


def decode_body(
    body: bytes, *, provider: str = PROVIDER, warnings: tuple[CallWarning, ...] = (), include_raw: bool = False
) -> list[Event]:
    """A ``generateContent`` body as the same events a stream of it gives.

    A body without ``finishReason`` (or ``promptFeedback.blockReason``) ends in an
    ``Error`` (``malformed_response``), as a stream would.
    """

    def read(obj: Any, out: list[Event]) -> None:
        reader = _Reader(provider, warnings, include_raw)
        err = reader.read(obj, out)
        if err is not None:
            out.append(Error(err))
        elif not reader.terminal:
            out.append(Error(malformed(provider, f"the response {_NO_FINISH}")))
        else:
            out.extend(reader.finish_events())

    return body_events(provider, body, read)
