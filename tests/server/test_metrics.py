"""The server's Prometheus metrics and SERVER spans (allm.server.metrics), scraped from
GET /metrics and read from the OpenTelemetry SDK's in-memory exporter.

The app under the wrapper is a small Starlette app answering POST /v1/responses the way the
Open Responses server does (JSON, SSE frames, error objects), running a real allm call on
the Fake inside the request so the nesting of allm's spans under the server span is checked.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

import allm
import allm.otel
from allm import telemetry
from allm.providers.fake import Fake
from allm.server.metrics import ServerMetrics, instrument_app, path_template, route_labeller

SECRET = "sk-test-SECRETSECRETSECRET0123456789"


def frame(event: dict[str, Any]) -> bytes:
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


async def responses(request: Request) -> Response:
    body = orjson.loads(await request.body())
    text = body["input"]
    if text == "rate":
        err = {"error": {"message": "slow down", "type": "too_many_requests", "param": None, "code": "rate_limit_exceeded"}}
        return Response(orjson.dumps(err), 429, media_type="application/json")
    if text == "boom":
        raise RuntimeError("the handler broke")
    engine = allm.Engine(adapter=Fake(scripts=[["hello ", "world"]]), model="fake-1")
    result = await allm.agenerate(engine, text)
    usage = {"input_tokens": 7, "output_tokens": 3, "total_tokens": 10}
    final = {"id": "resp_1", "object": "response", "status": "completed", "output_text": result.output_text, "usage": usage}
    if not body.get("stream"):
        return Response(orjson.dumps(final), media_type="application/json")

    async def frames() -> AsyncIterator[bytes]:
        yield frame({"type": "response.created", "sequence_number": 0, "response": {**final, "status": "in_progress", "usage": None}})
        yield frame({"type": "response.output_text.delta", "sequence_number": 1, "delta": "hello "})
        if text == "slow":
            await asyncio.sleep(0.5)
        yield frame({"type": "response.output_text.delta", "sequence_number": 2, "delta": "world"})
        if text == "fail":
            failed = {**final, "status": "failed", "error": {"code": "upstream_error", "message": "reset"}}
            yield frame({"type": "error", "sequence_number": 3, "error": {"code": "upstream_error", "type": "server_error"}})
            yield frame({"type": "response.failed", "sequence_number": 4, "response": failed})
        elif text != "cut":
            yield frame({"type": "response.completed", "sequence_number": 3, "response": final})
        yield b"data: [DONE]\n\n"

    return StreamingResponse(frames(), media_type="text/event-stream")


async def retrieve(request: Request) -> Response:
    return Response(b'{"id": "x"}', media_type="application/json")


class ConfigRoute:
    """What the labeller reads of a configured route (``allm.server.config.Route``)."""

    def __init__(self, match: str, provider: str) -> None:
        self.pattern = re.compile(match)
        self.name = provider


class ServerConfig:
    def __init__(self, routes: tuple[ConfigRoute, ...] = ()) -> None:
        self.routes = routes


CONFIG = ServerConfig(routes=(ConfigRoute(match="^claude-", provider="fake"), ConfigRoute(match=".", provider="fake")))


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    handler = allm.otel.OpenTelemetry(tracer_provider=provider, metrics=False)
    telemetry.add_handler(handler)
    try:
        yield provider, exporter
    finally:
        telemetry.remove_handler(handler)


def make(provider: TracerProvider | None = None, **kw: Any) -> Any:
    inner = Starlette(routes=[Route("/v1/responses", responses, methods=["POST"]),
                              Route("/v1/responses/{id}", retrieve, methods=["GET"])])
    return instrument_app(inner, CONFIG, tracer_provider=provider, **kw)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(client: httpx.AsyncClient) -> dict[Any, float]:
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert SECRET not in r.text and "hello" not in r.text
    return samples(r.text)


async def post(client: httpx.AsyncClient, model: str, text: str, stream: bool = False) -> httpx.Response:
    return await client.post("/v1/responses", json={"model": model, "input": text, "stream": stream},
                             headers={"authorization": f"Bearer {SECRET}", "x-provider-key": SECRET})


async def test_counts_requests_tokens_errors_and_latency_per_route_and_model() -> None:
    app = make(spans=False)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        assert (await post(c, "claude-x", "hi")).status_code == 200
        assert (await post(c, "claude-x", "hi", stream=True)).status_code == 200
        assert (await post(c, "gpt-y", "hi", stream=True)).status_code == 200
        assert (await post(c, "gpt-y", "rate")).status_code == 429
        assert (await post(c, "gpt-y", "fail", stream=True)).status_code == 200
        assert (await post(c, "gpt-y", "cut", stream=True)).status_code == 200
        assert (await post(c, "gpt-y", "boom")).status_code == 500
        assert (await c.get("/v1/responses/resp_0123456789abcdef")).status_code == 200
        m = await scrape(c)
    claude = {"route": "0:fake", "model": "claude-x"}
    gpt = {"route": "1:fake", "model": "gpt-y"}
    assert value(m, "allm_server_requests_total", **claude, stream="false") == 1
    assert value(m, "allm_server_requests_total", **claude, stream="true") == 1
    assert value(m, "allm_server_requests_total", **gpt, stream="true") == 3
    assert value(m, "allm_server_requests_total", **gpt, stream="false") == 2
    assert value(m, "allm_server_tokens_total", **claude, direction="input") == 14
    assert value(m, "allm_server_tokens_total", **claude, direction="output") == 6
    assert value(m, "allm_server_errors_total", **gpt, type="rate_limit_exceeded") == 1
    assert value(m, "allm_server_errors_total", **gpt, type="upstream_error") == 1
    assert value(m, "allm_server_errors_total", **gpt, type="stream_truncated") == 1
    assert value(m, "allm_server_errors_total", **gpt, type="runtimeerror") == 1
    assert value(m, "allm_server_errors_total", **claude, type="rate_limit_exceeded") == 0
    assert value(m, "allm_server_in_flight", **claude) == 0
    assert value(m, "allm_server_in_flight", **gpt) == 0
    assert value(m, "allm_server_request_duration_seconds_count", **claude, stream="true") == 1
    assert value(m, "allm_server_request_duration_seconds_count", **gpt, stream="false") == 2
    assert value(m, "allm_server_time_to_first_token_seconds_count", **claude) == 1
    assert value(m, "allm_server_time_to_first_token_seconds_count", **gpt) == 3
    assert value(m, "allm_server_time_to_first_token_seconds_bucket", **claude, le="+Inf") == 1
    assert value(m, "allm_server_http_requests_total", method="POST", path="/v1/responses", status="429") == 1
    assert value(m, "allm_server_http_requests_total", method="GET", path="/v1/responses/{id}", status="200") == 1
    assert value(m, "allm_server_http_requests_total", method="POST", path="/v1/responses", status="500") == 1


@pytest.fixture
def served() -> Iterator[str]:
    """The wrapped app under uvicorn on a free loopback port (in a thread)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(make(spans=False), host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        t.join(10)


async def test_in_flight_counts_a_stream_while_it_runs(served: str) -> None:
    async with httpx.AsyncClient(base_url=served) as c:
        async with c.stream("POST", "/v1/responses", json={"model": "gpt-y", "input": "slow", "stream": True}) as r:
            chunks = r.aiter_bytes()
            await chunks.__anext__()
            during = await scrape(c)
            async for _ in chunks:
                pass
        # The gauge falls when the server has finished the response, which may
        # be just after the client has read its last byte: wait for it, bounded.
        deadline = time.monotonic() + 5
        after = await scrape(c)
        while value(after, "allm_server_in_flight", route="1:fake", model="gpt-y") != 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
            after = await scrape(c)
    assert value(during, "allm_server_in_flight", route="1:fake", model="gpt-y") == 1
    assert value(after, "allm_server_in_flight", route="1:fake", model="gpt-y") == 0


async def test_model_labels_are_capped() -> None:
    metrics = ServerMetrics(route_of=route_labeller(CONFIG), max_models=2)
    app = make(metrics=metrics, spans=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        for name in ("a", "b", "c", "d", "a"):
            await post(c, name, "hi")
        m = await scrape(c)
    assert value(m, "allm_server_requests_total", route="1:fake", model="a", stream="false") == 2
    assert value(m, "allm_server_requests_total", route="1:fake", model="b", stream="false") == 1
    assert value(m, "allm_server_requests_total", route="1:fake", model="other", stream="false") == 2


async def test_unreadable_body_counts_under_unknown_model() -> None:
    app = make(spans=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://t") as c:
        await c.post("/v1/responses", content=b"{not json")
        m = await scrape(c)
    assert value(m, "allm_server_requests_total", route="none", model="unknown", stream="false") == 1


def test_bad_arguments_and_paths() -> None:
    with pytest.raises(ValueError, match="max_models"):
        ServerMetrics(max_models=0)
    assert path_template("/v1/responses/resp_0123456789abcdef0123/input_items") == "/v1/responses/{id}/input_items"
    assert path_template("/v1/responses/compact") == "/v1/responses/compact"
    assert path_template("/wp-admin/login.php") == "other"
    assert route_labeller(CONFIG)("claude-3") == "0:fake"
    assert route_labeller(ServerConfig())("x") == "none"


async def test_server_span_joins_traceparent_and_contains_allm_spans(spans: Any) -> None:
    provider, exporter = spans
    app = make(provider)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    parent = "00f067aa0ba902b7"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.post("/v1/responses", json={"model": "gpt-y", "input": "hi", "stream": True},
                         headers={"traceparent": f"00-{trace_id}-{parent}-01", "authorization": f"Bearer {SECRET}"})
        assert r.status_code == 200
        await c.post("/v1/responses", json={"model": "gpt-y", "input": "rate"})
    finished = exporter.get_finished_spans()
    server = [s for s in finished if s.name == "POST /v1/responses"]
    assert len(server) == 2
    joined, failed = server
    assert joined.kind.name == "SERVER"
    assert format(joined.context.trace_id, "032x") == trace_id
    assert format(joined.parent.span_id, "016x") == parent
    assert joined.attributes["http.response.status_code"] == 200
    assert joined.attributes["gen_ai.request.model"] == "gpt-y"
    assert joined.status.status_code.name == "UNSET"
    chat = [s for s in finished if s.name.startswith("chat ")]
    assert chat and chat[0].parent.span_id == joined.context.span_id
    assert chat[0].context.trace_id == joined.context.trace_id
    assert failed.parent is None
    assert failed.attributes["error.type"] == "rate_limit_exceeded"
    assert failed.status.status_code.name == "ERROR"
    for s in finished:
        text = repr(dict(s.attributes or {})) + s.name
        assert SECRET not in text and "Bearer" not in text


def test_metric_names_are_prometheus_safe() -> None:
    text = ServerMetrics().exposition().decode()
    for name in re.findall(r"^# TYPE (\S+)", text, re.M):
        assert name.startswith("allm_server_")


async def test_through_create_app_tokens_and_time_to_first_token() -> None:
    from allm.server import create_app, parse_config
    from allm.stores import MemoryStore

    config = parse_config("""
[server]
store = "memory://"

[[routes]]
match = "."
adapter = "tests.server.ops_fakes:talker"
""")
    app = create_app(config, store=MemoryStore())
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        assert (await c.post("/v1/responses", json={"model": "talk", "input": "hi"})).status_code == 200
        assert (await c.post("/v1/responses", json={"model": "talk", "input": "hi", "stream": True})).status_code == 200
        assert (await c.get("/v1/responses/resp_00000000000000000000000000000000")).status_code == 404
        m = await scrape(c)
    labels = {"route": "0:tests.server.ops_fakes:talker", "model": "talk"}
    assert value(m, "allm_server_tokens_total", **labels, direction="input") == 6
    assert value(m, "allm_server_tokens_total", **labels, direction="output") == 12
    assert value(m, "allm_server_time_to_first_token_seconds_count", **labels) == 1
    assert value(m, "allm_server_request_duration_seconds_count", **labels, stream="false") == 1
    assert value(m, "allm_server_in_flight", **labels) == 0
    assert value(m, "allm_server_http_requests_total", method="GET", path="/v1/responses/{id}", status="404") == 1
