"""What telemetry costs on the Fake, in one process and one interleaved run.

``python -m benchmarks.telemetry`` (``--quick`` for a smoke run; ``--rounds N``; ``--json``).

Variants, switched between batches in the same process (so the interpreter, the caches and
the machine's load are shared):

- ``off``: no handler attached (each call checks one module flag);
- ``no-op``: one handler that does nothing (``allm.telemetry.add_handler``): the cost of
  the hooks and records themselves;
- ``otel``: :func:`allm.otel.instrument` over the OpenTelemetry SDK: a ``TracerProvider``
  with a ``BatchSpanProcessor`` whose exporter drops the batches, and a ``MeterProvider``
  aggregating the metrics in memory (``InMemoryMetricReader``);
- ``sdk``: for comparison, what the SDK alone costs for one model call's span (its start
  and end attributes) and its four histogram records, with no allm code.

Cases (each checked for its result before it is timed):

- ``generate``: one non-streamed call, ``allm.generate`` on the Fake (two deltas, usage):
  microseconds per call;
- ``stream``: one ``allm.stream_generate`` of ``--events`` text deltas on the Fake, read to
  the end: microseconds per event, and the variant's percentage over ``off`` per event;
- ``loop``: a 10-turn tool loop (``allm.chat``: nine tool calls, then the answer):
  microseconds per turn (one model call and one tool run);
- ``short``: the ``stream`` case with a tenth of the deltas. A stream's figure per event
  includes its call's own cost (its records, its span) shared among its events; the slope
  between ``short`` and ``stream`` (fastest rounds) is the cost of one more event alone.

Every round runs the variants of a case in a new random order; a figure is the median of the
rounds (the min-max spread is shown). The cost columns subtract ``off``'s median.
Targets: ``off`` and ``no-op`` within noise of each other; OpenTelemetry under 50 µs per
call and under 2% per streamed event.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import allm
from allm import telemetry
from allm.events import TextDelta
from allm.providers import Fake
from allm.testing import finish, tool_call, usage
from benchmarks.values import otel_sdk_call

TURNS = 10
VARIANTS = ("off", "no-op", "otel")


# ------------------------------------------------------------------------------ the cases


def _ignore(record: Any) -> None:
    pass


def _add(args: dict[str, Any]) -> int:
    return int(args["a"]) + int(args["b"])


def _loop_reply(request: allm.Request) -> list[Any]:
    done = sum(1 for m in request.messages if m.role == "tool")
    if done < TURNS - 1:
        return [tool_call("add", {"a": done, "b": 1}, id=f"call_{done}"), usage(20 + done, 8), finish("tool_calls")]
    return [f"The total is {done}.", usage(40, 6)]


class Cases:
    """The three calls, on engines built once (the Fake answers every call with ``function=``)."""

    def __init__(self, events: int) -> None:
        self.events = events
        self.plain = allm.Engine(adapter=Fake(function=lambda r: ["Hel", "lo", usage(3, 2)]), model="fake-1")
        deltas = ["x"] * events
        self.streamer = allm.Engine(adapter=Fake(function=lambda r: [*deltas, usage(3, events)]), model="fake-1")
        self.short_events = max(1, events // 10)
        few = deltas[: self.short_events]
        self.shorter = allm.Engine(adapter=Fake(function=lambda r: [*few, usage(3, len(few))]), model="fake-1")
        schema = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}
        tool = allm.Tool("add", "Add two integers.", schema, handler=_add)
        self.looper = allm.Engine(adapter=Fake(function=_loop_reply), model="fake-1", tools=(tool,))

    def generate(self) -> None:
        r = allm.generate(self.plain, "hi")
        if r.output_text != "Hello":
            raise RuntimeError(r.output_text)

    def stream(self) -> None:
        self._stream(self.streamer, self.events)

    def short(self) -> None:
        self._stream(self.shorter, self.short_events)

    def _stream(self, engine: allm.Engine, events: int) -> None:
        n = 0
        for ev in allm.stream_generate(engine, "hi"):
            if type(ev) is TextDelta:
                n += 1
        if n != events:
            raise RuntimeError(f"{n} deltas, not {events}")

    def loop(self) -> None:
        r = allm.chat(self.looper, "Add them up.", max_turns=TURNS)
        if len(r.steps) != TURNS or r.final_response is None or r.final_response.output_text != f"The total is {TURNS - 1}.":
            raise RuntimeError(f"the loop ended with {r.halted_reason} after {len(r.steps)} steps")


# ------------------------------------------------------------------------------ the variants


class Variants:
    def __init__(self) -> None:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

        import allm.otel

        class Drop(SpanExporter):
            def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(BatchSpanProcessor(Drop()))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.otel = allm.otel.OpenTelemetry(tracer_provider=self.tracer_provider, meter_provider=self.meter_provider)

    @contextmanager
    def on(self, variant: str) -> Iterator[None]:
        handler: Any = {"off": None, "no-op": _ignore, "otel": self.otel}[variant]
        if handler is not None:
            telemetry.add_handler(handler)
        try:
            assert telemetry.active is (handler is not None)
            yield
        finally:
            if handler is not None:
                telemetry.remove_handler(handler)

    def close(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def sdk_floor() -> Callable[[], None]:
    """One model call's worth of OpenTelemetry SDK work, with no allm code (set up as ``otel``)."""
    return otel_sdk_call(
        {
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "fake", "gen_ai.request.model": "fake-1",
            "allm.request_id": "x" * 22, "gen_ai.request.stream": True,
        },
        {
            "gen_ai.response.id": "fake-1", "gen_ai.response.model": "fake-1", "gen_ai.response.finish_reasons": ("stop",),
            "gen_ai.usage.input_tokens": 3, "gen_ai.usage.output_tokens": 2, "gen_ai.response.time_to_first_chunk": 0.001,
        },
    )


# ------------------------------------------------------------------------------ timing


def _time(fn: Callable[[], None], reps: int) -> tuple[float, float]:
    """``(wall, CPU)`` seconds per call of ``fn`` (CPU: the process's, every thread's)."""
    gc.collect()
    c, t = time.process_time(), time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps, (time.process_time() - c) / reps


def run(rounds: int, events: int, reps: dict[str, int], seed: int | None = None) -> dict[str, Any]:
    """Seconds per operation of each case and variant, every round's ``(wall, CPU)`` sample:
    ``{"samples": {case: {variant: [(wall, cpu), ...]}}, ...}`` (``stream`` per call of
    ``events`` events, ``loop`` per whole loop of :data:`TURNS` turns)."""
    rng = random.Random(seed)
    cases = Cases(events)
    variants = Variants()
    floor = sdk_floor()
    fns = {"generate": cases.generate, "stream": cases.stream, "short": cases.short, "loop": cases.loop}
    samples: dict[str, dict[str, list[tuple[float, float]]]] = {c: {v: [] for v in (*VARIANTS, "sdk")} for c in fns}
    try:
        for v in VARIANTS:  # warm every path once, checking the results
            with variants.on(v):
                for fn in fns.values():
                    for _ in range(3):
                        fn()
        for _ in range(50):
            floor()
        for _ in range(rounds):
            for case, fn in fns.items():
                order = [*VARIANTS, "sdk"] if case == "generate" else list(VARIANTS)
                rng.shuffle(order)
                for v in order:
                    if v == "sdk":
                        samples[case][v].append(_time(floor, reps[case]))
                        continue
                    with variants.on(v):
                        samples[case][v].append(_time(fn, reps[case]))
    finally:
        variants.close()
    return {"samples": samples, "events": events, "short_events": cases.short_events, "turns": TURNS, "rounds": rounds, "reps": reps}


def summarize(result: dict[str, Any], clock: str = "cpu") -> dict[str, dict[str, float]]:
    """The figures on ``clock`` (``cpu``: the process's CPU time, steadier on a shared machine;
    or ``wall``): per case and variant, ``us`` (median µs per call, per event or per turn),
    ``cost_us`` and ``pct`` (over ``off``'s median), ``cost_lo_us`` and ``pct_lo`` (the
    fastest round over ``off``'s fastest: the steadier figure on a loaded machine),
    ``lo``/``hi`` (the rounds' spread, µs); and ``slope/{variant}``: ``us`` per event with the
    call's own cost taken out (fastest ``stream`` and ``short`` rounds), ``cost_us``, ``pct``."""
    per = {"generate": 1, "stream": result["events"], "short": result["short_events"], "loop": result["turns"]}
    i = 0 if clock == "wall" else 1
    out: dict[str, dict[str, float]] = {}
    for case, by_variant in result["samples"].items():
        offs = [x[i] * 1e6 / per[case] for x in by_variant["off"]]
        off, off_lo = statistics.median(offs), min(offs)
        for v, samples in by_variant.items():
            if not samples:
                continue
            xs = [x[i] * 1e6 / per[case] for x in samples]
            us = statistics.median(xs)
            row = {"us": us, "lo": min(xs), "hi": max(xs)}
            if v != "sdk":
                row["cost_us"] = us - off
                row["pct"] = 100 * (us - off) / off
                # fastest against fastest: other load on the machine only ever adds time
                row["cost_lo_us"] = min(xs) - off_lo
                row["pct_lo"] = 100 * (min(xs) - off_lo) / off_lo
            out[f"{case}/{v}"] = row
    n, k = result["events"], result["short_events"]
    if n > k:
        for v in VARIANTS:
            long_, short = out[f"stream/{v}"]["lo"] * n, out[f"short/{v}"]["lo"] * k  # µs per call
            out[f"slope/{v}"] = {"us": (long_ - short) / (n - k)}
        off_slope = out["slope/off"]["us"]
        for v in VARIANTS:
            row = out[f"slope/{v}"]
            row["cost_us"] = row["us"] - off_slope
            row["pct"] = 100 * row["cost_us"] / off_slope
    return out


def table(result: dict[str, Any]) -> str:
    unit = {"generate": "call", "stream": "event", "short": "event", "loop": "turn"}
    lines = [
        f"Telemetry cost on the Fake: {result['rounds']} interleaved rounds, median (min-max) µs; "
        f"stream of {result['events']} deltas, loop of {result['turns']} turns; reps per sample {result['reps']}",
    ]
    for clock, title in (("cpu", "process CPU time"), ("wall", "wall time")):
        s = summarize(result, clock)
        lines += [
            "",
            f"{title}:",
            "",
            "| case | variant | µs per unit: median (min-max) | over off, medians: µs (%) | over off, fastest rounds: µs (%) |",
            "|---|---|---|---|---|",
        ]
        for case in ("generate", "stream", "short", "loop"):
            for v in (*VARIANTS, "sdk"):
                row = s.get(f"{case}/{v}")
                if row is None:
                    continue
                label = "SDK alone (one call's span + 4 histogram records)" if v == "sdk" else v
                over = " | " if v == "sdk" else f"{row['cost_us']:+.2f} ({row['pct']:+.1f}%) | {row['cost_lo_us']:+.2f} ({row['pct_lo']:+.1f}%)"
                lines.append(f"| {case} (per {unit[case]}) | {label} | {row['us']:.2f} ({row['lo']:.2f}-{row['hi']:.2f}) | {over} |")
        for v in VARIANTS:
            row = s.get(f"slope/{v}")
            if row is not None:
                lines.append(
                    f"| stream, one more event (the call's own cost taken out: {result['events']} vs "
                    f"{result['short_events']} deltas, fastest rounds) | {v} | {row['us']:.3f} | | {row['cost_us']:+.3f} ({row['pct']:+.1f}%) |"
                )
        otel, sdk = s.get("generate/otel"), s.get("generate/sdk")
        if otel is not None and sdk is not None:
            lines.append(
                f"| generate (per call) | otel over off, less the SDK alone: allm's share | | "
                f"{otel['cost_us'] - sdk['us']:+.2f} | {otel['cost_lo_us'] - sdk['lo']:+.2f} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.telemetry", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run: small sizes, two rounds")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 15)")
    ap.add_argument("--events", type=int, default=None, help="deltas per streamed call (default 2000)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--json", action="store_true", help="print the raw samples and the figures as JSON")
    args = ap.parse_args(argv)
    if args.quick:
        rounds, events, reps = 2, 100, {"generate": 20, "stream": 2, "short": 10, "loop": 2}
    else:
        rounds, events, reps = 15, 2000, {"generate": 200, "stream": 5, "short": 40, "loop": 20}
    rounds = args.rounds or rounds
    events = args.events or events
    load = os.getloadavg()
    result = run(rounds, events, reps, args.seed)
    result["loadavg"] = [load, os.getloadavg()]
    if args.json:
        print(json.dumps({**result, "figures": summarize(result), "wall": summarize(result, "wall")}, indent=1))
    else:
        print(table(result))
        print(f"\nloadavg before {' '.join(f'{x:.2f}' for x in load)}, after {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
