"""``kill -9`` of ``allm serve`` during 100 stored streaming responses (SQLite store): after a
restart on the same data directory, every response whose terminal event reached its client
is retrievable, whole and with its events."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.server.procs import Serve
from tests.server.upstream import Upstream

N = 100


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    u = Upstream()
    try:
        yield u
    finally:
        u.stop()


def test_kill_9_keeps_every_response_whose_terminal_event_was_sent(upstream: Upstream, tmp_path: Path) -> None:
    config = f"""
[server]
data_dir = "{tmp_path}"

[[routes]]
match = "."
provider = "compatible"
base_url = "{upstream.base_url(1000)}"
api_key_env = "ALLM_CRASH_UPSTREAM_KEY"
"""
    env = {"ALLM_CRASH_UPSTREAM_KEY": "sk-loopback"}
    server = Serve(config, env=env).start()
    done: dict[str, dict[str, Any]] = {}  # id -> the terminal event's response
    started: set[str] = set()
    killed = asyncio.Event()

    async def one(client: httpx.AsyncClient, i: int) -> None:
        body = {"model": "crash", "input": f"request {i}", "stream": True}
        try:
            async with client.stream("POST", "/v1/responses", json=body) as r:
                buf = b""
                async for chunk in r.aiter_bytes():
                    buf += chunk
                    *frames, buf = buf.split(b"\n\n")  # whole frames (a write may hold many); the rest waits
                    for frame in frames:
                        if not frame.startswith(b"event: "):
                            continue
                        ev = orjson.loads(frame.split(b"\ndata: ", 1)[1])
                        if ev["type"] == "response.created":
                            started.add(ev["response"]["id"])
                        elif ev["type"] == "response.completed":
                            done[ev["response"]["id"]] = ev["response"]
                            if len(done) >= N // 3 and not killed.is_set():
                                killed.set()
                                server.kill()
                                return  # what followed in this read is not counted as received
        except httpx.HTTPError:
            pass  # the server died under this stream

    async def run() -> None:
        limits = httpx.Limits(max_connections=N)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=60) as client:
            tasks = []
            for i in range(N):  # staggered: streams start and end all along, so some are under way at the kill
                tasks.append(asyncio.create_task(one(client, i)))
                await asyncio.sleep(0.004)
            await asyncio.gather(*tasks)

    try:
        asyncio.run(run())
        assert killed.is_set(), "every response finished before the kill"
        # A stream's events may all arrive in one write, so "under way" is counted from the
        # requests: those sent whose terminal event did not arrive (started or not yet started).
        unfinished = N - len(done)
        assert unfinished > 0, "the kill came after every stream had ended"
        restarted = Serve(config, port=server.port, env=env)
        restarted.dir = server.dir
        restarted.start()
        try:
            for rid, final in done.items():
                r = httpx.get(f"{restarted.url}/v1/responses/{rid}")
                assert r.status_code == 200, (rid, r.text)
                assert r.json() == final
                replay = httpx.get(f"{restarted.url}/v1/responses/{rid}", params={"stream": "true"})
                types = [ln[len("event: "):] for ln in replay.text.splitlines() if ln.startswith("event: ")]
                assert types[0] == "response.created" and types[-1] == "response.completed"
            print(f"\nkilled with {len(done)} of {N} responses finished ({len(started - set(done))} begun and "
                  f"{unfinished} in all without their terminal event); "
                  f"all {len(done)} retrieved after the restart")
        finally:
            restarted.stop()
    finally:
        server.stop()


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.live
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads the process tree from /proc")
def test_kill_9_of_the_default_server_stops_its_llama_server(tmp_path: Path) -> None:
    """``allm serve`` with no config starts llama-server; ``kill -9`` of ``allm serve`` ends it too."""
    from .conftest import ServeProcess, need_local_model

    need_local_model()
    _orphans: list[int] = []
    server = ServeProcess(None, env={"XDG_DATA_HOME": str(tmp_path)}, startup=180)
    try:
        (child,) = _children(server.proc.pid)
        _orphans.append(child)
        assert "llama-server" in Path(f"/proc/{child}/cmdline").read_bytes().decode(errors="replace")
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(10)
        deadline = time.monotonic() + 30  # bounded; on a quiet machine it is gone at once
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child), "llama-server outlived its killed allm serve"
    finally:
        server.stop()
        for pid in _orphans:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
