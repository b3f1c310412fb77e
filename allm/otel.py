"""OpenTelemetry spans and metrics for every call allm makes (the ``allm[otel]`` extra).

::

    import allm.otel
    allm.otel.instrument()        # the global tracer and meter providers

It follows the OpenTelemetry semantic conventions for generative AI, version 1.41.0
(``docs/gen-ai/``: client spans, agent spans, metrics; still marked *development*), plus
``gen_ai.request.stream`` and ``gen_ai.response.time_to_first_chunk`` from the GenAI
conventions' current draft. :data:`SEMCONV_VERSION` names it; :data:`SCHEMA_URL` is the
tracer's and meter's schema.

Spans (see ``guides/observability.md`` for every attribute):

=====================================  ===========  =============================================
``chat {model}``                       CLIENT       one model call (``generate``, ``stream_generate``,
                                                    each turn of the tool loop)
``invoke_agent``                       INTERNAL     the tool loop (``chat``/``stream``; ``step``)
``execute_tool {name}``                INTERNAL     one tool handler run by the loop
``embeddings {model}``                 CLIENT       ``embed``
``generate_content {model}``           CLIENT       image generation, edits, variations
``count_tokens {model}``               CLIENT       ``count_tokens``
``list_models``                        CLIENT       ``list_models``
=====================================  ===========  =============================================

A chat's span contains its model calls and tool runs; what a tool handler does (its own
spans, nested allm calls) is inside its ``execute_tool`` span, in its pool thread or
task alike. A streamed call's span ends when the stream ends or is closed
(``allm.cancelled``); each retry is a ``gen_ai.client.retry`` span event.

Metrics: ``gen_ai.client.operation.duration`` (s), ``gen_ai.client.token.usage``
(``{token}``, model calls and embeddings only, so a chat's tokens are not counted
twice) and ``gen_ai.client.operation.time_to_first_chunk`` (s, streamed model calls),
with the convention's bucket boundaries.

Content — ``gen_ai.input.messages``, ``gen_ai.output.messages``,
``gen_ai.system_instructions``, ``gen_ai.tool.call.arguments``/``result`` — is recorded
only with ``capture_content=True`` (or the environment variable
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``). Without it no content
reaches a span in any form: errors are recorded by their reason (``error.type``) only,
never by message or exception event, since a provider's error message may quote the
prompt. Keys never reach a span: the server is named by host and port only.

``legacy_system=True`` also writes the older ``gen_ai.system`` attribute (conventions
1.36 and before) next to ``gen_ai.provider.name``.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from . import telemetry
from .errors import redact
from .telemetry import Record
from .types import ImagePart, Message, ReasoningPart, Request, TextPart, Usage

try:
    from opentelemetry import context as otel_context
    from opentelemetry import metrics as otel_metrics
    from opentelemetry import propagate, trace
    from opentelemetry.trace import Span, SpanKind, Status, StatusCode
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError("allm.otel needs the otel extra: pip install 'allm[otel]'") from exc

__all__ = [
    "DURATION_BUCKETS",
    "SCHEMA_URL",
    "SEMCONV_VERSION",
    "TOKEN_BUCKETS",
    "OpenTelemetry",
    "instrument",
    "ServerSpan",
    "server_span",
    "start_server_span",
    "uninstrument",
]

#: The version of the GenAI semantic conventions followed.
SEMCONV_VERSION = "1.41.0"
SCHEMA_URL = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"
#: ``gen_ai.client.operation.duration`` and ``time_to_first_chunk`` buckets (seconds).
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
#: ``gen_ai.client.token.usage`` buckets (tokens).
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
#: The environment variable that turns content capture on (``true``; any other value but
#: ``false``/``0``/``no``/empty, such as ``span_only``, counts as on).
CAPTURE_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"

#: allm provider names -> ``gen_ai.provider.name`` well-known values (others pass through).
PROVIDER_NAMES = {"gemini": "gcp.gemini", "openai": "openai", "anthropic": "anthropic"}

_CLIENT_KINDS = frozenset({"generate", "stream", "embed", "list_models", "count_tokens", "image"})
_TOKEN_KINDS = frozenset({"generate", "stream", "embed", "count_tokens", "image"})
_REQUEST_KINDS = frozenset({"generate", "stream", "chat", "step", "count_tokens"})


def _capture_default() -> bool:
    v = os.environ.get(CAPTURE_ENV, "").strip().lower()
    return v not in ("", "false", "0", "no", "off", "no_content")


class OpenTelemetry:
    """A :mod:`allm.telemetry` handler that turns records into OpenTelemetry spans and metrics.

    - ``tracer_provider``, ``meter_provider``: default to the global ones.
    - ``capture_content``: record messages, system instructions and tool arguments and
      results (opt-in; default from :data:`CAPTURE_ENV`).
    - ``legacy_system``: also write ``gen_ai.system``.
    - ``metrics=False``: spans only (the histogram records are about half of the SDK's work
      per call; a backend that derives metrics from spans does not need them).

    Attach it with :func:`instrument` (or ``allm.telemetry.add_handler`` /
    ``allm.telemetry.scope``). Spans of operations that never end (a stream dropped
    without being closed) are not kept forever: see :attr:`max_open`.
    """

    #: Open spans kept at most; past it the oldest are ended (``allm.abandoned``).
    max_open = 100_000

    def __init__(
        self,
        *,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        capture_content: bool | None = None,
        legacy_system: bool = False,
        metrics: bool = True,
    ) -> None:
        from . import __version__

        self.metrics = metrics
        self.capture_content = _capture_default() if capture_content is None else capture_content
        self.legacy_system = legacy_system
        self.tracer = trace.get_tracer("allm", __version__, tracer_provider, schema_url=SCHEMA_URL)
        meter = otel_metrics.get_meter("allm", __version__, meter_provider, schema_url=SCHEMA_URL)
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
        self.tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=list(TOKEN_BUCKETS),
        )
        self.first_chunk = meter.create_histogram(
            "gen_ai.client.operation.time_to_first_chunk",
            unit="s",
            description="Time to receive the first chunk of a streamed response.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
        self._spans: dict[int, Span] = {}
        self._contexts: dict[int, Any] = {}  # a parent span's context, made once for its children
        # Attribute dicts and names repeat from call to call: each is built once (bounded caches;
        # the SDK copies what it is given, so one dict serves every span or point).
        self._names: dict[tuple[Any, ...], str] = {}
        self._commons: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._points: dict[tuple[Any, ...], tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]] = {}

    # -- the handler

    def __call__(self, record: Record) -> None:
        phase = record.phase
        if phase == "start":
            self._start(record)
        elif phase == "retry":
            span = self._spans.get(record.id)
            if span is not None:
                span.add_event(
                    "gen_ai.client.retry",
                    {
                        "allm.retry.attempt": record.attempt or 0,
                        "allm.retry.delay": record.retry_delay or 0.0,
                        "error.type": record.error_reason or "_OTHER",
                    },
                )
        else:
            self._end(record)

    def activate(self, record: Record) -> Callable[[], None] | None:
        """Make the operation's span current in this context (for code run inside a tool)."""
        span = self._spans.get(record.id)
        if span is None:
            return None
        token = otel_context.attach(trace.set_span_in_context(span))
        return lambda: otel_context.detach(token)

    # -- spans

    def _name(self, r: Record) -> str:
        key = (r.kind, r.operation, r.tool_name if r.kind == "tool" else r.model)
        name = self._names.get(key)
        if name is None:
            op = r.operation or r.kind
            if r.kind == "tool":
                name = f"{op} {r.tool_name}"
            elif r.kind in ("chat", "step", "list_models") or not r.model:
                name = op
            else:
                name = f"{op} {r.model}"
            _bounded(self._names)[key] = name
        return name

    def _common(self, r: Record) -> dict[str, Any]:
        """The attributes a span and its metric points share (one dict per distinct set: do not
        change it)."""
        key = (r.kind, r.operation, r.provider, r.model, r.server_address, r.server_port)
        a = self._commons.get(key)
        if a is None:
            a = {"gen_ai.operation.name": r.operation or r.kind}
            if r.provider and r.kind != "tool":
                provider = PROVIDER_NAMES.get(r.provider, r.provider)
                a["gen_ai.provider.name"] = provider
                if self.legacy_system:
                    a["gen_ai.system"] = provider
            if r.model and r.kind != "tool":
                a["gen_ai.request.model"] = r.model
            if r.server_address:
                a["server.address"] = r.server_address
                if r.server_port is not None:
                    a["server.port"] = r.server_port
            _bounded(self._commons)[key] = a
        return a

    def _start(self, r: Record) -> None:
        parent_id = r.parent_id
        ctx = None
        if parent_id is not None:
            ctx = self._contexts.get(parent_id)
            if ctx is None:
                parent = self._spans.get(parent_id)
                if parent is not None:
                    ctx = self._contexts[parent_id] = trace.set_span_in_context(parent)
        a = self._common(r).copy()
        if r.session_id:
            a["gen_ai.conversation.id"] = r.session_id
        if r.request_id:
            a["allm.request_id"] = r.request_id
        if r.stream is not None:
            a["gen_ai.request.stream"] = r.stream
        kind = r.kind
        if kind == "tool":
            a["gen_ai.tool.name"] = r.tool_name or ""
            if r.tool_call_id:
                a["gen_ai.tool.call.id"] = r.tool_call_id
            a["gen_ai.tool.type"] = "function"
            if self.capture_content and r.tool_arguments is not None:
                a["gen_ai.tool.call.arguments"] = _json(r.tool_arguments)
        elif kind == "image":
            a["gen_ai.output.type"] = "image"
            if r.image_operation:
                a["allm.image.operation"] = r.image_operation
        if kind in _REQUEST_KINDS:
            req = r.request
            if req is not None:
                _request_attributes(req, a)
                if self.capture_content:
                    a.update(_input_content(req))
        span = self.tracer.start_span(
            self._name(r), context=ctx, kind=SpanKind.CLIENT if kind in _CLIENT_KINDS else SpanKind.INTERNAL, attributes=a
        )
        spans = self._spans
        if len(spans) >= self.max_open:
            for key in list(spans)[: max(1, len(spans) // 10)]:
                old = spans.pop(key)
                self._contexts.pop(key, None)
                old.set_attribute("allm.abandoned", True)
                old.end()
        spans[r.id] = span

    def _end(self, r: Record) -> None:
        span = self._spans.pop(r.id, None)
        if span is None:
            return
        self._contexts.pop(r.id, None)
        kind = r.kind
        a: dict[str, Any] = {}
        if r.server_address and kind not in ("generate", "stream"):  # a plain exchange learns its host on the way
            a["server.address"] = r.server_address
            if r.server_port is not None:
                a["server.port"] = r.server_port
        if r.response_id:
            a["gen_ai.response.id"] = r.response_id
        if r.response_model:
            a["gen_ai.response.model"] = r.response_model
        if r.finish_reason:
            if kind in ("chat", "step"):
                a["allm.halted_reason"] = r.finish_reason
            else:
                a["gen_ai.response.finish_reasons"] = (r.finish_reason,)
        u = r.usage
        if u is not None:
            _usage_attributes(u, a)
        if r.stream and r.time_to_first_event is not None:
            a["gen_ai.response.time_to_first_chunk"] = r.time_to_first_event
        if r.attempts is not None and r.attempts > 1:
            a["allm.attempts"] = r.attempts
        if r.cancelled:
            a["allm.cancelled"] = True
        if self.capture_content:
            if r.output is not None:
                a["gen_ai.output.messages"] = _json([_message(r.output, r.finish_reason)])
            if kind == "tool" and r.phase == "stop":
                a["gen_ai.tool.call.result"] = _json(r.tool_result)
        if r.phase == "exception":
            a["error.type"] = r.error_reason or "_OTHER"
            description = r.error_reason or "_OTHER"
            if self.capture_content and r.error is not None:
                description = redact(str(r.error))
            span.set_status(Status(StatusCode.ERROR, description))
        if a:
            span.set_attributes(a)
        span.end()
        if self.metrics and _metered(self.duration):
            self._record_metrics(r)

    # -- metrics

    def _record_metrics(self, r: Record) -> None:
        error = (r.error_reason or "_OTHER") if r.phase == "exception" else None
        key = (r.kind, r.operation, r.provider, r.model, r.server_address, r.server_port, r.response_model, error)
        points = self._points.get(key)
        if points is None:
            base = self._common(r).copy()
            if r.response_model:
                base["gen_ai.response.model"] = r.response_model
            with_error = base if error is None else {**base, "error.type": error}
            points = (
                with_error,
                base,
                {**base, "gen_ai.token.type": "input"},
                {**base, "gen_ai.token.type": "output"},
            )
            _bounded(self._points)[key] = points
        if r.duration is not None:
            self.duration.record(r.duration, points[0])
        if r.stream and r.time_to_first_event is not None:  # streamed calls only, as the conventions say
            self.first_chunk.record(r.time_to_first_event, points[1])
        u = r.usage
        if u is not None and r.kind in _TOKEN_KINDS:
            if u.input_tokens is not None:
                self.tokens.record(u.input_tokens, points[2])
            if u.output_tokens is not None and r.kind != "count_tokens":
                self.tokens.record(u.output_tokens, points[3])


def _metered(histogram: Any) -> bool:
    """Whether ``histogram`` records anywhere: not with no meter provider set (the API's
    proxy, with no real instrument behind it yet) or a no-op one. Checked per operation,
    since a meter provider may be set after :func:`instrument`."""
    real = getattr(histogram, "_real_instrument", histogram)
    return real is not None and not isinstance(real, otel_metrics.NoOpHistogram)


def _bounded(cache: dict[Any, Any], limit: int = 1024) -> dict[Any, Any]:
    """``cache``, emptied first when it holds ``limit`` entries (model names or hosts that never
    repeat cannot grow it without end)."""
    if len(cache) >= limit:
        cache.clear()
    return cache


# ------------------------------------------------------------------------------ attributes


_SAMPLING = (
    ("temperature", "gen_ai.request.temperature"),
    ("top_p", "gen_ai.request.top_p"),
    ("top_k", "gen_ai.request.top_k"),
    ("max_tokens", "gen_ai.request.max_tokens"),
    ("seed", "gen_ai.request.seed"),
    ("frequency_penalty", "gen_ai.request.frequency_penalty"),
    ("presence_penalty", "gen_ai.request.presence_penalty"),
)


def _request_attributes(req: Request, a: dict[str, Any]) -> None:
    """The request's sampling settings and output type, into ``a``."""
    for field, name in _SAMPLING:
        v = getattr(req, field)
        if v is not None:
            a[name] = v
    if req.stop_sequences:
        a["gen_ai.request.stop_sequences"] = tuple(req.stop_sequences)
    if req.response_format is not None:
        a["gen_ai.output.type"] = "json"


def _usage_attributes(u: Usage, a: dict[str, Any]) -> None:
    """The token counts reported, into ``a``."""
    if u.input_tokens is not None:
        a["gen_ai.usage.input_tokens"] = u.input_tokens
    if u.output_tokens is not None:
        a["gen_ai.usage.output_tokens"] = u.output_tokens
    if u.cached_input_tokens is not None:
        a["gen_ai.usage.cache_read.input_tokens"] = u.cached_input_tokens
    if u.cache_write_input_tokens is not None:
        a["gen_ai.usage.cache_creation.input_tokens"] = u.cache_write_input_tokens


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _parts(m: Message) -> list[dict[str, Any]]:
    """A message's parts in the conventions' message schema."""
    parts: list[dict[str, Any]] = []
    if m.role == "tool":
        return [{"type": "tool_call_response", "id": m.tool_call_id, "response": m.text}]
    content = m.content
    if isinstance(content, str):
        if content:
            parts.append({"type": "text", "content": content})
    else:
        for p in content:
            if isinstance(p, TextPart):
                parts.append({"type": "text", "content": p.text})
            elif isinstance(p, ReasoningPart):
                parts.append({"type": "reasoning", "content": p.text})
            elif isinstance(p, ImagePart):
                img = p.image
                url = getattr(img, "url", None)
                if url:
                    parts.append({"type": "uri", "modality": "image", "uri": url})
                else:
                    parts.append({"type": "blob", "modality": "image", "mime_type": getattr(img, "media_type", None)})
    for c in m.tool_calls:
        parts.append({"type": "tool_call", "id": c.id, "name": c.name, "arguments": dict(c.arguments)})
    return parts


def _message(m: Message, finish_reason: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "parts": _parts(m)}
    if m.role == "assistant" and finish_reason is not None:
        out["finish_reason"] = finish_reason
    return out


def _input_content(req: Request) -> dict[str, Any]:
    system = [m for m in req.messages if m.role == "system"]
    rest = [m for m in req.messages if m.role != "system"]
    a: dict[str, Any] = {"gen_ai.input.messages": _json([_message(m) for m in rest])}
    if system:
        a["gen_ai.system_instructions"] = _json([p for m in system for p in _parts(m)])
    return a


# ------------------------------------------------------------------------------ attaching

_installed: OpenTelemetry | None = None


def instrument(
    *,
    tracer_provider: Any = None,
    meter_provider: Any = None,
    capture_content: bool | None = None,
    legacy_system: bool = False,
    metrics: bool = True,
) -> OpenTelemetry:
    """Attach an :class:`OpenTelemetry` handler to every call of the process (replacing one
    attached before by this function); returns it."""
    global _installed
    uninstrument()
    _installed = OpenTelemetry(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        capture_content=capture_content,
        legacy_system=legacy_system,
        metrics=metrics,
    )
    telemetry.add_handler(_installed)
    return _installed


def uninstrument() -> None:
    """Detach the handler :func:`instrument` attached (no-op without one)."""
    global _installed
    if _installed is not None:
        telemetry.remove_handler(_installed)
        _installed = None


class ServerSpan:
    """One incoming request's ``SERVER`` span (see :func:`start_server_span`)."""

    __slots__ = ("span",)

    def __init__(self, span: Span) -> None:
        self.span = span

    @contextlib.contextmanager
    def current(self) -> Iterator[Span]:
        """Make the span current in this block: allm calls made here, and tasks started here
        (they copy the context), are inside it."""
        token = otel_context.attach(trace.set_span_in_context(self.span))
        try:
            yield self.span
        finally:
            otel_context.detach(token)

    def end(self, error_type: str | None = None) -> None:
        """End the span; ``error_type`` (a low-cardinality code, never a message) marks a failure."""
        if error_type is not None:
            self.span.set_attribute("error.type", error_type)
            self.span.set_status(Status(StatusCode.ERROR, error_type))
        self.span.end()


def start_server_span(
    method: str,
    route: str,
    headers: Mapping[str, str],
    *,
    tracer_provider: Any = None,
    attributes: Mapping[str, Any] | None = None,
) -> ServerSpan:
    """Start the ``SERVER`` span of one incoming HTTP request of a server built on allm, joined
    to the caller's trace: its W3C ``traceparent``/``tracestate`` (and ``baggage``) headers are
    read through the global propagator. ``route`` is the low-cardinality path template
    (``/v1/responses``). The span is named ``{method} {route}``.

    The hook a server calls per request: run the request's work inside
    :meth:`ServerSpan.current` (a response that streams or runs in the background keeps the
    span through the task it starts there) and call :meth:`ServerSpan.end` when the response
    is over. :func:`server_span` does both around one block.
    """
    from . import __version__

    tracer = trace.get_tracer("allm.server", __version__, tracer_provider, schema_url=SCHEMA_URL)
    carrier = {k.lower(): v for k, v in headers.items() if k.lower() in ("traceparent", "tracestate", "baggage")}
    a: dict[str, Any] = {"http.request.method": method, "http.route": route}
    if attributes:
        a.update(attributes)
    span = tracer.start_span(f"{method} {route}", context=propagate.extract(carrier), kind=SpanKind.SERVER, attributes=a)
    return ServerSpan(span)


@contextlib.contextmanager
def server_span(
    method: str, route: str, headers: Mapping[str, str], *, tracer_provider: Any = None
) -> Iterator[Span]:
    """:func:`start_server_span` around one block, current inside it; an exception ends it as a
    failure named by the exception's class only (a message may quote the request)::

        with allm.otel.server_span("POST", "/v1/responses", request.headers):
            ...
    """
    s = start_server_span(method, route, headers, tracer_provider=tracer_provider)
    try:
        with s.current() as span:
            yield span
    except BaseException as exc:
        s.end(type(exc).__name__)
        raise
    s.end()
