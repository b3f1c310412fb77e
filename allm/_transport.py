"""The only module that imports httpx: send, stream, retry, deadlines, close.

Two thin shells, :func:`iter_events` (sync) and :func:`aiter_events` (async),
perform what the pure parts decide: the adapter encodes and decodes, and
:class:`~allm.policy.Attempts` decides about retries and deadlines. Connections
are pooled per process (one async pool per event loop), keyed by nothing secret:
the key travels only in the request headers.

Deadlines are enforced per socket read by a thin wrapper around httpcore's network
backend: each read may wait only until the current deadline (first event, idle gap,
total), so a stream that goes silent ends with a typed timeout, and one that drips
bytes without completing an event cannot extend its idle deadline.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

import httpcore
import httpx

from .errors import AdapterError, AllmError, redact
from .events import Error, Event
from .policy import Attempts, RetryInfo, RetryPolicy, Timeouts
from .providers.base import HttpAdapter, HttpCall

__all__ = ["Plan", "aiter_events", "aiter_once", "iter_events", "iter_once"]

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("allm_read_deadline", default=None)
_now = time.monotonic


# ------------------------------------------------------------------------------ deadline-aware backends


def _remaining(timeout: float | None) -> float | None:
    d = _deadline.get()
    if d is None:
        return timeout
    left = d - _now()
    if left <= 0:
        raise httpcore.ReadTimeout("deadline passed")
    return left if timeout is None or left < timeout else timeout


class _Stream(httpcore.NetworkStream):
    __slots__ = ("_inner",)

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _remaining(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> httpcore.NetworkStream:
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None, socket_options: Any = None) -> httpcore.NetworkStream:
        return _Stream(self._inner.connect_tcp(host, port, timeout, local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None) -> httpcore.NetworkStream:
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
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        return _AStream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _ABackend(httpcore.AsyncNetworkBackend):
    def __init__(self, inner: httpcore.AsyncNetworkBackend) -> None:
        self._inner = inner

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None, socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        return _AStream(await self._inner.connect_tcp(host, port, timeout, local_address, socket_options))

    async def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        return _AStream(await self._inner.connect_unix_socket(path, timeout, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


_LIMITS = httpx.Limits(max_connections=200, max_keepalive_connections=50, keepalive_expiry=30.0)
_sync_client: httpx.Client | None = None
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


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
                transport = httpx.HTTPTransport(limits=_LIMITS)
                _wrap_pool(transport, _Backend)
                c = _sync_client = httpx.Client(transport=transport, timeout=None, follow_redirects=False)
    return c


def async_client() -> httpx.AsyncClient:
    """The pooled async client of the running event loop (one per loop)."""
    loop = asyncio.get_running_loop()
    c = _async_clients.get(loop)
    if c is None or c.is_closed:
        transport = httpx.AsyncHTTPTransport(limits=_LIMITS)
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
        return f"Plan({self.call.method} {self.call.url})"


def scrub(err: AllmError, secret: str | None) -> AllmError:
    """Remove ``secret`` (and key-shaped text) from an error's message."""
    if secret:
        cleaned = redact(err.message, secret)
        if cleaned != err.message:
            err.message = cleaned
            err.args = (cleaned,)
    return err


def classify(exc: Exception, provider: str | None) -> AdapterError:
    """An httpx/httpcore failure as a typed error (``timeout`` or ``network_error``)."""
    if isinstance(exc, (httpx.TimeoutException, httpcore.TimeoutException)):
        kind = "timeout"
        msg = "connect timeout" if isinstance(exc, (httpx.ConnectTimeout, httpcore.ConnectTimeout)) else "read timeout"
    else:
        kind = "network_error"
        msg = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return AdapterError(msg, reason=kind, provider=provider)


def _httpx_timeout(t: Timeouts) -> httpx.Timeout:
    # Reads are bounded by the deadline wrapper; connect/write/pool by ``connect``.
    return httpx.Timeout(connect=t.connect, read=None, write=t.connect, pool=t.connect)


_NET_ERRORS = (httpx.HTTPError, httpcore.NetworkError, httpcore.TimeoutException, httpcore.ProtocolError, OSError)


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
    try:
        while True:
            st.begin(_now())
            err: AllmError | None = None
            _deadline.set(st.deadline())
            try:
                with client.stream(call.method, call.url, headers=plan.headers, content=call.body, timeout=timeout) as resp:
                    if resp.status_code >= 400:
                        body = resp.read()
                        err = scrub(adapter.error(resp.status_code, resp.headers, body), plan.secret)
                    elif not call.stream:
                        out, err = st.take(adapter.decode_body(call, resp.read(), include_raw=plan.include_raw))
                        if err is None:
                            out.extend(st.flush())
                            _deadline.set(None)
                            yield from out
                            return
                    else:
                        dec = adapter.decoder(call, include_raw=plan.include_raw)
                        feed = dec.feed
                        it = resp.iter_bytes()
                        for chunk in it:
                            evs = feed(chunk)
                            if not evs:
                                continue
                            out, err = st.take(evs)
                            if err is not None:
                                break
                            if dec.finished and not dec.failed:
                                _drain(it)
                            if out:
                                _deadline.set(None)
                                yield from out
                                if dec.failed:
                                    return
                                st.wait_start = _now()
                                _deadline.set(st.deadline())
                        else:
                            out, err = st.take(dec.close())
                            if err is None:
                                out.extend(st.flush())
                                _deadline.set(None)
                                yield from out
                                return
            except _NET_ERRORS as exc:
                err = classify(exc, call.provider)
                if err.reason == "timeout" and isinstance(exc, (httpx.ReadTimeout, httpcore.ReadTimeout)):
                    err = st.timeout_error(call.provider, _now())
            assert err is not None
            if st.started:
                yield Error(err)
                return
            delay = st.next_delay(err, _now())
            if delay is None:
                raise err
            if plan.on_retry is not None:
                plan.on_retry(RetryInfo(st.attempt, delay, err))
            _deadline.set(None)
            time.sleep(delay)
    finally:
        _deadline.set(None)


def _drain(it: Iterator[bytes]) -> None:
    """Read what follows the terminal marker so the connection returns to the pool."""
    try:
        for _ in it:
            pass
    except _NET_ERRORS:
        pass


def iter_once(plan: Plan) -> tuple[int, Mapping[str, str], bytes]:
    """A plain request/response (model lists, embeddings): ``(status, headers, body)``, with retries.

    Raises the adapter's typed error for an error status, after retries.
    """
    adapter, call = plan.adapter, plan.call
    st = Attempts(plan.retry, plan.timeouts, _now())
    client = sync_client()
    try:
        while True:
            st.begin(_now())
            _deadline.set(st.deadline())
            try:
                resp = client.request(call.method, call.url, headers=plan.headers, content=call.body, timeout=_httpx_timeout(plan.timeouts))
                if resp.status_code < 400:
                    return resp.status_code, resp.headers, resp.content
                err: AllmError = scrub(adapter.error(resp.status_code, resp.headers, resp.content), plan.secret)
            except _NET_ERRORS as exc:
                err = classify(exc, call.provider)
            delay = st.next_delay(err, _now())
            if delay is None:
                raise err
            if plan.on_retry is not None:
                plan.on_retry(RetryInfo(st.attempt, delay, err))
            _deadline.set(None)
            time.sleep(delay)
    finally:
        _deadline.set(None)


# ------------------------------------------------------------------------------ async shell


async def aiter_events(plan: Plan) -> AsyncIterator[Event]:
    """The async twin of :func:`iter_events`; ``aclose()`` or cancellation closes the response."""
    adapter, call = plan.adapter, plan.call
    st = Attempts(plan.retry, plan.timeouts, _now())
    client = async_client()
    timeout = _httpx_timeout(plan.timeouts)
    try:
        while True:
            st.begin(_now())
            err: AllmError | None = None
            _deadline.set(st.deadline())
            try:
                async with client.stream(call.method, call.url, headers=plan.headers, content=call.body, timeout=timeout) as resp:
                    if resp.status_code >= 400:
                        body = await resp.aread()
                        err = scrub(adapter.error(resp.status_code, resp.headers, body), plan.secret)
                    elif not call.stream:
                        out, err = st.take(adapter.decode_body(call, await resp.aread(), include_raw=plan.include_raw))
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
                        async for chunk in ait:
                            evs = feed(chunk)
                            if not evs:
                                continue
                            out, err = st.take(evs)
                            if err is not None:
                                break
                            if dec.finished and not dec.failed:
                                await _adrain(ait)
                            if out:
                                _deadline.set(None)
                                for ev in out:
                                    yield ev
                                if dec.failed:
                                    return
                                st.wait_start = _now()
                                _deadline.set(st.deadline())
                        else:
                            out, err = st.take(dec.close())
                            if err is None:
                                out.extend(st.flush())
                                _deadline.set(None)
                                for ev in out:
                                    yield ev
                                return
            except _NET_ERRORS as exc:
                err = classify(exc, call.provider)
                if err.reason == "timeout" and isinstance(exc, (httpx.ReadTimeout, httpcore.ReadTimeout)):
                    err = st.timeout_error(call.provider, _now())
            assert err is not None
            if st.started:
                yield Error(err)
                return
            delay = st.next_delay(err, _now())
            if delay is None:
                raise err
            if plan.on_retry is not None:
                plan.on_retry(RetryInfo(st.attempt, delay, err))
            _deadline.set(None)
            await asyncio.sleep(delay)
    finally:
        _deadline.set(None)


async def _adrain(it: AsyncIterator[bytes]) -> None:
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
    try:
        while True:
            st.begin(_now())
            _deadline.set(st.deadline())
            try:
                resp = await client.request(call.method, call.url, headers=plan.headers, content=call.body, timeout=_httpx_timeout(plan.timeouts))
                if resp.status_code < 400:
                    return resp.status_code, resp.headers, resp.content
                err: AllmError = scrub(adapter.error(resp.status_code, resp.headers, resp.content), plan.secret)
            except _NET_ERRORS as exc:
                err = classify(exc, call.provider)
            delay = st.next_delay(err, _now())
            if delay is None:
                raise err
            if plan.on_retry is not None:
                plan.on_retry(RetryInfo(st.attempt, delay, err))
            _deadline.set(None)
            await asyncio.sleep(delay)
    finally:
        _deadline.set(None)
