"""Counters for rate limits and token budgets: in this process (:class:`MemoryLimits`) or in
Redis, shared by every process that uses the same server (:class:`RedisLimits`).

Two kinds of count, each with an async twin (``a``-prefixed):

- ``hit(key, limit, window)``: a **sliding-window log**. Admits a hit when fewer than
  ``limit`` hits of ``key`` were admitted in the last ``window`` seconds, and records it;
  otherwise refuses it and says how long until the oldest of them leaves the window.
- ``add(key, amount, window)`` / ``total(key, window)``: a **fixed-window sum** (token
  counts). Windows are the multiples of ``window`` seconds since the Unix epoch (``None``:
  one window for ever); ``add`` returns the sum of the current window after adding.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

import attrs

from ..errors import StoreError

__all__ = ["Admission", "Limits", "MemoryLimits", "RedisLimits"]


@attrs.frozen
class Admission:
    """The answer to one ``hit``: ``allowed``; ``count``, the hits in the window (this one
    included when allowed); ``retry_after``, seconds until a hit would be admitted (``None``
    when allowed)."""

    allowed: bool
    count: int
    retry_after: float | None = None


@runtime_checkable
class Limits(Protocol):
    """What :class:`~allm.middleware.RateLimit` and :class:`~allm.middleware.TokenBudget`
    count with (see the module docstring)."""

    def hit(self, key: str, limit: int, window: float) -> Admission: ...
    async def ahit(self, key: str, limit: int, window: float) -> Admission: ...
    def add(self, key: str, amount: int, window: float | None) -> int: ...
    async def aadd(self, key: str, amount: int, window: float | None) -> int: ...
    def total(self, key: str, window: float | None) -> int: ...
    async def atotal(self, key: str, window: float | None) -> int: ...


def _check(limit: int | None, window: float | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"a limit is a positive int, not {limit!r}")
    if window is not None and (isinstance(window, bool) or not isinstance(window, (int, float)) or not 0 < window < float("inf")):
        raise ValueError(f"a window is a positive number of seconds, not {window!r}")


class MemoryLimits:
    """Counts in this process (thread-safe; one instance shared by the middleware that should
    share counts). ``clock``: seconds since the epoch (``time.time``), for tests.

    Memory: one entry per key with hits in its window or a sum in its current window; stale
    entries are dropped as other keys are counted.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._hits: dict[str, tuple[float, deque[float]]] = {}
        self._sums: dict[str, tuple[float | None, int, int]] = {}  # key -> (window, index, sum)
        self._ops = 0

    def __repr__(self) -> str:
        return f"MemoryLimits({len(self._hits)} hit keys, {len(self._sums)} sum keys)"

    def hit(self, key: str, limit: int, window: float) -> Admission:
        _check(limit, window)
        now = self._clock()
        with self._lock:
            self._sweep(now)
            entry = self._hits.get(key)
            if entry is None or entry[0] != window:
                entry = self._hits[key] = (window, deque())
            log = entry[1]
            edge = now - window
            while log and log[0] <= edge:
                log.popleft()
            if len(log) < limit:
                log.append(now)
                return Admission(True, len(log))
            return Admission(False, len(log), max(0.0, log[0] + window - now))

    def add(self, key: str, amount: int, window: float | None) -> int:
        _check(None, window)
        now = self._clock()
        index = 0 if window is None else int(now // window)
        with self._lock:
            self._sweep(now)
            w, i, total = self._sums.get(key, (window, index, 0))
            total = (total if (w, i) == (window, index) else 0) + int(amount)
            self._sums[key] = (window, index, total)
            return total

    def total(self, key: str, window: float | None) -> int:
        _check(None, window)
        now = self._clock()
        index = 0 if window is None else int(now // window)
        with self._lock:
            w, i, total = self._sums.get(key, (window, index, 0))
            return total if (w, i) == (window, index) else 0

    async def ahit(self, key: str, limit: int, window: float) -> Admission:
        return self.hit(key, limit, window)

    async def aadd(self, key: str, amount: int, window: float | None) -> int:
        return self.add(key, amount, window)

    async def atotal(self, key: str, window: float | None) -> int:
        return self.total(key, window)

    def _sweep(self, now: float) -> None:
        self._ops += 1
        if self._ops % 1024:
            return
        for k, (w, log) in list(self._hits.items()):
            if not log or log[-1] <= now - w:
                del self._hits[k]
        for k, (ws, i, _t) in list(self._sums.items()):
            if ws is not None and i != int(now // ws):
                del self._sums[k]


# ------------------------------------------------------------------------------ Redis

# A sliding-window log in a sorted set, timed by the server's clock (microseconds), so every
# process agrees. KEYS: the set. ARGV: limit, window (µs), a unique suffix for the member.
# Returns {admitted 1|0, count, µs until the oldest hit leaves the window}.
_HIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now - window))
local n = redis.call('ZCARD', KEYS[1])
if n < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], string.format('%.0f', now), t[1] .. '.' .. t[2] .. '.' .. ARGV[3])
  redis.call('PEXPIRE', KEYS[1], string.format('%.0f', math.ceil(window / 1000) + 1))
  return {1, n + 1, 0}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, n, math.max(0, tonumber(oldest[2]) + window - now)}
"""

# A fixed-window sum, the window found by the server's clock. KEYS: the sum's base key.
# ARGV: amount, window (ms) or '' for one window for ever, 'add' or 'get'. The window's own
# key is the base key and the window's index; it expires two windows later.
_SUM = """
local key = KEYS[1]
local ttl = nil
if ARGV[2] ~= '' then
  local t = redis.call('TIME')
  local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local w = tonumber(ARGV[2])
  key = key .. ':' .. string.format('%.0f', math.floor(ms / w))
  ttl = string.format('%.0f', w * 2)
end
if ARGV[3] == 'add' then
  local v = redis.call('INCRBY', key, ARGV[1])
  if ttl then redis.call('PEXPIRE', key, ttl) end
  return v
end
return tonumber(redis.call('GET', key) or '0')
"""


def _where(url: str) -> str:
    """``host:port/db`` of a Redis URL (never its password)."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path or '/0'}"


class RedisLimits:
    """Counts in Redis (``redis://host:port/db``, ``rediss://`` for TLS): every process using
    the same server and ``prefix`` shares them. Needs ``pip install 'allm[redis]'``.

    Each count is one Lua script, so it runs alone on the server (two processes cannot both
    take the last slot of a window), timed by the server's clock. Keys: ``<prefix>h:<key>``
    (a sorted set per rate-limit key, expiring with its window) and ``<prefix>s:<key>[:<n>]``
    (a sum per budget key and window). One server (with or without replicas) holds them: the
    sum script names its window's key itself, which Redis Cluster does not allow.

    The sync methods use one redis-py client; the async twins one ``redis.asyncio`` client per
    event loop, closed with its loop (``asyncio.run`` closes it on the way out).
    ``close()`` / ``await aclose()`` release them earlier. A server that cannot be
    reached raises :class:`~allm.errors.StoreError` (``unavailable``); the URL's password is
    never shown.
    """

    def __init__(self, url: str = "redis://localhost:6379/0", *, prefix: str = "allm:limits:") -> None:
        try:
            import redis
            import redis.asyncio
        except ImportError as exc:  # pragma: no cover - exercised only without the extra
            raise ImportError("RedisLimits needs the redis package: pip install 'allm[redis]'") from exc
        self._redis = redis
        self.url = url
        self.prefix = prefix
        self._where = _where(url)
        self._client: Any = None
        self._scripts: tuple[Any, Any] | None = None
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[Any, Any, Any, Any]] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RedisLimits({self._where!r}, prefix={self.prefix!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "prefix": self.prefix}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["url"], prefix=state["prefix"])  # type: ignore[misc]

    # -- clients

    def _sync(self) -> tuple[Any, Any]:
        with self._lock:
            if self._scripts is None:
                self._client = self._redis.Redis.from_url(self.url)
                self._scripts = (self._client.register_script(_HIT), self._client.register_script(_SUM))
            return self._scripts

    def _async(self) -> tuple[Any, Any]:
        loop = asyncio.get_running_loop()
        entry = self._aclients.get(loop)
        if entry is None:
            client = self._redis.asyncio.Redis.from_url(self.url)
            closer = self._park(loop, client)
            entry = (client, client.register_script(_HIT), client.register_script(_SUM), closer)
            self._aclients[loop] = entry
            with suppress(StopIteration):  # runs to its first yield: registered with this loop, nothing awaited
                closer.asend(None).send(None)
        return entry[1], entry[2]

    async def _park(self, loop: asyncio.AbstractEventLoop, client: Any) -> AsyncGenerator[None, None]:
        # Left suspended: the loop's shutdown_asyncgens() (asyncio.run does it) closes it, and the
        # client closes with it, inside the loop, before the loop is closed.
        try:
            yield
        finally:
            if self._aclients.get(loop, (None,))[0] is client:
                self._aclients.pop(loop, None)
            await client.aclose()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        exc_mod = self._redis.exceptions
        try:
            yield
        except (exc_mod.ConnectionError, exc_mod.TimeoutError) as exc:
            raise StoreError(f"Redis at {self._where} cannot be reached ({type(exc).__name__})", reason="unavailable") from None
        except exc_mod.RedisError as exc:
            raise StoreError(f"Redis at {self._where} refused a count: {type(exc).__name__}", reason="unknown") from None

    def close(self) -> None:
        """Close the sync client (and the async clients of loops that are not running)."""
        with self._lock:
            client, self._client, self._scripts = self._client, None, None
        if client is not None:
            client.close()
        for loop, (aclient, *_) in list(self._aclients.items()):
            if not loop.is_running() and not loop.is_closed():
                loop.run_until_complete(aclient.aclose())
            self._aclients.pop(loop, None)

    async def aclose(self) -> None:
        """Close the running loop's async client."""
        loop = asyncio.get_running_loop()
        entry = self._aclients.pop(loop, None)
        if entry is not None:
            await entry[0].aclose()

    # -- counts

    def _hit_args(self, key: str, limit: int, window: float) -> tuple[list[str], list[Any]]:
        _check(limit, window)
        return [self.prefix + "h:" + key], [limit, int(window * 1_000_000), os.urandom(6).hex()]

    def _sum_args(self, key: str, amount: int, window: float | None, op: str) -> tuple[list[str], list[Any]]:
        _check(None, window)
        return [self.prefix + "s:" + key], [int(amount), "" if window is None else max(1, int(window * 1000)), op]

    @staticmethod
    def _admission(reply: Any) -> Admission:
        allowed, count, wait = (int(x) for x in reply)
        return Admission(bool(allowed), count, None if allowed else wait / 1_000_000)

    def hit(self, key: str, limit: int, window: float) -> Admission:
        keys, args = self._hit_args(key, limit, window)
        with self._errors():
            return self._admission(self._sync()[0](keys=keys, args=args))

    async def ahit(self, key: str, limit: int, window: float) -> Admission:
        keys, args = self._hit_args(key, limit, window)
        with self._errors():
            return self._admission(await self._async()[0](keys=keys, args=args))

    def add(self, key: str, amount: int, window: float | None) -> int:
        keys, args = self._sum_args(key, amount, window, "add")
        with self._errors():
            return int(self._sync()[1](keys=keys, args=args))

    async def aadd(self, key: str, amount: int, window: float | None) -> int:
        keys, args = self._sum_args(key, amount, window, "add")
        with self._errors():
            return int(await self._async()[1](keys=keys, args=args))

    def total(self, key: str, window: float | None) -> int:
        keys, args = self._sum_args(key, 0, window, "get")
        with self._errors():
            return int(self._sync()[1](keys=keys, args=args))

    async def atotal(self, key: str, window: float | None) -> int:
        keys, args = self._sum_args(key, 0, window, "get")
        with self._errors():
            return int(await self._async()[1](keys=keys, args=args))
