"""Fault injection: every fault x every adapter, sync and async, against a loopback server.

The healthy payload of each adapter is its real recorded stream (or body) from
``tests/fixtures/``. The server (``tests/loopback.py``, 127.0.0.1 only) injects one
fault per test: a reset mid-stream, a stall before or after the headers or mid-stream,
a one-byte drip (completing, or never completing an event), garbage, invalid JSON, a
truncation before the terminal marker, 408/409/429 (with ``retry-after-ms``) /
500/503/529, a provider error event, a connection closed before the headers...

Each test asserts the outcome (a retried success identical to the healthy decode, or
the right typed error, raised before the first event or as an ``Error`` event after
it with the partial output kept), the time it took against the deadlines, and that no
connection is left in use: the server is answering nothing, every connection it still
has open is an idle connection in the client's pool, and none of the client's pooled
connections is busy.
"""

from __future__ import annotations

import asyncio
import random
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import attrs
import orjson
import pytest

import allm
from allm import _transport, machine
from allm.errors import AdapterError, AllmError
from allm.events import Error, Event, MessageStarted, RawChunk
from allm.fold import fold_response
from tests.adapters import WIRE_NAMES, WIRES, Wire
from tests.loopback import LoopbackServer, Req, Writer, serve

KEY = "sk-fault-test-0123456789abcdef"
FAST = allm.RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05, jitter=0.5)
EASY = allm.Timeouts(connect=5, first_event=10, idle=10, total=30)  # faults that are not about time
TIGHT = 0.2  # seconds: the deadline a time fault is run against
SLACK = 1.5  # seconds allowed on top of a deadline (a loaded 2-core machine)


# ------------------------------------------------------------------------------ recorded payloads, cut up


def sse_events(payload: bytes) -> list[bytes]:
    """``payload`` cut after each SSE event (a blank line: LF LF or CRLF CRLF)."""
    out, i = [], 0
    while i < len(payload):
        hits = [(j, n) for j, n in ((payload.find(b"\n\n", i), 2), (payload.find(b"\r\n\r\n", i), 4)) if j >= 0]
        if not hits:
            out.append(payload[i:])
            break
        j, n = min(hits)
        out.append(payload[i : j + n])
        i = j + n
    return [e for e in out if e.strip()]


def decode(wire: Wire, data: bytes, *, close: bool = True) -> list[Event]:
    dec = wire.adapter("http://127.0.0.1:9").decoder(wire.call(stream=True))
    events = dec.feed(data)
    if close:
        events += dec.close()
    return events


def is_content(ev: Event) -> bool:
    return type(ev) not in (MessageStarted, RawChunk)


@attrs.frozen
class Cut:
    """A wire's healthy stream and the places faults cut it."""

    events: tuple[bytes, ...]  # the SSE events of the recording
    first: int  # index of the first SSE event that yields a content event

    @property
    def whole(self) -> bytes:
        return b"".join(self.events)

    @property
    def before_content(self) -> bytes:  # what precedes the first content event (held back, retryable)
        return b"".join(self.events[: self.first])

    @property
    def prefix(self) -> bytes:  # up to and including the first content event
        return b"".join(self.events[: self.first + 1])

    @property
    def without_terminal(self) -> bytes:  # everything but the terminal marker's event
        return b"".join(self.events[:-1])


def cut(wire: Wire) -> Cut:
    evs = sse_events(wire.stream)
    for k in range(len(evs)):
        if any(is_content(e) for e in decode(wire, b"".join(evs[: k + 1]), close=False)):
            return Cut(tuple(evs), k)
    raise AssertionError(f"{wire.name}: no content event in the recording")


CUTS = {name: cut(w) for name, w in WIRES.items()}


def test_the_cuts_are_what_the_faults_need() -> None:
    for name, w in WIRES.items():
        c = CUTS[name]
        assert c.whole.strip() == w.stream.strip()
        assert len(c.events) >= 2 and c.first < len(c.events) - 1, name  # content comes before the end
        assert not any(is_content(e) for e in decode(w, c.before_content, close=False))
        assert isinstance(decode(w, c.without_terminal)[-1], Error), name  # the last event is the terminal marker


# ------------------------------------------------------------------------------ running one call, sync or async


@attrs.define
class Outcome:
    events: list[Event]
    raised: AllmError | None
    elapsed: float
    retries: list[allm.RetryInfo]

    @property
    def response(self) -> allm.Response:
        return fold_response(self.events)


def run_sync(engine: allm.Engine, **kw: Any) -> Outcome:
    retries: list[allm.RetryInfo] = []
    events: list[Event] = []
    t0 = time.monotonic()
    try:
        for ev in allm.stream_generate(engine, "hi", api_key=KEY, on_retry=retries.append, **kw):
            events.append(ev)
    except AllmError as exc:
        return Outcome(events, exc, time.monotonic() - t0, retries)
    return Outcome(events, None, time.monotonic() - t0, retries)


async def run_async(engine: allm.Engine, **kw: Any) -> Outcome:
    retries: list[allm.RetryInfo] = []
    events: list[Event] = []
    t0 = time.monotonic()
    stream = allm.astream_generate(engine, "hi", api_key=KEY, on_retry=retries.append, **kw)
    try:
        async for ev in stream:
            events.append(ev)
    except AllmError as exc:
        return Outcome(events, exc, time.monotonic() - t0, retries)
    finally:
        await stream.aclose()
    return Outcome(events, None, time.monotonic() - t0, retries)


def pool(asynchronous: bool) -> Any:
    """The client's connection pool (the async one of the running event loop)."""
    client: Any = _transport.async_client() if asynchronous else _transport.sync_client()
    return client._transport._pool


def connections_in_use(server: LoopbackServer, pool: Any) -> tuple[int, int]:
    """``(busy, idle)`` pooled client connections to ``server``."""
    busy = idle = 0
    for c in pool.connections:
        if c._origin.port != server.port or c.is_closed():
            continue
        if c.is_idle():
            idle += 1
        else:
            busy += 1
    return busy, idle


def assert_nothing_left_open(server: LoopbackServer, *pools: Any) -> None:
    """The server answers nothing; every connection it holds is idle in a client pool; no pooled one is busy."""
    assert server.wait_for(lambda: server.active == 0, 3), f"the server is still answering {server.active} request(s)"
    counts = [connections_in_use(server, p) for p in pools]
    busy, idle = sum(c[0] for c in counts), sum(c[1] for c in counts)
    assert busy == 0, f"{busy} client connection(s) still in use"
    assert server.wait_for(lambda: server.open_connections <= idle, 3), (server.open_connections, idle)


# ------------------------------------------------------------------------------ the faults


@attrs.frozen
class Ctx:
    wire: Wire
    cut: Cut
    server: LoopbackServer

    def attempt(self) -> int:
        return len(self.server.requests)  # the request being answered is already recorded


Handler = Callable[[Req, Writer], Awaitable[None]]
Check = Callable[[Outcome, Ctx], None]


async def send_stream(w: Writer, events: tuple[bytes, ...] | list[bytes], end: bool = True) -> None:
    await w.start_stream()
    for e in events:
        await w.chunk(e)
    if end:
        await w.end_stream()


def healthy(ctx: Ctx) -> Handler:
    async def h(req: Req, w: Writer) -> None:
        await send_stream(w, ctx.cut.events)

    return h


def then_healthy(ctx: Ctx, first: Handler) -> Handler:
    async def h(req: Req, w: Writer) -> None:
        if ctx.attempt() == 1:
            await first(req, w)
        else:
            await send_stream(w, ctx.cut.events)

    return h


def expect_healthy(retried: int = 0, reason: str | None = None, status: int | None = None) -> Check:
    def check(o: Outcome, ctx: Ctx) -> None:
        assert o.raised is None, o.raised
        assert o.events == decode(ctx.wire, ctx.wire.stream), "not identical to the healthy decode"
        assert o.response.finish_reason not in (None, "error")
        assert len(o.retries) == retried and len(ctx.server.requests) == retried + 1
        for r in o.retries:
            assert r.delay >= 0 and (reason is None or r.reason == reason), r
            assert status is None or r.error.status == status
        assert len([e for e in o.events if type(e) is MessageStarted]) == 1  # nothing replayed twice

    return check


def expect_raised(reason: str, attempts: int, within: float | None = None, status: int | None = None) -> Check:
    def check(o: Outcome, ctx: Ctx) -> None:
        assert o.raised is not None and o.events == [], (o.raised, o.events)
        assert isinstance(o.raised, AdapterError) and o.raised.reason == reason, repr(o.raised)
        assert status is None or o.raised.status == status
        assert len(o.retries) == attempts - 1, o.retries
        # an attempt ended by a deadline may reach the server's count a little after it ended
        assert ctx.server.wait_for(lambda: len(ctx.server.requests) == attempts), ctx.server.requests
        if within is not None:
            assert o.elapsed < within, f"took {o.elapsed:.2f}s, limit {within}s"
        assert KEY not in str(o.raised) and KEY not in repr(o.raised)

    return check


def expect_partial(reason: str, *, message_part: str | None = None, min_elapsed: float = 0.0, within: float | None = None) -> Check:
    """An ``Error`` event after the first content event; the fold keeps exactly what arrived."""

    def check(o: Outcome, ctx: Ctx) -> None:
        assert o.raised is None, repr(o.raised)
        assert isinstance(o.events[-1], Error), o.events[-3:]
        err = o.events[-1].error
        assert err.reason == reason, repr(err)
        if message_part is not None:
            assert message_part in err.message, err.message
        sent = decode(ctx.wire, ctx.cut.prefix, close=False)
        assert o.events[:-1] == sent, "the events before the fault are not exactly those the server sent"
        resp = o.response
        assert resp.finish_reason == "error" and resp.metadata["error"] == err
        assert resp.message == fold_response([*sent, o.events[-1]]).message
        assert len(ctx.server.requests) == 1 and not o.retries  # never retried after the first event
        assert o.elapsed >= min_elapsed
        if within is not None:
            assert o.elapsed < within, f"took {o.elapsed:.2f}s, limit {within}s"

    return check


@attrs.frozen
class Fault:
    name: str
    handler: Callable[[Ctx], Handler]
    check: Check
    timeouts: allm.Timeouts = EASY
    retry: allm.RetryPolicy = FAST


def _prefix_then(ctx: Ctx, tail: Callable[[Writer], Awaitable[None]]) -> Handler:
    async def h(req: Req, w: Writer) -> None:
        await w.start_stream()
        await w.chunk(ctx.cut.prefix)
        await asyncio.sleep(0.02)
        await tail(w)

    return h


async def _reset(w: Writer) -> None:
    w.reset()


async def _stall(w: Writer) -> None:
    await asyncio.sleep(30)


async def _drip_forever(w: Writer) -> None:
    for b in b'data: {"never": "completes' * 100:
        await w.chunk(bytes([b]))
        await asyncio.sleep(0.02)


def _status(status: int, headers: dict[str, str] | None = None) -> Callable[[Ctx], Handler]:
    def make(ctx: Ctx) -> Handler:
        async def first(req: Req, w: Writer) -> None:
            await w.respond(status, ctx.wire.error_body(f"HTTP {status} from the fault server", status), headers)

        return then_healthy(ctx, first)

    return make


def _status_always(status: int) -> Callable[[Ctx], Handler]:
    def make(ctx: Ctx) -> Handler:
        async def h(req: Req, w: Writer) -> None:
            await w.respond(status, ctx.wire.error_body("the service is unavailable", status))

        return h

    return make


def _close_first(ctx: Ctx) -> Handler:
    async def first(req: Req, w: Writer) -> None:
        w.close()

    return then_healthy(ctx, first)


def _close_always(ctx: Ctx) -> Handler:
    async def h(req: Req, w: Writer) -> None:
        w.close()

    return h


def _not_http_first(ctx: Ctx) -> Handler:
    async def first(req: Req, w: Writer) -> None:
        await w.raw(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        w.close()

    return then_healthy(ctx, first)


def _reset_before_content_first(ctx: Ctx) -> Handler:
    async def first(req: Req, w: Writer) -> None:
        await w.start_stream()
        await w.chunk(ctx.cut.before_content)
        await asyncio.sleep(0.02)
        w.reset()

    return then_healthy(ctx, first)


def _provider_error_first(ctx: Ctx) -> Handler:
    async def first(req: Req, w: Writer) -> None:
        await send_stream(w, [ctx.wire.stream_error("Overloaded, try again")])

    return then_healthy(ctx, first)


def _stall_after_headers(ctx: Ctx) -> Handler:
    async def h(req: Req, w: Writer) -> None:
        await w.start_stream()
        await asyncio.sleep(30)

    return h


def _stall_before_headers(ctx: Ctx) -> Handler:
    async def h(req: Req, w: Writer) -> None:
        await asyncio.sleep(30)

    return h


def _drip_whole(ctx: Ctx) -> Handler:
    async def h(req: Req, w: Writer) -> None:
        await w.start_stream()
        await w.drip(ctx.wire.stream)
        await w.end_stream()

    return h


def _truncated(ctx: Ctx) -> Handler:
    async def h(req: Req, w: Writer) -> None:
        await send_stream(w, [ctx.cut.without_terminal])

    return h


def _invalid_json_first(ctx: Ctx) -> Handler:
    async def h(req: Req, w: Writer) -> None:
        await send_stream(w, [b"data: {not json\n\n"])

    return h


def _after_terminal(tail: Callable[[Writer], Awaitable[None]]) -> Callable[[Ctx], Handler]:
    def make(ctx: Ctx) -> Handler:
        async def h(req: Req, w: Writer) -> None:
            await w.start_stream()
            await w.chunk(ctx.cut.whole)
            await asyncio.sleep(0.02)
            await tail(w)

        return h

    return make


def _truncation_check(o: Outcome, ctx: Ctx) -> None:
    assert o.raised is None and isinstance(o.events[-1], Error), o.raised
    err = o.events[-1].error
    assert err.reason == "malformed_response", repr(err)
    assert o.events == decode(ctx.wire, ctx.cut.without_terminal)
    resp = o.response
    assert resp.finish_reason == "error" and resp.output_text == fold_response(o.events).output_text
    assert len(ctx.server.requests) == 1 and not o.retries


TIMED = allm.Timeouts(connect=5, first_event=TIGHT, idle=TIGHT, total=10)
TWO = allm.RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.01, jitter=0)

FAULTS = [
    Fault("healthy", healthy, expect_healthy()),
    Fault("drip_one_byte_at_a_time", _drip_whole, expect_healthy()),
    Fault("reset_mid_stream", lambda c: _prefix_then(c, _reset), expect_partial("network_error")),
    Fault("reset_before_first_content_then_ok", _reset_before_content_first, expect_healthy(1, "network_error")),
    Fault("closed_before_headers_then_ok", _close_first, expect_healthy(1, "network_error")),
    Fault("closed_before_headers_always", _close_always, expect_raised("network_error", 3, within=SLACK)),
    Fault("not_http_then_ok", _not_http_first, expect_healthy(1, "network_error")),
    Fault("stall_before_headers", _stall_before_headers, expect_raised("timeout", 2, within=2 * TIGHT + SLACK), TIMED, TWO),
    Fault("stall_before_first_event", _stall_after_headers, expect_raised("timeout", 2, within=2 * TIGHT + SLACK), TIMED, TWO),
    Fault("stall_mid_stream", lambda c: _prefix_then(c, _stall), expect_partial("timeout", message_part="idle", min_elapsed=TIGHT, within=TIGHT + SLACK), TIMED),
    Fault("drip_never_completing_mid_stream", lambda c: _prefix_then(c, _drip_forever), expect_partial("timeout", message_part="idle", min_elapsed=TIGHT, within=TIGHT + SLACK), TIMED),
    Fault("invalid_json_mid_stream", lambda c: _prefix_then(c, lambda w: w.chunk(b"data: {not json\n\n")), expect_partial("malformed_response")),
    Fault("invalid_json_first", _invalid_json_first, expect_raised("malformed_response", 1)),
    Fault("truncated_before_terminal_marker", _truncated, _truncation_check),
    Fault("provider_error_event_mid_stream", lambda c: _prefix_then(c, lambda w: w.chunk(c.wire.stream_error("Overloaded"))), expect_partial("provider_unavailable")),
    Fault("provider_error_event_first_then_ok", _provider_error_first, expect_healthy(1, "provider_unavailable")),
    Fault("status_408_then_ok", _status(408), expect_healthy(1, status=408)),
    Fault("status_409_then_ok", _status(409), expect_healthy(1, status=409)),
    Fault("status_429_retry_after_then_ok", _status(429, {"retry-after-ms": "200"}), expect_healthy(1, "rate_limited", 429)),
    Fault("status_500_then_ok", _status(500), expect_healthy(1, "provider_unavailable", 500)),
    Fault("status_502_then_ok", _status(502), expect_healthy(1, "provider_unavailable", 502)),
    Fault("status_503_then_ok", _status(503), expect_healthy(1, "provider_unavailable", 503)),
    Fault("status_504_then_ok", _status(504), expect_healthy(1, status=504)),
    Fault("status_529_then_ok", _status(529), expect_healthy(1, "provider_unavailable", 529)),
    Fault("status_500_always", _status_always(500), expect_raised("provider_unavailable", 3, within=SLACK, status=500)),
    Fault("status_400_never_retried", _status_always(400), expect_raised("invalid_request", 1, status=400)),
    Fault("stall_after_terminal_marker", _after_terminal(_stall), expect_healthy(), TIMED),
    Fault("reset_after_terminal_marker", _after_terminal(_reset), expect_healthy()),
]
FAULT_NAMES = [f.name for f in FAULTS]
BY_NAME = {f.name: f for f in FAULTS}


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with serve() as s:
        yield s


def _extra_checks(fault: Fault, o: Outcome) -> None:
    if fault.name == "status_429_retry_after_then_ok":
        assert o.retries[0].delay >= 0.2 and o.elapsed >= 0.2  # retry-after-ms honoured
    if fault.name.endswith("after_terminal_marker"):
        assert o.elapsed < TIGHT + SLACK


@pytest.mark.parametrize("fault", FAULT_NAMES)
@pytest.mark.parametrize("wire", WIRE_NAMES)
def test_fault_sync(server: LoopbackServer, wire: str, fault: str) -> None:
    f = BY_NAME[fault]
    ctx = Ctx(WIRES[wire], CUTS[wire], server)
    server.handler = f.handler(ctx)
    o = run_sync(ctx.wire.engine(server.url), timeouts=f.timeouts, retry=f.retry)
    f.check(o, ctx)
    _extra_checks(f, o)
    assert ctx.wire.key_of(server.requests[0].headers) == KEY
    assert_nothing_left_open(server, pool(False))


@pytest.mark.parametrize("fault", FAULT_NAMES)
@pytest.mark.parametrize("wire", WIRE_NAMES)
async def test_fault_async(server: LoopbackServer, wire: str, fault: str) -> None:
    f = BY_NAME[fault]
    ctx = Ctx(WIRES[wire], CUTS[wire], server)
    server.handler = f.handler(ctx)
    o = await run_async(ctx.wire.engine(server.url), timeouts=f.timeouts, retry=f.retry)
    f.check(o, ctx)
    _extra_checks(f, o)
    await asyncio.to_thread(assert_nothing_left_open, server, pool(True))
    await _transport.aclose()


# ------------------------------------------------------------------------------ memory stays bounded


GARBAGE = random.Random(7).randbytes(1 << 16)


def _endless_garbage(after: bytes) -> Handler:
    async def h(req: Req, w: Writer) -> None:
        await w.start_stream()
        if after:
            await w.chunk(after)
        for _ in range(1024):  # up to 64 MiB, unless the client hangs up first
            await w.chunk(GARBAGE)

    return h


@pytest.mark.parametrize("wire", WIRE_NAMES)
def test_endless_garbage_is_cut_off_with_bounded_memory(server: LoopbackServer, wire: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Random bytes that never complete an event: a typed error after MAX_EVENT_BYTES, not a heap that grows."""
    monkeypatch.setattr(machine, "MAX_EVENT_BYTES", 1 << 20)
    ctx = Ctx(WIRES[wire], CUTS[wire], server)
    engine = ctx.wire.engine(server.url)
    for after in (b"", ctx.cut.prefix):
        server.handler = _endless_garbage(after)
        tracemalloc.start()
        try:
            o = run_sync(engine, timeouts=EASY, retry=FAST)
            _cur, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        err = o.raised if not after else o.events[-1].error  # type: ignore[union-attr]
        assert isinstance(err, AdapterError) and err.reason == "malformed_response", repr(err)
        assert "without completing an event" in err.message
        assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB while the server offered 64 MiB"
        assert o.elapsed < 5
    assert len(server.requests) == 2  # never retried
    assert_nothing_left_open(server, pool(False))


async def test_endless_garbage_async_and_drip_memory(server: LoopbackServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(machine, "MAX_EVENT_BYTES", 1 << 20)
    wire = WIRES["openai_chat"]
    server.handler = _endless_garbage(b"")
    tracemalloc.start()
    try:
        o = await run_async(wire.engine(server.url), timeouts=EASY, retry=FAST)
        _cur, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(o.raised, AdapterError) and o.raised.reason == "malformed_response"
    assert peak < 8 << 20
    await asyncio.to_thread(assert_nothing_left_open, server, pool(True))
    await _transport.aclose()


def test_a_huge_body_is_refused_with_bounded_memory(server: LoopbackServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(machine, "MAX_BODY_BYTES", 1 << 20)

    async def huge(req: Req, w: Writer) -> None:
        await w.raw(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(1024):
            await w.chunk(GARBAGE)

    server.handler = huge
    tracemalloc.start()
    try:
        o = run_sync(WIRES["anthropic"].engine(server.url), timeouts=EASY, retry=FAST, http_streaming=False)
        _cur, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(o.raised, AdapterError) and o.raised.reason == "malformed_response"
    assert peak < 8 << 20
    with pytest.raises(AdapterError) as info:
        allm.list_models(WIRES["gemini"].engine(server.url), api_key=KEY)
    assert info.value.reason == "malformed_response"
    assert_nothing_left_open(server, pool(False))


# ------------------------------------------------------------------------------ non-streaming bodies


def _body_expect(wire: Wire) -> list[Event]:
    return wire.adapter("http://127.0.0.1:9").decode_body(wire.call(stream=False), wire.body)


BODY_FAULTS = ["healthy", "drip", "stall_mid_body_then_ok", "stall_mid_body_always", "truncated_then_ok", "garbage", "status_503_then_ok"]


def _body_handler(kind: str, wire: Wire, server: LoopbackServer) -> Handler:
    body = wire.body

    async def h(req: Req, w: Writer) -> None:
        n = len(server.requests)
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        if kind == "healthy" or (n > 1 and kind.endswith("_then_ok")):
            await w.respond(200, body)
        elif kind == "drip":
            await w.raw(head)
            for i in range(len(body)):
                await w.raw(body[i : i + 1])
        elif kind.startswith("stall_mid_body"):
            await w.raw(head + body[: len(body) // 2])
            await asyncio.sleep(30)
        elif kind == "truncated_then_ok":
            await w.raw(head + body[: len(body) // 2])
            w.close()
        elif kind == "garbage":
            await w.respond(200, GARBAGE[:3000])
        elif kind == "status_503_then_ok":
            await w.respond(503, wire.error_body("busy", 503))

    return h


@pytest.mark.parametrize("kind", BODY_FAULTS)
@pytest.mark.parametrize("wire", WIRE_NAMES)
def test_body_fault_sync(server: LoopbackServer, wire: str, kind: str) -> None:
    w = WIRES[wire]
    server.handler = _body_handler(kind, w, server)
    o = run_sync(w.engine(server.url), timeouts=TIMED if kind.startswith("stall") else EASY, retry=FAST, http_streaming=False)
    _check_body(kind, w, o, server)
    assert_nothing_left_open(server, pool(False))


@pytest.mark.parametrize("kind", BODY_FAULTS)
@pytest.mark.parametrize("wire", WIRE_NAMES)
async def test_body_fault_async(server: LoopbackServer, wire: str, kind: str) -> None:
    w = WIRES[wire]
    server.handler = _body_handler(kind, w, server)
    o = await run_async(w.engine(server.url), timeouts=TIMED if kind.startswith("stall") else EASY, retry=FAST, http_streaming=False)
    _check_body(kind, w, o, server)
    await asyncio.to_thread(assert_nothing_left_open, server, pool(True))
    await _transport.aclose()


def _check_body(kind: str, wire: Wire, o: Outcome, server: LoopbackServer) -> None:
    if kind in ("healthy", "drip") or kind.endswith("_then_ok"):
        assert o.raised is None and o.events == _body_expect(wire)
        assert len(o.retries) == kind.endswith("_then_ok") == len(server.requests) - 1
        if kind == "stall_mid_body_then_ok":
            assert o.retries[0].reason == "timeout" and TIGHT <= o.elapsed < TIGHT + SLACK
    elif kind == "stall_mid_body_always":
        assert isinstance(o.raised, AdapterError) and o.raised.reason == "timeout" and "first-event" in o.raised.message
        assert 3 * TIGHT <= o.elapsed < 3 * TIGHT + SLACK  # retried, each attempt bounded
        assert server.wait_for(lambda: len(server.requests) == 3), server.requests
    elif kind == "garbage":
        assert isinstance(o.raised, AdapterError) and o.raised.reason == "malformed_response"
        assert len(server.requests) == 1


# ------------------------------------------------------------------------------ model lists (iter_once / aiter_once)


LISTING = ["openai_chat", "anthropic", "gemini", "openai_compatible"]
LIST_FAULTS = ["healthy", "stall", "reset_always", "status_503_then_ok", "garbage"]


def _list_handler(kind: str, server: LoopbackServer) -> Handler:
    ok = orjson.dumps({"data": [{"id": "m1"}, {"id": "m2"}], "models": [{"name": "models/m1"}, {"name": "models/m2"}]})

    async def h(req: Req, w: Writer) -> None:
        n = len(server.requests)
        if kind == "healthy" or (kind == "status_503_then_ok" and n > 1):
            await w.respond(200, ok)
        elif kind == "stall":
            await asyncio.sleep(30)
        elif kind == "reset_always":
            w.reset()
        elif kind == "status_503_then_ok":
            await w.respond(503, b'{"error": {"message": "busy"}}')
        elif kind == "garbage":
            await w.respond(200, GARBAGE[:500])

    return h


def _check_list(kind: str, result: list[str] | AllmError, elapsed: float, server: LoopbackServer) -> None:
    if kind in ("healthy", "status_503_then_ok"):
        assert result == ["m1", "m2"]
        assert len(server.requests) == (1 if kind == "healthy" else 2)
        return
    assert isinstance(result, AdapterError), result
    want = {"stall": "timeout", "reset_always": "network_error", "garbage": "malformed_response"}[kind]
    assert result.reason == want, repr(result)
    # The loopback server counts a request when it has read it, which on a loaded machine can
    # be after the client's deadline has already ended that attempt: wait for the count.
    if kind == "stall":
        assert elapsed < 2 * TIGHT + SLACK
        assert server.wait_for(lambda: len(server.requests) == 2, timeout=5.0), server.requests
    if kind == "reset_always":
        assert server.wait_for(lambda: len(server.requests) == 2, timeout=5.0), server.requests


@pytest.mark.parametrize("kind", LIST_FAULTS)
@pytest.mark.parametrize("wire", LISTING)
def test_model_list_faults_sync(server: LoopbackServer, wire: str, kind: str) -> None:
    server.handler = _list_handler(kind, server)
    engine = WIRES[wire].engine(server.url, timeouts=TIMED if kind == "stall" else EASY, retry=TWO)
    t0 = time.monotonic()
    try:
        result: list[str] | AllmError = allm.list_models(engine, api_key=KEY)
    except AllmError as exc:
        result = exc
    _check_list(kind, result, time.monotonic() - t0, server)
    assert_nothing_left_open(server, pool(False))


@pytest.mark.parametrize("kind", LIST_FAULTS)
@pytest.mark.parametrize("wire", LISTING)
async def test_model_list_faults_async(server: LoopbackServer, wire: str, kind: str) -> None:
    server.handler = _list_handler(kind, server)
    engine = WIRES[wire].engine(server.url, timeouts=TIMED if kind == "stall" else EASY, retry=TWO)
    t0 = time.monotonic()
    try:
        result: list[str] | AllmError = await allm.alist_models(engine, api_key=KEY)
    except AllmError as exc:
        result = exc
    _check_list(kind, result, time.monotonic() - t0, server)
    await asyncio.to_thread(assert_nothing_left_open, server, pool(True))
    await _transport.aclose()


@pytest.mark.parametrize("wire", ["openai_chat", "openai_compatible", "gemini"])
async def test_embeddings_faults(server: LoopbackServer, wire: str) -> None:
    """Embeddings share the plain request/response path: a stall is a timeout within the deadline, a 503 is retried."""
    w = WIRES[wire]
    ok = orjson.dumps({"data": [{"index": 0, "embedding": [0.5, 1.0]}], "model": "e", "embeddings": [{"values": [0.5, 1.0]}]})

    async def handler(req: Req, wr: Writer) -> None:
        if b"stall" in req.body:
            await asyncio.sleep(30)
        elif b"busy" in req.body and sum(b"busy" in r.body for r in server.requests) == 1:
            await wr.respond(503, w.error_body("busy", 503))
        else:
            await wr.respond(200, ok)

    server.handler = handler
    engine = w.engine(server.url, timeouts=TIMED, retry=TWO)
    assert (await allm.aembed(engine, ["busy"], api_key=KEY)).vectors == ((0.5, 1.0),)
    assert allm.embed(engine, ["busy"], api_key=KEY).vectors == ((0.5, 1.0),)
    t0 = time.monotonic()
    with pytest.raises(AdapterError) as info:
        await allm.aembed(engine, ["stall"], api_key=KEY)
    assert info.value.reason == "timeout" and time.monotonic() - t0 < 2 * TIGHT + SLACK
    with pytest.raises(AdapterError) as info:
        await asyncio.to_thread(allm.embed, engine, ["stall"], api_key=KEY)
    assert info.value.reason == "timeout"
    await asyncio.to_thread(assert_nothing_left_open, server, pool(True), pool(False))
    await _transport.aclose()
