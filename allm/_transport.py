"""The only module that imports httpx: the two I/O shells that perform a call.

:func:`run` (sync) and :func:`arun` (async) perform a :class:`~allm.plan.Plan` by
telling a :class:`~allm.machine.CallMachine` what happened and doing what it answers
(read, drain, sleep, emit, retry, raise). Every decision — retries, deadlines, held
events, size limits, key scrubbing, event filters — is the machine's; a local adapter
(the Fake) goes through the same shells, its pauses being the machine's sleeps.
:func:`iter_events` / :func:`aiter_events` stream events; :func:`iter_once` /
:func:`aiter_once` make a plain request/response.

Connections are pooled per process (one async pool per event loop), keyed by nothing
secret: the key travels only in the request headers. After ``os.fork()`` the child
starts with empty pools (a pooled connection is never shared by two processes). An
event loop's pool is closed when the loop shuts down its async generators (as
``asyncio.run`` does), and dropped once the loop is closed, so each ``asyncio.run``
leaves no client, socket or loop behind.

Deadlines are enforced per socket operation by a thin wrapper around httpcore's
network backend: each connect, write and read may wait only until the current
deadline (first event, idle gap, total), so a stream that goes silent ends with a
typed timeout, and one that drips bytes without completing an event cannot extend
its idle deadline.

Both shells send a call straight to their client's httpcore pool, with the request httpx's
client would build (the same bytes on the wire; a hook or a URL httpx must handle take the
client itself). The async shell's connections run on a network backend of asyncio
transports (the errors of httpcore's anyio backend, without a task checkpoint and a cancel
scope per socket operation), and a request's head and body go out in one write.

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

One hook sees every HTTP exchange: :func:`set_exchange_hook` (how :mod:`allm.testing`
guards, records and replays traffic under the same retries, deadlines and decoders).
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import contextvars
import http.cookiejar
import logging
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Generator, Iterator, Mapping
from typing import Any, Protocol, TypeVar

import httpcore
import httpx

from .errors import AdapterError, AllmError, scrub
from .events import Event
from .machine import DONE, DRAIN, MAX_BODY_BYTES, MAX_ERROR_BODY_BYTES, MAX_EVENT_BYTES, RAISE, READ, SLEEP, CallMachine
from .plan import Plan
from .policy import Timeouts
from .providers.base import HttpCall

__all__ = [
    "ExchangeHook",
    "MAX_BODY_BYTES",
    "MAX_CONNECTIONS",
    "MAX_ERROR_BODY_BYTES",
    "MAX_EVENT_BYTES",
    "Plan",
    "aclose",
    "afetch",
    "aiter_events",
    "aiter_once",
    "arun",
    "classify",
    "close",
    "fetch",
    "iter_events",
    "iter_once",
    "read_deadline",
    "run",
    "set_exchange_hook",
]

T = TypeVar("T")

#: HTTP exchanges in flight at once (sync calls of the process; async calls per event loop).
MAX_CONNECTIONS = 1000
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


#: A request head is held back for the body that follows it up to this size, so both go out
#: in one socket write (each write is a system call; on loopback it wakes the server).
_JOIN_LIMIT = 64 * 1024


class _AStream(httpcore.AsyncNetworkStream):
    """The deadline-aware async stream. httpcore writes a request's head, then its body: the
    head is held (while small) and sent with the body in one write, or before the first read;
    a write error while flushing it before a read is passed over as httpcore passes over one
    while sending a request (the server may have answered and closed), and the read reports
    the connection's state."""

    __slots__ = ("_held", "_held_timeout", "_inner")

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
        self._held: bytes | None = None
        self._held_timeout: float | None = None

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self._held is not None:
            held, self._held = self._held, None
            with contextlib.suppress(httpcore.WriteError):
                await self._inner.write(held, _remaining(self._held_timeout, httpcore.WriteTimeout))
        return await self._inner.read(max_bytes, _remaining(timeout))

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        held = self._held
        if held is not None:
            self._held = None
            if len(buffer) <= _JOIN_LIMIT:
                await self._inner.write(held + buffer, _remaining(timeout, httpcore.WriteTimeout))
                return
            await self._inner.write(held, _remaining(self._held_timeout, httpcore.WriteTimeout))
        elif len(buffer) <= _JOIN_LIMIT:
            _remaining(timeout, httpcore.WriteTimeout)  # a passed deadline fails here, as the write would
            self._held, self._held_timeout = buffer, timeout
            return
        await self._inner.write(buffer, _remaining(timeout, httpcore.WriteTimeout))

    async def aclose(self) -> None:
        self._held = None
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


# ------------------------------------------------------------------------------ the asyncio network backend


#: Bytes buffered from a connection before it stops reading from the socket until they are read.
_READ_BUFFER = 1 << 20


class _Conn(asyncio.Protocol):
    """One connection's received bytes, end of stream, loss and write flow control."""

    __slots__ = ("buffered", "chunks", "drained", "eof", "error", "loop", "lost", "paused", "reading", "transport", "waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.eof = False
        self.lost = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.paused = False
        self.reading = True
        self.drained: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > _READ_BUFFER and self.reading and self.transport is not None:
            self.reading = False
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.error = exc
        self._wake()
        self.resume_writing()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        d, self.drained = self.drained, None
        if d is not None and not d.done():
            d.set_result(None)

    def _wake(self) -> None:
        w, self.waiter = self.waiter, None
        if w is not None and not w.done():
            w.set_result(None)


def _expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


async def _wait(loop: asyncio.AbstractEventLoop, fut: asyncio.Future[None], timeout: float | None) -> None:
    if timeout is None:
        await fut
        return
    timer = loop.call_later(timeout, _expire, fut)
    try:
        await fut
    finally:
        timer.cancel()


class _AsyncioStream(httpcore.AsyncNetworkStream):
    """httpcore's network stream straight on an asyncio transport: the same errors (``ReadError``,
    ``ReadTimeout``, ``WriteError``, ``WriteTimeout``, ``ConnectError``, ``ConnectTimeout``) and
    end-of-stream (``b""``) as its anyio backend, without a task checkpoint and a cancel scope
    per read and write."""

    __slots__ = ("_closed", "_conn", "_poll", "_transport")

    def __init__(self, transport: asyncio.Transport, conn: _Conn) -> None:
        self._transport = transport
        self._conn = conn
        self._closed = False
        self._poll: Any = None  # select.poll on the socket, made on the first readability check

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        c = self._conn
        if not c.chunks:
            if self._closed:
                raise httpcore.ReadError()
            if not (c.eof or c.lost):
                fut = c.waiter = c.loop.create_future()
                try:
                    await _wait(c.loop, fut, timeout)
                except TimeoutError:
                    raise httpcore.ReadTimeout() from None
                finally:
                    c.waiter = None
            if not c.chunks:
                if self._closed or c.error is not None:
                    raise httpcore.ReadError()
                return b""  # the end of the stream
        chunk = c.chunks.popleft()
        if len(chunk) > max_bytes:
            chunk, rest = chunk[:max_bytes], chunk[max_bytes:]
            c.chunks.appendleft(rest)
        c.buffered -= len(chunk)
        if not c.reading and c.buffered <= _READ_BUFFER // 2 and not c.lost:
            c.reading = True
            self._transport.resume_reading()
        return chunk

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        c = self._conn
        if self._closed or c.lost or self._transport.is_closing():
            raise httpcore.WriteError()
        self._transport.write(buffer)
        if c.paused:
            fut = c.drained = c.loop.create_future()
            try:
                await _wait(c.loop, fut, timeout)
            except TimeoutError:
                raise httpcore.WriteTimeout() from None
            if c.lost:
                raise httpcore.WriteError()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._transport.close()

    async def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        c = self._conn
        try:
            async with asyncio.timeout(timeout):
                transport = await c.loop.start_tls(self._transport, c, ssl_context, server_hostname=server_hostname)
        except TimeoutError:
            self._transport.abort()
            raise httpcore.ConnectTimeout() from None
        except (OSError, ssl.SSLError) as exc:
            self._transport.abort()
            raise httpcore.ConnectError(exc) from exc
        if transport is None:
            raise httpcore.ConnectError("the connection closed during the TLS handshake")
        c.transport = transport
        return _AsyncioStream(transport, c)

    def get_extra_info(self, info: str) -> Any:
        t = self._transport
        if info == "is_readable":
            # httpcore asks this of every idle connection each time its pool assigns one.
            c = self._conn
            if c.chunks or c.eof or c.lost or self._closed:
                return True
            if self._poll is None:
                sock = t.get_extra_info("socket")
                fd = -1 if sock is None else sock.fileno()
                if fd < 0:
                    return True
                self._poll = select.poll()
                self._poll.register(fd, select.POLLIN)
            return bool(self._poll.poll(0))
        if info == "ssl_object":
            return t.get_extra_info("ssl_object")
        if info == "client_addr":
            return t.get_extra_info("sockname")
        if info == "server_addr":
            return t.get_extra_info("peername")
        if info == "socket":
            return t.get_extra_info("socket")
        return None


class _AsyncioBackend(httpcore.AsyncNetworkBackend):
    """TCP connections as :class:`_AsyncioStream`; Unix sockets and sleeps by httpcore's own backend."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend) -> None:
        self._inner = inner

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None, socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, conn = await loop.create_connection(
                    lambda: _Conn(loop), host, port, local_addr=(local_address, 0) if local_address else None)
        except TimeoutError:
            raise httpcore.ConnectTimeout() from None
        except socket.gaierror as exc:
            raise httpcore.ConnectError(exc) from exc
        except OSError as exc:
            raise httpcore.ConnectError("All connection attempts failed") from exc
        sock = transport.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return _AsyncioStream(transport, conn)

    async def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        return await self._inner.connect_unix_socket(path, timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


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


def _no_cookies() -> http.cookiejar.CookieJar:
    """A cookie jar that keeps nothing. The pooled clients serve every caller of the process (one
    engine, many tenants): a cookie one provider response sets must not ride on another
    caller's requests."""
    return http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))


_LIMITS = httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=100, keepalive_expiry=30.0)
_lock = threading.Lock()
_sync_client: httpx.Client | None = None


class _Slots:
    """The sync calls' connection gate: ``n`` permits, handed to waiters in FIFO order. Taking
    a free permit costs one C lock (``threading.BoundedSemaphore`` runs a Python-level
    condition variable on every call, a few µs per request)."""

    __slots__ = ("_free", "_lock", "_waiters")

    def __init__(self, n: int) -> None:
        self._lock = threading.Lock()
        self._free = n
        self._waiters: collections.deque[threading.Lock] = collections.deque()

    def acquire(self, timeout: float | None) -> bool:
        with self._lock:
            if self._free > 0 and not self._waiters:
                self._free -= 1
                return True
            waiter = threading.Lock()
            waiter.acquire()
            self._waiters.append(waiter)
        if waiter.acquire(timeout=-1 if timeout is None else timeout):
            return True  # a release handed its permit over
        with self._lock:
            try:
                self._waiters.remove(waiter)
            except ValueError:
                return True  # handed over just as the wait timed out: the permit is ours
        return False

    def release(self) -> None:
        with self._lock:
            if self._waiters:
                self._waiters.popleft().release()
            else:
                self._free += 1


_sync_slots = _Slots(MAX_CONNECTIONS)


class _LoopPool:
    """One event loop's client and connection gate, closed when the loop shuts down its async
    generators (``asyncio.run`` does) through a parked generator registered with that loop.
    ``core`` is the client's httpcore pool, which :func:`_aopen` calls directly."""

    __slots__ = ("client", "closer", "core", "defaults", "direct", "loop", "slots")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        def make(proxy: httpx.Proxy | None = None) -> _AsyncHTTPTransport:
            t = _AsyncHTTPTransport(limits=_LIMITS, proxy=proxy)
            _wrap_pool(t, lambda inner: _ABackend(_AsyncioBackend(inner)))
            return t

        transport = make()
        self.loop = loop
        self.client = httpx.AsyncClient(transport=transport, mounts=_proxy_mounts(make), timeout=None,
                                        follow_redirects=False, cookies=_no_cookies())
        self.core: httpcore.AsyncConnectionPool = transport._pool
        self.defaults: list[tuple[bytes, bytes]] = list(self.client.headers.raw)
        # A client that routes by URL (mounted transports) is used only through httpx.
        self.direct = getattr(self.client, "_mounts", None) == {}
        self.slots = asyncio.Semaphore(MAX_CONNECTIONS)
        self.closer: Any = None


#: The pools of the event loops that made async calls, by ``id(loop)``. A pool holds its loop
#: (its sockets do), so the map is swept of closed loops whenever another loop asks for a pool.
_loop_pools: dict[int, _LoopPool] = {}


def _reset_after_fork() -> None:
    """In a forked child: forget the parent's pools (their sockets are the parent's), new locks."""
    global _sync_client, _lock, _sync_slots
    _sync_client = None
    _lock = threading.Lock()
    _sync_slots = _Slots(MAX_CONNECTIONS)
    _loop_pools.clear()


os.register_at_fork(after_in_child=_reset_after_fork)


def _slot_timeout() -> float | None:
    d = _deadline.get()
    if d is None:
        return None
    left = d - _now()
    if left <= 0:
        raise httpx.PoolTimeout("deadline passed while waiting for a connection slot")
    return left


class _slot:  # used as a function: ``with _slot():``
    """Hold one of the process's :data:`MAX_CONNECTIONS` slots, waiting at most until the deadline.
    A class, not a generator-based context manager: it is entered once per request."""

    __slots__ = ("_slots",)

    def __enter__(self) -> None:
        self._slots = slots = _sync_slots
        if not slots.acquire(_slot_timeout()):
            raise httpx.PoolTimeout("deadline passed while waiting for a connection slot")

    def __exit__(self, *exc: object) -> None:
        self._slots.release()


@contextlib.asynccontextmanager
async def _aslot(sem: asyncio.Semaphore) -> AsyncIterator[None]:
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
    """The process-wide pooled client (created on first use; new in a forked child)."""
    global _sync_client
    c = _sync_client
    if c is None or c.is_closed:
        with _lock:
            c = _sync_client
            if c is None or c.is_closed:
                def make(proxy: httpx.Proxy | None = None) -> _HTTPTransport:
                    t = _HTTPTransport(limits=_LIMITS, proxy=proxy)
                    _wrap_pool(t, _Backend)
                    return t

                c = _sync_client = httpx.Client(transport=make(), mounts=_proxy_mounts(make), timeout=None,
                                                follow_redirects=False, cookies=_no_cookies())
                _close_at_exit()
    return c


_at_exit = False


def _close_at_exit() -> None:
    """Close the sync pool when the interpreter exits (once per process): its kept-alive
    connections end with a close, not as sockets left to the interpreter's teardown."""
    global _at_exit
    if not _at_exit:
        _at_exit = True
        atexit.register(close)


def _proxy_mounts(make: Callable[[httpx.Proxy], T]) -> dict[str, T | None]:
    """The proxies the environment names when a pooled client is made (``HTTPS_PROXY``,
    ``HTTP_PROXY``, ``ALL_PROXY`` and ``NO_PROXY``, read as httpx reads them for its own
    clients), each a transport from ``make`` so the exchange hook sees every request. Empty
    when none is set: then calls go straight to the client's connection pool."""
    try:
        from httpx._utils import get_environment_proxies
    except ImportError:  # pragma: no cover - an httpx that moved it: no proxies, as before
        return {}
    return {pattern: None if url is None else make(httpx.Proxy(url)) for pattern, url in get_environment_proxies().items()}


async def _park(pool: _LoopPool) -> AsyncGenerator[None, None]:
    # Started once and left suspended: the loop's shutdown_asyncgens() closes it, and the
    # pool closes with it, inside the loop, before the loop itself is closed.
    try:
        yield
    finally:
        _loop_pools.pop(id(pool.loop), None)
        await pool.client.aclose()


def _loop_pool() -> _LoopPool:
    loop = asyncio.get_running_loop()
    pool = _loop_pools.get(id(loop))
    if pool is not None and pool.loop is loop and not pool.client.is_closed:
        return pool
    if _loop_pools:
        for key, other in list(_loop_pools.items()):
            if other.loop.is_closed() or other.loop is loop:
                del _loop_pools[key]
    pool = _loop_pools[id(loop)] = _LoopPool(loop)
    closer = _park(pool)
    pool.closer = closer
    with contextlib.suppress(StopIteration):  # runs to the first yield: registered with this loop, nothing awaited
        closer.asend(None).send(None)
    return pool


def async_client() -> httpx.AsyncClient:
    """The pooled async client of the running event loop (one per loop)."""
    return _loop_pool().client


def close() -> None:
    """Close the sync pool (async pools close with their event loop or :func:`aclose`)."""
    global _sync_client
    with _lock:
        if _sync_client is not None:
            _sync_client.close()
            _sync_client = None


async def aclose() -> None:
    """Close the running loop's async pool."""
    pool = _loop_pools.pop(id(asyncio.get_running_loop()), None)
    if pool is not None:
        await pool.client.aclose()


# ------------------------------------------------------------------------------ failures


_READ_TIMEOUTS = (httpx.ReadTimeout, httpcore.ReadTimeout)
_CONNECT_TIMEOUTS = (httpx.ConnectTimeout, httpcore.ConnectTimeout)
_WRITE_TIMEOUTS = (httpx.WriteTimeout, httpcore.WriteTimeout)
_POOL_TIMEOUTS = (httpx.PoolTimeout, httpcore.PoolTimeout)
_TIMEOUTS = (httpx.TimeoutException, httpcore.TimeoutException)
_NET_ERRORS = (httpx.HTTPError, httpcore.NetworkError, httpcore.TimeoutException, httpcore.ProtocolError, OSError)


def classify(exc: Exception, provider: str | None, timeouts: Timeouts | None = None) -> AdapterError:
    """An httpx/httpcore failure as a typed error.

    Timeouts are ``timeout`` (the message names the deadline); a refused, reset or
    closed connection, or a server that is not speaking HTTP, is ``network_error``;
    a body that cannot be decompressed is ``malformed_response``; a request httpx
    refuses to send (a bad URL or header) is ``invalid_request``. Messages are
    redacted of key shapes (see :func:`~allm.errors.redact`); the machine also
    removes the call's own key.
    """
    c = timeouts.connect if timeouts is not None else None
    limit = f" of {c:g} s" if c is not None else ""
    if isinstance(exc, _CONNECT_TIMEOUTS):
        return AdapterError(f"could not connect within the connect deadline{limit}", reason="timeout", provider=provider)
    if isinstance(exc, _WRITE_TIMEOUTS):
        return AdapterError(f"could not send the request within the connect deadline{limit}", reason="timeout", provider=provider)
    if isinstance(exc, _POOL_TIMEOUTS):
        return AdapterError(f"no pooled connection was free within the connect deadline{limit}", reason="timeout", provider=provider)
    if isinstance(exc, _TIMEOUTS):
        return AdapterError("read timeout", reason="timeout", provider=provider)
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, httpx.DecodingError):
        return AdapterError(f"the response body could not be decoded ({text})", reason="malformed_response", provider=provider)
    if isinstance(exc, (httpx.LocalProtocolError, httpx.UnsupportedProtocol, httpx.InvalidURL, httpcore.LocalProtocolError)):
        return AdapterError(f"the request could not be sent ({text})", reason="invalid_request", provider=provider)
    return AdapterError(text, reason="network_error", provider=provider)


def _failed(m: CallMachine, exc: BaseException) -> list[Event]:
    """Tell the machine about a failure of this attempt's I/O (or a local adapter's error)."""
    if isinstance(exc, AllmError):
        return m.failed(exc, _now())
    assert isinstance(exc, Exception)
    err = classify(exc, m.plan.provider, m.plan.timeouts)
    return m.failed(err, _now(), read_timeout=isinstance(exc, _READ_TIMEOUTS), timed_out=isinstance(exc, _TIMEOUTS))


class _TooLarge(Exception):
    pass


class _Body:
    """Collects a whole body up to ``limit`` bytes (past it: :class:`_TooLarge` when ``exact``,
    else the body is cut at the limit)."""

    __slots__ = ("exact", "limit", "n", "parts")

    def __init__(self, limit: int, exact: bool) -> None:
        self.limit = limit
        self.exact = exact
        self.n = 0
        self.parts: list[bytes] = []

    def add(self, chunk: bytes) -> bool:
        """Keep ``chunk``; whether the limit is reached (stop reading)."""
        self.n += len(chunk)
        self.parts.append(chunk)
        if self.n > self.limit:
            if self.exact:
                raise _TooLarge
            return True
        return False

    def bytes(self) -> bytes:
        return b"".join(self.parts)[: self.limit]


_timeouts: dict[float | None, httpx.Timeout] = {}
_timeout_dicts: dict[float | None, dict[str, float | None]] = {}


def _httpx_timeout(t: Timeouts) -> httpx.Timeout:
    # Reads are bounded by the deadline wrapper; connect/write/pool by ``connect``
    # (and by the current deadline, through the same wrapper). One value per connect
    # limit, made once: a call needs it on every request.
    got = _timeouts.get(t.connect)
    if got is None:
        if len(_timeouts) > 64:
            _timeouts.clear()
        got = _timeouts[t.connect] = httpx.Timeout(connect=t.connect, read=None, write=t.connect, pool=t.connect)
    return got


def _timeout_extension(t: Timeouts) -> dict[str, float | None]:
    """What httpx hands httpcore for :func:`_httpx_timeout` (``request.extensions["timeout"]``)."""
    got = _timeout_dicts.get(t.connect)
    if got is None:
        if len(_timeout_dicts) > 64:
            _timeout_dicts.clear()
        got = _timeout_dicts[t.connect] = _httpx_timeout(t).as_dict()
    return got


#: Parsed request URLs: ``url -> (httpcore URL, Host header value)`` (http and https only).
_urls: dict[str, tuple[httpcore.URL, bytes]] = {}
_BODY_METHODS = ("POST", "PUT", "PATCH")
_httpx_log = logging.getLogger("httpx")


def _target(url: str) -> tuple[httpcore.URL, bytes] | None:
    """``url`` as httpx sends it (raises httpx's ``InvalidURL``); ``None`` for a scheme other than
    http or https (httpx then refuses it, as before) or a URL with credentials (httpx turns them
    into an ``Authorization`` header)."""
    got = _urls.get(url)
    if got is None:
        u = httpx.URL(url)
        if u.scheme not in ("http", "https") or not u.host or u.userinfo:
            return None
        if len(_urls) > 256:
            _urls.clear()
        got = _urls[url] = (httpcore.URL(scheme=u.raw_scheme, host=u.raw_host, port=u.port, target=u.raw_path), u.netloc)
    return got


def _request_headers(defaults: list[tuple[bytes, bytes]], host: bytes, method: str, headers: Mapping[str, str],
                     body: bytes | None) -> list[tuple[bytes, bytes]]:
    """The header list httpx's ``AsyncClient.stream`` would send: ``Host`` (and ``Content-Length: 0``
    for a body method without a body), the client's defaults not overridden, ``headers`` in their
    order, then the body's ``Content-Length``. Names and values are ASCII, as httpx requires."""
    lower = {k.lower() for k in headers}
    first: list[tuple[bytes, bytes]] = [] if "host" in lower else [(b"Host", host)]
    raw = [kv for kv in defaults if kv[0].decode().lower() not in lower]
    raw += [(k.encode("ascii"), v.encode("ascii")) for k, v in headers.items()]
    if "content-length" not in lower and "transfer-encoding" not in lower:
        if body:
            raw.append((b"Content-Length", str(len(body)).encode()))
        elif method in _BODY_METHODS:
            first.append((b"Content-Length", b"0"))
    return first + raw


def _core_request(defaults: list[tuple[bytes, bytes]], target: tuple[httpcore.URL, bytes], plan: Plan) -> httpcore.Request:
    """The httpcore request of ``plan``'s call: the bytes httpx's client would send."""
    call = plan.call
    assert call is not None
    url, host = target
    return httpcore.Request(call.method, url, headers=_request_headers(defaults, host, call.method, plan.headers, call.body),
                            content=call.body or b"", extensions={"timeout": _timeout_extension(plan.timeouts)})


def _needs_httpx(headers: httpx.Headers) -> bool:
    """Whether an answer is read through an httpx response: to decode its ``Content-Encoding``,
    or to write httpx's INFO log line of it, for a program that shows it."""
    return _httpx_log.isEnabledFor(logging.INFO) or "content-encoding" in headers


def _httpx_response(core: httpcore.Response, stream: httpx.SyncByteStream | httpx.AsyncByteStream, call: HttpCall) -> httpx.Response:
    """``core`` as the httpx response its client would give (decoding its body), logged as httpx logs it."""
    resp = httpx.Response(core.status, headers=core.headers, stream=stream, extensions=core.extensions,
                          request=httpx.Request(call.method, call.url))
    _httpx_log.info('HTTP Request: %s %s "%s %d %s"', call.method, resp.request.url, resp.http_version,
                    resp.status_code, resp.reason_phrase)
    return resp


class _Chunks(httpx.AsyncByteStream):
    """An httpcore response body as httpx's stream, to decode a ``Content-Encoding``."""

    def __init__(self, resp: httpcore.Response) -> None:
        self._resp = resp

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._resp.aiter_stream():
            yield chunk

    async def aclose(self) -> None:
        await self._resp.aclose()


class _SyncChunks(httpx.SyncByteStream):
    """The sync twin of :class:`_Chunks`."""

    def __init__(self, resp: httpcore.Response) -> None:
        self._resp = resp

    def __iter__(self) -> Iterator[bytes]:
        yield from self._resp.iter_stream()

    def close(self) -> None:
        self._resp.close()


_sync_direct: tuple[httpx.Client, httpcore.ConnectionPool, list[tuple[bytes, bytes]]] | None = None


def _sync_core(client: httpx.Client) -> tuple[httpcore.ConnectionPool, list[tuple[bytes, bytes]]] | None:
    """The sync client's httpcore pool and default headers, or ``None`` when the client routes by
    URL (mounted transports) and is used only through httpx."""
    global _sync_direct
    d = _sync_direct
    if d is None or d[0] is not client:
        transport = getattr(client, "_transport", None)
        if getattr(client, "_mounts", None) != {} or not isinstance(transport, _HTTPTransport):
            return None
        d = _sync_direct = (client, transport._pool, list(client.headers.raw))
    return d[1], d[2]


def _drain_deadline(m: CallMachine) -> float:
    """Reading past a stream's terminal marker (so the connection can be reused) is brief."""
    d = m.deadline()
    grace = _now() + DRAIN_GRACE
    return grace if d is None or grace < d else d


# ------------------------------------------------------------------------------ the shells
#
# The two shells below are the same loop, once with blocking I/O and once with ``await``:
# every branch is an answer of the machine (``m.act``) performed, nothing is decided here.


_Opened = tuple[int, Mapping[str, str], Any]


class _Ready:
    """The response of a local adapter or of ``respond``, open from the start: the context
    manager :func:`_open` and :func:`_aopen` give for it. A plain class, not a generator
    context manager, because a tool loop on the Fake opens one per turn (a generator and its
    manager cost as much as the rest of the opening)."""

    __slots__ = ("opened",)

    def __init__(self, items: Any) -> None:
        self.opened: _Opened = (200, {}, items)

    def __enter__(self) -> _Opened:
        return self.opened

    def __exit__(self, *exc: object) -> None:
        return None

    async def __aenter__(self) -> _Opened:
        return self.opened

    async def __aexit__(self, *exc: object) -> None:
        return None


def _open(plan: Plan) -> contextlib.AbstractContextManager[_Opened]:
    if plan.call is None:
        return _Ready(plan.adapter.open(plan.request))
    if plan.respond:
        return _Ready(iter((plan.adapter.respond(plan.call),)))
    return _open_http(plan)


@contextlib.contextmanager
def _open_http(plan: Plan) -> Iterator[tuple[int, Mapping[str, str], Iterator[Any]]]:
    call = plan.call
    assert call is not None
    client = sync_client()
    core_pool = _sync_core(client) if _hook is None else None
    target = _target(call.url) if core_pool is not None else None
    if core_pool is None or target is None:
        timeout = _httpx_timeout(plan.timeouts)
        with _slot(), client.stream(call.method, call.url, headers=plan.headers, content=call.body, timeout=timeout) as resp:
            yield resp.status_code, resp.headers, resp.iter_bytes()
        return
    # As the async shell's: straight to the client's httpcore pool, the same request bytes.
    pool, defaults = core_pool
    with _slot():
        core = pool.handle_request(_core_request(defaults, target, plan))
        try:
            headers = httpx.Headers(core.headers)
            if _needs_httpx(headers):
                yield core.status, headers, _httpx_response(core, _SyncChunks(core), call).iter_bytes()
            else:
                yield core.status, headers, core.iter_stream()
        finally:
            core.close()


def _play(m: CallMachine, items: Iterator[Any]) -> Generator[Event, None, list[Event]]:
    """A local adapter's items through ``m``: its events yielded as they come, then the events
    left for the caller of :func:`run` (``m.act`` tells what follows). Nothing here reads the
    network, so no read deadline is set while the caller holds the events."""
    _deadline.set(None)
    evs: list[Event] = []
    for item in items:
        evs = m.play(item, _now())
        if m.act != READ:
            if m.act == SLEEP:
                time.sleep(m.sleep_for)
                evs = m.woke(_now())
            if m.act != READ:
                return evs
        if evs:
            yield from evs
            evs = []
            m.resumed(_now())
    return m.eof(_now())


def run(plan: Plan, m: CallMachine | None = None) -> Iterator[Event]:
    """Perform ``plan``: yield its events, retrying before the first event reaches the caller.

    Raises the typed error when the call fails before any event (after retries); once
    events have been yielded, a failure is yielded as an ``Error`` event and the stream
    ends. Closing the generator closes the HTTP response at once. A plain exchange
    (``plan.once``) yields nothing and leaves ``(status, headers, body)`` in ``m.value``.
    """
    m = m if m is not None else CallMachine(plan, _now())
    try:
        while True:
            _deadline.set(m.begin(_now()))
            evs: list[Event] = []
            try:
                with _open(plan) as (status, headers, it):
                    limit = m.opened(status, headers)
                    if plan.call is None:
                        evs = yield from _play(m, it)
                    elif limit:
                        body = _Body(limit, m.exact)
                        for chunk in it:
                            if body.add(chunk):
                                break
                        evs = m.body(body.bytes(), _now())
                    else:
                        feed = m.feed
                        for chunk in it:
                            evs = feed(chunk, _now())
                            if m.act != READ:  # the usual answer is READ: one test per chunk
                                if m.act == SLEEP:
                                    time.sleep(m.sleep_for)
                                    evs = m.woke(_now())
                                elif m.act == DRAIN:
                                    _deadline.set(_drain_deadline(m))
                                    with contextlib.suppress(*_NET_ERRORS):
                                        for _ in it:
                                            pass
                                    evs = evs + m.eof(_now())
                                if m.act != READ:
                                    break
                            if evs:
                                _deadline.set(None)
                                yield from evs
                                evs = []
                                _deadline.set(m.resumed(_now()))
                        else:
                            evs = m.eof(_now())
            except _TooLarge:
                evs = m.too_large(_now())
            except (*_NET_ERRORS, AllmError) as exc:
                evs = _failed(m, exc)
            _deadline.set(None)
            if m.act == DONE:
                yield from evs
                return
            if m.act == RAISE:
                assert m.error is not None
                raise m.error
            if plan.on_retry is not None and m.retry_info is not None:
                plan.on_retry(m.retry_info)
            time.sleep(m.sleep_for)
    finally:
        _deadline.set(None)


async def _aplay(items: Iterator[Any]) -> AsyncIterator[Any]:
    for item in items:
        yield item


def _aopen(plan: Plan) -> contextlib.AbstractAsyncContextManager[_Opened]:
    if plan.call is None:  # read by arun as a plain iterator
        return _Ready(plan.adapter.open(plan.request))
    if plan.respond:
        return _Ready(_aplay(iter((plan.adapter.respond(plan.call),))))
    return _aopen_http(plan)


@contextlib.asynccontextmanager
async def _aopen_http(plan: Plan) -> AsyncIterator[tuple[int, Mapping[str, str], AsyncIterator[Any]]]:
    call = plan.call
    assert call is not None
    pool = _loop_pool()
    target = _target(call.url) if pool.direct and _hook is None else None
    if target is None:
        timeout = _httpx_timeout(plan.timeouts)
        async with _aslot(pool.slots), pool.client.stream(call.method, call.url, headers=plan.headers, content=call.body, timeout=timeout) as resp:
            yield resp.status_code, resp.headers, resp.aiter_bytes()
        return
    # Straight to the client's httpcore pool: the same request bytes, connections, deadlines and
    # errors as through httpx's client, without its per-request layers (a hook or another
    # scheme takes the path above).
    async with _aslot(pool.slots):
        core = await pool.core.handle_async_request(_core_request(pool.defaults, target, plan))
        try:
            headers = httpx.Headers(core.headers)
            if _needs_httpx(headers):
                yield core.status, headers, _httpx_response(core, _Chunks(core), call).aiter_bytes()
            else:
                yield core.status, headers, core.aiter_stream()
        finally:
            await core.aclose()


async def arun(plan: Plan, m: CallMachine | None = None) -> AsyncIterator[Event]:
    """The async twin of :func:`run`; ``aclose()`` or cancellation closes the response."""
    m = m if m is not None else CallMachine(plan, _now())
    try:
        while True:
            _deadline.set(m.begin(_now()))
            evs: list[Event] = []
            try:
                async with _aopen(plan) as (status, headers, it):
                    limit = m.opened(status, headers)
                    if plan.call is None:  # as in run, with the pauses awaited
                        _deadline.set(None)
                        for item in it:
                            evs = m.play(item, _now())
                            if m.act != READ:
                                if m.act == SLEEP:
                                    await asyncio.sleep(m.sleep_for)
                                    evs = m.woke(_now())
                                if m.act != READ:
                                    break
                            if evs:
                                for ev in evs:
                                    yield ev
                                evs = []
                                m.resumed(_now())
                        else:
                            evs = m.eof(_now())
                    elif limit:
                        body = _Body(limit, m.exact)
                        async for chunk in it:
                            if body.add(chunk):
                                break
                        evs = m.body(body.bytes(), _now())
                    else:
                        feed = m.feed
                        async for chunk in it:
                            evs = feed(chunk, _now())
                            if m.act != READ:  # the usual answer is READ: one test per chunk
                                if m.act == SLEEP:
                                    await asyncio.sleep(m.sleep_for)
                                    evs = m.woke(_now())
                                elif m.act == DRAIN:
                                    _deadline.set(_drain_deadline(m))
                                    with contextlib.suppress(*_NET_ERRORS):
                                        async for _ in it:
                                            pass
                                    evs = evs + m.eof(_now())
                                if m.act != READ:
                                    break
                            if evs:
                                _deadline.set(None)
                                for ev in evs:
                                    yield ev
                                evs = []
                                _deadline.set(m.resumed(_now()))
                        else:
                            evs = m.eof(_now())
            except _TooLarge:
                evs = m.too_large(_now())
            except (*_NET_ERRORS, AllmError) as exc:
                evs = _failed(m, exc)
            _deadline.set(None)
            if m.act == DONE:
                for ev in evs:
                    yield ev
                return
            if m.act == RAISE:
                assert m.error is not None
                raise m.error
            if plan.on_retry is not None and m.retry_info is not None:
                plan.on_retry(m.retry_info)
            await asyncio.sleep(m.sleep_for)
    finally:
        _deadline.set(None)


# ------------------------------------------------------------------------------ entry points


def iter_events(plan: Plan) -> Iterator[Event]:
    """The events of ``plan`` (see :func:`run`)."""
    return run(plan)


def aiter_events(plan: Plan) -> AsyncIterator[Event]:
    """The async twin of :func:`iter_events`."""
    return arun(plan)


def iter_once(plan: Plan) -> tuple[int, Mapping[str, str], bytes]:
    """A plain request/response (model lists, embeddings): ``(status, headers, body)``, with retries.

    The first-event deadline bounds the whole exchange of each attempt. Raises the
    adapter's typed error for an error status, after retries; ``malformed_response``
    for a body over :data:`MAX_BODY_BYTES`.
    """
    m = CallMachine(plan, _now())
    for _ in run(plan, m):
        pass
    assert m.value is not None
    return m.value


async def aiter_once(plan: Plan) -> tuple[int, Mapping[str, str], bytes]:
    """The async twin of :func:`iter_once`."""
    m = CallMachine(plan, _now())
    async for _ in arun(plan, m):
        pass
    assert m.value is not None
    return m.value


def fetch(plan: Plan, decode: Callable[[bytes], T]) -> T:
    """:func:`iter_once`, then ``decode(body)``; errors of either are scrubbed of the key."""
    return _decoded(plan, decode, iter_once(plan)[2])


async def afetch(plan: Plan, decode: Callable[[bytes], T]) -> T:
    """The async twin of :func:`fetch`."""
    return _decoded(plan, decode, (await aiter_once(plan))[2])


def _decoded(plan: Plan, decode: Callable[[bytes], T], body: bytes) -> T:
    try:
        return decode(body)
    except AllmError as exc:
        raise scrub(exc, plan.secret) from None
