"""No key material in anything telemetry produces: records (their reprs, fields, errors and
content), log lines (messages and ``extra`` fields) and OpenTelemetry spans and metrics (with
content capture on, the most they ever hold).

The scenarios are those of ``tests/test_key_leaks.py`` (every adapter's success and error
paths, keys echoed back by the provider in bodies, in-stream errors, retries, sync and
async), run with every telemetry handler attached; the scan is the same.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from hypothesis import HealthCheck, assume, given, settings

from allm import telemetry
from tests.adapters import WIRE_NAMES, WIRES
from tests.loopback import LoopbackServer
from tests.telemetry.conftest import Otel
from tests.test_key_leaks import api_keys, arun_scenarios, find_leaks, run_scenarios, servers, texts_of

__all__ = ["servers"]  # the module-scoped loopback servers fixture, shared with the key-leak tests


def run_observed(wire: str, server: LoopbackServer, key: str, caplog: pytest.LogCaptureFixture) -> tuple[list[str | bytes], list[telemetry.Record]]:
    records: list[telemetry.Record] = []
    otel = Otel(capture_content=True)
    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="allm")
    with telemetry.scope(records.append, otel.handler, telemetry.LogHandler()):
        seen = run_scenarios(WIRES[wire], server.url, key, scoped=False)
        aseen = asyncio.run(arun_scenarios(WIRES[wire], server.url, key))
    texts: list[str | bytes] = texts_of(seen, "") + texts_of(aseen, "")
    for r in records:
        texts += [repr(r), str(r)]
        texts += [repr(getattr(r, f)) for f in ("request", "output", "tool_arguments", "tool_result", "error")]
        if r.error is not None:
            texts.append(str(r.error))
    texts += [s.to_json() for s in otel.spans()]
    data = otel.reader.get_metrics_data()
    if data is not None:
        texts.append(data.to_json())
    texts.append(caplog.text)
    for lr in caplog.records:
        texts += [lr.getMessage(), repr(lr.__dict__)]
    return texts, records


BASELINE: dict[str, list[str | bytes]] = {}


@pytest.mark.parametrize("wire", WIRE_NAMES)
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(key=api_keys)
def test_no_key_in_records_logs_or_spans(
    wire: str, key: str, servers: dict[str, LoopbackServer], caplog: pytest.LogCaptureFixture
) -> None:
    if wire not in BASELINE:
        BASELINE[wire] = run_observed(wire, servers[wire], "QQQQQQQQQQQQQQQQ", caplog)[0]
    assume(not find_leaks(key, BASELINE[wire]))
    texts, records = run_observed(wire, servers[wire], key, caplog)
    phases = {(r.kind, r.phase) for r in records}
    assert {("stream", "retry"), ("stream", "exception"), ("generate", "retry"), ("generate", "exception")} <= phases
    assert any(isinstance(r.error, Exception) for r in records if r.phase == "exception")
    assert any(lr.name == "allm.stream" for lr in caplog.records)  # the log lines were there to scan
    assert find_leaks(key, texts) == []


def test_the_scan_sees_span_text() -> None:
    """The control: a key written into a span is found."""
    otel = Otel()
    span = otel.tracer_provider.get_tracer("t").start_span("s", attributes={"x": "sk-" + "k" * 30})
    span.end()
    assert find_leaks("sk-" + "k" * 30, [s.to_json() for s in otel.spans()])
