"""Fixtures of the telemetry tests: a record collector, and OpenTelemetry's SDK with in-memory
span and metric exporters behind an :class:`allm.otel.OpenTelemetry` handler."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import allm.otel
from allm import telemetry


class Records(list[telemetry.Record]):
    """Every record a test's calls emitted, in order."""

    def __call__(self, record: telemetry.Record) -> None:
        self.append(record)

    def of(self, kind: str, phase: str | None = None) -> list[telemetry.Record]:
        return [r for r in self if r.kind == kind and (phase is None or r.phase == phase)]

    def one(self, kind: str, phase: str) -> telemetry.Record:
        found = self.of(kind, phase)
        assert len(found) == 1, (kind, phase, [(r.kind, r.phase) for r in self])
        return found[0]


@pytest.fixture
def records() -> Iterator[Records]:
    seen = Records()
    telemetry.add_handler(seen)
    try:
        yield seen
    finally:
        telemetry.remove_handler(seen)
    assert not telemetry.active


class Otel:
    """The SDK's in-memory exporters behind one handler."""

    def __init__(self, **options: Any) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.handler = allm.otel.OpenTelemetry(
            tracer_provider=self.tracer_provider, meter_provider=self.meter_provider, **options
        )

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def tree(self, attrs: bool = False) -> list[Any]:
        """The finished spans as nested ``(name, children)`` (``(name, kind, attributes, children)``
        with ``attrs``), children in start order."""
        spans = self.spans()
        ids = {s.context.span_id for s in spans}
        kids: dict[int | None, list[ReadableSpan]] = {}
        for s in spans:
            parent = s.parent.span_id if s.parent is not None and s.parent.span_id in ids else None
            kids.setdefault(parent, []).append(s)

        def walk(pid: int | None) -> list[Any]:
            out = []
            for s in sorted(kids.get(pid, []), key=lambda s: s.start_time or 0):
                sub = walk(s.context.span_id)
                out.append((s.name, s.kind.name, dict(s.attributes or {}), sub) if attrs else (s.name, sub))
            return out

        return walk(None)

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name == name]

    def metrics(self) -> dict[str, Any]:
        """``name -> metric`` of everything recorded so far."""
        data = self.reader.get_metrics_data()
        out: dict[str, Any] = {}
        if data is None:
            return out
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    out[m.name] = m
        return out

    def points(self, name: str) -> list[tuple[dict[str, Any], float, int]]:
        """``(attributes, sum, count)`` of each data point of histogram ``name``."""
        m = self.metrics().get(name)
        if m is None:
            return []
        return [(dict(p.attributes), p.sum, p.count) for p in m.data.data_points]


@pytest.fixture
def otel() -> Iterator[Otel]:
    o = Otel()
    telemetry.add_handler(o.handler)
    try:
        yield o
    finally:
        telemetry.remove_handler(o.handler)
    assert not telemetry.active


@pytest.fixture
def otel_content() -> Iterator[Otel]:
    o = Otel(capture_content=True)
    telemetry.add_handler(o.handler)
    try:
        yield o
    finally:
        telemetry.remove_handler(o.handler)
