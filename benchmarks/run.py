"""Run the benchmark suite and write ``benchmarks/RESULTS.md``.

``python -m benchmarks`` (or ``python benchmarks/run.py``); ``--quick`` for a smoke
run with small sizes and one round. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import random
import select
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script
    sys.path.insert(0, str(ROOT))

from benchmarks.contestants import LIBRARIES  # noqa: E402

PROVIDERS = {"openai": "OpenAI chat", "anthropic": "Anthropic", "gemini": "Gemini"}
LABELS = {"floor": "floor", "floor-lean": "lean floor", "allm": "allm", "openai": "openai SDK", "anthropic": "anthropic SDK", "litellm": "LiteLLM",
          "allm-noop": "allm + no-op telemetry handler", "allm-otel": "allm + OpenTelemetry"}
PROVIDED = {"floor": ("openai", "anthropic", "gemini"), "allm": ("openai", "anthropic", "gemini"),
            "floor-lean": ("openai", "anthropic", "gemini"),  # streams only (figures 1 and 1b)
            "openai": ("openai",), "anthropic": ("anthropic",), "litellm": ("openai", "anthropic"),
            "allm-noop": (), "allm-otel": ()}  # the telemetry variants run in figure 7 only
TELEMETRY = ("allm", "allm-noop", "allm-otel")
PEERS = ("openai", "anthropic", "litellm")
TARGETS = {"stream": 1.25, "post": 1.15, "concurrent": 1.2, "memory": 1.2, "import": 1.0, "codec": 3.0}
LOOP_TARGET = 20_000  # turns per second (figure 6)
STREAM_ONLY = ("floor-lean",)
CMD_TIMEOUT = 900.0


@attrs.define
class Sizes:
    rounds: int = 5
    stream_text: int = 20_000
    stream_tool: int = 5_000
    post_calls: int = 300
    post_text: int = 60
    conc_rounds: int = 3
    conc_streams: int = 200
    conc_text: int = 500
    import_samples: int = 20
    codec_messages: int = 1_000
    codec_reps: int = 5
    loop_reps: int = 200


QUICK = Sizes(rounds=1, stream_text=200, stream_tool=50, post_calls=20, conc_rounds=1, conc_streams=10,
              conc_text=20, import_samples=2, codec_messages=50, codec_reps=2, loop_reps=5)


# ------------------------------------------------------------------------------ processes


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # no network fetch at LiteLLM import
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _readline(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise TimeoutError(f"no answer within {timeout:g} s")
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"the process ended (exit {proc.wait()})")
    return line


class Server:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.server"], cwd=ROOT, env=_env(),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )
        line = _readline(self.proc, 30).decode().split()
        if line[:1] != ["PORT"]:
            raise RuntimeError(f"the server said {line!r}")
        self.port = int(line[1])

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Worker:
    """One library's persistent process (see :mod:`benchmarks.worker`)."""

    def __init__(self, lib: str, port: int) -> None:
        self.lib = lib
        self.error: str | None = None
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.worker", lib, str(port)], cwd=ROOT, env=_env(),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )

    def ready(self) -> None:
        try:
            ans = json.loads(_readline(self.proc, 120))
        except (TimeoutError, RuntimeError) as exc:
            ans = {"error": str(exc)}
        if "error" in ans:
            self.error = ans["error"]

    def ask(self, cmd: dict[str, Any]) -> dict[str, Any]:
        if self.error is not None:
            return {"error": self.error}
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
            self.proc.stdin.flush()
            ans: dict[str, Any] = json.loads(_readline(self.proc, CMD_TIMEOUT))
        except (TimeoutError, RuntimeError, BrokenPipeError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            self.proc.kill()
            return {"error": self.error}
        return ans

    def close(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run_once(lib: str, port: int, cmd: dict[str, Any]) -> dict[str, Any]:
    """One command in a fresh interpreter (figure 3)."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.worker", lib, str(port), "--once", json.dumps(cmd)],
        cwd=ROOT, env=_env(), capture_output=True, timeout=CMD_TIMEOUT, check=False,
    )
    lines = proc.stdout.decode().strip().splitlines()
    if not lines:
        return {"error": f"exit {proc.returncode}: {proc.stderr.decode()[-300:]}"}
    ans: dict[str, Any] = json.loads(lines[-1])
    return ans


# ------------------------------------------------------------------------------ statistics and tables


@attrs.define
class Row:
    """One contestant's samples in one figure."""

    lib: str
    group: str  # rows of one group share a floor
    label: str
    samples: list[float] = attrs.field(factory=list)
    extra: dict[str, list[float]] = attrs.field(factory=dict)
    error: str | None = None
    note: str = ""

    def median(self, key: str | None = None) -> float | None:
        xs = self.samples if key is None else self.extra.get(key, [])
        return statistics.median(xs) if xs and self.error is None else None

    def span(self, key: str | None = None) -> tuple[float, float] | None:
        xs = self.samples if key is None else self.extra.get(key, [])
        return (min(xs), max(xs)) if xs and self.error is None else None


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "—"
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def _ratio(row: Row, floor: Row | None, key: str | None = None) -> float | None:
    if floor is None or row is floor:
        return None
    a, b = row.median(key), floor.median(key)
    if a is None or b is None or b <= 0:
        return None
    return a / b


def _target_cell(row: Row, ratio: float | None, target: float | None, checks: list[tuple[str, float | None, float]], what: str) -> str:
    if row.lib != "allm" or target is None:
        return ""
    checks.append((f"{what}: {row.label}", ratio, target))
    if ratio is None:
        return f"≤ {target:g}x ✗ (no figure)"
    return f"≤ {target:g}x {'✓' if ratio <= target else '✗'}"


def _xratio(r: float | None) -> str:
    return "1 (floor)" if r is None else f"{r:.2f}x"


# ------------------------------------------------------------------------------ the suite


class Suite:
    def __init__(self, sizes: Sizes, libs: Sequence[str], figures: set[str], seed: int = 1) -> None:
        self.sizes = sizes
        self.libs = list(libs)
        self.figures = figures
        self.rng = random.Random(seed)
        self.server = Server()
        self.workers: dict[str, Worker] = {}
        self.sections: list[str] = []
        self.checks: list[tuple[str, float | None, float]] = []
        self.loop_checks: list[tuple[str, float | None]] = []
        self.failures: list[str] = []

    def close(self) -> None:
        for w in self.workers.values():
            w.close()
        self.server.close()

    def start_workers(self) -> None:
        for lib in self.libs:
            self.workers[lib] = Worker(lib, self.server.port)
        for w in self.workers.values():
            w.ready()

    def _ask(self, row: Row, cmd: dict[str, Any]) -> dict[str, Any] | None:
        if row.error is not None:
            return None
        ans = self.workers[row.lib].ask(cmd)
        if "error" in ans:
            row.error = str(ans["error"])
            if row.lib in ("floor", "allm"):
                self.failures.append(f"{row.label}: {row.error}")
            return None
        return ans

    def _rounds(self, rows: list[tuple[Row, dict[str, Any]]], rounds: int, key: str = "seconds") -> None:
        """Run every row once per round, in a new random order each round."""
        for _ in range(rounds):
            order = list(rows)
            self.rng.shuffle(order)
            for row, cmd in order:
                ans = self._ask(row, cmd)
                if ans is not None:
                    row.samples.append(float(ans[key]))
                    if "cpu" in ans:
                        row.extra.setdefault("cpu", []).append(float(ans["cpu"]))

    # -- figure 1

    def fig_stream(self) -> None:
        s = self.sizes
        rows: list[tuple[Row, dict[str, Any]]] = []
        for mode in ("sync", "async"):
            for prov in PROVIDERS:
                for lib in self.libs:
                    if prov in PROVIDED[lib]:
                        row = Row(lib, f"{prov}/{mode}", f"{LABELS[lib]} · {PROVIDERS[prov]} · {mode}")
                        rows.append((row, {"op": "stream", "provider": prov, "mode": mode, "n_text": s.stream_text}))
        for row, cmd in rows:  # warm-up: connections, lazy imports; the floor also fills the server's cache
            self._ask(row, {**cmd, "n_text": min(50, s.stream_text)})
            if row.lib == "floor":
                self._ask(row, cmd)
        self._rounds(rows, s.rounds)
        table = self._table(
            [r for r, _ in rows], "stream",
            ["events/s", "ms per stream"],
            lambda r: [_rate(r, s.stream_text), _ms(r)],
        )
        self.sections.append(
            f"## 1. Streaming: one stream of {s.stream_text:,} text deltas\n\n"
            "Text-delta events per second through one stream, the text collected and joined "
            f"(median of {s.rounds} rounds, min-max in brackets). Cost vs floor = time ÷ the floor's "
            "time for the same wire format and mode.\n\n" + table
        )

    def fig_tool_stream(self) -> None:
        s = self.sizes
        rows: list[tuple[Row, dict[str, Any]]] = []
        for prov in PROVIDERS:
            for lib in self.libs:
                if prov in PROVIDED[lib]:
                    row = Row(lib, f"{prov}/tools", f"{LABELS[lib]} · {PROVIDERS[prov]} · sync")
                    rows.append((row, {"op": "stream", "provider": prov, "mode": "sync", "n_text": 0, "n_tool": s.stream_tool}))
        for row, cmd in rows:
            self._ask(row, {**cmd, "n_tool": min(20, s.stream_tool)})
            if row.lib == "floor":
                self._ask(row, cmd)
        self._rounds(rows, s.rounds)
        table = self._table(
            [r for r, _ in rows], "tools",
            ["deltas/s", "ms per stream"],
            lambda r: [_rate(r, s.stream_tool), _ms(r)],
        )
        self.sections.append(
            f"## 1b. Streaming tool calls: one stream of {s.stream_tool:,} tool-call deltas\n\n"
            "OpenAI and Anthropic stream one call's JSON arguments in fragments; Gemini sends "
            f"whole calls, so its stream holds {s.stream_tool:,} complete function calls. "
            "Arguments collected and joined (sync).\n\n" + table
        )

    # -- figure 2

    def fig_post(self) -> None:
        s = self.sizes
        rows: list[tuple[Row, dict[str, Any]]] = []
        for mode in ("sync", "async"):
            for prov in PROVIDERS:
                for lib in self.libs:
                    if prov in PROVIDED[lib] and lib not in STREAM_ONLY:
                        row = Row(lib, f"{prov}/{mode}", f"{LABELS[lib]} · {PROVIDERS[prov]} · {mode}")
                        rows.append((row, {"op": "post", "provider": prov, "mode": mode, "n_calls": s.post_calls,
                                           "n_text": s.post_text}))
        for row, cmd in rows:
            self._ask(row, {**cmd, "n_calls": min(5, s.post_calls)})
        self._rounds(rows, s.rounds)
        table = self._table(
            [r for r, _ in rows], "post",
            ["requests/s", "µs per request"],
            lambda r: [_rate(r, s.post_calls), _us_each(r, s.post_calls)],
        )
        self.sections.append(
            f"## 2. Plain requests: {s.post_calls} sequential non-streaming calls\n\n"
            "One client (one allm engine) reused; allm uses `http_streaming=False`, the floor a plain "
            "POST + `orjson.loads`. Requests per second.\n\n" + table
        )

    # -- figure 3

    def fig_concurrent(self) -> None:
        s = self.sizes
        rows: list[tuple[Row, dict[str, Any]]] = []
        for prov in PROVIDERS:
            for lib in self.libs:
                if prov in PROVIDED[lib] and lib not in STREAM_ONLY:
                    row = Row(lib, prov, f"{LABELS[lib]} · {PROVIDERS[prov]} · async")
                    rows.append((row, {"op": "concurrent", "provider": prov, "n_streams": s.conc_streams,
                                       "n_text": s.conc_text}))
        for prov in PROVIDERS:  # the server builds each response shape once, before any sample
            self.workers["floor"].ask({"op": "stream", "provider": prov, "mode": "sync", "n_text": s.conc_text})
        exact = True
        for _ in range(s.conc_rounds):
            order = list(rows)
            self.rng.shuffle(order)
            for row, cmd in order:
                if row.error is not None:
                    continue
                ans = run_once(row.lib, self.server.port, cmd)
                if "error" in ans:
                    row.error = str(ans["error"])
                    if row.lib in ("floor", "allm"):
                        self.failures.append(f"{row.label}: {row.error}")
                    continue
                row.samples.append(float(ans["seconds"]))
                row.extra.setdefault("cpu", []).append(float(ans["cpu"]))
                row.extra.setdefault("mb", []).append(ans["rss_growth_kb"] / 1024)
                exact = exact and bool(ans["peak_exact"])
        groups = _groups([r for r, _ in rows])
        lines = ["| contestant | wall s | cost vs floor | target | client CPU s | vs floor | RSS growth MB | vs floor | target |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for rows_ in groups.values():
            floor = rows_[0]
            for r in rows_:
                if r.error is not None:
                    lines.append(f"| {r.label} | error: {_short(r.error)} | | | | | | | |")
                    continue
                rt = _ratio(r, floor)
                rm = _ratio(r, floor, "mb")
                lines.append(
                    f"| {r.label} | {_med_span(r)} | {_xratio(rt)} | "
                    f"{_target_cell(r, rt, TARGETS['concurrent'], self.checks, '3 wall')} | "
                    f"{_fmt(r.median('cpu'))} | {_xratio(_ratio(r, floor, 'cpu'))} | "
                    f"{_med_span(r, 'mb')} | {_xratio(rm)} | "
                    f"{_target_cell(r, rm, TARGETS['memory'], self.checks, '3 memory')} |"
                )
        how = ("peak RSS (kernel high-water mark, reset just before the run) minus RSS before it"
               if exact else "peak RSS (ru_maxrss) minus RSS before the run")
        self.sections.append(
            f"## 3. Concurrency: {s.conc_streams} concurrent async streams of {s.conc_text} deltas\n\n"
            f"Each sample in a fresh interpreter (after one warm-up call); wall time of `asyncio.gather` over "
            f"all streams, and memory growth = {how}. Median of {s.conc_rounds} (min-max).\n\n" + "\n".join(lines)
        )

    # -- figure 4

    def fig_import(self) -> None:
        s = self.sizes
        stmts: list[tuple[str, str, str]] = [
            ("floor", "import httpx, orjson", "floor: `import httpx, orjson`"),
            ("allm", "import allm", "`import allm`"),
            ("allm-first-call", "import allm, allm._transport; allm.providers.OpenAI",
             "`import allm` + what a first OpenAI call loads (adapter, transport, httpx)"),
        ]
        for lib, stmt in (("openai", "import openai"), ("anthropic", "import anthropic"), ("litellm", "import litellm")):
            if lib in self.libs:
                stmts.append((lib, stmt, f"`{stmt}`"))
        rows = [(Row(lib, "import", label), stmt) for lib, stmt, label in stmts]
        code = "import time\nt = time.perf_counter()\n{}\nprint(time.perf_counter() - t)"
        for _row, stmt in rows:  # warm the bytecode caches
            subprocess.run([sys.executable, "-c", stmt], cwd=ROOT, env=_env(), capture_output=True, check=False)
        for _ in range(s.import_samples):
            order = list(rows)
            self.rng.shuffle(order)
            for row, stmt in order:
                p = subprocess.run([sys.executable, "-c", code.format(stmt)], cwd=ROOT, env=_env(),
                                   capture_output=True, check=False, timeout=120)
                if p.returncode != 0:
                    row.error = p.stderr.decode()[-300:]
                    continue
                row.samples.append(float(p.stdout.decode().split()[-1]) * 1000)
        floor = rows[0][0]
        lines = ["| import | ms | cost vs floor | target |", "|---|---|---|---|"]
        for row, _ in rows:
            if row.error is not None:
                lines.append(f"| {row.label} | error: {_short(row.error)} | | |")
                continue
            rt = _ratio(row, floor)
            target = TARGETS["import"] if row.lib == "allm" else None
            lines.append(f"| {row.label} | {_med_span(row)} | {_xratio(rt)} | "
                         f"{_target_cell(row, rt, target, self.checks, '4 import')} |")
        costs = _import_costs()
        self.sections.append(
            f"## 4. Cold import\n\nWall time of the import statement in a fresh interpreter "
            f"(warm bytecode cache), median of {s.import_samples} samples (min-max).\n\n" + "\n".join(lines)
            + ("\n\nLargest allm import costs (`python -X importtime -c 'import allm'`, cumulative µs): "
               + costs if costs else "")
        )

    # -- figure 7

    def fig_telemetry(self) -> None:
        """allm with telemetry off, with a no-op handler and with OpenTelemetry on, same run."""
        s = self.sizes
        libs = [lib for lib in TELEMETRY if lib in self.libs]
        cases: list[tuple[str, str, dict[str, Any], int]] = []  # (label, unit, command, units per sample)
        for prov in PROVIDERS:
            cases.append((f"stream · {PROVIDERS[prov]} · sync", "event",
                          {"op": "stream", "provider": prov, "mode": "sync", "n_text": s.stream_text}, s.stream_text))
        cases.append((f"stream · {PROVIDERS['openai']} · async", "event",
                      {"op": "stream", "provider": "openai", "mode": "async", "n_text": s.stream_text}, s.stream_text))
        for mode in ("sync", "async"):
            cases.append((f"plain request · {PROVIDERS['openai']} · {mode}", "call",
                          {"op": "post", "provider": "openai", "mode": mode, "n_calls": s.post_calls, "n_text": s.post_text},
                          s.post_calls))
        cases.append(("tool loop turn (`allm.chat` on the Fake)", "turn", {"op": "loop", "reps": s.loop_reps}, 1))
        rows: list[tuple[Row, dict[str, Any]]] = []
        table: list[tuple[str, str, int, dict[str, Row]]] = []
        for label, unit, cmd, n in cases:
            by_lib = {}
            for lib in libs:
                row = Row(lib, label, LABELS[lib])
                by_lib[lib] = row
                rows.append((row, cmd))
                small = {**cmd}
                for k, v in (("n_text", 50), ("n_calls", 5), ("reps", 2)):
                    if k in small:
                        small[k] = min(v, small[k])
                self._ask(row, small)  # warm-up
            table.append((label, unit, n, by_lib))
        self._rounds(rows, s.rounds)
        lines = ["| case | off: s per sample | no-op handler vs off | OpenTelemetry vs off | OpenTelemetry cost (wall) "
                 "| client CPU: no-op / OpenTelemetry vs off | OpenTelemetry cost (client CPU) |",
                 "|---|---|---|---|---|---|---|"]
        for label, unit, n, by_lib in table:
            off = by_lib.get("allm")
            if off is None or off.error is not None:
                lines.append(f"| {label} | error: {_short(off.error or '') if off else 'no allm'} | | | | |")
                continue
            cells = [_med_span(off)]
            for lib in ("allm-noop", "allm-otel"):
                r = by_lib.get(lib)
                cells.append(_xratio(_ratio(r, off)) if r is not None and r.error is None else f"error: {_short(r.error or '')}" if r else "not installed")
            otel = by_lib.get("allm-otel")
            a, b = (otel.median() if otel else None), off.median()
            cost = "—"
            if a is not None and b is not None:
                per = (a - b) / n * 1e6
                cost = f"{per:+.2f} µs per {unit} ({(a - b) / b * 100:+.1f}%)"
            cpu_ratios = [_ratio(by_lib[lib], off, "cpu") if lib in by_lib and by_lib[lib].error is None else None
                          for lib in ("allm-noop", "allm-otel")]
            cpu = " / ".join("—" if r is None else _xratio(r) for r in cpu_ratios)
            ca, cb = (otel.median("cpu") if otel else None), off.median("cpu")
            cpu_cost = "—" if ca is None or cb is None else f"{(ca - cb) / n * 1e6:+.2f} µs per {unit} ({(ca - cb) / cb * 100:+.1f}%)"
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {cost} | {cpu} | {cpu_cost} |")
        if "allm-otel" in libs:
            floor = Row("allm-otel", "sdk", "OpenTelemetry SDK alone")
            for _ in range(s.rounds):
                ans = self._ask(floor, {"op": "otel_floor", "n": max(50, s.post_calls)})
                if ans is not None:
                    floor.samples.append(float(ans["seconds"]))
                    floor.extra.setdefault("cpu", []).append(float(ans["cpu"]))
            m, mc = floor.median(), floor.median("cpu")
            lines.append("| the OpenTelemetry SDK alone: one call's span and its 4 histogram records, no allm code | "
                         + (f"{m * 1e6:.1f} µs per call" if m is not None else f"error: {_short(floor.error or '')}")
                         + " | | | | | " + (f"{mc * 1e6:.1f} µs per call" if mc is not None else "—") + " |")
        self.sections.append(
            "## 7. Telemetry overhead\n\n"
            "The same calls with telemetry off (no handler: one flag checked per call), with one no-op handler "
            "(`allm.telemetry.add_handler`), and with OpenTelemetry on (`allm.otel.instrument` with the SDK's tracer "
            "provider, a batch span processor whose exporter drops the batches, and a meter provider aggregating the "
            f"metrics). Each in its own process, in a new random order each round; median of {s.rounds} rounds. "
            f"Streams of {s.stream_text:,} text deltas, {s.post_calls} sequential plain requests, 10-turn tool loops "
            "(the cost is per text event, per request and per turn: a turn is a model call and a tool run).\n\n"
            + "\n".join(lines)
        )

    # -- figure 5

    def fig_codec(self) -> None:
        s = self.sizes
        rows = [(Row(lib, "codec", LABELS[lib] if lib == "allm" else "floor: orjson / pickle of plain dicts"),
                 {"op": "codec", "n_messages": s.codec_messages, "reps": s.codec_reps}) for lib in ("floor", "allm")]
        rows[1][0].label = "allm: `allm.codec` dumps+loads / pickle of the Thread"
        for _ in range(s.rounds):
            order = list(rows)
            self.rng.shuffle(order)
            for row, cmd in order:
                ans = self._ask(row, cmd)
                if ans is not None:
                    row.extra.setdefault("json", []).append(ans["json"] * 1000)
                    row.extra.setdefault("pickle", []).append(ans["pickle"] * 1000)
        floor = rows[0][0]
        lines = ["| contestant | JSON round trip ms | vs floor | pickle round trip ms | vs floor |", "|---|---|---|---|---|"]
        for row, _ in rows:
            if row.error is not None:
                lines.append(f"| {row.label} | error: {_short(row.error)} | | | |")
                continue
            lines.append(f"| {row.label} | {_med_span(row, 'json')} | {_xratio(_ratio(row, floor, 'json'))} | "
                         f"{_med_span(row, 'pickle')} | {_xratio(_ratio(row, floor, 'pickle'))} |")
            if row.lib == "allm":
                self.checks.append(("5 json: `allm.codec`", _ratio(row, floor, "json"), TARGETS["codec"]))
                self.checks.append(("5 pickle: pickle", _ratio(row, floor, "pickle"), TARGETS["codec"]))
        self.sections.append(
            f"## 5. Storing a thread: {s.codec_messages:,} messages with tool calls\n\n"
            "Round trip = dumps then loads, checked equal to the original. The floor carries the same "
            "information as plain dicts (role, content, tool calls with parsed and raw arguments, "
            f"tool_call_id). Mean of {s.codec_reps} round trips per sample, median of {s.rounds} samples.\n\n"
            + "\n".join(lines)
        )

    # -- figure 6

    def fig_loop(self) -> None:
        s = self.sizes
        variants = {
            "sync": "`allm.chat`, a `def` handler, default `tool_timeout` (30 s: the handler runs on the thread pool)",
            "sync-untimed": "`allm.chat`, a `def` handler, `tool_timeout=None` (the handler runs in the calling thread)",
            "async": "`allm.achat`, an `async def` handler, default `tool_timeout`",
            "async-sync-handler": "`allm.achat`, a `def` handler, default `tool_timeout` (on the thread pool)",
        }
        rows = [(Row("floor", "loop", "floor: a loop over plain dicts"), {"op": "loop", "reps": max(s.loop_reps, 50)})]
        # What handing each call to another thread costs by itself (the default tool_timeout's
        # price for a `def` handler): the floor loop with that one change, not a floor for ratios.
        handoffs = [
            (Row("floor", "loop", "floor + the handler on a `ThreadPoolExecutor` thread (`submit().result(timeout=30)`)"),
             {"op": "loop", "reps": max(s.loop_reps, 50), "handoff": "thread"}),
            (Row("floor", "loop", "floor + the handler on a thread from an event loop "
                                  "(`await asyncio.wait_for(loop.run_in_executor(...), 30)`)"),
             {"op": "loop", "reps": max(s.loop_reps, 50), "handoff": "asyncio"}),
        ]
        rows += [(Row("allm", "loop", f"allm: {label}", note=v), {"op": "loop", "reps": s.loop_reps, "variant": v})
                 for v, label in variants.items()]
        rows[1:1] = handoffs
        kinds: set[str] = set()
        for _ in range(s.rounds):
            order = list(rows)
            self.rng.shuffle(order)
            for row, cmd in order:
                ans = self._ask(row, cmd)
                if ans is not None:
                    row.samples.append(1.0 / float(ans["seconds"]))
                    kinds.add(str(ans["kind"]))
        if "chat" in kinds:
            what = ("`allm.chat` (and `allm.achat`) runs a 10-turn tool loop on the Fake (9 tool calls, then an "
                    "answer); the tool adds two integers")
        else:
            for row, _ in rows[1 + len(handoffs):]:
                row.label = "allm: 10 `allm.generate` calls on the Fake (stand-in, see above)"
            what = ("**Stand-in:** `allm.chat` (the tool loop) is not on this branch yet, so this measures "
                    "a 10-call Fake `generate` sequence driven by hand (tool run and result appended per turn). "
                    "Once `allm.chat` exists the same figure measures `allm.chat` itself")
        floor = rows[0][0]
        lines = ["| contestant | turns/s | time vs floor |", "|---|---|---|"]
        for row, _ in rows:
            if row.error is not None:
                lines.append(f"| {row.label} | error: {_short(row.error)} | |")
                continue
            r = _ratio(floor, row)  # turns/s: time ratio is the inverse
            lines.append(f"| {row.label} | {_med_span(row)} | {_xratio(r if row is not floor else None)} |")
            if row.lib == "allm":
                self.loop_checks.append((row.note, row.median()))
        self.sections.append(
            f"## 6. Tool loop: 10 turns\n\n{what}. The floor is the least any loop does per turn "
            "(take the scripted reply dict, append it, run the handler, append the JSON result). "
            "The two `floor +` rows are that loop with the handler run on another thread, as a loop must "
            "run a `def` handler it can give up on at its timeout (a thread cannot be stopped from "
            "outside): no loop that switches threads per call runs faster than they do. "
            f"Median of {s.rounds} samples. Target: at least {LOOP_TARGET:,} turns/s.\n\n" + "\n".join(lines)
        )

    # -- tables

    def _table(self, rows: list[Row], what: str, heads: list[str], cells: Any) -> str:
        target = TARGETS.get(what)
        lean = any(r.lib == "floor-lean" for r in rows)
        extra = " cost vs lean floor |" if lean else ""
        lines = ["| contestant | " + " | ".join(heads) + f" | cost vs floor |{extra} target | client CPU vs floor |",
                 "|---" * (len(heads) + 4 + lean) + "|"]
        for rows_ in _groups(rows).values():
            floor = rows_[0]
            lean_row = next((r for r in rows_ if r.lib == "floor-lean"), None)
            for r in rows_:
                if r.error is not None:
                    lines.append(f"| {r.label} | error: {_short(r.error)} |" + " |" * (len(heads) + 2 + lean))
                    continue
                rt = _ratio(r, floor)
                fig = {"stream": "1 stream", "post": "2 requests"}.get(what, what)
                cell = _target_cell(r, rt, target, self.checks, fig)
                lean_cell = ""
                if lean:
                    rl = _ratio(r, lean_row) if r.lib != "floor" else None
                    lean_cell = f" {_xratio(rl) if r.lib != 'floor' else ''} |"
                    if r.lib == "allm" and target is not None:
                        self.checks.append((f"{fig} lean: {r.label}", rl, target))
                lines.append(f"| {r.label} | " + " | ".join(cells(r)) + f" | {_xratio(rt)} |{lean_cell} "
                             f"{cell} | {_xratio(_ratio(r, floor, 'cpu'))} |")
        return "\n".join(lines)


def _groups(rows: list[Row]) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = {}
    for r in rows:
        out.setdefault(r.group, []).append(r)
    for g in out.values():
        g.sort(key=lambda r: {"floor": 0, "floor-lean": 1, "allm": 2}.get(r.lib, 3))
    return out


def _short(err: str) -> str:
    return err.replace("|", "/").replace("\n", " ")[:120]


def _med_span(r: Row, key: str | None = None) -> str:
    m, sp = r.median(key), r.span(key)
    if m is None or sp is None:
        return "—"
    return f"{_fmt(m)} ({_fmt(sp[0])}-{_fmt(sp[1])})"


def _rate(r: Row, n: int) -> str:
    m, sp = r.median(), r.span()
    if m is None or sp is None:
        return "—"
    return f"{_fmt(n / m)} ({_fmt(n / sp[1])}-{_fmt(n / sp[0])})"


def _ms(r: Row) -> str:
    m = r.median()
    return _fmt(m * 1000) if m is not None else "—"


def _us_each(r: Row, n: int) -> str:
    m = r.median()
    return _fmt(m * 1e6 / n) if m is not None else "—"


def _import_costs() -> str:
    """The modules ``import allm`` pulls in directly, by cumulative import time."""
    p = subprocess.run([sys.executable, "-X", "importtime", "-c", "import allm"], cwd=ROOT, env=_env(),
                       capture_output=True, check=False)
    pending: list[tuple[int, str]] = []
    top: list[tuple[int, str]] = []
    for line in p.stderr.decode().splitlines():  # children are listed before their parent
        parts = line.split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name = parts[2].strip()
        depth = (len(parts[2]) - len(parts[2].lstrip()) - 1) // 2
        if depth == 1:
            pending.append((int(parts[1]), name))
        elif depth == 0:
            if name == "allm":
                top = pending
            pending = []
    top.sort(reverse=True)
    return ", ".join(f"{name} {us:,}" for us, name in top[:6])


def _versions(libs: Sequence[str]) -> str:
    names = ["httpx", "httpcore", "h11", "orjson", "attrs", "cattrs"] + [lib for lib in libs if lib in PEERS]
    out = []
    for n in names:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out.append(f"{n} {importlib.metadata.version(n)}")
    return ", ".join(out)


def _git_rev() -> str:
    p = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, check=False)
    dirty = subprocess.run(["git", "status", "--porcelain", "allm"], cwd=ROOT, capture_output=True, check=False)
    rev = p.stdout.decode().strip() or "unknown"
    return rev + (" (allm/ modified)" if dirty.stdout.strip() else "")


def available_libs(skip: Sequence[str]) -> list[str]:
    out = []
    for lib, (_cls, module) in LIBRARIES.items():
        if lib in skip:
            continue
        if module is not None and importlib.util.find_spec(module) is None:
            continue
        out.append(lib)
    return out


ALL_FIGURES = ("1", "1b", "2", "3", "4", "5", "6", "7")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small sizes, one round (a smoke run)")
    ap.add_argument("--rounds", type=int, help="rounds per figure (default 5; 1 with --quick)")
    ap.add_argument("--skip", default="", help="comma-separated libraries to leave out (openai,anthropic,litellm)")
    ap.add_argument("--figures", default=",".join(ALL_FIGURES), help="comma-separated figures to run")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS.md"), help="where to write the results")
    args = ap.parse_args(argv)

    sizes = attrs.evolve(QUICK) if args.quick else Sizes()
    if args.rounds:
        sizes.rounds = sizes.conc_rounds = args.rounds
    skip = [s.strip() for s in args.skip.split(",") if s.strip()]
    libs = available_libs(skip)
    figures = {f.strip() for f in args.figures.split(",") if f.strip()}
    unknown = figures - set(ALL_FIGURES)
    if unknown:
        ap.error(f"unknown figures {sorted(unknown)}; known: {', '.join(ALL_FIGURES)}")

    load_before = os.getloadavg()
    started = time.time()
    suite = Suite(sizes, libs, figures)
    try:
        suite.start_workers()
        for fig, fn in (("1", suite.fig_stream), ("1b", suite.fig_tool_stream), ("2", suite.fig_post),
                        ("3", suite.fig_concurrent), ("4", suite.fig_import), ("5", suite.fig_codec),
                        ("6", suite.fig_loop), ("7", suite.fig_telemetry)):
            if fig in figures:
                print(f"figure {fig}...", file=sys.stderr, flush=True)
                fn()
    finally:
        suite.close()
    load_after = os.getloadavg()

    missing = [lib for lib in PEERS if lib not in libs]
    machine = (
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, loadavg before "
        f"{' '.join(f'{x:.2f}' for x in load_before)}, after {' '.join(f'{x:.2f}' for x in load_after)}; "
        f"Python {platform.python_version()} ({platform.python_implementation()}); {_versions(libs)}; "
        f"allm at {_git_rev()}."
    )
    run_line = (
        f"Run: `python -m benchmarks{' --quick' if args.quick else ''}`, {time.strftime('%Y-%m-%d %H:%M', time.localtime(started))}, "
        f"{time.time() - started:.0f} s; rounds {sizes.rounds} (figure 3: {sizes.conc_rounds}); contestants "
        f"{', '.join(LABELS[lib] for lib in libs)}"
        + (f"; not installed or skipped: {', '.join(LABELS[m] for m in missing)}" if missing else "")
        + "."
    )
    summary = ["| target | allm's worst | met |", "|---|---|---|"]
    by_fig: dict[str, tuple[str, float | None, float]] = {}
    for what, ratio, target in suite.checks:
        fig = what.split(":")[0]
        cur = by_fig.get(fig)
        if cur is None or (ratio is None) or (cur[1] is not None and ratio > cur[1]):
            by_fig[fig] = (what, ratio, target)
    conc = f"3. {sizes.conc_streams} concurrent streams"
    names = {"1 stream": "1. streaming (each adapter, sync and async)",
             "1 stream lean": "1. streaming vs the lean floor (each adapter, sync and async)",
             "5 json": "5. a 1,000-message thread, JSON round trip", "5 pickle": "5. a 1,000-message thread, pickle round trip",
             "2 requests": "2. plain requests",
             "3 wall": f"{conc}: wall", "3 memory": f"{conc}: memory growth", "4 import": "4. cold import"}
    for fig, (what, ratio, target) in by_fig.items():
        ok = ratio is not None and ratio <= target
        summary.append(f"| {names.get(fig, fig)} ≤ {target:g}x | {_xratio(ratio)} ({what.split(': ', 1)[1]}) | {'✓' if ok else '✗'} |")
    for what, rate in suite.loop_checks:
        ok = rate is not None and rate >= LOOP_TARGET
        summary.append(f"| 6. tool loop ≥ {LOOP_TARGET:,} turns/s | {_fmt(rate)} ({what}) | {'✓' if ok else '✗'} |")
    text = "\n\n".join(
        ["# allm benchmark results", machine, run_line,
         "Ratios are allm's (or a peer's) cost divided by the floor's, measured in the same run; "
         "see `benchmarks/README.md` for what each figure and the floor are.",
         "## Targets\n\n" + "\n".join(summary), *suite.sections]
    ) + "\n"
    if suite.failures:
        text += "\n## Failures\n\n" + "\n".join(f"- {f}" for f in suite.failures) + "\n"
    Path(args.out).write_text(text)
    print(text)
    return 1 if suite.failures else 0


if __name__ == "__main__":
    sys.exit(main())
