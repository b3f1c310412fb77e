"""The tool loop's public surface: ``step``, ``stream_step``, ``chat``, ``stream`` and async twins.

- ``stream(engine, request)`` yields every event of a chat: per turn the model
  call's events, then per tool call ``ToolExecutionStarted``,
  ``ToolExecutionCompleted`` and one of ``ToolResultEncoded`` /
  ``AskUserRequested`` / ``ToolHalt`` (interleaved across tools in completion
  order), then one ``StepCompleted``; at the end one ``ChatCompleted``.
- ``chat`` is ``ChatCollector(thread).fold(stream(...))``.
- ``stream_step`` is one turn (ending with ``StepCompleted``); ``step`` its fold.

Every decision is made by :class:`allm.loop.Loop`; the drivers here only perform
its actions: stream a model call through :func:`allm.api.stream_generate`, run
tool handlers (:func:`allm.tools.run_tools` / :func:`allm.tools.arun_tools`).

Errors: pre-flight errors (no model, no key, invalid request) raise when the
function is called. A model call that fails before the chat's first event
raises (like ``stream_generate``); any later failure is an ``Error`` event and the
chat halts with ``halted_reason="error"``, keeping the thread so far.

Stopping the iteration (``break``, ``close()``, ``aclose()``, task cancellation)
closes the model call's HTTP response at once; folding what was received gives
``halted_reason="cancelled"``. Tool handlers already running in threads cannot be
stopped; their results are dropped (async handlers in the async driver are
cancelled).

Every public name here is also exported at the top level (``allm.chat``,
``allm.ChatOptions``...).

Sync driver and async handlers: each async handler runs with ``asyncio.run`` in
its own worker thread (so ``chat`` works inside a running event loop too).
Async driver and sync handlers: each sync handler runs in a daemon thread so it
does not block the event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any, TypedDict, Unpack

import attrs

from .api import (
    AsyncEventStream,
    EventStream,
    OnEvent,
    RequestLike,
    astream_generate,
    new_request_id,
    resolve_request,
    stream_generate,
)
from .engine import Engine, merge_tools
from .errors import AllmError
from .events import ChatCompleted, Error, Event, StepCompleted
from .fold import Collector
from .loop import CallModel, ChatCollector, Finish, Loop, LoopPolicy, Mode, OnToolError, RunTools, StepCollector
from .policy import RetryInfo, RetryPolicy, Timeouts
from .tools import ResultEncoder, arun_tools, as_encoder, run_tools
from .types import ChatResult, Request, Step, Thread, Tool
from .types import request as make_request

__all__ = [
    "ChatOptions",
    "LoopOptions",
    "achat",
    "astep",
    "astream",
    "astream_step",
    "chat",
    "step",
    "stream",
    "stream_step",
]


class LoopOptions(TypedDict, total=False):
    """The options of :class:`ChatOptions` other than ``context`` and ``session_id``."""

    tools: Sequence[Tool]
    mode: Mode
    max_turns: int
    halt_when: Callable[[Step], bool] | None
    on_tool_error: OnToolError
    tool_timeout: float | None
    result_encoder: ResultEncoder | Callable[[Any], str] | None
    api_key: str | None
    emit_text_deltas: bool
    emit_tool_deltas: bool
    include_raw_chunks: bool
    on_event: OnEvent | None
    retry: RetryPolicy | None
    timeouts: Timeouts | None
    on_retry: Callable[[RetryInfo], None] | None
    http_streaming: bool


class ChatOptions(LoopOptions, total=False):
    """Keyword options of ``chat``, ``stream``, ``step``, ``stream_step`` and their twins.

    Loop:

    - ``tools``: tools for this call, merged over the engine's (same name: this one wins).
    - ``mode``: ``"auto"`` (default) or ``"manual"``; see :class:`~allm.loop.LoopPolicy`.
    - ``max_turns``: most model calls (default 8; ignored by ``step``).
    - ``halt_when``: ``step -> bool`` (ignored by ``step``).
    - ``on_tool_error``: ``"continue"`` (default), ``"halt"`` or a function.
    - ``tool_timeout``: seconds per tool call (default 30; ``None``: no limit).
    - ``result_encoder``: a :class:`~allm.tools.ResultEncoder` or ``value -> str``.
    - ``context``: handed to handlers, over ``engine.context`` (this wins per key).
    - ``session_id``: handed to handlers.

    Model calls (as :func:`allm.stream_generate`): ``api_key``,
    ``emit_text_deltas``, ``emit_tool_deltas``, ``include_raw_chunks``,
    ``on_event`` (adapter events only), ``retry``, ``timeouts``, ``on_retry``,
    ``http_streaming``.
    """

    context: Mapping[str, Any] | None
    session_id: str | None
    structured_finalize: bool
    structured_finalize_nudge: str


DEFAULT_FINALIZE_NUDGE = "Now provide your final structured response."
_FINALIZE_AFTER = frozenset({"completed", "max_turns", "halt_when"})


_LOOP_KEYS = frozenset(
    {"tools", "mode", "max_turns", "halt_when", "on_tool_error", "tool_timeout", "result_encoder", "context", "session_id"}
)
_FINALIZE_KEYS = frozenset({"structured_finalize", "structured_finalize_nudge"})
_GEN_KEYS = frozenset(
    {
        "api_key",
        "emit_text_deltas",
        "emit_tool_deltas",
        "include_raw_chunks",
        "on_event",
        "retry",
        "timeouts",
        "on_retry",
        "http_streaming",
    }
)


def _as_thread(request: RequestLike | tuple[Thread, Request]) -> tuple[Thread, Request]:
    if isinstance(request, tuple) and len(request) == 2 and isinstance(request[0], Thread):
        return request  # (thread, request template): sessions keep their thread's metadata
    if isinstance(request, Request):
        return Thread(request.messages), request
    if isinstance(request, Thread):
        return request, make_request(request)
    req = make_request(request)
    return Thread(req.messages), req


def _setup(
    engine: Engine, request: RequestLike | tuple[Thread, Request], options: Mapping[str, Any], *, single_step: bool
) -> tuple[Loop, dict[str, Any]]:
    unknown = set(options) - _LOOP_KEYS - _GEN_KEYS - _FINALIZE_KEYS
    if unknown:
        raise TypeError(f"unknown option(s) {sorted(unknown)}; see allm.ChatOptions")
    if not isinstance(engine, Engine):
        raise TypeError(f"expected an allm.Engine, got {type(engine).__name__}")
    thread, req = _as_thread(request)
    tools = options.get("tools")
    if tools:
        req = attrs.evolve(req, tools=merge_tools(req.tools, tools))
    req = resolve_request(engine, req)
    policy = LoopPolicy(
        mode=options.get("mode", "auto"),
        max_turns=options.get("max_turns", 8),
        halt_when=options.get("halt_when"),
        on_tool_error=options.get("on_tool_error", "continue"),
        tool_timeout=options.get("tool_timeout", 30.0),
        encoder=as_encoder(options.get("result_encoder")),
    )
    context = {**engine.context, **(options.get("context") or {})}
    loop = Loop(
        thread,
        req,
        policy,
        context=context,
        session_id=options.get("session_id"),
        engine=engine,
        single_step=single_step,
    )
    gen = {k: v for k, v in options.items() if k in _GEN_KEYS}
    return loop, gen


# ------------------------------------------------------------------------------ sync driver


def _drive(loop: Loop, engine: Engine, gen: dict[str, Any], first: CallModel, first_stream: EventStream) -> Iterator[Event]:
    action: CallModel | RunTools | Finish = first
    pending: EventStream | None = first_stream
    emitted = False
    try:
        while True:
            for ev in action.events:
                emitted = True
                yield ev
            if type(action) is CallModel:
                col = Collector(new_request_id())
                s = pending
                pending = None
                try:
                    if s is None:
                        s = stream_generate(engine, action.request, **gen)
                    for ev in s:
                        col.apply(ev)
                        emitted = True
                        yield ev
                except AllmError as exc:
                    if not emitted:
                        raise
                    err = Error(exc)
                    col.apply(err)
                    yield err
                finally:
                    if s is not None:
                        s.close()
                loop.model_done(col.response())
            elif type(action) is RunTools:
                outcomes = run_tools(action.jobs, action.timeout)
                try:
                    for outcome in outcomes:
                        for ev in loop.tool_done(outcome):
                            yield ev
                finally:
                    outcomes.close()
            else:
                return
            action = loop.next_action()
    finally:
        if pending is not None:
            pending.close()


def _start(
    engine: Engine, request: RequestLike | tuple[Thread, Request], options: Mapping[str, Any], single_step: bool
) -> EventStream:
    loop, gen = _setup(engine, request, options, single_step=single_step)
    first = loop.next_action()
    assert type(first) is CallModel
    # Opened now so that pre-flight errors (no key, no model) raise at call time.
    first_stream = stream_generate(engine, first.request, **gen)
    return EventStream(_drive(loop, engine, gen, first, first_stream))


def stream(engine: Engine, request: RequestLike, **options: Unpack[ChatOptions]) -> EventStream:
    """Run the tool loop, streaming every event (see the module docstring for the order).

    ``request``: a :class:`~allm.types.Request` (its model, sampling fields and
    tools apply to every turn), a :class:`~allm.types.Thread`, a list of messages
    or a prompt. ``options``: :class:`ChatOptions`.

    Raises at call time what :func:`allm.stream_generate` raises, ``TypeError``
    for an unknown option and ``ValueError`` for a bad loop option. Fold the events
    with :class:`~allm.loop.ChatCollector`, or call :func:`chat`.

    ``structured_finalize=True`` (for providers that cannot combine tools with a
    JSON schema): pass 1 runs the tool loop without the request's
    ``response_format``; if it halted ``completed``, ``max_turns`` or ``halt_when``,
    pass 2 appends ``structured_finalize_nudge`` (a user message; ``""`` skips it)
    and makes one call with no tools and the original ``response_format``. The
    result has the steps of both passes, the thread and final response of pass 2,
    and ``metadata["structured_finalize"]["pass_1_halted"]``. Pass 2 does not count
    against ``max_turns``.
    """
    if options.get("structured_finalize"):
        start, original, loop_opts, nudge = _finalize_plan(engine, request, options)
        first = _start(engine, start, loop_opts, False)  # opened now: pre-flight errors raise here
        return EventStream(_finalize(engine, first, original, loop_opts, nudge))
    return _start(engine, request, _loop_options(options), False)


def chat(engine: Engine, request: RequestLike, **options: Unpack[ChatOptions]) -> ChatResult:
    """Run the tool loop to its end: the fold of :func:`stream`.

    Returns a :class:`~allm.types.ChatResult`; ``halted_reason`` says why it
    stopped (``completed``, ``error``, ``max_turns``, ``halt_when``, ``ask_user``,
    ``tool_error``, ``manual_tool_calls`` or a handler's own reason).
    """
    collector = ChatCollector(_as_thread(request)[0])
    with stream(engine, request, **options) as events:
        for ev in events:
            collector.apply(ev)
    return collector.result()


def stream_step(engine: Engine, request: RequestLike, **options: Unpack[ChatOptions]) -> EventStream:
    """One turn of the loop: the model call, its tool calls, then one ``StepCompleted``.

    ``max_turns``, ``halt_when`` and ``structured_finalize`` do not apply. Same
    arguments and errors as :func:`stream`.
    """
    return _start(engine, request, _loop_options(options), True)


def step(engine: Engine, request: RequestLike, **options: Unpack[ChatOptions]) -> Step:
    """One turn of the loop, folded: a :class:`~allm.types.Step`.

    ``step.halted_reason is None`` (``done`` False) means tools ran and the model
    should read their results: call ``step`` again with ``step.thread``.
    """
    collector = StepCollector(_as_thread(request)[0])
    with stream_step(engine, request, **options) as events:
        for ev in events:
            collector.apply(ev)
    return collector.result()


# ------------------------------------------------------------------------------ async driver


async def _adrive(
    loop: Loop, engine: Engine, gen: dict[str, Any], first: CallModel, first_stream: AsyncEventStream
) -> AsyncIterator[Event]:
    action: CallModel | RunTools | Finish = first
    pending: AsyncEventStream | None = first_stream
    emitted = False
    try:
        while True:
            for ev in action.events:
                emitted = True
                yield ev
            if type(action) is CallModel:
                col = Collector(new_request_id())
                s = pending
                pending = None
                try:
                    if s is None:
                        s = astream_generate(engine, action.request, **gen)
                    async for ev in s:
                        col.apply(ev)
                        emitted = True
                        yield ev
                except AllmError as exc:
                    if not emitted:
                        raise
                    err = Error(exc)
                    col.apply(err)
                    yield err
                finally:
                    if s is not None:
                        await s.aclose()
                loop.model_done(col.response())
            elif type(action) is RunTools:
                outcomes = arun_tools(action.jobs, action.timeout)
                try:
                    async for outcome in outcomes:
                        for ev in loop.tool_done(outcome):
                            yield ev
                finally:
                    await outcomes.aclose()
            else:
                return
            action = loop.next_action()
    finally:
        if pending is not None:
            await pending.aclose()


def _astart(
    engine: Engine, request: RequestLike | tuple[Thread, Request], options: Mapping[str, Any], single_step: bool
) -> AsyncEventStream:
    loop, gen = _setup(engine, request, options, single_step=single_step)
    first = loop.next_action()
    assert type(first) is CallModel
    first_stream = astream_generate(engine, first.request, **gen)
    return AsyncEventStream(_adrive(loop, engine, gen, first, first_stream))


def astream(engine: Engine, request: RequestLike, **options: Unpack[ChatOptions]) -> AsyncEventStream:
    """The async twin of :func:`stream` (same events, options and errors)."""
    if options.get("structured_finalize"):
        start, original, loop_opts, nudge = _finalize_plan(engine, request, options)
        first = _astart(engine, start, loop_opts, False)
        return AsyncEventStream(_afinalize(engine, first, original, loop_opts, nudge))
    return _astart(engine, request, _loop_options(options), False)


async def achat(engine: Engine, request: RequestLike, **options: Unpack[ChatOptions]) -> ChatResult:
    """The async twin of :func:`chat`: the fold of :func:`astream`."""
    collector = ChatCollector(_as_thread(request)[0])
    async with astream(engine, request, **options) as events:
        async for ev in events:
            collector.apply(ev)
    return collector.result()


def astream_step(engine: Engine, request: RequestLike, **options: Unpack[ChatOptions]) -> AsyncEventStream:
    """The async twin of :func:`stream_step`."""
    return _astart(engine, request, _loop_options(options), True)


async def astep(engine: Engine, request: RequestLike, **options: Unpack[ChatOptions]) -> Step:
    """The async twin of :func:`step`: the fold of :func:`astream_step`."""
    collector = StepCollector(_as_thread(request)[0])
    async with astream_step(engine, request, **options) as events:
        async for ev in events:
            collector.apply(ev)
    return collector.result()



# ------------------------------------------------------------------------------ structured finalize


def _loop_options(options: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(options) - _LOOP_KEYS - _GEN_KEYS - _FINALIZE_KEYS
    if unknown:
        raise TypeError(f"unknown option(s) {sorted(unknown)}; see allm.ChatOptions")
    return {k: v for k, v in options.items() if k not in _FINALIZE_KEYS}


def _finalize_plan(
    engine: Engine, request: RequestLike, options: Mapping[str, Any]
) -> tuple[tuple[Thread, Request], Request, dict[str, Any], str]:
    thread, req = _as_thread(request)
    if req.response_format is None:
        raise ValueError("structured_finalize needs a request with a response_format")
    nudge = options.get("structured_finalize_nudge", DEFAULT_FINALIZE_NUDGE)
    return (thread, attrs.evolve(req, response_format=None)), req, _loop_options(options), nudge


def _second_pass(
    engine: Engine, first: ChatResult, original: Request, nudge: str, loop_opts: dict[str, Any]
) -> tuple[Engine, tuple[Thread, Request], dict[str, Any]]:
    thread = first.thread.add(make_request(nudge).messages[0]) if nudge else first.thread
    req = attrs.evolve(original, messages=thread.messages, tools=(), tool_choice=None)
    opts = {k: v for k, v in loop_opts.items() if k not in ("tools", "max_turns", "halt_when")}
    return attrs.evolve(engine, tools=()), (thread, req), opts


def _merge(first: ChatResult, second: Step | None, partial: ChatResult | None = None) -> ChatResult:
    meta = {**first.metadata, "structured_finalize": {"pass_1_halted": first.halted_reason}}
    if second is None:
        return attrs.evolve(partial or first, metadata=meta)
    return ChatResult(
        second.thread,
        second.response,
        (*first.steps, second),
        second.halted_reason or "completed",
        metadata={**meta, **second.metadata},
    )


def _finalize(
    engine: Engine, pass_1: EventStream, original: Request, loop_opts: dict[str, Any], nudge: str
) -> Iterator[Event]:
    first: ChatResult | None = None
    with pass_1 as events:
        for ev in events:
            if type(ev) is ChatCompleted:
                first = ev.result
            else:
                yield ev
    assert first is not None
    if first.halted_reason not in _FINALIZE_AFTER:
        yield ChatCompleted(_merge(first, None))
        return
    engine2, start2, opts2 = _second_pass(engine, first, original, nudge, loop_opts)
    second: Step | None = None
    with _start(engine2, start2, opts2, True) as events:
        for ev in events:
            if type(ev) is StepCompleted:
                second = ev.step
            yield ev
    yield ChatCompleted(_merge(first, second))


async def _afinalize(
    engine: Engine, pass_1: AsyncEventStream, original: Request, loop_opts: dict[str, Any], nudge: str
) -> AsyncIterator[Event]:
    first: ChatResult | None = None
    async with pass_1 as events:
        async for ev in events:
            if type(ev) is ChatCompleted:
                first = ev.result
            else:
                yield ev
    assert first is not None
    if first.halted_reason not in _FINALIZE_AFTER:
        yield ChatCompleted(_merge(first, None))
        return
    engine2, start2, opts2 = _second_pass(engine, first, original, nudge, loop_opts)
    second: Step | None = None
    async with _astart(engine2, start2, opts2, True) as events:
        async for ev in events:
            if type(ev) is StepCompleted:
                second = ev.step
            yield ev
    yield ChatCompleted(_merge(first, second))
