"""The call surface: ``generate`` and ``stream_generate``, ``embed``, ``list_models``,
``count_tokens``, sync and async.

``generate`` is a fold over ``stream_generate`` (:class:`~allm.fold.Collector`);
``agenerate`` folds ``astream_generate``. There is no second code path: a
non-streaming HTTP body, when asked for with ``http_streaming=False``, is decoded
into the same events, and a local adapter (the Fake) goes through the same call
machine (:mod:`allm.machine`).

Preparing a call is pure (resolve model, defaults and tools; encode; resolve the
key: :func:`allm.plan.plan_call`) and happens when the function is called, so a
missing key or an invalid request raises at once. I/O starts when the stream is
iterated. Each async function is the same plan performed by the async shell.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypedDict, TypeVar, Unpack

import attrs

from . import telemetry as _tel
from .engine import Engine, merge_tools
from .errors import AllmError, EngineError, ValidationError, scrub
from .events import Event
from .fold import Collector, afold
from .ids import new_request_id
from .plan import Exchanges, Plan, adapter_kind, plan_call
from .policy import RetryInfo, RetryPolicy, Timeouts
from .providers.base import CountsTokens, Embeds, ListsModels
from .streams import AsyncEventStream, EventStream
from .types import Embeddings, Message, Request, Response, Thread, Usage
from .types import request as make_request

__all__ = [
    "AsyncEventStream",
    "EmbedOptions",
    "EventStream",
    "GenerateOptions",
    "acount_tokens",
    "aembed",
    "agenerate",
    "alist_models",
    "astream_generate",
    "count_tokens",
    "embed",
    "generate",
    "list_models",
    "stream_generate",
]

RequestLike = Request | Thread | Sequence[Message] | str
T = TypeVar("T")
OnEvent = Callable[[Event], None]


class GenerateOptions(TypedDict, total=False):
    """Keyword options of :func:`stream_generate`, :func:`generate` and their async twins.

    - ``api_key``: this call's key (see :mod:`allm.keys` for the others).
    - ``emit_text_deltas`` / ``emit_tool_deltas``: ``False`` drops ``TextDelta`` /
      ``ToolCallDelta`` (completed events still arrive).
    - ``include_raw_chunks``: also yield each provider chunk as ``RawChunk``
      (chunks carrying usage always pass).
    - ``on_event``: called with every adapter event before filtering.
    - ``retry``, ``timeouts``: override the engine's (``retry=False``: no retries);
      ``on_retry`` sees each retry
      (attempt, delay in seconds, error) before the sleep.
    - ``http_streaming=False``: ask the provider for one JSON body instead of SSE
      (decoded into the same events).
    """

    api_key: str | None
    emit_text_deltas: bool
    emit_tool_deltas: bool
    include_raw_chunks: bool
    on_event: OnEvent | None
    retry: RetryPolicy | bool | None
    timeouts: Timeouts | None
    on_retry: Callable[[RetryInfo], None] | None
    http_streaming: bool


#: The names of :class:`GenerateOptions` (the tool loop passes these through to each call).
GENERATE_OPTIONS = frozenset(GenerateOptions.__annotations__)


# ------------------------------------------------------------------------------ preparation


def resolve_request(engine: Engine, request: RequestLike) -> Request:
    """The request as it will be sent: engine model, defaults and tools filled in."""
    if not isinstance(request, Request):
        request = make_request(request)
    changes: dict[str, Any] = {}
    if request.model is None and engine.model is not None:
        changes["model"] = engine.model
    changes.update(engine.defaults_for(request))
    if engine.tools:
        changes["tools"] = merge_tools(engine.tools, request.tools)
    return attrs.evolve(request, **changes) if changes else request


def _engine(engine: Any) -> Engine:
    if not isinstance(engine, Engine):
        raise TypeError(f"expected an allm.Engine, got {type(engine).__name__}")
    return engine


def prepare(engine: Engine, request: RequestLike, *, resolved: bool = False, **options: Unpack[GenerateOptions]) -> Plan:
    """The plan of one model call (see :func:`allm.plan.plan_call`). Raises pre-flight errors.

    ``resolved=True``: ``request`` already went through :func:`resolve_request` (the
    tool loop resolves each turn's request once).
    """
    unknown = set(options) - GENERATE_OPTIONS
    if unknown:
        raise TypeError(f"unknown option(s) {sorted(unknown)}; see allm.api.GenerateOptions")
    adapter = _engine(engine).adapter
    req = request if resolved and isinstance(request, Request) else resolve_request(engine, request)
    kind = adapter_kind(adapter)
    if kind == "":
        raise EngineError(f"{type(adapter).__name__} is not an allm adapter", reason="missing_adapter")
    call = None
    if kind == "http":
        if not req.model:
            raise EngineError("no model: set Engine(model=...) or the request's model", reason="missing_model")
        call = adapter.encode(req, stream=options.get("http_streaming", True))  # type: ignore[union-attr]
    return plan_call(
        engine,
        call,
        request=req if call is None else None,
        api_key=options.get("api_key"),
        retry=options.get("retry"),
        timeouts=options.get("timeouts"),
        on_retry=options.get("on_retry"),
        include_raw=options.get("include_raw_chunks", False),
        emit_text=options.get("emit_text_deltas", True),
        emit_tool=options.get("emit_tool_deltas", True),
        on_event=options.get("on_event"),
    )


# ------------------------------------------------------------------------------ model calls


def stream_generate(engine: Engine, request: RequestLike, **options: Unpack[GenerateOptions]) -> EventStream:
    """Stream one model call as events (see :mod:`allm.events` for the order).

    ``request``: a :class:`~allm.types.Request`, a thread, a list of messages or a
    prompt string. ``options``: :class:`GenerateOptions` (``api_key``, event filters,
    ``retry``, ``timeouts``, ``on_retry``, ``http_streaming``).

    Raises at call time :class:`~allm.errors.EngineError` (no key, no model) and
    :class:`~allm.errors.ValidationError` (invalid request). While iterating, raises
    :class:`~allm.errors.AdapterError` if the call fails before any event (after
    retries); a later failure arrives as an ``Error`` event that ends the stream.
    """
    return open_stream(engine, request, options)


def astream_generate(engine: Engine, request: RequestLike, **options: Unpack[GenerateOptions]) -> AsyncEventStream:
    """The async twin of :func:`stream_generate` (same options, same events, same errors)."""
    return open_astream(engine, request, options)


def open_stream(
    engine: Engine,
    request: RequestLike,
    options: Mapping[str, Any],
    *,
    resolved: bool = False,
    kind: str = "stream",
    request_id: str | None = None,
) -> EventStream:
    """:func:`stream_generate` with its options as a mapping (``resolved``: see :func:`prepare`;
    ``kind`` and ``request_id``: what telemetry records call it)."""
    from ._transport import run

    # ``direct`` while a handler listens: the observing layer (or the shell) closes the response
    # itself, so a for loop needs no closing wrapper around it, one layer less per event
    return EventStream(_events(engine, request, options, resolved, kind, request_id, run, _tel.observe), direct=_tel.active)


def open_astream(
    engine: Engine,
    request: RequestLike,
    options: Mapping[str, Any],
    *,
    resolved: bool = False,
    kind: str = "stream",
    request_id: str | None = None,
) -> AsyncEventStream:
    """:func:`astream_generate` with its options as a mapping (see :func:`open_stream`)."""
    from ._transport import arun

    return AsyncEventStream(_events(engine, request, options, resolved, kind, request_id, arun, _tel.aobserve))


def _events(
    engine: Engine,
    request: RequestLike,
    options: Mapping[str, Any],
    resolved: bool,
    kind: str,
    request_id: str | None,
    shell: Callable[[Plan], Any],
    observe: Callable[[Any, Any], Any],
) -> Any:
    """The shell's events of the call; while a telemetry handler listens, observed as they pass."""
    if _tel.active:
        plan, op = _tel.open_model_call(engine, request, options, resolved, kind, request_id, prepare, resolve_request)
        return shell(plan) if op is None else observe(op, shell(plan))
    return shell(prepare(engine, request, resolved=resolved, **options))


def generate(engine: Engine, request: RequestLike, **options: Unpack[GenerateOptions]) -> Response:
    """One model call, folded into a :class:`~allm.types.Response`.

    Exactly ``Collector().fold(stream_generate(engine, request, ...))``; takes the
    same keyword options. Raises what :func:`stream_generate` raises; a failure after
    the stream began gives a response with ``finish_reason="error"``, the partial
    output and ``metadata["error"]``.
    """
    collector = Collector(new_request_id())
    if _tel.active:  # observed as it is folded: no layer per event (see telemetry.fold)
        from ._transport import run

        plan, op = _tel.open_model_call(engine, request, options, False, "generate", collector.request_id, prepare, resolve_request)
        _tel.fold(op, run(plan), collector)
        return collector.response()
    apply = collector.apply
    for ev in open_stream(engine, request, options, kind="generate", request_id=collector.request_id):
        apply(ev)
    return collector.response()


async def agenerate(engine: Engine, request: RequestLike, **options: Unpack[GenerateOptions]) -> Response:
    """The async twin of :func:`generate`: a fold over :func:`astream_generate`."""
    collector = Collector(new_request_id())
    if _tel.active:  # as in generate
        from ._transport import arun

        plan, op = _tel.open_model_call(engine, request, options, False, "generate", collector.request_id, prepare, resolve_request)
        await _tel.afold(op, arun(plan), collector)
        return collector.response()
    events = open_astream(engine, request, options, kind="generate", request_id=collector.request_id)
    response: Response = await afold(collector, events)
    return response


# ------------------------------------------------------------------------------ plain exchanges


def perform(op: Exchanges[T]) -> T:
    """Make ``op``'s calls one after the other and finish it (errors scrubbed of the key)."""
    from ._transport import iter_once

    return _finished(op, [iter_once(p) for p in op.plans])


async def aperform(op: Exchanges[T]) -> T:
    """The async twin of :func:`perform`: the calls are made concurrently."""
    import asyncio

    from ._transport import aiter_once

    return _finished(op, list(await asyncio.gather(*(aiter_once(p) for p in op.plans))))


def _finished(op: Exchanges[T], answers: list[tuple[int, Mapping[str, str], bytes]]) -> T:
    try:
        return op.finish(answers)
    except AllmError as exc:
        raise scrub(exc, op.plans[0].secret if op.plans else None) from None


def _capable(engine: Engine, capability: type[Any], what: str) -> Any:
    adapter = _engine(engine).adapter
    if not isinstance(adapter, capability):
        raise EngineError(f"{type(adapter).__name__} cannot {what}", reason="unsupported_operation")
    return adapter


def _bodies(decode: Callable[[bytes], Any]) -> Callable[[list[tuple[int, Mapping[str, str], bytes]]], list[Any]]:
    return lambda answers: [decode(body) for _status, _headers, body in answers]


def list_models_op(engine: Engine, api_key: str | None = None) -> Exchanges[list[str]]:
    """The model list of the engine's provider, as :class:`~allm.plan.Exchanges`."""
    adapter = _engine(engine).adapter
    own = [str(engine.model or getattr(adapter, "model", "fake"))]
    if adapter_kind(adapter) == "local" and not isinstance(adapter, ListsModels):
        return Exchanges([], lambda _: own)
    adapter = _capable(engine, ListsModels, "list models")
    plan = plan_call(engine, adapter.encode_list_models(), api_key=api_key, once=True)
    local = plan.respond  # a local adapter with no scripted list lists the engine's model
    return Exchanges([plan], lambda answers: adapter.decode_list_models(answers[0][2]) or (own if local else []))


@_tel.exchange("list_models")
def list_models(engine: Engine, *, api_key: str | None = None) -> list[str]:
    """The model ids the engine's provider offers (``GET /models`` or its equivalent).

    Raises :class:`~allm.errors.AdapterError` on a provider error and
    :class:`~allm.errors.EngineError` (``unsupported_operation``) for an adapter
    that cannot list models.
    """
    return perform(list_models_op(engine, api_key))


@_tel.exchange("list_models")
async def alist_models(engine: Engine, *, api_key: str | None = None) -> list[str]:
    """The async twin of :func:`list_models`."""
    return await aperform(list_models_op(engine, api_key))


class EmbedOptions(TypedDict, total=False):
    """Keyword options of :func:`embed`: ``model`` (default: the engine's), ``dimensions``
    (shorter vectors where the provider supports it), ``api_key``."""

    model: str | None
    dimensions: int | None
    api_key: str | None


def embed_op(engine: Engine, texts: Sequence[str], **options: Unpack[EmbedOptions]) -> Exchanges[Embeddings]:
    """:func:`embed` as :class:`~allm.plan.Exchanges`: one call per batch."""
    if isinstance(texts, str):
        raise TypeError("embed() takes a list of texts; wrap a single text in a list")
    adapter = _capable(engine, Embeds, "embed")
    model = options.get("model") or engine.model
    if not model:
        raise EngineError("no embedding model: pass model= or set Engine(model=...)", reason="missing_model")
    size = adapter.embed_batch_size or len(texts) or 1
    dims = options.get("dimensions")
    calls = [adapter.encode_embed(list(texts[i : i + size]), model=model, dimensions=dims) for i in range(0, len(texts), size)]
    used = (calls[0].model if calls else None) or model
    plans = [plan_call(engine, call, api_key=options.get("api_key"), once=True) for call in calls]
    return Exchanges(plans, lambda answers: _join(_bodies(adapter.decode_embed)(answers), used))


def _join(parts: Sequence[Embeddings], requested: str | None) -> Embeddings:
    vectors: list[tuple[float, ...]] = []
    usage = Usage()
    model = None
    for p in parts:
        vectors.extend(p.vectors)
        usage = usage + p.usage
        model = model or p.model
    return Embeddings(tuple(vectors), model or requested, usage)


@_tel.exchange("embed")
def embed(engine: Engine, texts: Sequence[str], **options: Unpack[EmbedOptions]) -> Embeddings:
    """Embed ``texts`` (a list of strings): one vector per text, in order.

    Lists longer than the provider's batch size are sent in several requests;
    ``usage`` sums them. ``options``: :class:`EmbedOptions`. Raises
    :class:`~allm.errors.AdapterError` on a provider error and
    :class:`~allm.errors.EngineError` (``unsupported_operation``) for an adapter
    without embeddings.
    """
    return perform(embed_op(engine, texts, **options))


@_tel.exchange("embed")
async def aembed(engine: Engine, texts: Sequence[str], **options: Unpack[EmbedOptions]) -> Embeddings:
    """The async twin of :func:`embed` (batches are sent concurrently)."""
    return await aperform(embed_op(engine, texts, **options))


def count_tokens_op(engine: Engine, request: RequestLike, api_key: str | None = None) -> Exchanges[int]:
    """:func:`count_tokens` as :class:`~allm.plan.Exchanges`."""
    adapter = _capable(engine, CountsTokens, "count tokens")
    req = resolve_request(engine, request)
    if not req.model:
        raise EngineError("no model: set Engine(model=...) or the request's model", reason="missing_model")
    plan = plan_call(engine, adapter.encode_count_tokens(req), api_key=api_key, once=True)
    return Exchanges([plan], lambda answers: _count(adapter.decode_count_tokens(answers[0][2])))


@_tel.exchange("count_tokens")
def count_tokens(engine: Engine, request: RequestLike, *, api_key: str | None = None) -> int:
    """How many input tokens ``request`` would cost, as the provider counts them (no generation).

    Anthropic ``POST /v1/messages/count_tokens``, Gemini ``models/{model}:countTokens``,
    OpenAI Responses ``POST /responses/input_tokens``; the Fake counts words. Goes
    through keys, retries and deadlines like every call. Raises
    :class:`~allm.errors.EngineError` (``unsupported_operation``) for a provider without
    a counting endpoint, and :class:`~allm.errors.AdapterError` on a provider error.
    """
    return perform(count_tokens_op(engine, request, api_key))


@_tel.exchange("count_tokens")
async def acount_tokens(engine: Engine, request: RequestLike, *, api_key: str | None = None) -> int:
    """The async twin of :func:`count_tokens`."""
    return await aperform(count_tokens_op(engine, request, api_key))


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(f"the provider's token count is not a count: {value!r}", reason="invalid_request")
    return value
