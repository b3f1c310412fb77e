"""Stored responses outlive the process that made them: ``kill -9`` with SQLite, and two
server processes sharing one Redis."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import httpx

from tests.redis_server import redis_server  # noqa: F401  (the session-scoped fixture)

from .conftest import ServeProcess


def _config(store: str) -> str:
    return f"""
[server]
store = "{store}"

[[routes]]
match = "^slow"
adapter = "tests.server.fakes:drip"

[[routes]]
match = "."
adapter = "tests.server.fakes:echo"
"""


def test_kill_9_keeps_every_response_whose_terminal_event_was_sent(tmp_path: Path) -> None:
    db = tmp_path / "responses.db"
    path = tmp_path / "server.toml"
    path.write_text(_config(f"sqlite:///{db}"))
    server = ServeProcess(path)
    finished: list[str] = []

    async def one(http: httpx.AsyncClient, i: int) -> None:
        async with http.stream("POST", "/v1/responses", json={"model": "slow", "input": f"n{i}", "stream": True}) as r:
            async for line in r.aiter_lines():
                if line.startswith("data: {") and '"response.completed"' in line:
                    finished.append(json.loads(line[6:])["response"]["id"])

    async def load() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            tasks: list[asyncio.Task[None]] = []

            async def start() -> None:  # staggered, so the streams end over a second, not all at once
                for i in range(100):
                    tasks.append(asyncio.create_task(one(http, i)))
                    await asyncio.sleep(0.01)

            starter = asyncio.create_task(start())
            deadline = asyncio.get_running_loop().time() + 20
            while len(finished) < 30 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.001)
            server.proc.send_signal(signal.SIGKILL)
            starter.cancel()
            await asyncio.gather(starter, *tasks, return_exceptions=True)

    try:
        asyncio.run(load())
    finally:
        server.stop()
    assert server.proc.returncode == -signal.SIGKILL
    assert 30 <= len(finished) < 100
    again = ServeProcess(path)
    try:
        with httpx.Client(base_url=again.url) as http:
            for rid in finished:
                got = http.get(f"/v1/responses/{rid}")
                assert got.status_code == 200, rid
                assert got.json()["status"] == "completed"
                assert got.json()["output"][0]["content"][0]["text"] == "one two three four five"
    finally:
        again.stop()


def test_two_processes_share_one_redis(tmp_path: Path, redis_server: Any) -> None:  # noqa: F811
    path = tmp_path / "server.toml"
    path.write_text(_config(redis_server.url + "?prefix=srvtest:"))
    a, b = ServeProcess(path), ServeProcess(path)
    try:
        with httpx.Client(base_url=a.url) as ha, httpx.Client(base_url=b.url) as hb:
            first = ha.post("/v1/responses", json={"model": "echo", "input": "on a"}).json()
            nxt = hb.post("/v1/responses", json={"model": "echo", "input": "on b", "previous_response_id": first["id"]})
            assert nxt.status_code == 200
            assert nxt.json()["output"][0]["content"][0]["text"] == "on a | on b"
            assert ha.get(f"/v1/responses/{nxt.json()['id']}").status_code == 200
    finally:
        a.stop()
        b.stop()


def test_workers_share_the_sqlite_store(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text(_config(f"sqlite:///{tmp_path / 'r.db'}"))
    server = ServeProcess(path, extra=("--workers", "2"))
    try:
        with httpx.Client(base_url=server.url) as http:
            rid = http.post("/v1/responses", json={"model": "echo", "input": "0"}).json()["id"]
            for i in range(1, 8):  # each continuation may land on either worker
                r = http.post("/v1/responses", json={"model": "echo", "input": str(i), "previous_response_id": rid})
                assert r.status_code == 200, r.text
                rid = r.json()["id"]
            assert r.json()["output"][0]["content"][0]["text"] == " | ".join(str(i) for i in range(8))
    finally:
        server.stop()
