"""Observability: print the OpenTelemetry span tree of a tool loop (no key, no network).

A two-turn chat on the Fake adapter: the model asks for a tool, the tool runs (and opens a
span of its own), the model answers. allm.otel turns every operation into a span following the
GenAI semantic conventions; the SDK's in-memory exporter keeps them so we can print the tree
and the metrics. Run: python examples/observability_span_tree.py
"""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import allm
import allm.otel
from allm.providers import Fake
from allm.testing import tool_call, usage

exporter = InMemorySpanExporter()
tracer_provider = TracerProvider()
tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
reader = InMemoryMetricReader()
allm.otel.instrument(tracer_provider=tracer_provider, meter_provider=MeterProvider(metric_readers=[reader]))
tracer = tracer_provider.get_tracer("example")


def get_weather(city: str) -> dict[str, Any]:
    """The weather in a city."""
    with tracer.start_as_current_span("weather lookup") as span:  # the handler's own span
        span.set_attribute("city", city)
        return {"city": city, "sky": "sunny", "temperature_c": 18}


engine = allm.Engine(
    adapter=Fake(
        scripts=[
            [tool_call("get_weather", {"city": "Paris"}), usage(42, 9)],
            ["It is sunny in Paris, 18 °C.", usage(71, 11)],
        ]
    ),
    model="fake-weather",
)
result = allm.chat(engine, "What is the weather in Paris?", tools=[allm.function_tool(get_weather)], session_id="ses_demo")
allm.otel.uninstrument()
assert result.halted_reason == "completed"

SHOWN = {
    "gen_ai.request.model": "model",
    "gen_ai.response.finish_reasons": "finish",
    "allm.halted_reason": "halted",
    "gen_ai.usage.input_tokens": "in",
    "gen_ai.usage.output_tokens": "out",
    "gen_ai.tool.call.id": "call",
    "gen_ai.conversation.id": "conversation",
}
spans = exporter.get_finished_spans()
children: dict[int | None, list[ReadableSpan]] = {}
for s in spans:
    children.setdefault(s.parent.span_id if s.parent else None, []).append(s)


def show(parent: int | None, depth: int, lines: list[str]) -> None:
    for s in sorted(children.get(parent, []), key=lambda s: s.start_time or 0):
        attrs = s.attributes or {}
        facts = " ".join(f"{label}={attrs[k]}" for k, label in SHOWN.items() if k in attrs)
        ms = ((s.end_time or 0) - (s.start_time or 0)) / 1e6
        lines.append(f"{'  ' * depth}{s.name} [{s.kind.name.lower()}, {ms:.2f} ms] {facts}".rstrip())
        show(s.context.span_id, depth + 1, lines)


lines: list[str] = []
show(None, 0, lines)
print("\n".join(lines))

names = [line.split(" [")[0] for line in lines]
assert names == ["invoke_agent", "  chat fake-weather", "  execute_tool get_weather", "    weather lookup", "  chat fake-weather"], names
root = next(s for s in spans if s.parent is None)
assert root.attributes is not None and root.attributes["gen_ai.usage.input_tokens"] == 42 + 71

data = reader.get_metrics_data()
assert data is not None
for metric in data.resource_metrics[0].scope_metrics[0].metrics:
    for point in metric.data.data_points:
        a = point.attributes or {}
        what = a.get("gen_ai.token.type") or a.get("gen_ai.operation.name")
        print(f"{metric.name} ({metric.unit}) {what}: count={point.count} sum={point.sum:.4g}")
tokens = {
    p.attributes["gen_ai.token.type"]: p.sum
    for m in data.resource_metrics[0].scope_metrics[0].metrics
    if m.name == "gen_ai.client.token.usage"
    for p in m.data.data_points
    if p.attributes
}
assert tokens == {"input": 113, "output": 20}, tokens
print("ok")
