"""``allm serve`` against its upstream and against LiteLLM's proxy, in one run.

``python -m benchmarks.serve [--quick] [--no-litellm] [--out benchmarks/SERVER_RESULTS.md]``

Three processes answer on loopback: the raw-asyncio upstream (:mod:`benchmarks.server`,
OpenAI Chat Completions, ready bytes), ``allm serve`` routed to it (``provider =
"compatible"``) and LiteLLM's proxy (``litellm --config``) routed to it too. The client is a
raw asyncio HTTP/1.1 client in this process (keep-alive, one connection per worker; chunked
bodies decoded, SSE events counted) so it costs less than the servers it measures.

Figures:

- streamed events/s and non-streamed requests/s at 1 and 50 concurrent clients, for
  ``direct`` (the upstream's ``/chat/completions``), ``allm serve`` (``/v1/responses``,
  ``store: false``) and LiteLLM (``/v1/chat/completions``). An event is one SSE ``data:``
  line (``[DONE]`` not counted): the upstream sends ``n_text`` deltas and a usage chunk, the
  Open Responses stream adds its item and part events.
- added latency per non-streamed call: one client, calls one after another; median and p99
  of each path, and the server's addition over ``direct`` (median and p99 differences).
- sustained 200 requests/s for 30 s (open loop, as wrk2 does: a request due every 5 ms
  whatever the answers, over at most 64 keep-alive connections): success rate (HTTP 200 with
  a complete body within 10 s of when it was due), latency from when it was due (median, p99).
- the server's CPU time per request (user + system, from ``/proc``), which other work on the
  machine does not inflate the way it inflates wall-clock rates.

LiteLLM's proxy runs from its own environment: ``litellm[proxy]`` pins ``mcp`` 2.x, ``rich``
13 and ``websockets`` 15, which the ``mcp`` extra and the dev tools cannot share. Create it
once (``python -m venv /tmp/allm-litellm-venv && /tmp/allm-litellm-venv/bin/pip install
'litellm[proxy]'``) and point ``ALLM_BENCH_LITELLM`` at its ``litellm``; without it the
``litellm`` beside this interpreter is used, or the peer is left out.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.server.procs import Serve, child_env, free_port  # noqa: E402
from tests.server.upstream import Upstream  # noqa: E402

N_TEXT_STREAM = 50
N_TEXT_POST = 20
MASTER_KEY = "sk-bench-" + os.urandom(16).hex()  # LiteLLM's proxy refuses to start without one


# ------------------------------------------------------------------------------ the client


class Conn:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, port: int) -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
        return cls(reader, writer, f"127.0.0.1:{port}")

    def close(self) -> None:
        self.writer.close()

    async def post(self, path: str, body: bytes, headers: bytes = b"") -> tuple[int, int]:
        """``(status, events)``: events are SSE ``data:`` lines other than ``[DONE]`` (0 for JSON)."""
        self.writer.write(
            b"POST " + path.encode() + b" HTTP/1.1\r\nHost: " + self.host.encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n"
            + headers + b"\r\n" + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = -1
        chunked = False
        for ln in lines[1:]:
            name, _, value = ln.partition(b":")
            n = name.strip().lower()
            if n == b"content-length":
                length = int(value.strip())
            elif n == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if chunked:
            parts = []
            while True:
                size_line = await self.reader.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                data = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                parts.append(data[:-2])
            data = b"".join(parts)
        elif length >= 0:
            data = await self.reader.readexactly(length)
        else:
            data = await self.reader.read()
        events = data.count(b"data: ") - data.count(b"data: [DONE]")
        if status == 200 and not data:
            status = -1
        return status, events


class Target:
    """Where to send a call, and the body for it."""

    def __init__(self, name: str, port: int, path: str, body: Callable[[bool], bytes], headers: bytes = b"",
                 pid: int | None = None) -> None:
        self.name, self.port, self.path, self.body, self.headers, self.pid = name, port, path, body, headers, pid


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of process ``pid`` and its children that exited (0 without one)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(x) for x in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def chat_body(stream: bool) -> bytes:
    return orjson.dumps({"model": "bench", "messages": [{"role": "user", "content": "hi"}], "stream": stream})


def responses_body(stream: bool) -> bytes:
    return orjson.dumps({"model": "bench", "input": "hi", "stream": stream, "store": False})


async def throughput(t: Target, stream: bool, clients: int, seconds: float) -> tuple[float, float, int, float]:
    """``(requests/s, events/s, errors, server CPU ms per request)`` of ``clients`` workers
    calling in a loop for ``seconds``."""
    body = t.body(stream)
    done = 0
    events = 0
    errors = 0
    end = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done, events, errors
        c = await Conn.open(t.port)
        try:
            while time.perf_counter() < end:
                status, n = await c.post(t.path, body, t.headers)
                if status == 200:
                    done += 1
                    events += n
                else:
                    errors += 1
        finally:
            c.close()

    start = time.perf_counter()
    cpu = cpu_seconds(t.pid)
    await asyncio.gather(*(worker() for _ in range(clients)))
    took = time.perf_counter() - start
    cpu = cpu_seconds(t.pid) - cpu
    return done / took, events / took, errors, cpu * 1e3 / max(done, 1)


async def latencies(t: Target, calls: int) -> list[float]:
    c = await Conn.open(t.port)
    body = t.body(False)
    out = []
    try:
        for _ in range(20):  # warm up
            await c.post(t.path, body, t.headers)
        for _ in range(calls):
            s = time.perf_counter()
            status, _ = await c.post(t.path, body, t.headers)
            out.append(time.perf_counter() - s)
            assert status == 200, status
    finally:
        c.close()
    return out


async def sustained(t: Target, rate: float, seconds: float, connections: int = 64) -> tuple[float, float, float, int]:
    """``(success rate, median s, p99 s, requests)`` of ``rate`` requests per second for
    ``seconds``, sent on schedule (open loop, as wrk2 does) over at most ``connections``
    keep-alive connections: a request waits for a free one, and its latency counts from
    when it was due, so the wait is in it. A request succeeds with HTTP 200 and a whole body
    within 10 s of when it was due."""
    body = t.body(False)
    pool: asyncio.Queue[Conn | None] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(None)  # opened on first use
    ok = 0
    lat: list[float] = []

    async def call(due: float) -> int:
        c = await pool.get()
        try:
            if c is None:
                c = await Conn.open(t.port)
            status, _ = await c.post(t.path, body, t.headers)
        except BaseException:
            if c is not None:
                c.close()
            pool.put_nowait(None)
            raise
        pool.put_nowait(c)
        return status

    async def one(due: float) -> None:
        nonlocal ok
        try:
            status = await asyncio.wait_for(call(due), max(0.001, due + 10.0 - time.perf_counter()))
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            return
        lat.append(time.perf_counter() - due)
        if status == 200:
            ok += 1

    n = int(rate * seconds)
    tasks = []
    start = time.perf_counter()
    for i in range(n):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(due)))
    await asyncio.gather(*tasks)
    while not pool.empty():
        c = pool.get_nowait()
        if c is not None:
            c.close()
    return ok / n, statistics.median(lat) if lat else 0.0, pct(lat, 0.99), n


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


# ------------------------------------------------------------------------------ the servers


def start_litellm(upstream: Upstream, n_text: int) -> tuple[subprocess.Popen[bytes], int, Path] | None:
    exe = os.environ.get("ALLM_BENCH_LITELLM") or shutil.which("litellm", path=str(Path(sys.executable).parent))
    if exe is None:
        return None
    d = Path(tempfile.mkdtemp(prefix="allm-bench-litellm-"))
    cfg = d / "config.yaml"
    lines = ["model_list:"]
    for name, n in (("bench", n_text), ("bench-post", N_TEXT_POST)):
        lines += [f"  - model_name: {name}", "    litellm_params:", "      model: openai/bench",
                  f"      api_base: {upstream.base_url(n)}", "      api_key: sk-loopback"]
    lines += ["litellm_settings:", "  drop_params: true", "  telemetry: false", "  turn_off_message_logging: true"]
    cfg.write_text("\n".join(lines) + "\n")
    port = free_port()
    log = open(d / "litellm.log", "wb")  # noqa: SIM115
    env = child_env({"LITELLM_MASTER_KEY": MASTER_KEY, "PYTHONPATH": "", "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False", "DISABLE_SCHEMA_UPDATE": "True"})
    proc = subprocess.Popen([exe, "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 180
    import socket

    while time.monotonic() < deadline:
        if proc.poll() is not None:
            print((d / "litellm.log").read_text()[-2000:], file=sys.stderr)
            return None
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        return None
    time.sleep(2.0)
    return proc, port, d


def serve_config(upstream: Upstream, data_dir: str) -> str:
    return f"""
[server]
data_dir = "{data_dir}"

[[routes]]
match = "^bench-post$"
provider = "compatible"
base_url = "{upstream.base_url(N_TEXT_POST)}"
api_key_env = "ALLM_BENCH_KEY"
model = "bench"

[[routes]]
match = "."
provider = "compatible"
base_url = "{upstream.base_url(N_TEXT_STREAM)}"
api_key_env = "ALLM_BENCH_KEY"
"""


# ------------------------------------------------------------------------------ the run


def _model(body: Callable[[bool], bytes], model: str) -> Callable[[bool], bytes]:
    def make(stream: bool) -> bytes:
        d = orjson.loads(body(stream))
        d["model"] = model
        return orjson.dumps(d)

    return make


async def measure(targets: dict[str, tuple[Target, Target]], quick: bool) -> dict[str, Any]:
    """``targets``: name -> (stream target, non-stream target)."""
    secs = 1.5 if quick else 5.0
    calls = 100 if quick else 1000
    sus = 5.0 if quick else 30.0
    res: dict[str, Any] = {"throughput": {}, "latency": {}, "sustained": {}}
    for name, (st, pt) in targets.items():
        for clients in (1, 50):
            rps_s, eps, err_s, cpu_s = await throughput(st, True, clients, secs)
            rps, _, err_p, cpu_p = await throughput(pt, False, clients, secs)
            res["throughput"][(name, clients)] = (eps, rps_s, rps, err_s + err_p, cpu_s, cpu_p)
            print(f"  {name:12s} {clients:3d} clients: {eps:10.0f} events/s ({rps_s:.0f} streams/s, {cpu_s:.2f} CPU ms each), "
                  f"{rps:8.0f} req/s ({cpu_p:.2f} CPU ms each), errors {err_s + err_p}", flush=True)
    for name, (_, pt) in targets.items():
        lat = await latencies(pt, calls)
        res["latency"][name] = (statistics.median(lat), pct(lat, 0.99))
        print(f"  {name:12s} latency median {statistics.median(lat) * 1e3:.3f} ms, p99 {pct(lat, 0.99) * 1e3:.3f} ms",
              flush=True)
    for name, (_, pt) in targets.items():
        if name == "direct":
            continue
        rate, med, p99, n = await sustained(pt, 200.0, sus)
        res["sustained"][name] = (rate, med, p99, n, sus)
        print(f"  {name:12s} 200 req/s for {sus:g} s: {rate * 100:.2f}% of {n} ok, median {med * 1e3:.2f} ms, "
              f"p99 {p99 * 1e3:.2f} ms", flush=True)
    return res


def _uvicorn_stack() -> str:
    """The event loop and HTTP parser uvicorn picks by itself in this environment."""
    import importlib.util

    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return f"{loop} + {http}"


def report(res: dict[str, Any], names: list[str], quick: bool, load: tuple[float, float] = (0.0, 0.0)) -> str:
    out = ["## Server", ""]
    out.append(f"`python -m benchmarks.serve{' --quick' if quick else ''}` on {platform.node() or 'this machine'} "
               f"({os.cpu_count()} cores, Python {platform.python_version()}), everything on loopback: the raw "
               f"upstream, `allm serve` (one process, `store: false`, uvicorn on {_uvicorn_stack()}), LiteLLM's proxy "
               "(one worker). Streams carry "
               f"{N_TEXT_STREAM} text deltas; non-streamed answers {N_TEXT_POST}. The client is a raw asyncio "
               "HTTP/1.1 client with one keep-alive connection per concurrent client. The machine's 1-minute load "
               f"average was {load[0]:.1f} at the start and {load[1]:.1f} at the end (other work shares its cores): "
               "the server CPU columns are the steadier figures.")
    out.append("")
    out.append("| path | clients | streamed events/s | streams/s | server CPU ms per stream | non-streamed req/s "
               "| server CPU ms per request | errors |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in names:
        for clients in (1, 50):
            eps, sps, rps, err, cpu_s, cpu_p = res["throughput"][(name, clients)]
            out.append(f"| {name} | {clients} | {eps:,.0f} | {sps:,.0f} | {cpu_s:.2f} | {rps:,.0f} | {cpu_p:.2f} | {err} |")
    out.append("")
    d_med, d_p99 = res["latency"]["direct"]
    out.append("Latency of one non-streamed call, one client, calls one after another:")
    out.append("")
    out.append("| path | median ms | p99 ms | added median ms | added p99 ms |")
    out.append("|---|---:|---:|---:|---:|")
    for name in names:
        med, p99 = res["latency"][name]
        added = "" if name == "direct" else f"{(med - d_med) * 1e3:.3f}"
        added99 = "" if name == "direct" else f"{(p99 - d_p99) * 1e3:.3f}"
        out.append(f"| {name} | {med * 1e3:.3f} | {p99 * 1e3:.3f} | {added} | {added99} |")
    out.append("")
    out.append("Sustained load, open loop (a non-streamed request due every 5 ms whatever the answers, at most 64 "
               "connections; latency counted from when each was due):")
    out.append("")
    out.append("| path | rate | seconds | requests | success | median ms | p99 ms |")
    out.append("|---|---:|---:|---:|---:|---:|---:|")
    for name, (rate, med, p99, n, secs) in res["sustained"].items():
        out.append(f"| {name} | 200/s | {secs:g} | {n} | {rate * 100:.2f}% | {med * 1e3:.2f} | {p99 * 1e3:.2f} |")
    out.append("")
    serve = "allm serve"
    if serve in names:
        lines = ["Against the targets (streaming through the server at least half the direct rate; at most 1 ms "
                 "median and 3 ms p99 added per non-streamed call; 100% success at 200 requests/s for 30 s; ahead of "
                 "LiteLLM's proxy on every figure):", ""]
        for clients in (1, 50):
            ratio = res["throughput"][(serve, clients)][0] / res["throughput"][("direct", clients)][0]
            lines.append(f"- streamed events/s through the server at {clients} client(s): {ratio:.1%} of direct")
        med, p99 = res["latency"][serve]
        lines.append(f"- added per non-streamed call: {(med - d_med) * 1e3:.2f} ms median, {(p99 - d_p99) * 1e3:.2f} ms p99")
        if serve in res["sustained"]:
            lines.append(f"- 200 requests/s: {res['sustained'][serve][0]:.2%} success")
        peer = "LiteLLM proxy"
        if peer in names:
            ahead = all(res["throughput"][(serve, c)][i] > res["throughput"][(peer, c)][i] for c in (1, 50) for i in (0, 2))
            ahead = ahead and res["latency"][serve][0] < res["latency"][peer][0]
            lines.append(f"- ahead of LiteLLM's proxy on every rate and on latency: {'yes' if ahead else 'no'}")
        out += [*lines, ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.serve")
    ap.add_argument("--quick", action="store_true", help="short runs (a smoke test)")
    ap.add_argument("--no-litellm", action="store_true", help="leave LiteLLM's proxy out")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "SERVER_RESULTS.md"))
    args = ap.parse_args(argv)
    upstream = Upstream()
    data_dir = tempfile.mkdtemp(prefix="allm-bench-serve-")
    server = Serve(serve_config(upstream, data_dir), env={"ALLM_BENCH_KEY": "sk-loopback"})
    litellm = None
    try:
        server.start()
        assert server.proc is not None
        server_pid = server.proc.pid
        targets: dict[str, tuple[Target, Target]] = {
            "direct": (Target("direct", upstream.port, f"/b/{N_TEXT_STREAM}/0/chat/completions", chat_body,
                              pid=upstream.proc.pid),
                       Target("direct", upstream.port, f"/b/{N_TEXT_POST}/0/chat/completions", chat_body,
                              pid=upstream.proc.pid)),
            "allm serve": (Target("allm serve", server.port, "/v1/responses", responses_body, pid=server_pid),
                           Target("allm serve", server.port, "/v1/responses", _model(responses_body, "bench-post"),
                                  pid=server_pid)),
        }
        if not args.no_litellm:
            litellm = start_litellm(upstream, N_TEXT_STREAM)
            if litellm is None:
                print("LiteLLM's proxy did not start; measured without it", file=sys.stderr)
            else:
                auth = b"Authorization: Bearer " + MASTER_KEY.encode() + b"\r\n"
                targets["LiteLLM proxy"] = (
                    Target("LiteLLM proxy", litellm[1], "/v1/chat/completions", chat_body, auth, litellm[0].pid),
                    Target("LiteLLM proxy", litellm[1], "/v1/chat/completions", _model(chat_body, "bench-post"), auth,
                           litellm[0].pid),
                )
        load0 = os.getloadavg()[0]
        res = asyncio.run(measure(targets, args.quick))
        text = report(res, list(targets), args.quick, (load0, os.getloadavg()[0]))
        Path(args.out).write_text(text + "\n")
        print(text)
    finally:
        server.stop()
        if litellm is not None:
            litellm[0].terminate()
            try:
                litellm[0].wait(15)
            except subprocess.TimeoutExpired:
                litellm[0].kill()
        upstream.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
