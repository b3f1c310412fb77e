"""End to end through a real collector path: the SDK's OTLP/HTTP exporters send allm's spans
and metrics to a small OTLP receiver on loopback, which decodes them with the OTLP protobufs."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

import allm
import allm.otel
from allm import telemetry
from allm.providers import Fake
from allm.testing import tool_call, usage


class Receiver:
    """An OTLP/HTTP receiver (``POST /v1/traces``, ``/v1/metrics``, protobuf) on 127.0.0.1."""

    def __init__(self) -> None:
        self.traces: list[ExportTraceServiceRequest] = []
        self.metrics: list[ExportMetricsServiceRequest] = []
        self.content_types: set[str] = set()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                outer.content_types.add(self.headers.get("Content-Type", ""))
                if self.path == "/v1/traces":
                    msg: Any = ExportTraceServiceRequest()
                    msg.ParseFromString(body)
                    outer.traces.append(msg)
                    answer = ExportTraceServiceResponse().SerializeToString()
                elif self.path == "/v1/metrics":
                    msg = ExportMetricsServiceRequest()
                    msg.ParseFromString(body)
                    outer.metrics.append(msg)
                    answer = ExportMetricsServiceResponse().SerializeToString()
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return tuple(value(x) for x in v.array_value.values)
    return getattr(v, kind) if kind else None


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def test_spans_and_metrics_reach_an_otlp_receiver(receiver: Receiver) -> None:
    resource = Resource.create({"service.name": "allm-test"})
    tp = TracerProvider(resource=resource)
    tp.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=receiver.url + "/v1/traces", timeout=10)))
    reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=receiver.url + "/v1/metrics", timeout=10), export_interval_millis=3_600_000)
    mp = MeterProvider(metric_readers=[reader], resource=resource)
    handler = allm.otel.OpenTelemetry(tracer_provider=tp, meter_provider=mp)
    eng = allm.Engine(adapter=Fake(scripts=[[tool_call("add", {"a": 1, "b": 2}), usage(10, 5)], ["3", usage(20, 1)]]), model="fake-1")
    with telemetry.scope(handler):
        result = allm.chat(eng, "1+2?", tools=[allm.function_tool(add)], session_id="ses_otlp")
    assert result.halted_reason == "completed"
    assert tp.force_flush(10_000) and mp.force_flush(10_000)
    tp.shutdown()
    mp.shutdown()

    assert receiver.content_types == {"application/x-protobuf"}
    spans = [
        (s, sc.scope)
        for req in receiver.traces
        for rs in req.resource_spans
        for sc in rs.scope_spans
        for s in sc.spans
    ]
    resources = {value(a.value) for req in receiver.traces for rs in req.resource_spans for a in rs.resource.attributes if a.key == "service.name"}
    assert resources == {"allm-test"}
    assert {scope.name for _, scope in spans} == {"allm"}
    assert {scope.version for _, scope in spans} == {allm.__version__}
    by_id = {s.span_id: s for s, _ in spans}
    [root] = [s for s, _ in spans if not s.parent_span_id]
    assert root.name == "invoke_agent" and root.kind == root.SPAN_KIND_INTERNAL
    children = sorted((s for s, _ in spans if s.parent_span_id == root.span_id), key=lambda s: s.start_time_unix_nano)
    assert [c.name for c in children] == ["chat fake-1", "execute_tool add", "chat fake-1"]
    assert all(by_id[c.parent_span_id] is root and c.trace_id == root.trace_id for c in children)
    attrs = {a.key: value(a.value) for a in children[2].attributes}
    assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.provider.name"] == "fake"
    assert attrs["gen_ai.usage.input_tokens"] == 20 and attrs["gen_ai.response.finish_reasons"] == ("stop",)
    assert attrs["gen_ai.conversation.id"] == "ses_otlp"
    assert children[0].kind == children[0].SPAN_KIND_CLIENT

    metrics = {
        m.name: m
        for req in receiver.metrics
        for rm in req.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    assert set(metrics) >= {"gen_ai.client.operation.duration", "gen_ai.client.token.usage", "gen_ai.client.operation.time_to_first_chunk"}
    tokens = metrics["gen_ai.client.token.usage"]
    assert tokens.unit == "{token}"
    got = {}
    for p in tokens.histogram.data_points:
        a = {x.key: value(x.value) for x in p.attributes}
        got[a["gen_ai.token.type"]] = (p.sum, p.count)
        assert list(p.explicit_bounds) == [float(b) for b in allm.otel.TOKEN_BUCKETS]
    assert got == {"input": (30, 2), "output": (6, 2)}
    duration = metrics["gen_ai.client.operation.duration"]
    assert duration.unit == "s"
    assert all(list(p.explicit_bounds) == list(allm.otel.DURATION_BUCKETS) for p in duration.histogram.data_points)
