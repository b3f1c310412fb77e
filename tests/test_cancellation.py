"""Closing a stream closes its HTTP connection at once, and the server sees the client leave.

For every adapter, the loopback server sends the recorded stream up to its first
content event and then stalls (a stream that would otherwise stay open for 30 s).
The client stops in each way a caller can: ``break`` out of a sync ``for`` loop
(while still holding the stream), ``close()``, an exception raised by an
``on_event`` hook, ``aclose()`` on an async stream, ``break`` out of an ``async for``,
and cancelling the task. Each time the server counts one disconnect within half a
second, has no connection open, and the client's pool has no busy connection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

import allm
from allm import _transport
from allm.events import Event
from tests.adapters import WIRE_NAMES, WIRES
from tests.loopback import LoopbackServer, Req, Writer, serve
from tests.test_faults import CUTS, KEY, connections_in_use, is_content, pool

AT_ONCE = 0.5  # seconds for the server to see the client leave


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with serve() as s:
        yield s


def prefix_then_stall(wire: str) -> object:
    async def h(req: Req, w: Writer) -> None:
        await w.start_stream()
        await w.chunk(CUTS[wire].prefix)
        await asyncio.sleep(30)

    return h


def assert_left_at_once(server: LoopbackServer, t0: float, pool_: object) -> None:
    assert server.wait_for(lambda: server.disconnects == 1 and server.open_connections == 0, AT_ONCE), (
        server.disconnects,
        server.open_connections,
    )
    assert time.monotonic() - t0 < AT_ONCE + 0.1
    assert connections_in_use(server, pool_) == (0, 0)
    assert server.active == 0 and len(server.requests) == 1


@pytest.mark.parametrize("wire", WIRE_NAMES)
def test_break_out_of_a_held_sync_stream(server: LoopbackServer, wire: str) -> None:
    server.handler = prefix_then_stall(wire)  # type: ignore[assignment]
    stream = allm.stream_generate(WIRES[wire].engine(server.url), "hi", api_key=KEY)
    for ev in stream:
        if is_content(ev):
            break
    t0 = time.monotonic()
    assert_left_at_once(server, t0, pool(False))
    assert stream is not None  # still referenced: the loop's leaving closed it, not garbage collection


@pytest.mark.parametrize("wire", WIRE_NAMES)
def test_close_after_next(server: LoopbackServer, wire: str) -> None:
    server.handler = prefix_then_stall(wire)  # type: ignore[assignment]
    with allm.stream_generate(WIRES[wire].engine(server.url), "hi", api_key=KEY) as stream:
        while not is_content(next(stream)):
            pass
        t0 = time.monotonic()
    assert_left_at_once(server, t0, pool(False))


@pytest.mark.parametrize("wire", WIRE_NAMES)
def test_an_exception_in_the_consumer_closes_the_stream(server: LoopbackServer, wire: str) -> None:
    server.handler = prefix_then_stall(wire)  # type: ignore[assignment]

    def on_event(ev: Event) -> None:
        if is_content(ev):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        allm.generate(WIRES[wire].engine(server.url), "hi", api_key=KEY, on_event=on_event)
    assert_left_at_once(server, time.monotonic(), pool(False))


@pytest.mark.parametrize("wire", WIRE_NAMES)
async def test_aclose(server: LoopbackServer, wire: str) -> None:
    server.handler = prefix_then_stall(wire)  # type: ignore[assignment]
    stream = allm.astream_generate(WIRES[wire].engine(server.url), "hi", api_key=KEY)
    async for ev in stream:
        if is_content(ev):
            break
    await stream.aclose()
    await asyncio.to_thread(assert_left_at_once, server, time.monotonic(), pool(True))
    await _transport.aclose()


@pytest.mark.parametrize("wire", WIRE_NAMES)
async def test_break_out_of_async_for(server: LoopbackServer, wire: str) -> None:
    server.handler = prefix_then_stall(wire)  # type: ignore[assignment]
    stream = allm.astream_generate(WIRES[wire].engine(server.url), "hi", api_key=KEY)
    async for ev in stream:
        if is_content(ev):
            break
    t0 = time.monotonic()
    await asyncio.sleep(0.05)  # the event loop finalises the loop's iterator on its next turns
    await asyncio.to_thread(assert_left_at_once, server, t0, pool(True))
    await _transport.aclose()


@pytest.mark.parametrize("wire", WIRE_NAMES)
async def test_cancelling_the_task(server: LoopbackServer, wire: str) -> None:
    server.handler = prefix_then_stall(wire)  # type: ignore[assignment]
    got_content = asyncio.Event()

    def on_event(ev: Event) -> None:
        if is_content(ev):
            got_content.set()

    task = asyncio.create_task(allm.agenerate(WIRES[wire].engine(server.url), "hi", api_key=KEY, on_event=on_event))
    await asyncio.wait_for(got_content.wait(), 5)
    task.cancel()
    t0 = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.to_thread(assert_left_at_once, server, t0, pool(True))
    await _transport.aclose()


async def test_cancelling_during_a_retry_wait(server: LoopbackServer) -> None:
    """A task cancelled while waiting to retry stops at once; nothing is left open."""

    async def busy(req: Req, w: Writer) -> None:
        await w.respond(503, b'{"error": {"message": "busy"}}', {"retry-after": "30"})

    server.handler = busy
    retried = asyncio.Event()
    task = asyncio.create_task(
        allm.agenerate(WIRES["openai_chat"].engine(server.url), "hi", api_key=KEY, on_retry=lambda info: retried.set())
    )
    await asyncio.wait_for(retried.wait(), 5)
    t0 = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - t0 < AT_ONCE
    assert len(server.requests) == 1
    await _transport.aclose()
