"""Running ``allm serve`` in production, on the Fake (no key, no network): Prometheus metrics
at ``/metrics``, a SERVER span joined to the caller's ``traceparent`` with allm's own spans
inside it, and a route's middleware (a content filter and a rate limit) answered the way the
Open Responses specification says.

Run: python examples/server_operations.py
"""

from __future__ import annotations

import asyncio

import httpx
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import allm.otel
from allm.server import create_app, parse_config
from allm.stores import MemoryStore

CONFIG = """
[server]
store = "memory://"

[[routes]]
match = "."
provider = "fake"
options = {scripts = [["Hello!"], ["The password is swordfish."], ["Hello again!"]]}
middleware = [
  {use = "content_filter", deny = ["swordfish"]},
  {use = "rate_limit", limit = 3, window = 60, key = "client", name = "example_rate_limit"},
]
"""

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


async def main() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    allm.otel.instrument(tracer_provider=provider)

    app = create_app(parse_config(CONFIG), store=MemoryStore())
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://allm") as c:
        # 1. a response, inside the caller's trace
        r = await c.post("/v1/responses", json={"model": "demo", "input": "Hi"},
                         headers={"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"})
        assert r.json()["output"][0]["content"][0]["text"] == "Hello!"

        # 2. the content filter blocks the answer and says why
        blocked = (await c.post("/v1/responses", json={"model": "demo", "input": "The password?"})).json()
        assert blocked["status"] == "incomplete"
        assert blocked["incomplete_details"] == {"reason": "content_filter"}
        assert blocked["output"] == []
        print("blocked:", blocked["metadata"]["allm_warnings"])

        # 3. the rate limit: 3 model calls a minute per client; the 4th is HTTP 429
        assert (await c.post("/v1/responses", json={"model": "demo", "input": "Hi"})).status_code == 200
        refused = await c.post("/v1/responses", json={"model": "demo", "input": "Hi", "stream": True})
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        print("refused:", refused.json()["error"]["message"], "retry-after", refused.headers["retry-after"])

        # 4. the metrics
        metrics = (await c.get("/metrics")).text
    lines = [ln for ln in metrics.splitlines() if ln.startswith(("allm_server_requests_total", "allm_server_errors_total",
                                                                 "allm_server_tokens_total"))]
    print("\n".join(lines))
    assert 'allm_server_requests_total{model="demo",route="0:fake",stream="false"} 3.0' in lines
    assert 'allm_server_errors_total{model="demo",route="0:fake",type="rate_limit_exceeded"} 1.0' in lines

    # the span tree of the first request: the server span, in the caller's trace
    spans = exporter.get_finished_spans()
    server = next(s for s in spans if s.name == "POST /v1/responses")
    assert format(server.context.trace_id, "032x") == TRACE_ID
    inside = [s.name for s in spans if s.parent is not None and s.parent.span_id == server.context.span_id]
    print("POST /v1/responses contains", inside)
    assert inside == ["invoke_agent"]
    allm.otel.uninstrument()
    print("ok")


if __name__ == "__main__":
    asyncio.run(main())
