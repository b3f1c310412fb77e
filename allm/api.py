"""The call surface: ``generate`` and ``stream_generate``, sync and async.

``generate`` is a fold over ``stream_generate`` (:class:`~allm.fold.Collector`);
``agenerate`` folds ``astream_generate``. There is no second code path: a
non-streaming HTTP body, when asked for with ``http_streaming=False``, is decoded
into the same events.

Preparing a call is pure (resolve model, defaults and tools; encode; resolve the
key) and happens when the function is called, so a missing key or an invalid
request raises at once. I/O starts when the stream is iterated.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

import attrs

from . import keys
from .engine import Engine, merge_tools
from .errors import AllmError, EngineError
from .events import Error, Event, RawChunk, TextDelta, ToolCallDelta
from .fold import Collector
from .policy import Attempts, RetryInfo, RetryPolicy, Timeouts
from .providers.base import Delay, HttpAdapter, LocalAdapter
from .types import Embeddings, Message, Request, Response, Thread, Usage
from .types import request as make_request

if TYPE_CHECKING:
    from ._transport import Plan

__all__ = [
    "AsyncEventStream",
    "EventStream",
    "agenerate",
    "aembed",
    "alist_models",
    "astream_generate",
    "embed",
    "generate",
    "list_models",
    "stream_generate",
]

RequestLike = Request | Thread | Sequence[Message] | str
OnEvent = Callable[[Event], None]


async def _asleep(seconds: float) -> None:
    import asyncio  # only async callers need it; keeps ``import allm`` light

    await asyncio.sleep(seconds)


#: The random bytes of request and session ids: ``os.urandom``, or a seeded source under
#: :func:`allm.testing.deterministic_ids`. Called with a byte count, returns that many bytes.
id_bytes: Callable[[int], bytes] = os.urandom


def new_request_id() -> str:
    """22 URL-safe characters from 16 random bytes (:data:`id_bytes`)."""
    return base64.urlsafe_b64encode(id_bytes(16)).rstrip(b"=").decode("ascii")


# ------------------------------------------------------------------------------ streams


class EventStream:
    """A lazy stream of events. Iterate it; leaving a ``for`` loop over it (``break``,
    ``return``, an exception), ``close()`` or leaving a ``with`` block closes the HTTP
    response at once. To pause and resume, pull events with ``next()`` instead."""

    __slots__ = ("_gen",)

    def __init__(self, gen: Iterator[Event]) -> None:
        self._gen = gen

    def __iter__(self) -> Iterator[Event]:
        return _closing(self._gen)

    def __next__(self) -> Event:
        return next(self._gen)

    def close(self) -> None:
        close = getattr(self._gen, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _closing(gen: Iterator[Event]) -> Iterator[Event]:
    # The iterator a ``for`` loop holds: when the loop is left early it is dropped,
    # and closing it closes ``gen`` (and with it the HTTP response).
    try:
        yield from gen
    finally:
        close = getattr(gen, "close", None)
        if close is not None:
            close()


class AsyncEventStream:
    """The async twin of :class:`EventStream`: ``async for``, ``await aclose()``, ``async with``.

    ``aclose()`` or cancelling the task that iterates it closes the HTTP response at
    once; leaving an ``async for`` loop early closes it when the event loop
    finalises the loop's iterator (its next turn).
    """

    __slots__ = ("_gen",)

    def __init__(self, gen: AsyncIterator[Event]) -> None:
        self._gen = gen

    def __aiter__(self) -> AsyncIterator[Event]:
        return _aclosing(self._gen)

    async def __anext__(self) -> Event:
        return await self._gen.__anext__()

    async def aclose(self) -> None:
        aclose = getattr(self._gen, "aclose", None)
        if aclose is not None:
            await aclose()

    async def __aenter__(self) -> AsyncEventStream:
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()


async def _aclosing(gen: AsyncIterator[Event]) -> AsyncIterator[Event]:
    try:
        async for ev in gen:
            yield ev
    finally:
        aclose = getattr(gen, "aclose", None)
        if aclose is not None:
            await aclose()


# ------------------------------------------------------------------------------ preparation


def resolve_request(engine: Engine, request: RequestLike) -> Request:
    """The request as it will be sent: engine model, defaults and tools filled in."""
    if not isinstance(request, Request):
        request = make_request(request)
    changes: dict[str, Any] = {}
    if request.model is None and engine.model is not None:
        changes["model"] = engine.model
    for name, value in engine.defaults.items():
        current = getattr(request, name)
        if current is None or current == ():
            changes[name] = value
    if engine.tools:
        changes["tools"] = merge_tools(engine.tools, request.tools)
    return attrs.evolve(request, **changes) if changes else request


class _Local:
    __slots__ = ("adapter", "on_retry", "request", "retry", "timeouts")

    def __init__(self, adapter: LocalAdapter, request: Request, retry: RetryPolicy, timeouts: Timeouts, on_retry: Callable[[RetryInfo], None] | None) -> None:
        self.adapter = adapter
        self.request = request
        self.retry = retry
        self.timeouts = timeouts
        self.on_retry = on_retry


_ADAPTER_KINDS: dict[type[Any], str] = {}


def _adapter_kind(adapter: object) -> str:
    """``"local"``, ``"http"`` or ``""``. A runtime protocol check costs tens of µs; adapters get
    their methods from their class, so the answer is kept per class."""
    cls = type(adapter)
    kind = _ADAPTER_KINDS.get(cls)
    if kind is None:
        kind = "local" if isinstance(adapter, LocalAdapter) else "http" if isinstance(adapter, HttpAdapter) else ""
        _ADAPTER_KINDS[cls] = kind
    return kind


def prepare(
    engine: Engine,
    request: RequestLike,
    *,
    api_key: str | None = None,
    stream: bool = True,
    include_raw: bool = False,
    retry: RetryPolicy | None = None,
    timeouts: Timeouts | None = None,
    on_retry: Callable[[RetryInfo], None] | None = None,
) -> Plan | _Local:
    """Everything a shell needs to make one call. Raises pre-flight errors."""
    if not isinstance(engine, Engine):
        raise TypeError(f"expected an allm.Engine, got {type(engine).__name__}")
    adapter = engine.adapter
    req = resolve_request(engine, request)
    retry = retry or engine.retry
    timeouts = timeouts or engine.timeouts
    kind = _adapter_kind(adapter)
    if kind == "local":
        return _Local(cast(LocalAdapter, adapter), req, retry, timeouts, on_retry)
    if kind != "http":
        raise EngineError(f"{type(adapter).__name__} is not an allm adapter", reason="missing_adapter")
    adapter = cast(HttpAdapter, adapter)
    if not req.model:
        raise EngineError("no model: set Engine(model=...) or the request's model", reason="missing_model")
    call = adapter.encode(req, stream=stream)
    spec = adapter.key_spec
    key = keys.resolve(spec.provider, spec.env, api_key, required=spec.required)
    headers = dict(call.headers)
    headers.update(adapter.auth_headers(key))
    from ._transport import Plan

    return Plan(adapter, call, headers, key, include_raw=include_raw, retry=retry, timeouts=timeouts, on_retry=on_retry)


def _filter(
    events: Iterator[Event], on_event: OnEvent | None, text: bool, tool: bool, raw: bool
) -> Iterator[Event]:
    try:
        for ev in events:
            if on_event is not None:
                on_event(ev)
            t = type(ev)
            if t is TextDelta:
                if not text:
                    continue
            elif t is ToolCallDelta:
                if not tool:
                    continue
            elif t is RawChunk and not raw and ev.usage is None:  # type: ignore[union-attr]
                continue
            yield ev
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()


# ------------------------------------------------------------------------------ local adapters (Fake)


def _iter_local(plan: _Local) -> Iterator[Event]:
    st = Attempts(plan.retry, plan.timeouts, time.monotonic())
    while True:
        st.begin(time.monotonic())
        err: AllmError | None = None
        try:
            source = plan.adapter.open(plan.request)
        except AllmError as exc:
            err = exc
        else:
            for item in source:
                if type(item) is Delay:
                    err = _local_sleep(st, item.seconds, time.sleep)
                    if err is not None:
                        break
                    continue
                out, err = st.take([item])
                if err is not None:
                    break
                for ev in out:
                    yield ev
                    st.wait_start = time.monotonic()
            else:
                yield from st.flush()
                return
        if st.started:
            yield Error(err)
            return
        delay = st.next_delay(err, time.monotonic())
        if delay is None:
            raise err
        if plan.on_retry is not None:
            plan.on_retry(RetryInfo(st.attempt, delay, err))
        time.sleep(delay)


def _local_sleep(st: Attempts, seconds: float, sleep: Callable[[float], Any]) -> AllmError | None:
    now = time.monotonic()
    d = st.deadline()
    if d is not None and now + seconds >= d:
        sleep(max(0.0, d - now))
        return st.timeout_error("fake", time.monotonic())
    sleep(seconds)
    return None


async def _aiter_local(plan: _Local) -> AsyncIterator[Event]:
    st = Attempts(plan.retry, plan.timeouts, time.monotonic())
    while True:
        st.begin(time.monotonic())
        err: AllmError | None = None
        try:
            source = plan.adapter.open(plan.request)
        except AllmError as exc:
            err = exc
        else:
            for item in source:
                if type(item) is Delay:
                    secs = item.seconds
                    now = time.monotonic()
                    d = st.deadline()
                    if d is not None and now + secs >= d:
                        await _asleep(max(0.0, d - now))
                        err = st.timeout_error("fake", time.monotonic())
                        break
                    await _asleep(secs)
                    continue
                out, err = st.take([item])
                if err is not None:
                    break
                for ev in out:
                    yield ev
                    st.wait_start = time.monotonic()
            else:
                for ev in st.flush():
                    yield ev
                return
        if st.started:
            yield Error(err)
            return
        delay = st.next_delay(err, time.monotonic())
        if delay is None:
            raise err
        if plan.on_retry is not None:
            plan.on_retry(RetryInfo(st.attempt, delay, err))
        await _asleep(delay)


# ------------------------------------------------------------------------------ public calls


def stream_generate(
    engine: Engine,
    request: RequestLike,
    *,
    api_key: str | None = None,
    emit_text_deltas: bool = True,
    emit_tool_deltas: bool = True,
    include_raw_chunks: bool = False,
    on_event: OnEvent | None = None,
    retry: RetryPolicy | None = None,
    timeouts: Timeouts | None = None,
    on_retry: Callable[[RetryInfo], None] | None = None,
    http_streaming: bool = True,
) -> EventStream:
    """Stream one model call as events (see :mod:`allm.events` for the order).

    - ``request``: a :class:`~allm.types.Request`, a thread, a list of messages or a
      prompt string.
    - ``api_key``: this call's key (see :mod:`allm.keys` for the others).
    - ``emit_text_deltas`` / ``emit_tool_deltas``: ``False`` drops ``TextDelta`` /
      ``ToolCallDelta`` (completed events still arrive).
    - ``include_raw_chunks``: also yield each provider chunk as ``RawChunk``
      (chunks carrying usage always pass).
    - ``on_event``: called with every adapter event before filtering.
    - ``retry``, ``timeouts``: override the engine's; ``on_retry`` sees each retry
      (attempt, delay in seconds, error) before the sleep.
    - ``http_streaming=False``: ask the provider for one JSON body instead of SSE
      (decoded into the same events).

    Raises at call time :class:`~allm.errors.EngineError` (no key, no model) and
    :class:`~allm.errors.ValidationError` (invalid request). While iterating, raises
    :class:`~allm.errors.AdapterError` if the call fails before any event (after
    retries); a later failure arrives as an ``Error`` event that ends the stream.
    """
    plan = prepare(
        engine,
        request,
        api_key=api_key,
        stream=http_streaming,
        include_raw=include_raw_chunks,
        retry=retry,
        timeouts=timeouts,
        on_retry=on_retry,
    )
    if isinstance(plan, _Local):
        events: Iterator[Event] = _iter_local(plan)
        needs_filter = True
    else:
        from ._transport import iter_events

        events = iter_events(plan)
        needs_filter = False
    if needs_filter or on_event is not None or not emit_text_deltas or not emit_tool_deltas:
        events = _filter(events, on_event, emit_text_deltas, emit_tool_deltas, include_raw_chunks)
    return EventStream(events)


def generate(engine: Engine, request: RequestLike, *, api_key: str | None = None, **options: Any) -> Response:
    """One model call, folded into a :class:`~allm.types.Response`.

    Exactly ``Collector().fold(stream_generate(engine, request, ...))``; takes the
    same keyword options. Raises what :func:`stream_generate` raises; a failure after
    the stream began gives a response with ``finish_reason="error"``, the partial
    output and ``metadata["error"]``.
    """
    collector = Collector(new_request_id())
    apply = collector.apply
    for ev in stream_generate(engine, request, api_key=api_key, **options):
        apply(ev)
    return collector.response()


def astream_generate(
    engine: Engine,
    request: RequestLike,
    *,
    api_key: str | None = None,
    emit_text_deltas: bool = True,
    emit_tool_deltas: bool = True,
    include_raw_chunks: bool = False,
    on_event: OnEvent | None = None,
    retry: RetryPolicy | None = None,
    timeouts: Timeouts | None = None,
    on_retry: Callable[[RetryInfo], None] | None = None,
    http_streaming: bool = True,
) -> AsyncEventStream:
    """The async twin of :func:`stream_generate` (same options, same events, same errors)."""
    plan = prepare(
        engine,
        request,
        api_key=api_key,
        stream=http_streaming,
        include_raw=include_raw_chunks,
        retry=retry,
        timeouts=timeouts,
        on_retry=on_retry,
    )
    if isinstance(plan, _Local):
        events: AsyncIterator[Event] = _aiter_local(plan)
        needs_filter = True
    else:
        from ._transport import aiter_events

        events = aiter_events(plan)
        needs_filter = False
    if needs_filter or on_event is not None or not emit_text_deltas or not emit_tool_deltas:
        events = _afilter(events, on_event, emit_text_deltas, emit_tool_deltas, include_raw_chunks)
    return AsyncEventStream(events)


async def _afilter(
    events: AsyncIterator[Event], on_event: OnEvent | None, text: bool, tool: bool, raw: bool
) -> AsyncIterator[Event]:
    try:
        async for ev in events:
            if on_event is not None:
                on_event(ev)
            t = type(ev)
            if t is TextDelta:
                if not text:
                    continue
            elif t is ToolCallDelta:
                if not tool:
                    continue
            elif t is RawChunk and not raw and ev.usage is None:  # type: ignore[union-attr]
                continue
            yield ev
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


async def agenerate(engine: Engine, request: RequestLike, *, api_key: str | None = None, **options: Any) -> Response:
    """The async twin of :func:`generate`: a fold over :func:`astream_generate`."""
    collector = Collector(new_request_id())
    apply = collector.apply
    stream = astream_generate(engine, request, api_key=api_key, **options)
    try:
        async for ev in stream:
            apply(ev)
    finally:
        await stream.aclose()
    return collector.response()


# ------------------------------------------------------------------------------ model lists


def _list_plan(engine: Engine, api_key: str | None) -> Plan | list[str]:
    adapter = engine.adapter
    if isinstance(adapter, LocalAdapter):
        return [str(engine.model or getattr(adapter, "model", "fake"))]
    enc = getattr(adapter, "encode_list_models", None)
    if enc is None:
        raise EngineError(f"{type(adapter).__name__} cannot list models", reason="unsupported_operation")
    call = enc()
    spec = adapter.key_spec
    key = keys.resolve(spec.provider, spec.env, api_key, required=spec.required)
    headers = dict(call.headers)
    headers.update(adapter.auth_headers(key))
    from ._transport import Plan

    return Plan(adapter, call, headers, key, retry=engine.retry, timeouts=engine.timeouts)


def list_models(engine: Engine, *, api_key: str | None = None) -> list[str]:
    """The model ids the engine's provider offers (``GET /models`` or its equivalent).

    Raises :class:`~allm.errors.AdapterError` on a provider error and
    :class:`~allm.errors.EngineError` (``unsupported_operation``) for an adapter
    that cannot list models.
    """
    plan = _list_plan(engine, api_key)
    if isinstance(plan, list):
        return plan
    from ._transport import fetch

    return fetch(plan, plan.adapter.decode_list_models)  # type: ignore[attr-defined]


async def alist_models(engine: Engine, *, api_key: str | None = None) -> list[str]:
    """The async twin of :func:`list_models`."""
    plan = _list_plan(engine, api_key)
    if isinstance(plan, list):
        return plan
    from ._transport import afetch

    return await afetch(plan, plan.adapter.decode_list_models)  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------ embeddings


def _embed_plans(
    engine: Engine, texts: Sequence[str], model: str | None, dimensions: int | None, api_key: str | None
) -> tuple[Any, list[Plan]]:
    if isinstance(texts, str):
        raise TypeError("embed() takes a list of texts; wrap a single text in a list")
    adapter = engine.adapter
    enc = getattr(adapter, "encode_embed", None)
    if enc is None or not isinstance(adapter, HttpAdapter):
        raise EngineError(f"{type(adapter).__name__} cannot embed", reason="unsupported_operation")
    model = model or engine.model
    if not model:
        raise EngineError("no embedding model: pass model= or set Engine(model=...)", reason="missing_model")
    spec = adapter.key_spec
    key = keys.resolve(spec.provider, spec.env, api_key, required=spec.required)
    size = int(getattr(adapter, "embed_batch_size", 0) or len(texts) or 1)
    from ._transport import Plan

    plans = []
    for i in range(0, len(texts), size):
        call = enc(list(texts[i : i + size]), model=model, dimensions=dimensions)
        headers = dict(call.headers)
        headers.update(adapter.auth_headers(key))
        plans.append(Plan(adapter, call, headers, key, retry=engine.retry, timeouts=engine.timeouts))
    return adapter, plans


def _join(parts: list[Embeddings], requested: str | None) -> Embeddings:
    vectors: list[tuple[float, ...]] = []
    usage = Usage()
    model = None
    for p in parts:
        vectors.extend(p.vectors)
        usage = usage + p.usage
        model = model or p.model
    return Embeddings(tuple(vectors), model or requested, usage)


def embed(
    engine: Engine,
    texts: Sequence[str],
    *,
    model: str | None = None,
    dimensions: int | None = None,
    api_key: str | None = None,
) -> Embeddings:
    """Embed ``texts`` (a list of strings): one vector per text, in order.

    Lists longer than the provider's batch size are sent in several requests;
    ``usage`` sums them. ``model`` defaults to the engine's; ``dimensions`` asks for
    shorter vectors where the provider supports it. Raises
    :class:`~allm.errors.AdapterError` on a provider error and
    :class:`~allm.errors.EngineError` (``unsupported_operation``) for an adapter
    without embeddings.
    """
    adapter, plans = _embed_plans(engine, texts, model, dimensions, api_key)
    if not plans:
        return Embeddings((), model or engine.model, Usage())
    from ._transport import fetch

    return _join([fetch(p, adapter.decode_embed) for p in plans], plans[0].call.model)


async def aembed(
    engine: Engine,
    texts: Sequence[str],
    *,
    model: str | None = None,
    dimensions: int | None = None,
    api_key: str | None = None,
) -> Embeddings:
    """The async twin of :func:`embed` (batches are sent concurrently)."""
    adapter, plans = _embed_plans(engine, texts, model, dimensions, api_key)
    if not plans:
        return Embeddings((), model or engine.model, Usage())
    import asyncio

    from ._transport import afetch

    parts = await asyncio.gather(*(afetch(p, adapter.decode_embed) for p in plans))
    return _join(list(parts), plans[0].call.model)
