"""A contestant's process: ``python -m benchmarks.worker LIB PORT [--once JSON]``.

Each library runs in its own process, so one library's imports, threads and
patches never touch another's measurements. The runner sends one JSON command per
line on stdin and reads one JSON answer per line (the protocol has its own copy of
stdout; anything the library prints goes to stderr). With ``--once`` the worker
runs a single command in a fresh interpreter and exits (figure 3).

Commands (``op``): ``stream``, ``post``, ``concurrent``, ``codec``, ``loop``.
Every answer holds ``seconds`` (or the figure's own numbers), or ``error``.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import re
import resource
import sys
import time
from typing import Any

from . import values, wire
from .contestants import gather_streams, make


def _check(got: Any, want: Any, what: str) -> None:
    if got != want:
        g, w = repr(got), repr(want)
        raise RuntimeError(f"{what}: wrong result (got {g[:120]}..., expected {w[:120]}...)")


def _rss_kb() -> int:
    try:
        with open("/proc/self/status") as f:
            m = re.search(r"VmRSS:\s+(\d+)", f.read())
        return int(m.group(1)) if m else 0
    except OSError:
        return 0


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (Linux); ``False`` where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_kb(reset: bool) -> int:
    if reset:
        with open("/proc/self/status") as f:
            m = re.search(r"VmHWM:\s+(\d+)", f.read())
        if m:
            return int(m.group(1))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak


class Worker:
    def __init__(self, lib: str, port: int) -> None:
        self.lib = lib
        self.contestant = make(lib, port)
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)

    def run(self, cmd: dict[str, Any]) -> dict[str, Any]:
        op = cmd["op"]
        return getattr(self, "op_" + op)(**{k: v for k, v in cmd.items() if k != "op"})

    # -- figure 1: one stream

    def op_stream(self, provider: str, mode: str, n_text: int, n_tool: int = 0) -> dict[str, Any]:
        c = self.contestant
        assert c is not None
        gc.collect()
        cpu, t = time.process_time(), time.perf_counter()
        if mode == "sync":
            got = c.stream(provider, n_text, n_tool)
        else:
            got = self.loop.run_until_complete(c.astream(provider, n_text, n_tool))
        dt, cpu = time.perf_counter() - t, time.process_time() - cpu
        _check(got, wire.expected(n_text, n_tool, provider), f"{self.lib} {provider} {mode} stream")
        return {"seconds": dt, "cpu": cpu}

    # -- figure 2: sequential plain requests

    def op_post(self, provider: str, mode: str, n_calls: int, n_text: int) -> dict[str, Any]:
        c = self.contestant
        assert c is not None
        want = wire.expected(n_text, 0, provider)[0]
        gc.collect()
        if mode == "sync":
            post = c.post
            cpu, t = time.process_time(), time.perf_counter()
            got = [post(provider, n_text) for _ in range(n_calls)]
            dt, cpu = time.perf_counter() - t, time.process_time() - cpu
        else:
            apost = c.apost

            async def calls() -> list[str]:
                return [await apost(provider, n_text) for _ in range(n_calls)]

            cpu, t = time.process_time(), time.perf_counter()
            got = self.loop.run_until_complete(calls())
            dt, cpu = time.perf_counter() - t, time.process_time() - cpu
        for g in got:
            _check(g, want, f"{self.lib} {provider} {mode} request")
        return {"seconds": dt, "cpu": cpu}

    # -- figure 3: many concurrent streams (run with --once, in a fresh process)

    def op_concurrent(self, provider: str, n_streams: int, n_text: int) -> dict[str, Any]:
        c = self.contestant
        assert c is not None
        want = wire.expected(n_text, 0, provider)
        # Warm up: imports, the client and its pool exist before the baseline.
        _check(self.loop.run_until_complete(gather_streams(c, provider, 2, 5)), [wire.expected(5, 0, provider)] * 2, "warm-up")
        gc.collect()
        base = _rss_kb()
        reset = _reset_peak()
        cpu, t = time.process_time(), time.perf_counter()
        got = self.loop.run_until_complete(gather_streams(c, provider, n_streams, n_text))
        dt, cpu = time.perf_counter() - t, time.process_time() - cpu
        peak = _peak_kb(reset)
        if len(got) != n_streams:
            raise RuntimeError("missing streams")
        for g in got:
            _check(g, want, f"{self.lib} {provider} concurrent stream")
        return {"seconds": dt, "cpu": cpu, "rss_growth_kb": max(0, peak - base), "rss_base_kb": base, "peak_exact": reset}

    # -- figures 5 and 6 (no server)

    def op_codec(self, n_messages: int, reps: int) -> dict[str, Any]:
        if self.lib == "floor":
            return values.codec_floor(n_messages, reps)
        return values.codec_allm(n_messages, reps)

    def op_otel_floor(self, n: int) -> dict[str, Any]:
        wall, cpu = values.otel_sdk_floor(n)
        return {"seconds": wall, "cpu": cpu}

    def op_loop(self, reps: int, variant: str = "sync", handoff: str | None = None) -> dict[str, Any]:
        if self.lib == "floor":
            return {"seconds": values.loop_floor(reps, handoff), "kind": "floor"}
        if values.has_chat():
            return {"seconds": values.loop_allm_chat(reps, variant), "kind": "chat"}
        return {"seconds": values.loop_allm_generate(reps), "kind": "generate"}


def main() -> None:
    lib, port = sys.argv[1], int(sys.argv[2])
    once = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == "--once" else None
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever the library prints goes to stderr, not into the protocol
    sys.stdout = sys.stderr
    t = time.perf_counter()
    try:
        worker = Worker(lib, port)
    except Exception as exc:
        out.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")
        return
    if once is not None:
        try:
            ans = worker.run(json.loads(once))
        except Exception as exc:
            ans = {"error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(ans) + "\n")
        return
    out.write(json.dumps({"ready": True, "setup_seconds": time.perf_counter() - t}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            ans = worker.run(json.loads(line))
        except Exception as exc:
            ans = {"error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(ans) + "\n")


if __name__ == "__main__":
    main()
