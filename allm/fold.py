"""Folding events into values: the :class:`Collector`.

``generate`` is ``Collector().fold(stream_generate(...))``; the chat loop and
sessions fold the same way. The collector accepts events in any filtering (text
deltas may be absent when ``emit_text_deltas=False``: the completed text is used),
and a partial stream (the caller stopped, or an ``Error`` event arrived) folds to a
response that keeps what was received.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .events import (
    Error,
    Event,
    MessageCompleted,
    MessageStarted,
    RawChunk,
    ReasoningCompleted,
    ReasoningDelta,
    TextCompleted,
    TextDelta,
    ToolCallCompleted,
)
from .types import CallWarning, Message, Part, ReasoningPart, Response, TextPart, ToolCall, Usage

__all__ = ["Collector", "fold_response"]


class Collector:
    """Accumulates one model call's events; :meth:`response` builds the :class:`Response`.

    Use :meth:`apply` per event (cheap: an append for a delta) or :meth:`fold`
    over an iterable. ``request_id`` is stamped on the response.
    """

    __slots__ = (
        "_blocks",
        "_cur",
        "_cur_id",
        "_reasoning",
        "_tool_calls",
        "completed",
        "error",
        "id",
        "model",
        "request_id",
        "usage",
        "warnings",
    )

    def __init__(self, request_id: str | None = None) -> None:
        self.request_id = request_id
        self.id: str | None = None
        self.model: str | None = None
        self.warnings: tuple[CallWarning, ...] = ()
        self.usage: Usage | None = None
        self.completed: MessageCompleted | None = None
        self.error: Error | None = None
        # Partial-output bookkeeping, used only if no MessageCompleted arrives.
        self._blocks: list[list[Any]] = []  # [kind, id, fragments-or-final]
        self._cur: list[str] | None = None
        self._cur_id: str | None = None
        self._reasoning: dict[str | None, list[Any]] = {}
        self._tool_calls: list[ToolCall] = []

    def apply(self, ev: Event) -> None:
        # ``type(ev) is X`` then a typed alias: the cheapest dispatch on the hot path.
        t = type(ev)
        if t is TextDelta:
            td: TextDelta = ev  # type: ignore[assignment]
            if self._cur is None or self._cur_id != td.id:
                self._cur = []
                self._cur_id = td.id
                self._blocks.append(["text", td.id, self._cur])
            self._cur.append(td.delta)
        elif t is MessageCompleted:
            mc: MessageCompleted = ev  # type: ignore[assignment]
            self.completed = mc
            if mc.usage is not None:
                self.usage = mc.usage
        elif t is RawChunk:
            rc: RawChunk = ev  # type: ignore[assignment]
            u = rc.usage
            if u is not None:
                self.usage = u if self.usage is None else self.usage.merge(u)
        elif t is TextCompleted:
            tc: TextCompleted = ev  # type: ignore[assignment]
            # The completed text is authoritative (deltas may have been filtered out).
            if self._cur is not None and self._cur_id == tc.id:
                self._blocks[-1][2] = [tc.text]
            else:
                self._blocks.append(["text", tc.id, [tc.text]])
            self._cur = None
            self._cur_id = None
        elif t is ReasoningDelta:
            rd: ReasoningDelta = ev  # type: ignore[assignment]
            blk = self._reasoning.get(rd.id)
            if blk is None:
                blk = ["reasoning", rd.id, []]
                self._reasoning[rd.id] = blk
                self._blocks.append(blk)
            blk[2].append(rd.delta)
        elif t is ReasoningCompleted:
            rcp: ReasoningCompleted = ev  # type: ignore[assignment]
            rblk = self._reasoning.pop(rcp.id, None)
            if rblk is None:
                self._blocks.append(["part", rcp.id, rcp.part])
            else:
                rblk[0] = "part"
                rblk[2] = rcp.part
        elif t is ToolCallCompleted:
            tcc: ToolCallCompleted = ev  # type: ignore[assignment]
            self._tool_calls.append(tcc.tool_call)
        elif t is MessageStarted:
            ms: MessageStarted = ev  # type: ignore[assignment]
            self.id = ms.id
            self.model = ms.model
            self.warnings = ms.warnings
        elif t is Error:
            er: Error = ev  # type: ignore[assignment]
            if self.error is None:
                self.error = er

    def fold(self, events: Iterable[Event]) -> Response:
        apply = self.apply
        for ev in events:
            apply(ev)
        return self.response()

    def _partial_message(self) -> Message:
        parts: list[Part] = []
        for kind, _id, val in self._blocks:
            if kind == "text":
                s = "".join(val)
                if s:
                    parts.append(TextPart(s))
            elif kind == "reasoning":
                parts.append(ReasoningPart("".join(val)))
            else:
                parts.append(val)
        content: str | tuple[Part, ...]
        if not parts:
            content = ""
        elif all(type(p) is TextPart for p in parts):
            content = "".join(p.text for p in parts)  # type: ignore[union-attr]
        else:
            content = tuple(parts)
        return Message("assistant", content, tool_calls=tuple(self._tool_calls))

    def response(self) -> Response:
        """The response so far: complete, errored (``finish_reason="error"``) or cancelled."""
        usage = self.usage if self.usage is not None else Usage()
        done = self.completed
        if done is not None and self.error is None:
            msg = done.message
            return Response(
                msg,
                self.id,
                self.request_id,
                self.model,
                msg.text,
                msg.tool_calls,
                done.finish_reason,  # type: ignore[arg-type]
                done.raw_finish_reason,
                usage,
                self.warnings,
                dict(done.metadata) if done.metadata else {},
            )
        msg = done.message if done is not None else self._partial_message()
        metadata: dict[str, Any]
        if self.error is not None:
            finish: str | None = "error"
            metadata = {"error": self.error.error}
        else:
            finish = None
            metadata = {"halted_reason": "cancelled"}
        return Response(
            msg,
            self.id,
            self.request_id,
            self.model,
            msg.text,
            msg.tool_calls,
            finish,  # type: ignore[arg-type]
            None,
            usage,
            self.warnings,
            metadata,
        )


def fold_response(events: Iterable[Event], request_id: str | None = None) -> Response:
    """Fold one call's events into a :class:`Response`."""
    return Collector(request_id).fold(events)
