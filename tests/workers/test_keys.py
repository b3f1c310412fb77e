"""Keys in workers: a task names a key reference; the worker resolves it; the key reaches only
the HTTP header of the task's own model calls.

A loopback HTTP server speaking OpenAI Chat Completions records the key each request
carried. Checked: each task's calls carry its tenant's key (also with 40 tasks of 4 tenants
running at once in one event loop); a task without a reference uses the rest of allm's key
chain; no key is in the task payload, the outcome, the stored records or an error message;
a reference the worker cannot resolve is a typed error that sends nothing.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

import allm
from allm import keys
from allm.errors import EngineError
from allm.stores import MemoryStore
from allm.workers import Operation, Task, Worker
from tests.adapters import WIRES
from tests.loopback import LoopbackServer, Req, Writer, chat_chunks, serve

WIRE = WIRES["openai_chat"]


class Seen:
    def __init__(self) -> None:
        self.keys: list[tuple[str, str | None]] = []
        self.lock = threading.Lock()

    async def handler(self, req: Req, w: Writer) -> None:
        body = orjson.loads(req.body)
        with self.lock:
            self.keys.append((body["messages"][0]["content"], WIRE.key_of(req.headers)))
        await asyncio.sleep(0.002)
        await w.start_stream()
        for chunk in chat_chunks(["Hello", " there"]):
            await w.chunk(chunk)
        await w.end_stream()


@pytest.fixture
def server() -> Iterator[tuple[LoopbackServer, Seen]]:
    keys.clear()
    seen = Seen()
    with serve(seen.handler) as s:
        yield s, seen
    keys.clear()


TENANT_KEYS = {f"tenant-{t}": "sk-" + secrets.token_urlsafe(24) for t in range(4)}


def make_worker(server: LoopbackServer, resolver: Any) -> Worker:
    engine = WIRE.engine(server.url)
    return Worker(MemoryStore(), {"default": engine}, keys=resolver)


def every_byte(worker: Worker) -> bytes:
    store = worker.store
    out = b""
    for ns in (worker.namespace, worker.claims_namespace):
        for k in store.keys(ns):
            rec = store.get(ns, k)
            assert rec is not None
            out += rec.value
    return out


def test_each_task_carries_its_tenants_key_and_the_key_goes_nowhere_else(server: tuple[LoopbackServer, Seen]) -> None:
    srv, seen = server
    per_provider = {"tenant-0": TENANT_KEYS["tenant-0"], "tenant-1": {"openai": TENANT_KEYS["tenant-1"]}}
    worker = make_worker(srv, per_provider)
    for t in range(2):
        worker.create(allm.Session.new(f"hi from {t}", id=f"ses_k{t}"))
    outcomes = []
    for t in range(2):
        task = Task(f"ses_k{t}", Operation.continue_(), key_ref=f"tenant-{t}")
        payload = orjson.dumps(task.to_dict())
        outcomes.append(orjson.dumps(worker.run(task, task_id=f"t{t}").to_dict()))
        assert TENANT_KEYS[f"tenant-{t}"].encode() not in payload
    assert seen.keys == [("hi from 0", TENANT_KEYS["tenant-0"]), ("hi from 1", TENANT_KEYS["tenant-1"])]
    stored = every_byte(worker)
    for k in TENANT_KEYS.values():
        assert k.encode() not in stored and not any(k.encode() in o for o in outcomes)
    assert worker.load("ses_k0")[0].messages[-1].text == "Hello there"
    assert keys.lookup("openai") == (None, None)  # the scope ended with the task


def test_without_a_key_reference_the_rest_of_the_key_chain_applies(server: tuple[LoopbackServer, Seen]) -> None:
    srv, seen = server
    worker = make_worker(srv, None)
    worker.create(allm.Session.new("hi", id="ses_chain"))
    keys.put("openai", "sk-from-the-runtime-store-123456")
    worker.run(Task("ses_chain", Operation.continue_()))
    assert seen.keys == [("hi", "sk-from-the-runtime-store-123456")]


async def test_forty_concurrent_tasks_of_four_tenants_each_carry_their_own_key(server: tuple[LoopbackServer, Seen]) -> None:
    srv, seen = server
    lookups: list[str] = []

    async def vault(key_ref: str) -> str | None:  # an async resolver (a secrets manager)
        lookups.append(key_ref)
        await asyncio.sleep(0.001)
        return TENANT_KEYS.get(key_ref)

    worker = make_worker(srv, vault)
    for i in range(40):
        await worker.acreate(allm.Session.new(f"req {i} tenant-{i % 4}", id=f"ses_c{i}"))
    outs = await asyncio.gather(
        *(worker.arun(Task(f"ses_c{i}", Operation.continue_(), key_ref=f"tenant-{i % 4}"), task_id=f"t{i}") for i in range(40))
    )
    assert all(o.status == "completed" for o in outs)
    assert len(seen.keys) == 40 and len(lookups) == 40
    for content, key in seen.keys:
        tenant = content.split()[-1]
        assert key == TENANT_KEYS[tenant], content


def test_a_reference_the_worker_cannot_resolve_sends_nothing(server: tuple[LoopbackServer, Seen]) -> None:
    srv, seen = server
    worker = make_worker(srv, {"tenant-0": TENANT_KEYS["tenant-0"]})
    worker.create(allm.Session.new("hi", id="ses_x"))
    with pytest.raises(EngineError) as e:
        worker.run(Task("ses_x", Operation.continue_(), key_ref="tenant-9"))
    assert e.value.reason == "missing_key" and "tenant-9" in str(e.value)
    no_resolver = make_worker(srv, None)
    no_resolver.create(allm.Session.new("hi", id="ses_x"))
    with pytest.raises(EngineError) as e:
        no_resolver.run(Task("ses_x", Operation.continue_(), key_ref="tenant-0"))
    assert e.value.reason == "missing_key" and "no key resolver" in str(e.value)

    async def vault(key_ref: str) -> str:
        return TENANT_KEYS["tenant-0"]

    async_only = make_worker(srv, vault)
    async_only.create(allm.Session.new("hi", id="ses_x"))
    with pytest.raises(EngineError) as e:
        async_only.run(Task("ses_x", Operation.continue_(), key_ref="tenant-0"))
    assert "Worker.arun" in str(e.value)
    for w in (worker, no_resolver, async_only):
        assert w.load("ses_x")[1] == 1
    assert seen.keys == []
    for k in TENANT_KEYS.values():
        assert k not in str(e.value)


def test_a_bad_key_is_refused_without_quoting_it(server: tuple[LoopbackServer, Seen]) -> None:
    srv, seen = server
    bad = "sk-has a space-" + secrets.token_urlsafe(12)
    worker = make_worker(srv, {"tenant-0": bad})
    worker.create(allm.Session.new("hi", id="ses_bad"))
    with pytest.raises(EngineError) as e:
        worker.run(Task("ses_bad", Operation.continue_(), key_ref="tenant-0"))
    assert e.value.reason == "invalid_key" and bad not in str(e.value) and bad not in repr(e.value)
    assert seen.keys == [] and worker.load("ses_bad")[1] == 1
