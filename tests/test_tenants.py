"""Concurrent tenants: every request carries its own tenant's key, and gets its own answer.

1,000 concurrent async requests across 50 tenant keys and all five adapters, half
passing ``api_key=`` per call and half inside ``allm.keys.scope(...)`` (entered before
an ``await``, so tasks interleave inside their scopes). Each prompt carries a marker
naming its tenant and request; the loopback server records the key each request
carried (from the adapter's own auth header) and answers with that adapter's recorded
stream, its response id rewritten to include the marker, so the test can also check
that each caller got its own answer back. Expected: zero mismatches.
"""

from __future__ import annotations

import asyncio
import random
import re
import secrets
import threading
from collections.abc import Iterator

import pytest

import allm
from allm import _transport, keys
from allm.events import MessageStarted
from tests.adapters import WIRE_NAMES, WIRES, Wire
from tests.loopback import LoopbackServer, Req, Writer, serve
from tests.test_faults import CUTS, decode, pool

TENANTS = 50
REQUESTS = 1000
MARK = re.compile(rb"tenant-(\d+)-req-(\d+)")


def original_id(wire: Wire) -> str:
    ev = decode(wire, wire.stream)[0]
    assert isinstance(ev, MessageStarted) and ev.id
    return ev.id


IDS = {name: original_id(w) for name, w in WIRES.items()}


def wire_of(req: Req) -> Wire:
    if req.path.endswith("/responses"):
        return WIRES["openai_responses"]
    if req.path.endswith("/messages"):
        return WIRES["anthropic"]
    if "streamGenerateContent" in req.path:
        return WIRES["gemini"]
    return WIRES["openai_compatible"] if b'"smollm2"' in req.body else WIRES["openai_chat"]


class Ledger:
    """What the server saw: per marker, the key that came with it."""

    def __init__(self) -> None:
        self.seen: dict[tuple[int, int], str | None] = {}
        self.lock = threading.Lock()

    def handler(self, jitter: bool = True) -> object:
        async def h(req: Req, w: Writer) -> None:
            m = MARK.search(req.body)
            assert m is not None, req.body[:200]
            tenant, n = int(m.group(1)), int(m.group(2))
            wire = wire_of(req)
            with self.lock:
                self.seen[(tenant, n)] = wire.key_of(req.headers)
            if jitter:
                await asyncio.sleep(random.random() * 0.005)
            rid = IDS[wire.name]
            payload = wire.stream.replace(rid.encode(), f"{rid}-{tenant}-{n}".encode())
            await w.start_stream()
            for ev in CUTS[wire.name].events if jitter else [payload]:
                await w.chunk(ev.replace(rid.encode(), f"{rid}-{tenant}-{n}".encode()) if jitter else ev)
            await w.end_stream()

        return h


def tenant_keys() -> list[str]:
    shapes = [lambda: "sk-" + secrets.token_urlsafe(24), lambda: "AIza" + secrets.token_urlsafe(26), lambda: secrets.token_hex(12)]
    return [shapes[t % 3]() for t in range(TENANTS)]


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    keys.clear()
    with serve() as s:
        yield s
    keys.clear()


async def test_a_thousand_concurrent_requests_across_fifty_tenants(server: LoopbackServer) -> None:
    ledger = Ledger()
    server.handler = ledger.handler()  # type: ignore[assignment]
    tenant_key = tenant_keys()
    engines = {name: WIRES[name].engine(server.url, timeouts=allm.Timeouts(connect=30, first_event=60, idle=60)) for name in WIRE_NAMES}
    rng = random.Random(1)
    plan = [(n, rng.randrange(TENANTS), WIRE_NAMES[n % len(WIRE_NAMES)], n % 2 == 0) for n in range(REQUESTS)]

    async def one(n: int, tenant: int, wire: str, per_call: bool) -> tuple[int, int, str, allm.Response]:
        prompt = f"tenant-{tenant}-req-{n}: say hello"
        await asyncio.sleep(rng.random() * 0.01)
        if per_call:
            resp = await allm.agenerate(engines[wire], prompt, api_key=tenant_key[tenant])
        else:
            with keys.scope(tenant_key[tenant]):
                await asyncio.sleep(0)  # let other tasks run inside this scope
                resp = await allm.agenerate(engines[wire], prompt)
        return n, tenant, wire, resp

    results = await asyncio.gather(*(one(*p) for p in plan))

    key_mismatches = [(t, n) for (t, n), k in ledger.seen.items() if k != tenant_key[t]]
    answer_mismatches = [(n, t) for n, t, wire, r in results if r.id != f"{IDS[wire]}-{t}-{n}"]
    failed = [(n, r.finish_reason) for n, _t, _w, r in results if r.finish_reason in (None, "error")]
    print(f"\n{REQUESTS} requests, {TENANTS} tenants, {len(WIRE_NAMES)} adapters: "
          f"{len(ledger.seen)} seen by the server, {len(key_mismatches)} key mismatches, "
          f"{len(answer_mismatches)} answer mismatches, {len(failed)} failed")
    assert len(ledger.seen) == REQUESTS
    assert key_mismatches == [] and answer_mismatches == [] and failed == []
    assert sum(1 for p in plan if p[3]) == REQUESTS // 2
    assert keys.lookup("openai") == (None, None)  # no scope leaked out of its task
    busy = sum(1 for c in pool(True).connections if not c.is_idle() and not c.is_closed())
    assert busy == 0
    await _transport.aclose()


def test_threads_with_per_call_and_scoped_keys(server: LoopbackServer) -> None:
    """The sync API from 16 threads sharing one engine per adapter: 200 requests, zero mismatches."""
    ledger = Ledger()
    server.handler = ledger.handler(jitter=False)  # type: ignore[assignment]
    tenant_key = tenant_keys()
    engines = {name: WIRES[name].engine(server.url) for name in WIRE_NAMES}
    errors: list[BaseException] = []
    answers: dict[int, tuple[int, str, str | None]] = {}

    def worker(w: int) -> None:
        try:
            for i in range(200 // 16 + 1):
                n = w * 100 + i
                tenant = (w * 7 + i) % TENANTS
                wire = WIRE_NAMES[n % len(WIRE_NAMES)]
                prompt = f"tenant-{tenant}-req-{n}"
                if i % 2:
                    r = allm.generate(engines[wire], prompt, api_key=tenant_key[tenant])
                else:
                    with keys.scope(tenant_key[tenant]):
                        r = allm.generate(engines[wire], prompt)
                answers[n] = (tenant, wire, r.id)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(ledger.seen) == len(answers) >= 200
    assert [(t, n) for (t, n), k in ledger.seen.items() if k != tenant_key[t]] == []
    assert [n for n, (t, w, rid) in answers.items() if rid != f"{IDS[w]}-{t}-{n}"] == []


async def test_calls_beyond_the_connection_limit_wait_their_turn(server: LoopbackServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """At most MAX_CONNECTIONS exchanges at once; the rest queue, and their wait counts against their deadline."""
    monkeypatch.setattr(_transport, "MAX_CONNECTIONS", 4)  # read when this event loop's gate is made
    wire = WIRES["openai_chat"]

    async def slow(req: Req, w: Writer) -> None:
        await asyncio.sleep(0.1)
        await w.start_stream()
        await w.chunk(wire.stream)
        await w.end_stream()

    server.handler = slow
    engine = wire.engine(server.url)
    results = await asyncio.gather(*(allm.agenerate(engine, f"n{i}", api_key="k") for i in range(20)))
    assert all(r.finish_reason == "stop" for r in results)
    assert server.max_active == 4 and len(server.requests) == 20

    # A call whose first-event deadline passes while it waits for a slot fails with a typed timeout.
    tight = allm.Timeouts(first_event=0.15)
    outcome = await asyncio.gather(
        *(allm.agenerate(engine, f"m{i}", api_key="k", timeouts=tight, retry=allm.RetryPolicy(max_attempts=1)) for i in range(12)),
        return_exceptions=True,
    )
    errors = [o for o in outcome if isinstance(o, BaseException)]
    assert errors and all(isinstance(e, allm.AdapterError) and e.reason == "timeout" and "first-event" in e.message for e in errors)
    assert server.max_active == 4
    await _transport.aclose()
