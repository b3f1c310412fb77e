"""The I/O shells against a loopback server: streaming, pooling, closing, errors, retries, deadlines."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import orjson
import pytest

import allm
from allm.events import Error, TextDelta
from allm.providers import OpenAICompatible
from tests.loopback import LoopbackServer, Req, Writer, chat_chunks, serve

FAST = allm.RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.01, jitter=0)


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with serve() as s:
        yield s


def engine_for(server: LoopbackServer, **kw: object) -> allm.Engine:
    return allm.Engine(adapter=OpenAICompatible(server.url + "/v1"), model="m", **kw)  # type: ignore[arg-type]


async def stream_ok(req: Req, w: Writer) -> None:
    await w.start_stream()
    for c in chat_chunks(["Hel", "lo", "!"]):
        await w.chunk(c)
    await w.end_stream()


def test_stream_and_key_header(server: LoopbackServer) -> None:
    server.handler = stream_ok
    resp = allm.generate(engine_for(server), "hi", api_key="tenant-key-1")
    assert resp.output_text == "Hello!" and resp.finish_reason == "stop"
    assert resp.usage.input_tokens == 5 and resp.usage.output_tokens == 3
    req = server.requests[0]
    assert req.path == "/v1/chat/completions" and req.headers["authorization"] == "Bearer tenant-key-1"
    body = orjson.loads(req.body)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    # No key configured: the generic dialect does not require one and sends no auth header.
    allm.generate(engine_for(server), "again")
    assert "authorization" not in server.requests[1].headers


def test_connection_is_reused_after_done(server: LoopbackServer) -> None:
    server.handler = stream_ok
    engine = engine_for(server)
    for _ in range(5):
        assert allm.generate(engine, "hi").output_text == "Hello!"
    assert server.opened == 1


def test_consumer_stopping_early_closes_the_connection(server: LoopbackServer) -> None:
    async def slow(req: Req, w: Writer) -> None:
        await w.start_stream()
        for c in chat_chunks([f"t{i} " for i in range(200)]):
            await w.chunk(c)
            await asyncio.sleep(0.01)
        await w.end_stream()

    server.handler = slow
    stream = allm.stream_generate(engine_for(server), "hi")
    for ev in stream:
        if isinstance(ev, TextDelta):
            break
    stream.close()
    assert server.wait_for(lambda: server.open_connections == 0, 3)
    assert len(server.requests) == 1


def test_http_error_raises_typed_and_redacted(server: LoopbackServer) -> None:
    async def unauthorized(req: Req, w: Writer) -> None:
        msg = "Incorrect API key provided: " + req.headers["authorization"].removeprefix("Bearer ")
        await w.respond(401, orjson.dumps({"error": {"message": msg, "type": "invalid_request_error", "code": "invalid_api_key"}}), {"x-request-id": "req_9"})

    server.handler = unauthorized
    with pytest.raises(allm.AdapterError) as info:
        allm.generate(engine_for(server, retry=FAST), "hi", api_key="mykey-123456789")
    err = info.value
    assert (err.reason, err.status, err.request_id) == ("authentication_failed", 401, "req_9")
    assert "mykey-123456789" not in str(err) and "[redacted]" in err.message
    assert len(server.requests) == 1  # never retried


def test_429_retry_after_then_success(server: LoopbackServer) -> None:
    calls = {"n": 0}

    async def limited(req: Req, w: Writer) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            await w.respond(429, b'{"error": {"message": "slow down", "type": "requests"}}', {"retry-after": "0"})
        else:
            await stream_ok(req, w)

    server.handler = limited
    retries: list[allm.RetryInfo] = []
    resp = allm.generate(engine_for(server, retry=FAST), "hi", on_retry=retries.append)
    assert resp.output_text == "Hello!"
    assert [(r.attempt, r.error.reason, r.error.status) for r in retries] == [(1, "rate_limited", 429)]


def test_truncated_stream_is_an_error_event(server: LoopbackServer) -> None:
    async def truncated(req: Req, w: Writer) -> None:
        await w.start_stream()
        for c in chat_chunks(["par", "tial"], done=False):
            await w.chunk(c)
        await w.end_stream()

    server.handler = truncated
    resp = allm.generate(engine_for(server), "hi")
    assert resp.finish_reason == "error" and resp.output_text == "partial"
    assert resp.metadata["error"].reason == "malformed_response"


def test_reset_mid_stream_is_a_network_error(server: LoopbackServer) -> None:
    async def reset(req: Req, w: Writer) -> None:
        await w.start_stream()
        await w.chunk(chat_chunks(["abc"])[0])
        await asyncio.sleep(0.05)
        w.reset()

    server.handler = reset
    resp = allm.generate(engine_for(server, retry=FAST), "hi")
    assert resp.finish_reason == "error" and resp.output_text == "abc"
    assert resp.metadata["error"].reason == "network_error"


def test_idle_deadline(server: LoopbackServer) -> None:
    async def stall(req: Req, w: Writer) -> None:
        await w.start_stream()
        await w.chunk(chat_chunks(["first"])[0])
        await asyncio.sleep(3)

    server.handler = stall
    t0 = time.monotonic()
    resp = allm.generate(engine_for(server), "hi", timeouts=allm.Timeouts(idle=0.3))
    elapsed = time.monotonic() - t0
    assert resp.finish_reason == "error" and resp.output_text == "first"
    assert resp.metadata["error"].reason == "timeout" and "idle" in resp.metadata["error"].message
    assert 0.25 < elapsed < 2.0


def test_drip_feed_does_not_extend_the_idle_deadline(server: LoopbackServer) -> None:
    async def drip(req: Req, w: Writer) -> None:
        await w.start_stream()
        await w.chunk(chat_chunks(["first"])[0])
        for b in b'data: {"choices": [{"delta": {"content": "never completes"}}]}':
            await w.chunk(bytes([b]))
            await asyncio.sleep(0.05)

    server.handler = drip
    t0 = time.monotonic()
    resp = allm.generate(engine_for(server), "hi", timeouts=allm.Timeouts(idle=0.4))
    assert resp.metadata["error"].reason == "timeout"
    assert time.monotonic() - t0 < 2.0


def test_first_event_deadline_raises_before_any_event(server: LoopbackServer) -> None:
    async def silent(req: Req, w: Writer) -> None:
        await w.start_stream()
        await asyncio.sleep(3)

    server.handler = silent
    t0 = time.monotonic()
    with pytest.raises(allm.AdapterError) as info:
        allm.generate(engine_for(server), "hi", timeouts=allm.Timeouts(first_event=0.3), retry=allm.RetryPolicy(max_attempts=1))
    assert info.value.reason == "timeout" and "first-event" in info.value.message
    assert time.monotonic() - t0 < 2.0


def test_connection_refused_is_a_network_error() -> None:
    from allm.local import free_port

    engine = allm.Engine(adapter=OpenAICompatible(f"http://127.0.0.1:{free_port()}/v1"), model="m", retry=FAST)
    retries: list[allm.RetryInfo] = []
    with pytest.raises(allm.AdapterError) as info:
        allm.generate(engine, "hi", on_retry=retries.append)
    assert info.value.reason == "network_error" and len(retries) == 2


def test_non_streaming_body_path(server: LoopbackServer) -> None:
    async def body(req: Req, w: Writer) -> None:
        assert "stream" not in orjson.loads(req.body)
        await w.respond(200, orjson.dumps({"id": "c", "model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": "whole"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}))

    server.handler = body
    resp = allm.generate(engine_for(server), "hi", http_streaming=False)
    assert resp.output_text == "whole" and resp.usage.total_tokens == 2


def test_list_models_and_embed_over_http(server: LoopbackServer) -> None:
    async def route(req: Req, w: Writer) -> None:
        if req.path == "/v1/models":
            await w.respond(200, b'{"object": "list", "data": [{"id": "a"}, {"id": "b"}]}')
        else:
            n = len(orjson.loads(req.body)["input"])
            data = [{"index": i, "embedding": [float(i), 0.5]} for i in range(n)]
            await w.respond(200, orjson.dumps({"data": data, "model": "e", "usage": {"prompt_tokens": n, "total_tokens": n}}))

    server.handler = route
    engine = engine_for(server)
    assert allm.list_models(engine) == ["a", "b"]
    emb = allm.embed(engine, ["x", "y", "z"])
    assert emb.vectors == ((0.0, 0.5), (1.0, 0.5), (2.0, 0.5)) and emb.usage.input_tokens == 3
    assert allm.embed(engine, []).vectors == ()
    with pytest.raises(TypeError):
        allm.embed(engine, "not a list")


async def test_async_stream_pooling_and_errors(server: LoopbackServer) -> None:
    server.handler = stream_ok
    engine = engine_for(server)
    results = await asyncio.gather(*(allm.agenerate(engine, "hi", api_key=f"k{i}") for i in range(20)))
    assert all(r.output_text == "Hello!" for r in results)
    assert sorted(r.headers["authorization"] for r in server.requests) == sorted(f"Bearer k{i}" for i in range(20))
    assert await allm.alist_models(allm.Engine(adapter=allm.providers.Fake(script=["x"]), model="f")) == ["f"]


async def test_async_cancel_closes_the_connection(server: LoopbackServer) -> None:
    async def slow(req: Req, w: Writer) -> None:
        await w.start_stream()
        for c in chat_chunks([f"t{i}" for i in range(500)]):
            await w.chunk(c)
            await asyncio.sleep(0.01)

    server.handler = slow
    stream = allm.astream_generate(engine_for(server), "hi")
    async for ev in stream:
        if isinstance(ev, TextDelta):
            break
    await stream.aclose()
    assert await asyncio.to_thread(server.wait_for, lambda: server.open_connections == 0, 3)

    task = asyncio.create_task(allm.agenerate(engine_for(server), "hi"))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(server.wait_for, lambda: server.open_connections == 0, 3)


async def test_async_idle_deadline(server: LoopbackServer) -> None:
    async def stall(req: Req, w: Writer) -> None:
        await w.start_stream()
        await w.chunk(chat_chunks(["first"])[0])
        await asyncio.sleep(3)

    server.handler = stall
    t0 = time.monotonic()
    events = [e async for e in allm.astream_generate(engine_for(server), "hi", timeouts=allm.Timeouts(idle=0.3))]
    assert isinstance(events[-1], Error) and events[-1].error.reason == "timeout"
    assert time.monotonic() - t0 < 2.0


def test_the_sync_connection_gate_hands_permits_over_in_order_and_times_out() -> None:
    import threading as th

    from allm._transport import _Slots

    gate = _Slots(2)
    assert gate.acquire(None) and gate.acquire(None)
    assert not gate.acquire(0.05)  # none free: the wait ends at its timeout
    order: list[int] = []

    def waiter(i: int) -> None:
        assert gate.acquire(5.0)
        order.append(i)

    threads = []
    for i in range(3):
        t = th.Thread(target=waiter, args=(i,))
        t.start()
        threads.append(t)
        while len(gate._waiters) < i + 1:  # queued in this order
            time.sleep(0.001)
    for n in range(1, 4):
        gate.release()  # one permit: the longest waiter gets it
        deadline = time.monotonic() + 5
        while len(order) < n and time.monotonic() < deadline:
            time.sleep(0.001)
    for t in threads:
        t.join(5)
    assert order == [0, 1, 2]
    gate.release()
    gate.release()
    assert gate.acquire(None) and gate.acquire(None) and not gate.acquire(0.01)
