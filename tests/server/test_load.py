"""1,000 concurrent streaming responses through one ``allm serve`` process to a loopback
upstream: no errors, gapless sequence numbers in every stream, the peak memory of the
server process printed (``VmHWM``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.server.procs import Serve
from tests.server.upstream import Upstream

N = 1000
DELTAS = 20


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    u = Upstream()
    try:
        yield u
    finally:
        u.stop()


def kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


async def one(client: httpx.AsyncClient, i: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    body = {"model": "bench", "input": f"request {i}", "stream": True}
    async with client.stream("POST", "/v1/responses", json=body) as r:
        assert r.status_code == 200, await r.aread()
        buf = b""
        async for chunk in r.aiter_bytes():
            buf += chunk
            while b"\n\n" in buf:
                frame, buf = buf.split(b"\n\n", 1)
                if frame.startswith(b"event: "):
                    events.append(orjson.loads(frame.split(b"\ndata: ", 1)[1]))
    return events


def test_one_thousand_concurrent_streams(upstream: Upstream, tmp_path: Path) -> None:
    config = f"""
[server]
data_dir = "{tmp_path}"

[[routes]]
match = "."
provider = "compatible"
base_url = "{upstream.base_url(DELTAS)}"
api_key_env = "ALLM_LOAD_UPSTREAM_KEY"
"""
    server = Serve(config, env={"ALLM_LOAD_UPSTREAM_KEY": "sk-loopback"}).start()
    assert server.proc is not None
    pid = server.proc.pid
    try:
        idle = kib(pid, "VmRSS")

        async def run() -> list[Any]:
            limits = httpx.Limits(max_connections=N, max_keepalive_connections=N)
            timeout = httpx.Timeout(120.0, pool=120.0)
            async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=timeout) as client:
                return await asyncio.gather(*(one(client, i) for i in range(N)), return_exceptions=True)

        start = time.perf_counter()
        results = asyncio.run(run())
        elapsed = time.perf_counter() - start
        peak = kib(pid, "VmHWM")
        errors = [r for r in results if isinstance(r, BaseException)]
        assert not errors, f"{len(errors)} of {N} streams failed; first: {errors[0]!r}"
        ids = set()
        for events in results:
            assert [e["sequence_number"] for e in events] == list(range(len(events)))
            assert events[0]["type"] == "response.created"
            assert events[-1]["type"] == "response.completed"
            assert sum(e["type"] == "response.output_text.delta" for e in events) == DELTAS
            ids.add(events[-1]["response"]["id"])
        assert len(ids) == N
        metrics = httpx.get(server.url + "/metrics").text
        assert 'allm_server_requests_total{model="bench",route="0:compatible",stream="true"} 1000.0' in metrics
        assert 'allm_server_in_flight{model="bench",route="0:compatible"} 0.0' in metrics
        assert "allm_server_errors_total{" not in metrics
        print(f"\n{N} concurrent streams in {elapsed:.1f} s; server RSS idle {idle / 1024:.1f} MiB, "
              f"peak {peak / 1024:.1f} MiB")
    finally:
        server.stop()
