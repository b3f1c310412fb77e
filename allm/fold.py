"""Every fold of an event stream into a value, in one place.

- :class:`Collector`: one model call's events -> :class:`~allm.types.Response`
  (``generate`` is ``Collector().fold(stream_generate(...))``).
- :class:`StepCollector`: one turn of the tool loop -> :class:`~allm.types.Step`.
- :class:`ChatCollector`: a whole chat -> :class:`~allm.types.ChatResult`.
- :class:`SessionReducer`: a session operation -> ``(new Session, result)``.

Each accepts events in any filtering (text deltas may be absent when
``emit_text_deltas=False``: the completed text is used), and a partial stream (the
caller stopped, or an ``Error`` event arrived) folds to a value that keeps what was
received (``halted_reason="cancelled"`` for the loop's folds).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from .events import (
    ChatCompleted,
    Error,
    Event,
    MessageCompleted,
    MessageStarted,
    RawChunk,
    ReasoningCompleted,
    ReasoningDelta,
    StepCompleted,
    TextCompleted,
    TextDelta,
    ToolCallCompleted,
)
from .types import (
    CallWarning,
    ChatResult,
    Message,
    Part,
    ReasoningPart,
    Response,
    Step,
    TextPart,
    Thread,
    ToolCall,
    Usage,
)

if TYPE_CHECKING:
    from .session import Session

__all__ = ["ChatCollector", "Collector", "SessionReducer", "StepCollector", "afold", "fold_response"]




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
        raw: str | None = None
        metadata: dict[str, Any]
        if done is not None and self.error is None:
            msg = done.message
            finish: str | None = done.finish_reason
            raw = done.raw_finish_reason
            metadata = dict(done.metadata) if done.metadata else {}
        else:
            msg = done.message if done is not None else self._partial_message()
            if self.error is not None:
                finish, metadata = "error", {"error": self.error.error}
            else:
                finish, metadata = None, {"halted_reason": "cancelled"}
        return Response(
            msg,
            self.id,
            self.request_id,
            self.model,
            msg.text,
            msg.tool_calls,
            finish,  # type: ignore[arg-type]
            raw,
            usage,
            self.warnings,
            metadata,
        )


def fold_response(events: Iterable[Event], request_id: str | None = None) -> Response:
    """Fold one call's events into a :class:`Response`."""
    return Collector(request_id).fold(events)


# ------------------------------------------------------------------------------ the tool loop's folds


class _LoopFold:
    """What the loop's folds share: :meth:`fold` over a whole iterable."""

    __slots__ = ()

    def apply(self, ev: Event) -> None:
        raise NotImplementedError

    def result(self) -> Any:
        raise NotImplementedError

    def fold(self, events: Iterable[Event]) -> Any:
        """Apply every event; the :meth:`result`."""
        apply = self.apply
        for ev in events:
            apply(ev)
        return self.result()


class StepCollector(_LoopFold):
    """Folds a ``stream_step`` into its :class:`~allm.types.Step`.

    ``thread`` is the thread the step started from: a stream stopped before its
    ``StepCompleted`` folds to a Step with that thread, the partial response,
    ``halted_reason="cancelled"`` and ``done=True``.
    """

    __slots__ = ("_call", "step", "thread")

    def __init__(self, thread: Thread | None = None) -> None:
        self.thread = thread if thread is not None else Thread()
        self.step: Step | None = None
        self._call = Collector()

    def apply(self, ev: Event) -> None:
        if type(ev) is StepCompleted:
            self.step = ev.step
        else:
            self._call.apply(ev)

    def fold(self, events: Iterable[Event]) -> Step:
        step: Step = super().fold(events)
        return step

    def result(self) -> Step:
        if self.step is not None:
            return self.step
        return Step(self._call.response(), self.thread, (), "auto", True, "cancelled", {})


class ChatCollector(_LoopFold):
    """Folds a chat ``stream`` into its :class:`~allm.types.ChatResult`.

    ``thread`` is the thread the chat started from. A stream stopped before its
    ``ChatCompleted`` folds to ``halted_reason="cancelled"`` with the steps that
    completed, the thread after the last of them (or ``thread``), and the last
    response seen (partial if the stop came mid-call).
    """

    __slots__ = ("_call", "_call_seen", "chat", "steps", "thread")

    def __init__(self, thread: Thread | None = None) -> None:
        self.thread = thread if thread is not None else Thread()
        self.steps: list[Step] = []
        self.chat: ChatResult | None = None
        self._call = Collector()
        self._call_seen = False

    def apply(self, ev: Event) -> None:
        t = type(ev)
        if t is StepCompleted:
            self.steps.append(ev.step)  # type: ignore[union-attr]
            self._call = Collector()
            self._call_seen = False
        elif t is ChatCompleted:
            self.chat = ev.result  # type: ignore[union-attr]
        else:
            self._call.apply(ev)
            self._call_seen = True

    def fold(self, events: Iterable[Event]) -> ChatResult:
        # apply() inlined, with a call's events kept aside and folded only when they are
        # needed: a chat that ends with its ChatCompleted (the usual end) needs none of them.
        held: list[Event] = []
        try:
            for ev in events:
                t = type(ev)
                if t is StepCompleted:
                    self.steps.append(ev.step)  # type: ignore[union-attr]
                    self._call = Collector()
                    self._call_seen = False
                    held.clear()
                elif t is ChatCompleted:
                    self.chat = ev.result  # type: ignore[union-attr]
                else:
                    held.append(ev)
                    self._call_seen = True
        finally:
            self._settle(held)
        return self.result()

    async def afold(self, events: AsyncIterable[Event]) -> ChatResult:
        """:meth:`fold` over an async stream; closes ``events`` (an ``AsyncEventStream``) when
        done or stopped, as :func:`afold` does."""
        held: list[Event] = []
        try:
            async for ev in events:
                t = type(ev)
                if t is StepCompleted:
                    self.steps.append(ev.step)  # type: ignore[union-attr]
                    self._call = Collector()
                    self._call_seen = False
                    held.clear()
                elif t is ChatCompleted:
                    self.chat = ev.result  # type: ignore[union-attr]
                else:
                    held.append(ev)
                    self._call_seen = True
        finally:
            self._settle(held)
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()
        return self.result()

    def _settle(self, held: list[Event]) -> None:
        # The kept events of the last call, folded when the result needs them (no ChatCompleted).
        if self.chat is None:
            apply = self._call.apply
            for ev in held:
                apply(ev)

    def result(self) -> ChatResult:
        if self.chat is not None:
            return self.chat
        last = self.steps[-1] if self.steps else None
        if self._call_seen or last is None:
            final: Response | None = self._call.response() if self._call_seen else None
        else:
            final = last.response
        return ChatResult(
            last.thread if last is not None else self.thread,
            final,
            tuple(self.steps),
            "cancelled",
        )


# ------------------------------------------------------------------------------ sessions

R = TypeVar("R", ChatResult, Step)
R_co = TypeVar("R_co", ChatResult, Step, covariant=True)


class _Fold(Protocol[R_co]):
    def apply(self, ev: Event) -> None: ...

    def result(self) -> R_co: ...


class SessionReducer(Generic[R]):
    """Folds a session operation's event stream: ``apply(event)`` for each, then ``finalize()``
    for ``(new_session, result)`` (:meth:`allm.Session.settle` of the result). Nothing changes
    until ``finalize``; a stream stopped early folds as :meth:`~allm.Session.settle` says. Use
    it when the events travel elsewhere (a queue, a websocket) and the fold happens there.
    """

    __slots__ = ("base", "collector")
    base: Session
    collector: _Fold[R]

    def __init__(self, base: Session, collector: _Fold[R]) -> None:
        self.base = base
        self.collector = collector

    def apply(self, ev: Event) -> None:
        self.collector.apply(ev)

    def finalize(self) -> tuple[Session, R]:
        result = self.collector.result()
        return self.base.settle(result), result


async def afold(collector: Any, events: AsyncIterable[Event]) -> Any:
    """Fold an async stream with ``collector`` (any collector here); its ``result()`` or
    ``response()``. Closes ``events`` (an ``AsyncEventStream``) when done or stopped."""
    apply = collector.apply
    try:
        async for ev in events:
            apply(ev)
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
    done = getattr(collector, "result", None) or collector.response
    return done()
