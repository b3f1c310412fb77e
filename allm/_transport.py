"""The only module that imports httpx: send, stream, retry, deadlines, close.

Two thin shells, :func:`iter_events` (sync) and :func:`aiter_events` (async),
perform what the pure parts decide: the adapter encodes and decodes, and
:class:`~allm.policy.Attempts` decides about retries and deadlines. Connections
are pooled per process (one async pool per event loop), keyed by nothing secret:
the key travels only in the request headers.

Deadlines are enforced per socket operation by a thin wrapper around httpcore's
network backend: each connect, write and read may wait only until the current
deadline (first event, idle gap, total), so a stream that goes silent ends with a
typed timeout, and one that drips bytes without completing an event cannot extend
its idle deadline.

Concurrency: a process makes at most :data:`MAX_CONNECTIONS` HTTP exchanges at once
(per event loop for async calls). A call beyond that waits its turn in a FIFO queue
of our own (httpcore's pool queue costs time quadratic in its length), and that wait
counts against the call's first-event and total deadlines.

Memory is bounded whatever the server sends: a stream may send at most
:data:`MAX_EVENT_BYTES` without completing an event, a non-streaming body at most
:data:`MAX_BODY_BYTES`, and only the first :data:`MAX_ERROR_BODY_BYTES` of an error
body are read.

Every error built here from a provider body or an exception string is scrubbed of
the call's key (:func:`~allm.errors.scrub`), including in-stream ``Error`` events
and, with ``include_raw_chunks``, raw chunks that echo it.

One hook sees every exchange: :func:`set_exchange_hook` (how :mod:`allm.testing` guards,
records and replays HTTP traffic under the same retries, deadlines and decoders).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any, Protocol, TypeVar

import httpcore
import httpx

from .errors import AdapterError, AllmError, redact, scrub
from .events import Error, Event, RawChunk
from .policy import Attempts, RetryInfo, RetryPolicy, Timeouts
from .providers.base import Decoder, HttpAdapter, HttpCall

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_CONNECTIONS",
    "MAX_ERROR_BODY_BYTES",
    "MAX_EVENT_BYTES",
    "ExchangeHook",
    "Plan",
    "afetch",
    "aiter_events",
    "aiter_once",
    "fetch",
    "iter_events",
    "iter_once",
    "read_deadline",
    "set_exchange_hook",
]

T = TypeVar("T")

#: HTTP exchanges in flight at once (sync calls of the process; async calls per event loop).
MAX_CONNECTIONS = 1000
#: Bytes a stream may send without completing an event (a ``malformed_response`` past it).
MAX_EVENT_BYTES = 16 * 2**20
#: Bytes of a non-streaming body (a ``malformed_response`` past it).
MAX_BODY_BYTES = 256 * 2**20
#: Bytes of an error body that are read (the rest is dropped with the connection).
MAX_ERROR_BODY_BYTES = 2**20
#: Seconds spent reading past a stream's terminal marker so the connection can be reused.
DRAIN_GRACE = 1.0

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("allm_read_deadline", default=None)
_now = time.monotonic


# ------------------------------------------------------------------------------ deadline-aware backends


def _remaining(timeout: float | None, exc: type[Exception] = httpcore.ReadTimeout) -> float | None:
    d = _deadline.get()
    if d is None:
        return timeout
    left = d - _now()
    if left <= 0:
        raise exc("deadline passed")
    return left if timeout is None or left < timeout else timeout


class _Stream(httpcore.NetworkStream):
    __slots__ = ("_inner",)

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _remaining(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _remaining(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> httpcore.NetworkStream:
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, _remaining(timeout, httpcore.ConnectTimeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None, socket_options: Any = None) -> httpcore.NetworkStream:
        timeout = _remaining(timeout, httpcore.ConnectTimeout)
        return _Stream(self._inner.connect_tcp(host, port, timeout, local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None) -> httpcore.NetworkStream:
        timeout = _remaining(timeout, httpcore.ConnectTimeout)
        return _Stream(self._inner.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _AStream(httpcore.AsyncNetworkStream):
    __slots__ = ("_inner",)

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, _remaining(timeout))

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, _remaining(timeout, httpcore.WriteTimeout))

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        timeout = _remaining(timeout, httpcore.ConnectTimeout)
        return _AStream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _ABackend(httpcore.AsyncNetworkBackend):
    def __init__(self, inner: httpcore.AsyncNetworkBackend) -> None:
        self._inner = inner

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None, socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        timeout = _remaining(timeout, httpcore.ConnectTimeout)
        return _AStream(await self._inner.connect_tcp(host, port, timeout, local_address, socket_options))

    async def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        timeout = _remaining(timeout, httpcore.ConnectTimeout)
        return _AStream(await self._inner.connect_unix_socket(path, timeout, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


# ------------------------------------------------------------------------------ exchange hook


class ExchangeHook(Protocol):
    """What :func:`set_exchange_hook` takes; :mod:`allm.testing` (request guard, recorder,
    replayer) is its user. ``handle`` gets each sync exchange as an ``httpx.Request`` and
    ``send``, which performs it for real (pooled, deadline-aware); it returns the
    ``httpx.Response`` the shell then reads, or raises. ``ahandle`` is the async twin."""

    def handle(self, request: httpx.Request, send: Callable[[httpx.Request], httpx.Response]) -> httpx.Response: ...

    async def ahandle(
        self, request: httpx.Request, send: Callable[[httpx.Request], Awaitable[httpx.Response]]
    ) -> httpx.Response: ...


_hook: ExchangeHook | None = None


def set_exchange_hook(hook: ExchangeHook | None) -> ExchangeHook | None:
    """Route every HTTP exchange of the process, sync and async, through ``hook`` (``None``:
    straight to the network). Returns the hook it replaces, to restore it afterwards."""
    global _hook
    previous, _hook = _hook, hook
    return previous


def read_deadline() -> float | None:
    """The ``time.monotonic()`` instant the current read must end by (``None``: no deadline).
    A hook's response stream that waits honours it, as a socket read under allm's deadlines does."""
    return _deadline.get()


class _HTTPTransport(httpx.HTTPTransport):
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        hook = _hook
        return super().handle_request(request) if hook is None else hook.handle(request, super().handle_request)


class _AsyncHTTPTransport(httpx.AsyncHTTPTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        hook = _hook
        send = super().handle_async_request
        return await (send(request) if hook is None else hook.ahandle(request, send))


_LIMITS = httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=100, keepalive_expiry=30.0)
_sync_client: httpx.Client | None = None
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = weakref.WeakKeyDictionary()
_lock = threading.Lock()
_sync_slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
_async_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


def _slot_timeout() -> float | None:
    d = _deadline.get()
    if d is None:
        return None
    left = d - _now()
    if left <= 0:
        raise httpx.PoolTimeout("deadline passed while waiting for a connection slot")
    return left


@contextlib.contextmanager
def _slot() -> Iterator[None]:
    """Hold one of the process's :data:`MAX_CONNECTIONS` slots, waiting at most until the deadline."""
    if not _sync_slots.acquire(timeout=_slot_timeout()):
        raise httpx.PoolTimeout("deadline passed while waiting for a connection slot")
    try:
        yield
    finally:
        _sync_slots.release()


@contextlib.asynccontextmanager
async def _aslot() -> AsyncIterator[None]:
    loop = asyncio.get_running_loop()
    sem = _async_slots.get(loop)
    if sem is None:
        sem = _async_slots[loop] = asyncio.Semaphore(MAX_CONNECTIONS)
    if sem.locked():
        try:
            async with asyncio.timeout(_slot_timeout()):
                await sem.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout("deadline passed while waiting for a connection slot") from None
    else:
        await sem.acquire()
    try:
        yield
    finally:
        sem.release()


def _wrap_pool(transport: Any, wrapper: Callable[[Any], Any]) -> None:
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if backend is not None:
        pool._network_backend = wrapper(backend)  # type: ignore[union-attr]


def sync_client() -> httpx.Client:
    """The process-wide pooled client (created on first use)."""
    global _sync_client
    c = _sync_client
    if c is None or c.is_closed:
        with _lock:
            c = _sync_client
            if c is None or c.is_closed:
                transport = _HTTPTransport(limits=_LIMITS)
                _wrap_pool(transport, _Backend)
                c = _sync_client = httpx.Client(transport=transport, timeout=None, follow_redirects=False)
    return c


def async_client() -> httpx.AsyncClient:
    """The pooled async client of the running event loop (one per loop)."""
    loop = asyncio.get_running_loop()
    c = _async_clients.get(loop)
    if c is None or c.is_closed:
        transport = _AsyncHTTPTransport(limits=_LIMITS)
        _wrap_pool(transport, _ABackend)
        c = httpx.AsyncClient(transport=transport, timeout=None, follow_redirects=False)
        _async_clients[loop] = c
    return c


def close() -> None:
    """Close the sync pool (async pools close with their event loop or :func:`aclose`)."""
    global _sync_client
    with _lock:
        if _sync_client is not None:
            _sync_client.close()
            _sync_client = None


async def aclose() -> None:
    """Close the running loop's async pool."""
    c = _async_clients.pop(asyncio.get_running_loop(), None)
    if c is not None:
        await c.aclose()


# ------------------------------------------------------------------------------ plans and errors


class Plan:
    """One call ready to send. Holds the auth headers only for the call's lifetime; never shown."""

    __slots__ = ("adapter", "call", "headers", "include_raw", "on_retry", "retry", "secret", "timeouts")

    def __init__(
        self,
        adapter: HttpAdapter,
        call: HttpCall,
        headers: dict[str, str],
        secret: str | None,
        *,
        include_raw: bool = False,
        retry: RetryPolicy,
        timeouts: Timeouts,
        on_retry: Callable[[RetryInfo], None] | None = None,
    ) -> None:
        self.adapter = adapter
        self.call = call
        self.headers = headers
        self.secret = secret
        self.include_raw = include_raw
        self.retry = retry
        self.timeouts = timeouts
        self.on_retry = on_retry

    def __repr__(self) -> str:
        return f"Plan({self.call.method} {redact(self.call.url, self.secret)})"

    def __getstate__(self) -> None:
        raise TypeError("a Plan holds a key and cannot be pickled")


_READ_TIMEOUTS = (httpx.ReadTimeout, httpcore.ReadTimeout)
_CONNECT_TIMEOUTS = (httpx.ConnectTimeout, httpcore.ConnectTimeout)
_WRITE_TIMEOUTS = (httpx.WriteTimeout, httpcore.WriteTimeout)
_POOL_TIMEOUTS = (httpx.PoolTimeout, httpcore.PoolTimeout)
_NET_ERRORS = (httpx.HTTPError, httpcore.NetworkError, httpcore.TimeoutException, httpcore.ProtocolError, OSError)


def classify(exc: Exception, provider: str | None, timeouts: Timeouts | None = None) -> AdapterError:
    """An httpx/httpcore failure as a typed error.

    Timeouts are ``timeout`` (the message names the deadline); a refused, reset or
    closed connection, or a server that is not speaking HTTP, is ``network_error``;
    a body that cannot be decompressed is ``malformed_response``; a request httpx
    refuses to send (a bad URL or header) is ``invalid_request``. Messages are
    redacted of key shapes (see :func:`~allm.errors.redact`); the shells also
    remove the call's own key.
    """
    c = timeouts.connect if timeouts is not None else None
    limit = f" of {c:g} s" if c is not None else ""
    if isinstance(exc, _CONNECT_TIMEOUTS):
        return AdapterError(f"could not connect within the connect deadline{limit}", reason="timeout", provider=provider)
    if isinstance(exc, _WRITE_TIMEOUTS):
        return AdapterError(f"could not send the request within the connect deadline{limit}", reason="timeout", provider=provider)
    if isinstance(exc, _POOL_TIMEOUTS):
        return AdapterError(f"no pooled connection was free within the connect deadline{limit}", reason="timeout", provider=provider)
    if isinstance(exc, (httpx.TimeoutException, httpcore.TimeoutException)):
        return AdapterError("read timeout", reason="timeout", provider=provider)
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, httpx.DecodingError):
        return AdapterError(f"the response body could not be decoded ({text})", reason="malformed_response", provider=provider)
    if isinstance(exc, (httpx.LocalProtocolError, httpx.UnsupportedProtocol, httpx.InvalidURL, httpcore.LocalProtocolError)):
        return AdapterError(f"the request could not be sent ({text})", reason="invalid_request", provider=provider)
    return AdapterError(text, reason="network_error", provider=provider)


def _failure(exc: Exception, st: Attempts, plan: Plan) -> AllmError:
    provider = plan.call.provider
    timed_out = isinstance(exc, (httpx.TimeoutException, httpcore.TimeoutException))
    if isinstance(exc, _READ_TIMEOUTS) or (timed_out and st.deadline_passed(_now())):
        err: AllmError = st.timeout_error(provider, _now())
    else:
        err = classify(exc, provider, plan.timeouts)
    return scrub(err, plan.secret)


class _TooLarge(Exception):
    pass


def _strip(body: bytes, secret: str | None) -> bytes:
    """An error body without the key (as sent, and JSON-escaped), before the adapter reads it."""
    if not secret or len(secret) < 4:
        return body
    for form in {secret, json_escaped(secret)}:
        b = form.encode("utf-8", "replace")
        if b in body:
            body = body.replace(b, b"[redacted]")
    return body


def json_escaped(text: str) -> str:
    """``text`` as it appears inside a JSON string."""
    return json.dumps(text)[1:-1]


def _too_large(plan: Plan, what: str, limit: int) -> AdapterError:
    return AdapterError(f"{what} exceeded {limit} bytes; the connection was closed", reason="malformed_response", provider=plan.call.provider)


def _clean(events: list[Event], plan: Plan) -> list[Event]:
    """Scrub the key from ``Error`` events and (with raw chunks on) raw chunks that echo it."""
    secret = plan.secret
    for i, ev in enumerate(events):
        t = type(ev)
        if t is Error:
            er: Error = ev  # type: ignore[assignment]
            scrub(er.error, secret)
        elif t is RawChunk and secret and plan.include_raw:
            rc: RawChunk = ev  # type: ignore[assignment]
            found, data = _without(rc.data, secret)
            if found:
                events[i] = RawChunk(data, rc.usage)
    return events


def _without(value: Any, secret: str) -> tuple[bool, Any]:
    """``(found, value with secret replaced by [redacted] in every string and key)``."""
    if isinstance(value, str):
        return (True, value.replace(secret, "[redacted]")) if secret in value else (False, value)
    if isinstance(value, dict):
        found = False
        out: dict[Any, Any] = {}
        for k, v in value.items():
            fk, k2 = _without(k, secret)
            fv, v2 = _without(v, secret)
            found = found or fk or fv
            out[k2] = v2
        return (True, out) if found else (False, value)
    if isinstance(value, list):
        pairs = [_without(v, secret) for v in value]
        return (True, [v for _, v in pairs]) if any(f for f, _ in pairs) else (False, value)
    return False, value


def _chunks_upto(chunks: Iterator[bytes], limit: int, exact: bool) -> bytes:
    parts: list[bytes] = []
    n = 0
    for chunk in chunks:
        n += len(chunk)
        parts.append(chunk)
        if n > limit:
            if exact:
                raise _TooLarge
            break
    return b"".join(parts)[:limit]


async def _achunks_upto(chunks: AsyncIterator[bytes], limit: int, exact: bool) -> bytes:
    parts: list[bytes] = []
    n = 0
    async for chunk in chunks:
        n += len(chunk)
        parts.append(chunk)
        if n > limit:
            if exact:
                raise _TooLarge
            break
    return b"".join(parts)[:limit]


def _httpx_timeout(t: Timeouts) -> httpx.Timeout:
    # Reads are bounded by the deadline wrapper; connect/write/pool by ``connect``
    # (and by the current deadline, through the same wrapper).
    return httpx.Timeout(connect=t.connect, read=None, write=t.connect, pool=t.connect)


def _finish_after_failure(dec: Decoder | None, st: Attempts, plan: Plan) -> list[Event] | None:
    """The final events if the stream had already given its terminal marker, else ``None``.

    Some decoders (Gemini's: its marker is a chunk's ``finishReason``) finish only at
    ``close()``; a connection lost after the marker has lost nothing.
    """
    if dec is None or dec.finished:
        return None
    tail = dec.close()
    if not tail or dec.failed:
        return None
    out, err = st.take(_clean(tail, plan))
    if err is not None:
        return None
    out.extend(st.flush())
    return out


# ------------------------------------------------------------------------------ sync shell


def iter_events(plan: Plan) -> Iterator[Event]:
    """Send ``plan`` and yield its events, retrying before the first event reaches the caller.

    Raises the typed error when the call fails before any event (after retries);
    once events have been yielded, a failure is yielded as an ``Error`` event and the
    stream ends. Closing the generator closes the HTTP response at once.
    """
    adapter, call = plan.adapter, plan.call
    st = Attempts(plan.retry, plan.timeouts, _now())
    client = sync_client()
    timeout = _httpx_timeout(plan.timeouts)
    max_pending = MAX_EVENT_BYTES
    try:
        while True:
            st.begin(_now())
            err: AllmError | None = None
            dec: Decoder | None = None
            _deadline.set(st.deadline())
            try:
                with _slot(), client.stream(call.method, call.url, headers=plan.headers, content=call.body, timeout=timeout) as resp:
                    status = resp.status_code
                    if status >= 300:
                        body = _chunks_upto(resp.iter_bytes(), MAX_ERROR_BODY_BYTES, False)
                        err = scrub(adapter.error(status, resp.headers, _strip(body, plan.secret)), plan.secret)
                    elif not call.stream:
                        body = _chunks_upto(resp.iter_bytes(), MAX_BODY_BYTES, True)
                        out, err = st.take(_clean(adapter.decode_body(call, body, include_raw=plan.include_raw), plan))
                        if err is None:
                            out.extend(st.flush())
                            _deadline.set(None)
                            yield from out
                            return
                    else:
                        dec = adapter.decoder(call, include_raw=plan.include_raw)
                        feed = dec.feed
                        it = resp.iter_bytes()
                        pending = 0
                        for chunk in it:
                            evs = feed(chunk)
                            if not evs:
                                pending += len(chunk)
                                if pending > max_pending:
                                    err = _too_large(plan, "the stream sent data without completing an event: it", max_pending)
                                    break
                                continue
                            pending = 0
                            if dec.failed or plan.include_raw:
                                evs = _clean(evs, plan)
                            out, err = st.take(evs)
                            if err is not None:
                                break
                            if dec.finished and not dec.failed:
                                _drain(it, st)
                            if out:
                                _deadline.set(None)
                                yield from out
                                if dec.finished:
                                    return
                                st.wait_start = _now()
                                _deadline.set(st.deadline())
                        else:
                            out, err = st.take(_clean(dec.close(), plan))
                            if err is None:
                                out.extend(st.flush())
                                _deadline.set(None)
                                yield from out
                                return
            except _TooLarge:
                err = _too_large(plan, "the response body", MAX_BODY_BYTES)
            except _NET_ERRORS as exc:
                err = _failure(exc, st, plan)
                tail = _finish_after_failure(dec, st, plan)
                if tail is not None:
                    _deadline.set(None)
                    yield from tail
                    return
            assert err is not None
            _deadline.set(None)
            if st.started:
                yield Error(err)
                return
            delay = st.next_delay(err, _now())
            if delay is None:
                raise err
            if plan.on_retry is not None:
                plan.on_retry(RetryInfo(st.attempt, delay, err))
            time.sleep(delay)
    finally:
        _deadline.set(None)


def _drain(it: Iterator[bytes], st: Attempts) -> None:
    """Read what follows the terminal marker (briefly) so the connection returns to the pool."""
    d = st.deadline()
    grace = _now() + DRAIN_GRACE
    _deadline.set(grace if d is None or grace < d else d)
    try:
        for _ in it:
            pass
    except _NET_ERRORS:
        pass


def iter_once(plan: Plan) -> tuple[int, Mapping[str, str], bytes]:
    """A plain request/response (model lists, embeddings): ``(status, headers, body)``, with retries.

    The first-event deadline bounds the whole exchange of each attempt. Raises the
    adapter's typed error for an error status, after retries; ``malformed_response``
    for a body over :data:`MAX_BODY_BYTES`.
    """
    adapter, call = plan.adapter, plan.call
    st = Attempts(plan.retry, plan.timeouts, _now())
    client = sync_client()
    timeout = _httpx_timeout(plan.timeouts)
    try:
        while True:
            st.begin(_now())
            _deadline.set(st.deadline())
            try:
                with _slot(), client.stream(call.method, call.url, headers=plan.headers, content=call.body, timeout=timeout) as resp:
                    status = resp.status_code
                    if status < 300:
                        return status, resp.headers, _chunks_upto(resp.iter_bytes(), MAX_BODY_BYTES, True)
                    body = _chunks_upto(resp.iter_bytes(), MAX_ERROR_BODY_BYTES, False)
                    err: AllmError = scrub(adapter.error(status, resp.headers, _strip(body, plan.secret)), plan.secret)
            except _TooLarge:
                raise _too_large(plan, "the response body", MAX_BODY_BYTES) from None
            except _NET_ERRORS as exc:
                err = _failure(exc, st, plan)
            _deadline.set(None)
            delay = st.next_delay(err, _now())
            if delay is None:
                raise err
            if plan.on_retry is not None:
                plan.on_retry(RetryInfo(st.attempt, delay, err))
            time.sleep(delay)
    finally:
        _deadline.set(None)


def fetch(plan: Plan, decode: Callable[[bytes], T]) -> T:
    """:func:`iter_once`, then ``decode(body)``; errors of either are scrubbed of the key."""
    body = iter_once(plan)[2]
    try:
        return decode(body)
    except AllmError as exc:
        raise scrub(exc, plan.secret) from None


# ------------------------------------------------------------------------------ async shell


async def aiter_events(plan: Plan) -> AsyncIterator[Event]:
    """The async twin of :func:`iter_events`; ``aclose()`` or cancellation closes the response."""
    adapter, call = plan.adapter, plan.call
    st = Attempts(plan.retry, plan.timeouts, _now())
    client = async_client()
    timeout = _httpx_timeout(plan.timeouts)
    max_pending = MAX_EVENT_BYTES
    try:
        while True:
            st.begin(_now())
            err: AllmError | None = None
            dec: Decoder | None = None
            _deadline.set(st.deadline())
            try:
                async with _aslot(), client.stream(call.method, call.url, headers=plan.headers, content=call.body, timeout=timeout) as resp:
                    status = resp.status_code
                    if status >= 300:
                        body = await _achunks_upto(resp.aiter_bytes(), MAX_ERROR_BODY_BYTES, False)
                        err = scrub(adapter.error(status, resp.headers, _strip(body, plan.secret)), plan.secret)
                    elif not call.stream:
                        body = await _achunks_upto(resp.aiter_bytes(), MAX_BODY_BYTES, True)
                        out, err = st.take(_clean(adapter.decode_body(call, body, include_raw=plan.include_raw), plan))
                        if err is None:
                            out.extend(st.flush())
                            _deadline.set(None)
                            for ev in out:
                                yield ev
                            return
                    else:
                        dec = adapter.decoder(call, include_raw=plan.include_raw)
                        feed = dec.feed
                        ait = resp.aiter_bytes()
                        pending = 0
                        async for chunk in ait:
                            evs = feed(chunk)
                            if not evs:
                                pending += len(chunk)
                                if pending > max_pending:
                                    err = _too_large(plan, "the stream sent data without completing an event: it", max_pending)
                                    break
                                continue
                            pending = 0
                            if dec.failed or plan.include_raw:
                                evs = _clean(evs, plan)
                            out, err = st.take(evs)
                            if err is not None:
                                break
                            if dec.finished and not dec.failed:
                                await _adrain(ait, st)
                            if out:
                                _deadline.set(None)
                                for ev in out:
                                    yield ev
                                if dec.finished:
                                    return
                                st.wait_start = _now()
                                _deadline.set(st.deadline())
                        else:
                            out, err = st.take(_clean(dec.close(), plan))
                            if err is None:
                                out.extend(st.flush())
                                _deadline.set(None)
                                for ev in out:
                                    yield ev
                                return
            except _TooLarge:
                err = _too_large(plan, "the response body", MAX_BODY_BYTES)
            except _NET_ERRORS as exc:
                err = _failure(exc, st, plan)
                tail = _finish_after_failure(dec, st, plan)
                if tail is not None:
                    _deadline.set(None)
                    for ev in tail:
                        yield ev
                    return
            assert err is not None
            _deadline.set(None)
            if st.started:
                yield Error(err)
                return
            delay = st.next_delay(err, _now())
            if delay is None:
                raise err
            if plan.on_retry is not None:
                plan.on_retry(RetryInfo(st.attempt, delay, err))
            await asyncio.sleep(delay)
    finally:
        _deadline.set(None)


async def _adrain(it: AsyncIterator[bytes], st: Attempts) -> None:
    d = st.deadline()
    grace = _now() + DRAIN_GRACE
    _deadline.set(grace if d is None or grace < d else d)
    try:
        async for _ in it:
            pass
    except _NET_ERRORS:
        pass


async def aiter_once(plan: Plan) -> tuple[int, Mapping[str, str], bytes]:
    """The async twin of :func:`iter_once`."""
    adapter, call = plan.adapter, plan.call
    st = Attempts(plan.retry, plan.timeouts, _now())
    client = async_client()
    timeout = _httpx_timeout(plan.timeouts)
    try:
        while True:
            st.begin(_now())
            _deadline.set(st.deadline())
            try:
                async with _aslot(), client.stream(call.method, call.url, headers=plan.headers, content=call.body, timeout=timeout) as resp:
                    status = resp.status_code
                    if status < 300:
                        return status, resp.headers, await _achunks_upto(resp.aiter_bytes(), MAX_BODY_BYTES, True)
                    body = await _achunks_upto(resp.aiter_bytes(), MAX_ERROR_BODY_BYTES, False)
                    err: AllmError = scrub(adapter.error(status, resp.headers, _strip(body, plan.secret)), plan.secret)
            except _TooLarge:
                raise _too_large(plan, "the response body", MAX_BODY_BYTES) from None
            except _NET_ERRORS as exc:
                err = _failure(exc, st, plan)
            _deadline.set(None)
            delay = st.next_delay(err, _now())
            if delay is None:
                raise err
            if plan.on_retry is not None:
                plan.on_retry(RetryInfo(st.attempt, delay, err))
            await asyncio.sleep(delay)
    finally:
        _deadline.set(None)


async def afetch(plan: Plan, decode: Callable[[bytes], T]) -> T:
    """The async twin of :func:`fetch`."""
    body = (await aiter_once(plan))[2]
    try:
        return decode(body)
    except AllmError as exc:
        raise scrub(exc, plan.secret) from None

