"""The tool loop's public surface: ``step``, ``stream_step``, ``chat``, ``stream`` and async twins.

- ``stream(engine, request)`` yields every event of a chat: per turn the model
  call's events, then per tool call ``ToolExecutionStarted``,
  ``ToolExecutionCompleted`` and one of ``ToolResultEncoded`` /
  ``AskUserRequested`` / ``ToolHalt`` (interleaved across tools in completion
  order), then one ``StepCompleted``; at the end one ``ChatCompleted``.
- ``chat`` is ``ChatCollector(thread).fold(stream(...))``.
- ``stream_step`` is one turn (ending with ``StepCompleted``); ``step`` its fold.

Every decision is made by :class:`allm.loop.Loop`; the two drivers here (one sync,
one async) only perform its actions: stream a model call (:func:`allm.stream_generate`),
run tool handlers (:mod:`allm.runner`).

Errors: pre-flight errors (no model, no key, invalid request) raise when the
function is called. A model call that fails before the chat's first event
raises (like ``stream_generate``); any later failure is an ``Error`` event and the
chat halts with ``halted_reason="error"``, keeping the thread so far.

Stopping the iteration (``break``, ``close()``, ``aclose()``, task cancellation)
closes the model call's HTTP response at once; folding what was received gives
``halted_reason="cancelled"``. Sync handlers already running in threads cannot be
stopped; their results are dropped (async handlers in the async driver are
cancelled).

Every public name here is also exported at the top level (``allm.chat``,
``allm.ChatOptions``...).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any, Unpack

import attrs

from . import telemetry as _tel
from .api import GENERATE_OPTIONS, GenerateOptions, RequestLike, open_astream, open_stream, prepare, resolve_request
from .engine import Engine, merge_tools
from .errors import AllmError
from .events import Event
from .fold import ChatCollector, StepCollector, afold
from .loop import LOOP_OPTIONS, CallModel, Consult, Finish, Loop, LoopOptions, LoopPolicy, RunTools
from .runner import arun_tools, run_tools
from .streams import AsyncEventStream, EventStream
from .types import ChatResult, Request, Step, Thread
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


class ChatOptions(LoopOptions, GenerateOptions, total=False):
    """Keyword options of ``chat``, ``stream``, ``step``, ``stream_step`` and their twins.

    - The loop's: :class:`~allm.loop.LoopOptions` (``tools``, ``mode``, ``max_turns``,
      ``halt_when``, ``on_tool_error``, ``tool_timeout``, ``result_encoder``,
      ``structured_finalize``, ``structured_finalize_nudge``, ``time_budget``,
      ``middleware``; see :class:`~allm.loop.LoopPolicy` for each).
    - Each model call's: :class:`~allm.api.GenerateOptions` (``api_key``,
      ``emit_text_deltas``, ``emit_tool_deltas``, ``include_raw_chunks``, ``on_event``
      (adapter events only), ``retry``, ``timeouts``, ``on_retry``, ``http_streaming``).
    - ``context``: handed to handlers, over ``engine.context`` (this wins per key).
    - ``session_id``: handed to handlers; also the prompt-cache key when the request (or the
      engine's defaults) asks for prompt caching without one (``PromptCache(retention=...)``).
    """

    context: Mapping[str, Any] | None
    session_id: str | None


_CHAT_OPTIONS = LOOP_OPTIONS | GENERATE_OPTIONS | {"context", "session_id"}
_now = time.monotonic


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
    engine: Engine, request: RequestLike | tuple[Thread, Request], options: Mapping[str, Any], single_step: bool
) -> tuple[Loop, CallModel | Consult, dict[str, Any], Thread]:
    unknown = set(options) - _CHAT_OPTIONS
    if unknown:
        raise TypeError(f"unknown option(s) {sorted(unknown)}; see allm.ChatOptions")
    if not isinstance(engine, Engine):
        raise TypeError(f"expected an allm.Engine, got {type(engine).__name__}")
    thread, req = _as_thread(request)
    tools = options.get("tools")
    if tools:
        req = attrs.evolve(req, tools=merge_tools(req.tools, tools))
    req = resolve_request(engine, req)
    session_id = options.get("session_id")
    cache = req.prompt_cache
    if session_id and cache is not None and cache.key is None:  # a session's calls share its cache
        req = attrs.evolve(req, prompt_cache=attrs.evolve(cache, key=session_id))
    loop = Loop(
        thread,
        req,
        LoopPolicy.from_options(options),
        context={**engine.context, **(options.get("context") or {})},
        session_id=options.get("session_id"),
        engine=engine,
        single_step=single_step,
        timeouts=options.get("timeouts") or engine.timeouts,
        now=_now(),
    )
    first = loop.next_action(_now())
    assert type(first) is CallModel or type(first) is Consult
    gen = {k: v for k, v in options.items() if k in GENERATE_OPTIONS}
    if type(first) is Consult:  # middleware look first: pre-flight errors still raise now
        assert first.request is not None
        prepare(engine, first.request, resolved=True, **gen)
    return loop, first, gen, thread


def _opener(engine: Engine, gen: Mapping[str, Any], opener: Callable[..., Any]) -> Callable[[CallModel], Any]:
    def open_call(action: CallModel) -> Any:
        options = gen if action.timeouts is None else {**gen, "timeouts": action.timeouts}
        return opener(engine, action.request, options, resolved=True)

    return open_call


# ------------------------------------------------------------------------------ the two drivers
#
# The same loop twice, once with blocking I/O and once with ``await``; the decisions are
# the Loop's (which call, which events, when to stop), the folding is its collector's.


def _drive(loop: Loop, action: Any, first: EventStream | None, open_call: Callable[[CallModel], EventStream]) -> Iterator[Event]:
    pending = first
    try:
        while True:
            yield from action.events
            if type(action) is CallModel:
                s, pending = pending or open_call(action), None
                apply = loop.sink()
                try:
                    for ev in s._gen:  # the stream's own events: closed below, so no closing wrapper
                        apply(ev)
                        yield ev
                except AllmError as exc:
                    yield loop.model_failed(exc)
                finally:
                    s.close()
                loop.model_done(now=_now())
            elif type(action) is Consult:
                loop.consulted(action.perform())
            elif type(action) is RunTools:
                outcomes = run_tools(action.jobs, action.timeout)
                try:
                    for outcome in outcomes:
                        yield from loop.tool_done(outcome)
                finally:
                    outcomes.close()
            else:
                assert type(action) is Finish
                return
            action = loop.next_action(_now())
    finally:
        if pending is not None:
            pending.close()


async def _adrive(
    loop: Loop, action: Any, first: AsyncEventStream | None, open_call: Callable[[CallModel], AsyncEventStream]
) -> AsyncIterator[Event]:
    pending = first
    try:
        while True:
            for ev in action.events:
                yield ev
            if type(action) is CallModel:
                s, pending = pending or open_call(action), None
                apply = loop.sink()
                try:
                    async for ev in s._gen:  # as in _drive
                        apply(ev)
                        yield ev
                except AllmError as exc:
                    yield loop.model_failed(exc)
                finally:
                    await s.aclose()
                loop.model_done(now=_now())
            elif type(action) is Consult:
                loop.consulted(await action.aperform())
            elif type(action) is RunTools:
                outcomes = arun_tools(action.jobs, action.timeout)
                try:
                    async for outcome in outcomes:
                        for ev in loop.tool_done(outcome):
                            yield ev
                finally:
                    await outcomes.aclose()
            else:
                assert type(action) is Finish
                return
            action = loop.next_action(_now())
    finally:
        if pending is not None:
            await pending.aclose()


def _open_loop(
    engine: Engine, request: RequestLike | tuple[Thread, Request], options: Mapping[str, Any], single_step: bool, asynchronous: bool
) -> Any:
    """The events of a chat (or a step) as an ``EventStream``, or an ``AsyncEventStream``, and
    the thread it starts from."""
    loop, first, gen, thread = _setup(engine, request, options, single_step)
    open_call = _opener(engine, gen, open_astream if asynchronous else open_stream)
    # Opened now so that pre-flight errors (no key, no model) raise at call time.
    if _tel.active:  # the chat as one operation, its calls and tools inside it
        drive: Any = _adrive if asynchronous else _drive
        observe: Any = _tel.aobserve_chat if asynchronous else _tel.observe_chat
        events = observe(loop, single_step, lambda: drive(loop, first, open_call(first) if type(first) is CallModel else None, open_call))
        return (AsyncEventStream(events) if asynchronous else EventStream(events, direct=True)), thread  # see EventStream
    pending = open_call(first) if type(first) is CallModel else None
    if asynchronous:
        return AsyncEventStream(_adrive(loop, first, pending, open_call)), thread
    return EventStream(_drive(loop, first, pending, open_call)), thread


def _start(engine: Engine, request: RequestLike | tuple[Thread, Request], options: Mapping[str, Any], single_step: bool) -> EventStream:
    events: EventStream = _open_loop(engine, request, options, single_step, False)[0]
    return events


def _astart(engine: Engine, request: RequestLike | tuple[Thread, Request], options: Mapping[str, Any], single_step: bool) -> AsyncEventStream:
    events: AsyncEventStream = _open_loop(engine, request, options, single_step, True)[0]
    return events


# ------------------------------------------------------------------------------ public calls


def stream(engine: Engine, request: RequestLike, **options: Unpack[ChatOptions]) -> EventStream:
    """Run the tool loop, streaming every event (see the module docstring for the order).

    ``request``: a :class:`~allm.types.Request` (its model, sampling fields and
    tools apply to every turn), a :class:`~allm.types.Thread`, a list of messages
    or a prompt. ``options``: :class:`ChatOptions`.

    Raises at call time what :func:`allm.stream_generate` raises, ``TypeError``
    for an unknown option and ``ValueError`` for a bad loop option. Fold the events
    with :class:`~allm.fold.ChatCollector`, or call :func:`chat`.

    ``structured_finalize=True`` (for providers that cannot combine tools with a
    JSON schema): pass 1 runs the tool loop without the request's
    ``response_format``; if it halted ``completed``, ``max_turns`` or ``halt_when``,
    pass 2 appends ``structured_finalize_nudge`` (a user message; ``""`` skips it)
    and makes one call with no tools and the original ``response_format``. The
    result has the steps of both passes, the thread and final response of pass 2,
    and ``metadata["structured_finalize"]["pass_1_halted"]``. Pass 2 does not count
    against ``max_turns``; a failure in it ends the chat ``halted_reason="error"``
    with the thread of pass 1 kept.
    """
    return _start(engine, request, options, False)


def astream(engine: Engine, request: RequestLike, **options: Unpack[ChatOptions]) -> AsyncEventStream:
    """The async twin of :func:`stream` (same events, options and errors)."""
    return _astart(engine, request, options, False)


def stream_step(engine: Engine, request: RequestLike, **options: Unpack[ChatOptions]) -> EventStream:
    """One turn of the loop: the model call, its tool calls, then one ``StepCompleted``.

    ``max_turns``, ``halt_when`` and ``structured_finalize`` do not apply. Same
    arguments and errors as :func:`stream`.
    """
    return _start(engine, request, options, True)


def astream_step(engine: Engine, request: RequestLike, **options: Unpack[ChatOptions]) -> AsyncEventStream:
    """The async twin of :func:`stream_step`."""
    return _astart(engine, request, options, True)


def chat(engine: Engine, request: RequestLike, **options: Unpack[ChatOptions]) -> ChatResult:
    """Run the tool loop to its end: the fold of :func:`stream`.

    Returns a :class:`~allm.types.ChatResult`; ``halted_reason`` says why it
    stopped (``completed``, ``error``, ``max_turns``, ``halt_when``, ``ask_user``,
    ``tool_error``, ``manual_tool_calls``, ``time_budget``, a handler's own reason or a
    middleware's: see :mod:`allm.middleware`).
    """
    events, thread = _open_loop(engine, request, options, False, False)
    with events:  # closes the events on the way out, so the fold reads them without a wrapper
        return ChatCollector(thread).fold(events._gen)


async def achat(engine: Engine, request: RequestLike, **options: Unpack[ChatOptions]) -> ChatResult:
    """The async twin of :func:`chat`: the fold of :func:`astream`."""
    events, thread = _open_loop(engine, request, options, False, True)
    return await ChatCollector(thread).afold(events._gen)  # which closes them, as the stream would


def step(engine: Engine, request: RequestLike, **options: Unpack[ChatOptions]) -> Step:
    """One turn of the loop, folded: a :class:`~allm.types.Step`.

    ``step.halted_reason is None`` (``done`` False) means tools ran and the model
    should read their results: call ``step`` again with ``step.thread``.
    """
    with stream_step(engine, request, **options) as events:
        return StepCollector(_as_thread(request)[0]).fold(events)


async def astep(engine: Engine, request: RequestLike, **options: Unpack[ChatOptions]) -> Step:
    """The async twin of :func:`step`: the fold of :func:`astream_step`."""
    result: Step = await afold(StepCollector(_as_thread(request)[0]), astream_step(engine, request, **options))
    return result
