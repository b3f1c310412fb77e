"""The ASGI app: :func:`create_app` builds a Starlette app serving the Open Responses API.

Endpoints (all under ``/v1`` but ``/healthz``):

- ``POST /v1/responses``: JSON, or SSE with ``stream: true`` (each event written whole in one
  write, ``sequence_number`` from 0, then ``data: [DONE]``); ``background: true`` answers at
  once with a ``queued`` response.
- ``GET /v1/responses/{id}`` (``?stream=true&starting_after=N`` replays the events),
  ``DELETE /v1/responses/{id}``, ``GET /v1/responses/{id}/input_items``,
  ``POST /v1/responses/{id}/cancel``, ``POST /v1/responses/compact``.
- WebSocket on ``/v1/responses``: ``response.create`` messages, one response at a time,
  events as JSON text messages; continuations from connection-local state.
- ``GET /v1/models``, ``GET /healthz``.

Extension seams (:class:`Hooks`): ASGI ``middleware``, extra ``routes`` (``GET /metrics``),
event ``observers``, ``tool_types`` translators (the ``mcp`` tool type) and per-call
``chat_options`` (trace context, per-tenant context).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..errors import AllmError
from ..stores import Store
from ..types import Thread
from .config import Route as ConfigRoute
from .config import ServerConfig
from .service import RUNNING, Responses, Run, RunObserver
from .translate import (
    SSE_DONE,
    ApiError,
    CreateParams,
    InputItemReader,
    ItemRewriter,
    ToolTranslator,
    invalid,
    parse_create,
    sse,
)

__all__ = ["WEBSOCKET_MAX_SECONDS", "Hooks", "create_app"]

log = logging.getLogger("allm.server")

#: How long one WebSocket connection may serve turns (the specification's 60 minutes); a
#: turn sent later gets ``websocket_connection_limit_reached`` and the connection closes.
WEBSOCKET_MAX_SECONDS = 3600.0


@attrs.frozen
class Hooks:
    """Where other modules plug into the app (all optional):

    - ``middleware``: Starlette :class:`~starlette.middleware.Middleware` entries, outermost
      first (request metrics, trace context).
    - ``routes``: extra Starlette routes (``Route("/metrics", handler)``).
    - ``observers``: ``(run, event) -> None`` for every streaming event of every response.
    - ``tool_types``: request tool ``type`` -> ``tool dict -> [allm.Tool]`` (``"mcp"``).
    - ``chat_options``: ``(route, params, headers) -> mapping`` of extra
      :class:`allm.ChatOptions` for each call (``context``, ``middleware``...).
    - ``item_rewriters``: ``item -> item`` applied to every output item clients see (an MCP
      tool's ``function_call`` shown as ``mcp_call``).
    - ``input_item_types``: input item ``type`` -> ``item -> [standard items]`` (an
      ``mcp_call`` sent back read as ``function_call`` + ``function_call_output``).
    - ``on_startup`` / ``on_shutdown``: async callables ``(app) -> None``.

    A config's ``[server] hooks = ["module:factory"]`` names functions ``(config) -> Hooks``;
    :func:`create_app` merges them (in order) with the ``hooks`` it is given (:meth:`merge`).
    """

    middleware: Sequence[Middleware] = ()
    routes: Sequence[BaseRoute] = ()
    observers: Sequence[RunObserver] = ()
    tool_types: Mapping[str, ToolTranslator] = attrs.field(factory=dict)
    chat_options: Sequence[Callable[[ConfigRoute, CreateParams, Mapping[str, str]], Mapping[str, Any]]] = ()
    item_rewriters: Sequence[ItemRewriter] = ()
    input_item_types: Mapping[str, InputItemReader] = attrs.field(factory=dict)
    on_startup: Sequence[Callable[[Starlette], Any]] = ()
    on_shutdown: Sequence[Callable[[Starlette], Any]] = ()

    @staticmethod
    def merge(*many: Hooks) -> Hooks:
        """One :class:`Hooks` with every list concatenated in order (middleware of the first
        outermost) and the mappings combined (a later one wins per key)."""
        out: dict[str, Any] = {}
        for f in attrs.fields(Hooks):
            values = [getattr(h, f.name) for h in (Hooks(), *many)]
            if isinstance(values[0], Mapping):
                merged: dict[str, Any] = {}
                for v in values:
                    merged.update(v)
                out[f.name] = merged
            else:
                out[f.name] = tuple(x for v in values for x in v)
        return Hooks(**out)


def _load_hooks(name: str, config: ServerConfig) -> Hooks:
    from .config import ConfigError, resolve_callable

    made = resolve_callable(name, key="server.hooks")(config)
    if not isinstance(made, Hooks):
        raise ConfigError(f"{name!r} returned {type(made).__name__}, not allm.server.Hooks", key="server.hooks")
    return made


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json", headers=dict(headers or {}))


def _error(err: ApiError) -> Response:
    return _json(err.body(), err.status, err.headers)


class _Limits:
    """ASGI middleware: bearer auth and the body size limit, answered as specification errors."""

    def __init__(self, app: ASGIApp, tokens: Sequence[str], max_body: int) -> None:
        self.app = app
        self.tokens = [t.encode() for t in tokens]
        self.max_body = max_body

    def _authorized(self, scope: Scope) -> bool:
        if not self.tokens or scope.get("path") == "/healthz":
            return True
        for name, value in scope.get("headers", ()):
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                given = value[7:].strip()
                return any(hmac.compare_digest(given, t) for t in self.tokens)
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if not self._authorized(scope):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            err = ApiError(401, "invalid_request", "a valid bearer token is required", code="invalid_api_key")
            await _error(err)(scope, receive, send)
            return
        if scope["type"] == "http":
            for name, value in scope.get("headers", ()):
                if name == b"content-length" and value.isdigit() and int(value) > self.max_body:
                    await _error(_too_large(self.max_body))(scope, receive, send)
                    return
        await self.app(scope, receive, send)


_SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no")]


class _EventStream(Response):
    """A run's events as SSE: every event already published goes out in one write (each
    frame whole, in ``sequence_number`` order, none skipped), then ``data: [DONE]`` with the
    terminal event. The client going away stops the stream and, with ``cancel_on_close``,
    the run."""

    def __init__(self, run: Run, after: int, cancel_on_close: bool) -> None:
        self.run, self.after, self.cancel_on_close = run, after, cancel_on_close
        self.status_code = 200
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        run = self.run
        finished = False
        pump = asyncio.ensure_future(self._pump(send))
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            await asyncio.wait((pump, gone), return_when=asyncio.FIRST_COMPLETED)
            if pump.done():
                pump.result()  # the stream's own error, if any
                finished = True
        finally:
            for t in (pump, gone):
                if not t.done():
                    t.cancel()
            if not finished:
                await asyncio.gather(pump, return_exceptions=True)
                if self.cancel_on_close:
                    run.cancel()

    async def _pump(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        async for batch in self.run.follow_batches(self.after):
            body = b"".join([sse(ev) for ev in batch])
            if self.run.done.is_set() and batch[-1] is self.run.events[-1]:
                await send({"type": "http.response.body", "body": body + SSE_DONE, "more_body": False})
                return
            await send({"type": "http.response.body", "body": body, "more_body": True})
        await send({"type": "http.response.body", "body": SSE_DONE, "more_body": False})


async def _disconnected(receive: Receive) -> None:
    """Returns when the client has gone (``http.disconnect``)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "invalid_request", f"the request body is larger than {limit} bytes", code="request_too_large")


async def _body(request: Request, limit: int) -> Any:
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            raise _too_large(limit)
    if not buf:
        raise invalid("the request body is empty; send a JSON object")
    try:
        return orjson.loads(bytes(buf))
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_request", f"the request body is not valid JSON: {exc}", code="invalid_json") from None


def create_app(config: ServerConfig, *, store: Store | None = None, hooks: Hooks | None = None) -> Starlette:
    """The Open Responses app for ``config``.

    ``store`` overrides the configured store (tests pass ``MemoryStore()``); ``hooks`` plugs
    metrics, tracing, extra tool types and routes in (see :class:`Hooks`). The service is
    ``app.state.responses`` (:class:`~allm.server.service.Responses`). Raises
    :class:`~allm.server.config.ConfigError` for a route or tool that cannot be built.
    """
    from .extras import install, with_extras

    hooks = with_extras(config, Hooks.merge(*(_load_hooks(name, config) for name in config.hooks), hooks or Hooks()))
    service = Responses(config, store=store, tool_types=hooks.tool_types, observers=hooks.observers,
                        chat_options=hooks.chat_options, item_rewriters=hooks.item_rewriters,
                        input_item_types=hooks.input_item_types)
    install(service, hooks)
    limit = config.max_body_bytes

    def headers_of(request: Request | WebSocket) -> dict[str, str]:
        return {k.lower(): v for k, v in request.headers.items()}

    async def create(request: Request) -> Response:
        try:
            params = parse_create(await _body(request, limit))
            run = await service.create(params, headers_of(request))
        except ApiError as err:
            return _error(err)
        if params.background and not params.stream:
            return _json(run.snapshot())
        if params.stream:
            return _stream(run, -1, cancel_on_close=not params.background)
        try:
            final = await run.wait()
        except asyncio.CancelledError:
            run.cancel()
            raise
        if final["status"] == "failed":
            failure = final.get("error") or {}
            code = failure.get("code")
            status = 429 if code == "rate_limit_exceeded" else 504 if code == "upstream_timeout" else 502
            return _json({"error": {"message": failure.get("message", "failed"), "type": "server_error", "param": None,
                                    "code": code, "response_id": final["id"]}}, status)
        return _json(final)

    def _stream(run: Run, after: int, *, cancel_on_close: bool) -> Response:
        return _EventStream(run, after, cancel_on_close)

    async def _stored_replay(response_id: str, after: int) -> AsyncIterator[bytes]:
        # The stored log, and what a response running in another process adds to it.
        async for item in service.follow_stored(response_id, max(after, -1)):
            yield b"event: " + str(orjson.loads(item)["type"]).encode() + b"\ndata: " + bytes(item) + b"\n\n"
        yield SSE_DONE

    async def retrieve(request: Request) -> Response:
        rid = request.path_params["id"]
        q = request.query_params
        stream = q.get("stream", "false").lower() == "true"
        try:
            after = int(q.get("starting_after", "-1"))
        except ValueError:
            return _error(invalid("starting_after must be an integer", "starting_after"))
        run = service.runs.get(rid)
        if run is not None and run.params.store:
            if stream:
                return _stream(run, after, cancel_on_close=False)
            return _json(run.snapshot())
        data = await service.load(rid)
        if data is None:
            return _error(_not_found(rid))
        if stream:
            return StreamingResponse(_stored_replay(rid, after), media_type="text/event-stream")
        return _json(data["response"])

    async def delete(request: Request) -> Response:
        rid = request.path_params["id"]
        if not await service.delete(rid):
            return _error(_not_found(rid))
        return _json({"id": rid, "object": "response.deleted", "deleted": True})

    async def cancel(request: Request) -> Response:
        rid = request.path_params["id"]
        run = service.runs.get(rid)
        if run is None:
            data = await service.load(rid)
            if data is None:
                return _error(_not_found(rid))
            if not data["response"].get("background"):
                return _error(invalid("only background responses can be cancelled", "response_id"))
            if data["response"].get("status") in RUNNING:  # running in another process: asked to stop
                data = await service.cancel_elsewhere(rid)
                if data is None:
                    return _error(_not_found(rid))
            return _json(data["response"])  # ended: returned as it is
        if not run.params.background:
            return _error(invalid("only background responses can be cancelled", "response_id"))
        run.cancel("cancelled", "cancelled")
        return _json(await run.wait())

    async def list_input_items(request: Request) -> Response:
        rid = request.path_params["id"]
        run = service.runs.get(rid)
        items: list[dict[str, Any]]
        if run is not None and run.params.store:
            items = run.items
        else:
            data = await service.load(rid)
            if data is None:
                return _error(_not_found(rid))
            items = data["input_items"]
        q = request.query_params
        order = q.get("order", "desc")
        if order not in ("asc", "desc"):
            return _error(invalid("order must be asc or desc", "order"))
        try:
            lim = int(q.get("limit", "20"))
        except ValueError:
            return _error(invalid("limit must be an integer", "limit"))
        if not 1 <= lim <= 100:
            return _error(invalid("limit must be between 1 and 100", "limit"))
        seq = items if order == "asc" else list(reversed(items))
        after = q.get("after")
        if after:
            ids = [it.get("id") for it in seq]
            if after in ids:
                seq = seq[ids.index(after) + 1:]
        page = seq[:lim]
        return _json({"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                      "last_id": page[-1]["id"] if page else None, "has_more": len(seq) > lim})

    async def compact(request: Request) -> Response:
        try:
            body = await _body(request, limit)
            if not isinstance(body, dict):
                raise invalid("the request body must be a JSON object")
            model = body.get("model")
            if not isinstance(model, str) or not model:
                raise invalid("'model' is required (a string)", "model", "missing_required_parameter")
            service.route_for(model)
            params = parse_create({**body, "stream": None, "background": None})
            return _json(await service.compact(params, request.headers))
        except ApiError as err:
            return _error(err)
        except AllmError as exc:
            return _error(invalid(exc.message, "input"))

    async def models(request: Request) -> Response:
        return _json({"object": "list", "data": service.models()})

    async def healthz(request: Request) -> Response:
        return _json({"status": "ok"})

    async def websocket(ws: WebSocket) -> None:
        await ws.accept()
        cache: dict[str, Thread] = {}  # connection-local: the most recent response's conversation
        headers = headers_of(ws)
        opened = time.monotonic()
        try:
            while True:
                text = await ws.receive_text()
                previous: str | None = None
                if time.monotonic() - opened > WEBSOCKET_MAX_SECONDS:
                    err = ApiError(400, "invalid_request", "the WebSocket connection reached its time limit; open a new one",
                                   code="websocket_connection_limit_reached")
                    await ws.send_text(orjson.dumps({"type": "error", "status": err.status, "error": err.payload()}).decode())
                    await ws.close(1000)
                    return
                try:
                    if len(text.encode()) > limit:
                        raise _too_large(limit)
                    try:
                        body = orjson.loads(text)
                    except orjson.JSONDecodeError as exc:
                        raise ApiError(400, "invalid_request", f"not valid JSON: {exc}", code="invalid_json") from None
                    params = parse_create(body, websocket=True)
                    previous = params.previous_response_id
                    if previous and not params.store and previous not in cache:
                        raise ApiError(400, "invalid_request", f"Previous response with id {previous!r} not found.",
                                       code="previous_response_not_found", param="previous_response_id")
                    run = await service.create(params, headers, cache=cache, live=True)
                except ApiError as err:
                    if previous:
                        cache.pop(previous, None)
                    await ws.send_text(orjson.dumps({"type": "error", "status": err.status, "error": err.payload()}).decode())
                    continue
                try:
                    async for ev in run.follow():
                        await ws.send_text(orjson.dumps(ev).decode())
                except BaseException:
                    run.cancel()
                    raise
                final = run.final or {}
                cache.clear()
                if final.get("status") == "failed" and previous:
                    continue
                if run.after_core is not None:
                    cache[run.id] = run.after_core
        except WebSocketDisconnect:
            return

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        for fn in hooks.on_startup:
            await fn(app)
        try:
            await service.prune()
        except AllmError:
            log.exception("pruning stored responses failed")
        try:
            yield
        finally:
            for fn in hooks.on_shutdown:
                await fn(app)
            await service.aclose()

    routes: list[BaseRoute] = [
        Route("/v1/responses", create, methods=["POST"]),
        WebSocketRoute("/v1/responses", websocket),
        Route("/v1/responses/compact", compact, methods=["POST"]),
        Route("/v1/responses/{id}", retrieve, methods=["GET"]),
        Route("/v1/responses/{id}", delete, methods=["DELETE"]),
        Route("/v1/responses/{id}/cancel", cancel, methods=["POST"]),
        Route("/v1/responses/{id}/input_items", list_input_items, methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        *hooks.routes,
    ]
    middleware = [*hooks.middleware, Middleware(_Limits, tokens=config.auth_tokens, max_body=limit)]

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(ApiError(404, "not_found", f"no such endpoint: {request.method} {request.url.path}", code="not_found"))

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return _error(ApiError(405, "invalid_request", f"{request.method} is not allowed on {request.url.path}", code="method_not_allowed"))

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error", exc_info=exc)
        return _error(ApiError(500, "server_error", "internal server error", code="server_error"))

    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                    exception_handlers={404: not_found, 405: not_allowed, Exception: server_error})
    app.state.responses = service
    app.state.config = config
    return app


def _not_found(rid: str) -> ApiError:
    return ApiError(404, "not_found", f"No response with id {rid!r} found.", code="response_not_found", param="response_id")


def _now() -> int:
    return int(time.time())

