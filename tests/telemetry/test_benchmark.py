"""``benchmarks/telemetry.py`` runs, checks what its calls return, and reports every figure
(nothing is asserted about timings)."""

from __future__ import annotations

import pytest

from allm import telemetry
from benchmarks import telemetry as bench


def test_a_quick_run_reports_every_case_and_variant(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--quick", "--rounds", "1", "--events", "30"]) == 0
    out = capsys.readouterr().out
    for case, unit in (("generate", "call"), ("stream", "event"), ("loop", "turn")):
        for variant in ("off", "no-op", "otel"):
            assert out.count(f"| {case} (per {unit}) | {variant} |") == 2  # CPU and wall tables
    assert "SDK alone" in out and "allm's share" in out
    assert out.count("| stream, one more event") == 6  # each variant's slope, in both tables
    assert not telemetry.active  # every variant detached its handler


def test_figures_are_per_unit() -> None:
    result = bench.run(1, 10, {"generate": 2, "stream": 1, "short": 1, "loop": 1}, seed=1)
    figures = bench.summarize(result)
    cases = ("generate", "stream", "short", "loop", "slope")
    assert set(figures) == {f"{c}/{v}" for c in cases for v in ("off", "no-op", "otel")} | {"generate/sdk"}
    s = result["samples"]
    assert figures["short/off"]["us"] == pytest.approx(s["short"]["off"][0][1] * 1e6)  # one delta per short call
    long_, short = s["stream"]["otel"][0][1] * 1e6, s["short"]["otel"][0][1] * 1e6
    assert figures["slope/otel"]["us"] == pytest.approx((long_ - short) / 9)
    assert figures["slope/off"]["cost_us"] == 0
    assert figures["stream/off"]["us"] == pytest.approx(s["stream"]["off"][0][1] * 1e6 / 10)
    assert figures["loop/otel"]["us"] == pytest.approx(s["loop"]["otel"][0][1] * 1e6 / bench.TURNS)
    assert figures["generate/off"]["cost_us"] == 0 and figures["generate/off"]["pct"] == 0


def test_a_wrong_result_fails_the_run() -> None:
    cases = bench.Cases(5)
    cases.stream()
    cases.events = 6
    with pytest.raises(RuntimeError, match="5 deltas, not 6"):
        cases.stream()
