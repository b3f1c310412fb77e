"""A stored session resumed by a real arq worker process from a task that carries only the
session id and a key reference, against the local SmolLM2 (llama-server).

The worker reaches the model through a loopback proxy that refuses any request whose
``Authorization`` header is not the tenant's key, so the turn completes only if the worker
resolved the reference to the key (from its own secrets file) and the key reached the
model call; the broker and the store never hold it.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis

import allm
from allm.stores import open_store
from allm.workers import Operation, Worker
from tests.loopback import LoopbackServer, Req, Writer, serve
from tests.workers.conftest import PY, Fleet, worker_env
from tests.workers.leaks import redis_bytes
from tests.workers.test_queues import db_url

pytestmark = pytest.mark.live

SYSTEM = "You are a helpful assistant. Be brief."


class KeyedProxy:
    """Forwards to llama-server the requests that carry ``key``; answers 401 to the others."""

    def __init__(self, upstream: str, key: str) -> None:
        self.upstream = upstream
        self.key = key
        self.seen: list[str | None] = []

    async def handler(self, req: Req, w: Writer) -> None:
        auth = req.headers.get("authorization")
        self.seen.append(auth)
        if auth != f"Bearer {self.key}":
            await w.respond(401, b'{"error": {"message": "invalid api key", "type": "authentication_error"}}')
            return
        async with httpx.AsyncClient(timeout=120) as client, client.stream(
            req.method, self.upstream + req.path, content=req.body, headers={"content-type": "application/json"}
        ) as up:
            await w.start_stream(up.status_code)
            async for chunk in up.aiter_raw():
                await w.chunk(chunk)
            await w.end_stream()


@pytest.fixture
def proxy(llama_server: Any) -> Iterator[tuple[LoopbackServer, KeyedProxy]]:
    p = KeyedProxy(llama_server.url, "sk-live-" + secrets.token_urlsafe(16))
    with serve(p.handler) as s:
        s.handler_limit = 120.0
        yield s, p


def test_a_task_with_an_id_and_a_key_reference_completes_its_turn(
    redis_server: Any, proxy: tuple[LoopbackServer, KeyedProxy], tmp_path: Path, fleet_factory: list[Fleet]
) -> None:
    from arq import create_pool
    from arq.connections import RedisSettings

    from allm.workers.arq import enqueue

    server, keyed = proxy
    url = db_url(redis_server.url, 14)
    r = redis.Redis.from_url(url)
    r.flushdb()
    keys_file = tmp_path / "keys.json"
    keys_file.write_bytes(orjson.dumps({"tenant-live": keyed.key}))
    worker = Worker(open_store(url), {})
    worker.create(allm.Session.new([allm.system(SYSTEM), allm.user("What is the capital of France?")], id="ses_live"))

    env = worker_env(url, keys_file, 0.0)
    env["ALLM_TEST_LLAMA_URL"] = server.url + "/v1"
    env["ALLM_TEST_JOB_TIMEOUT"] = "120"
    fleet = Fleet(env)
    fleet_factory.append(fleet)
    fleet.start([[PY, "-m", "arq", "tests.workers.arq_app.WorkerSettings"]])
    fleet.wait_for_log("Starting worker")

    async def send() -> dict[str, Any]:
        pool = await create_pool(RedisSettings.from_dsn(url))
        try:
            job = await enqueue(pool, "ses_live", Operation.continue_(), engine="smollm2", key_ref="tenant-live")
            assert job is not None
            result: dict[str, Any] = await job.result(timeout=120)
            return result
        finally:
            await pool.aclose()

    outcome = asyncio.run(send())
    assert outcome["status"] == "completed" and outcome["model_calls"] == 1 and outcome["version"] == 2
    session, version = worker.load("ses_live")
    answer = session.messages[-1]
    assert version == 2 and session.status == "completed" and answer.role == "assistant"
    assert "paris" in answer.text.lower(), answer.text
    assert keyed.seen == [f"Bearer {keyed.key}"]  # one model call, with the tenant's key
    # the key went from the worker's secrets file to the model call's header, nowhere else
    for name, blob in redis_bytes(r):
        assert keyed.key.encode() not in name + blob, name
    assert keyed.key.encode() not in fleet.logs[0].read_bytes()
