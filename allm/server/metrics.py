"""Prometheus metrics and OpenTelemetry server spans for ``allm serve``: one ASGI wrapper.

:func:`instrument_app` wraps the server's ASGI app; the wrapper answers ``GET /metrics``
itself (Prometheus text format 0.0.4) and watches every other request without the app's
help: it reads the ``model`` of a ``POST /v1/responses`` body, finds the configured route
that serves it, and reads the answer as it passes (the status, the first delta of a stream,
the terminal event's ``usage`` and ``error``). Nothing is parsed but the request body and
the terminal event or JSON answer, so a streamed event costs one substring test.

Metrics (``route`` is the configured route that serves the model, ``"<index>:<provider>"``,
or ``none``; ``model`` the requested model name, at most ``max_models`` distinct values,
then ``other``):

=================================================  =========  ===================================
``allm_server_requests_total``                     counter    responses created, by ``route``,
                                                              ``model``, ``stream`` (``true``/``false``)
``allm_server_errors_total``                       counter    failed ones, by ``route``, ``model``,
                                                              ``type`` (the error ``code``:
                                                              ``rate_limit_exceeded``, ``upstream_error``
                                                              ..., ``http_<status>`` without one,
                                                              ``disconnected``, ``stream_truncated``)
``allm_server_in_flight``                          gauge      responses under way, by ``route``, ``model``
``allm_server_request_duration_seconds``           histogram  request start to last byte (s), by
                                                              ``route``, ``model``, ``stream``
``allm_server_time_to_first_token_seconds``        histogram  request start to the first output delta
                                                              of a stream (s), by ``route``, ``model``
``allm_server_tokens_total``                       counter    ``usage`` tokens, by ``route``, ``model``,
                                                              ``direction`` (``input``/``output``)
``allm_server_http_requests_total``                counter    every request, by ``method``, ``path``
                                                              (the template: ``/v1/responses/{id}``;
                                                              ``other`` for unknown paths), ``status``
=================================================  =========  ===================================

Responses made on a WebSocket (``/v1/responses`` in WebSocket mode) count in the same
metrics as streamed ones (``stream="true"``), through :meth:`ServerMetrics.observe_socket`,
a server event observer; a turn refused before its response starts is not counted.

No key, header, prompt or output text is ever a label: the labels are the route, the model
name, fixed words and status codes. Error ``type`` values are the server's own codes,
reduced to ``[a-z0-9_]`` and 48 characters.

Spans: with the ``otel`` extra installed, each request runs inside a ``SERVER`` span from
:func:`allm.otel.start_server_span` (``{method} {path}``), joined to the caller's W3C
``traceparent``; allm's own spans (``invoke_agent``, ``chat {model}``, ``execute_tool``)
nest under it. The span gets ``http.response.status_code``, ``gen_ai.request.model`` and,
on failure, ``error.type`` (the same code as the metric).

Several processes: under ``allm serve --workers N`` the workers keep their counts in one
directory (prometheus_client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``: the one the
environment names, else a temporary one made and removed by ``allm serve``), and whichever
worker answers ``GET /metrics`` reports the sum over all of them; ``in_flight`` sums the
live workers only. With that variable set, a single process reports from the directory too.
"""

from __future__ import annotations

import hmac
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from .translate import TERMINAL_EVENTS

__all__ = ["ServerMetrics", "instrument_app", "route_labeller"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The directory prometheus_client's multiprocess mode keeps every process's counts in.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: Seconds: loopback calls take milliseconds, hosted models tens of seconds.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_TERMINAL = tuple(f"event: {t}\n".encode() for t in sorted(TERMINAL_EVENTS))  # their SSE frames start so
_DELTA = b".delta\ndata:"
_CODE = re.compile(r"[^a-z0-9_]+")
_ID = re.compile(r"^[A-Za-z]+_[A-Za-z0-9]{8,}$")
_KNOWN_PATHS = frozenset(
    {
        "/v1/responses",
        "/v1/responses/{id}",
        "/v1/responses/{id}/input_items",
        "/v1/responses/{id}/cancel",
        "/v1/responses/compact",
        "/v1/models",
        "/healthz",
        "/metrics",
    }
)


def _code(value: Any) -> str:
    text = _CODE.sub("_", str(value).lower()).strip("_")[:48]
    return text or "unknown"


def path_template(path: str) -> str:
    """The low-cardinality form of a request path: id segments become ``{id}``; a path the
    server does not serve is ``other``."""
    parts = path.rstrip("/").split("/") if path != "/" else [""]
    t = "/".join("{id}" if _ID.match(p) else p for p in parts) or "/"
    return t if t in _KNOWN_PATHS else "other"


def route_labeller(config: Any) -> Callable[[str], str]:
    """``model -> route label`` for a :class:`~allm.server.config.ServerConfig` (anything with
    ``routes``, each with ``pattern`` and ``name``): ``"<index>:<name>"`` of the first route
    whose pattern is found in the model name, else ``"none"``."""
    routes: Sequence[Any] = tuple(getattr(config, "routes", ()) or ())
    cache: dict[str, str] = {}

    def label(model: str) -> str:
        found = cache.get(model)
        if found is None:
            found = "none"
            for i, r in enumerate(routes):
                if r.pattern.search(model):
                    found = f"{i}:{r.name}"
                    break
            if len(cache) < 4096:
                cache[model] = found
        return found

    return label


class ServerMetrics:
    """The server's Prometheus metrics in their own :class:`~prometheus_client.CollectorRegistry`
    (``registry``; a new one by default, so several apps in one process count apart).

    ``route_of``: ``model -> route label`` (see :func:`route_labeller`); ``max_models``:
    distinct ``model`` label values kept before the rest count as ``other``. Raises
    ``ValueError`` when ``max_models`` is not a positive int.
    """

    def __init__(
        self,
        *,
        registry: CollectorRegistry | None = None,
        route_of: Callable[[str], str] | None = None,
        max_models: int = 100,
    ) -> None:
        if isinstance(max_models, bool) or not isinstance(max_models, int) or max_models < 1:
            raise ValueError(f"max_models must be a positive int, not {max_models!r}")
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.route_of = route_of or (lambda model: "none")
        self.max_models = max_models
        self._models: set[str] = set()
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._sockets: dict[str, list[Any]] = {}  # WebSocket responses under way: labels, start, first delta
        r = self.registry
        self.requests = Counter(
            "allm_server_requests", "Responses created.", ("route", "model", "stream"), registry=r
        )
        self.errors = Counter(
            "allm_server_errors", "Responses that failed, by error code.", ("route", "model", "type"), registry=r
        )
        self.in_flight = Gauge(
            "allm_server_in_flight", "Responses under way.", ("route", "model"), registry=r, multiprocess_mode="livesum"
        )
        self.duration = Histogram(
            "allm_server_request_duration_seconds",
            "Request start to the last byte of the answer (seconds).",
            ("route", "model", "stream"),
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "allm_server_time_to_first_token_seconds",
            "Request start to the first output delta of a streamed response (seconds).",
            ("route", "model"),
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "allm_server_tokens", "Tokens reported in responses' usage.", ("route", "model", "direction"), registry=r
        )
        self.http = Counter(
            "allm_server_http_requests", "Every HTTP request, by path template.", ("method", "path", "status"), registry=r
        )

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, kept (a label set is looked up once)."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def model_label(self, model: Any) -> str:
        """``model`` as a label value: the name while fewer than ``max_models`` are known, else ``other``."""
        if not isinstance(model, str) or not model:
            return "unknown"
        if model in self._models:
            return model
        if len(self._models) >= self.max_models:
            return "other"
        self._models.add(model)
        return model

    def started(self, model: Any, stream: bool) -> tuple[str, str]:
        """Count a response starting (``requests``, ``in_flight``); its ``(route, model)`` labels."""
        labels = (self.route_of(model) if isinstance(model, str) else "none", self.model_label(model))
        self.child(self.requests, *labels, "true" if stream else "false").inc()
        self.child(self.in_flight, *labels).inc()
        return labels

    def ended(self, labels: tuple[str, str], stream: bool, seconds: float, first: float | None,
              usage: Mapping[str, Any] | None, failure: str | None) -> None:
        """Count a response :meth:`started` with ``labels`` ending after ``seconds``: its first
        output delta after ``first`` seconds (``None``: none), its ``usage`` tokens, and its
        ``failure`` (an error code; ``None``: it did not fail)."""
        self.child(self.in_flight, *labels).dec()
        self.child(self.duration, *labels, "true" if stream else "false").observe(seconds)
        if first is not None:
            self.child(self.ttft, *labels).observe(first)
        if usage is not None:
            for direction in ("input", "output"):
                n = usage.get(f"{direction}_tokens")
                if isinstance(n, int) and n > 0:
                    self.child(self.tokens, *labels, direction).inc(n)
        if failure is not None:
            self.child(self.errors, *labels, failure).inc()

    def observe_socket(self, run: Any, event: Mapping[str, Any]) -> None:
        """A server ``RunObserver`` counting the responses made on a WebSocket (runs whose
        ``live`` is set; HTTP ones are counted by :func:`instrument_app`): each counts in
        ``requests`` (``stream="true"``), ``in_flight``, ``duration`` (first event to the
        terminal one), ``ttft``, ``tokens`` and, when it fails, ``errors``. A turn refused
        before its response starts is not counted."""
        if not getattr(run, "live", False):
            return
        now = time.perf_counter()
        kind = event.get("type")
        state = self._sockets.get(run.id)
        if state is None:  # its first event: labels, start, first delta
            state = self._sockets[run.id] = [self.started(getattr(getattr(run, "params", None), "model", None), True), now, None]
        if state[2] is None and isinstance(kind, str) and kind.endswith(".delta"):
            state[2] = now
        if kind not in TERMINAL_EVENTS:
            return
        del self._sockets[run.id]
        watch = _Watch()
        watch.terminal(event.get("response"))
        labels, start, first = state
        self.ended(labels, True, now - start, None if first is None else first - start, watch.usage, watch.error)

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format; with ``PROMETHEUS_MULTIPROC_DIR`` set,
        the counts of every process writing to that directory, summed."""
        if os.environ.get(MULTIPROC_ENV):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)


def _tracing() -> bool:
    """Whether a global tracer provider is set (without one every span is a no-op: skip it)."""
    from opentelemetry import trace

    return not isinstance(trace.get_tracer_provider(), (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


def _load_otel() -> Any:
    try:
        from .. import otel
    except ImportError:  # the otel extra is not installed
        return None
    return otel


class _Watch:
    """What one ``POST /v1/responses`` shows on its way out."""

    __slots__ = ("done", "error", "first", "json_body", "status", "stream", "usage")

    def __init__(self) -> None:
        self.status = 0
        self.stream = False
        self.first: float | None = None
        self.done = False
        self.error: str | None = None
        self.usage: Mapping[str, Any] | None = None
        self.json_body: list[bytes] | None = None

    def terminal(self, response: Any) -> None:
        self.done = True
        if not isinstance(response, Mapping):
            return
        usage = response.get("usage")
        if isinstance(usage, Mapping):
            self.usage = usage
        if response.get("status") == "failed":
            err = response.get("error")
            code = err.get("code") if isinstance(err, Mapping) else None
            self.error = _code(code or "failed")

    def chunk(self, body: bytes, now: float) -> None:
        if self.stream:
            if self.first is None and _DELTA in body:
                self.first = now
            if b"\n\nevent: " in body:  # several whole frames in one write
                for frame in body.split(b"\n\n"):
                    if frame.startswith(_TERMINAL) or frame.startswith(b"event: error\n"):
                        self._frame(frame)
                return
            self._frame(body)
        elif self.json_body is not None:
            self.json_body.append(body)

    def _frame(self, body: bytes) -> None:
        """One whole SSE frame: the terminal event's usage and status, an error event's code."""
        if body.startswith(_TERMINAL):
            _, _, data = body.partition(b"\ndata: ")
            try:
                self.terminal(orjson.loads(data).get("response"))
            except (orjson.JSONDecodeError, AttributeError):
                self.done = True
        elif body.startswith(b"event: error\n") and self.error is None:
            _, _, data = body.partition(b"\ndata: ")
            try:
                err = orjson.loads(data).get("error") or {}
                self.error = _code(err.get("code") or err.get("type") or "error")
            except (orjson.JSONDecodeError, AttributeError):
                self.error = "error"

    def finish_json(self) -> None:
        if self.json_body is None:
            return
        try:
            data = orjson.loads(b"".join(self.json_body))
        except orjson.JSONDecodeError:
            data = None
        if self.status >= 400:
            err = data.get("error") if isinstance(data, Mapping) else None
            code = (err.get("code") or err.get("type")) if isinstance(err, Mapping) else None
            self.error = _code(code) if code else f"http_{self.status}"
            self.done = True
        elif isinstance(data, Mapping):
            self.terminal(data)


def instrument_app(
    app: ASGIApp,
    config: Any = None,
    *,
    metrics: ServerMetrics | None = None,
    tracer_provider: Any = None,
    spans: bool = True,
    serve: bool = True,
) -> ASGIApp:
    """``app`` wrapped: ``GET /metrics`` answered from ``metrics`` (a new :class:`ServerMetrics`
    labelling routes from ``config`` by default), every HTTP request counted, and, with
    ``spans`` and the ``otel`` extra, run in a ``SERVER`` span joined to its ``traceparent``
    (``tracer_provider``: the global one by default). With ``config.auth_tokens``, ``/metrics``
    needs one of them as a bearer token like every other path. WebSocket and lifespan traffic passes
    through untouched. With ``serve=False`` ``GET /metrics`` is left to the app (which may
    expose ``.metrics.exposition()`` itself). The wrapper keeps its :class:`ServerMetrics` as ``.metrics``.
    """
    m = metrics if metrics is not None else ServerMetrics(route_of=route_labeller(config))
    tokens = [t.encode() for t in getattr(config, "auth_tokens", ()) or ()]
    otel = _load_otel() if spans else None
    peek_limit = int(getattr(config, "max_body_bytes", 0) or 10 * 1024 * 1024)

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        method: str = scope["method"]
        path = path_template(scope["path"])
        if path == "/metrics" and method == "GET" and serve:
            if tokens and not _authorized(scope, tokens):
                await app(scope, receive, send)  # the app answers 401
                return
            body = m.exposition()
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", CONTENT_TYPE_LATEST.encode()), (b"content-length", str(len(body)).encode())],
                }
            )
            await send({"type": "http.response.body", "body": body})
            m.child(m.http, method, path, "200").inc()
            return
        start = time.perf_counter()
        watch: _Watch | None = None
        labels: tuple[str, str] | None = None
        if method == "POST" and path == "/v1/responses":
            watch = _Watch()
            receive, model, watch.stream = await _peek_body(receive, peek_limit)
            labels = m.started(model, watch.stream)
        status = 500

        async def watched_send(message: Message) -> None:
            nonlocal status
            t = message["type"]
            if t == "http.response.start":
                status = message["status"]
                if watch is not None:
                    watch.status = status
                    ctype = b""
                    for k, v in message.get("headers", ()):
                        if k.lower() == b"content-type":
                            ctype = v
                    watch.stream = ctype.startswith(b"text/event-stream")
                    if not watch.stream and ctype.startswith(b"application/json"):
                        watch.json_body = []
            elif t == "http.response.body" and watch is not None:
                watch.chunk(message.get("body", b""), time.perf_counter())
            await send(message)

        span = None
        if otel is not None and (tracer_provider is not None or _tracing()):
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())
                       if k in (b"traceparent", b"tracestate", b"baggage")}
            attributes = {"gen_ai.request.model": labels[1]} if labels is not None else None
            span = otel.start_server_span(method, path, headers, tracer_provider=tracer_provider, attributes=attributes)
        failure: str | None = None
        try:
            if span is not None:
                with span.current():
                    await app(scope, receive, watched_send)
            else:
                await app(scope, receive, watched_send)
        except BaseException as exc:
            failure = _code(type(exc).__name__)
            raise
        finally:
            end = time.perf_counter()
            m.child(m.http, method, path, str(status)).inc()
            if watch is not None and labels is not None:
                watch.finish_json()
                if failure is None:
                    if watch.error is not None:
                        failure = watch.error
                    elif watch.status >= 400:
                        failure = f"http_{watch.status}"
                    elif watch.stream and not watch.done:
                        failure = "stream_truncated"
                first = None if watch.first is None else watch.first - start
                m.ended(labels, watch.stream, end - start, first, watch.usage, failure)
            elif failure is None and status >= 500:
                failure = f"http_{status}"
            if span is not None:
                span.span.set_attribute("http.response.status_code", status)
                span.end(failure)

    asgi.metrics = m  # type: ignore[attr-defined]
    return asgi


def _authorized(scope: Scope, tokens: Sequence[bytes]) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            given = value[7:].strip()
            return any(hmac.compare_digest(given, t) for t in tokens)
    return False


async def _peek_body(receive: Receive, limit: int) -> tuple[Receive, Any, bool]:
    """Read the request body (up to ``limit`` bytes); a ``receive`` that replays it, then the
    requested ``model`` and ``stream`` (``None``/``False`` when the body is not a JSON object
    or is longer: the app refuses it)."""
    messages: list[Message] = []
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False) or size > limit:
            break
    model: Any = None
    stream = False
    data: Any = None
    if size <= limit:
        try:
            data = orjson.loads(b"".join(chunks))
        except orjson.JSONDecodeError:
            data = None
    if isinstance(data, dict):
        model = data.get("model")
        stream = data.get("stream") is True

    async def replay() -> Message:
        if messages:
            return messages.pop(0)
        return await receive()

    return replay, model, stream
