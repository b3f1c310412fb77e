"""A store in Redis (``redis://host:port/db``, ``rediss://`` for TLS), over redis-py: its sync
client for the methods and :mod:`redis.asyncio` for the async twins. Needs ``pip install
'allm[redis]'``. See :mod:`allm.stores.base` for the semantics every store shares.

Layout, under a key prefix (default ``allm:``) and a length-prefixed namespace ``<n>:<ns>:``
(so that no namespace or key can collide with another): a record is a hash ``r:<key>``
(fields ``v`` value, ``n`` version, ``t`` updated_at), a log is a list ``l:<key>``, and each
namespace has two sorted-set indexes of its record keys: ``k`` (by name, for ``keys``) and
``t`` (by ``updated_at``, for ``prune``). No operation scans the whole database (no ``KEYS``,
no ``SCAN``).

Atomicity. ``put`` (conditional or not) and ``prune`` are Lua scripts, so they run alone on
the server: two processes writing with ``expect=`` one version cannot both succeed.
``delete`` is a ``MULTI``/``EXEC`` transaction, ``append`` one ``RPUSH``. One server (with
or without replicas) holds a store: ``prune`` names the keys it deletes inside its script,
which Redis Cluster does not allow.

Durability is the server's: a write is acknowledged once it is in the server's memory;
whether it survives a server restart depends on the server's persistence settings
(``appendonly yes`` with ``appendfsync everysec`` loses at most about a second of writes).

Failures. A connection that cannot be made or breaks raises ``StoreError(unavailable)``.
Commands are not retried: a write that fails that way may or may not have been applied (read
the record back, or write with ``expect=``, to find out). ``updated_at`` comes from the
writing client's clock (keep the clients' clocks in step, as NTP does).

Event loops. A redis.asyncio connection belongs to the event loop that opened it, so the
async twins keep one client per loop. ``await store.aclose()`` (or ``store.close()`` while the
loop is not running) closes them; a loop that ends without that leaves its client's sockets
to be closed when collected.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import StoreError
from . import _util
from .base import Record

try:
    import redis
    import redis.asyncio
    import redis.asyncio.retry
    import redis.backoff
    import redis.exceptions
    import redis.retry
except ImportError as _exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("RedisStore needs the redis package: pip install 'allm[redis]'") from _exc

__all__ = ["RedisStore"]

EXTRA = "pip install 'allm[redis]'"

# KEYS: record hash, name index, time index. ARGV: value, expected version or '', updated_at, key.
# Returns {1, new version} or {0, version found}.
_PUT = """
local have = tonumber(redis.call('HGET', KEYS[1], 'n') or '0')
if ARGV[2] ~= '' and tonumber(ARGV[2]) ~= have then
  return {0, have}
end
local n = have + 1
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'n', n, 't', ARGV[3])
redis.call('ZADD', KEYS[2], 0, ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
return {1, n}
"""

# KEYS: name index, time index. ARGV: record key prefix, log key prefix, cutoff or '',
# max_count or ''. Deletes records written before the cutoff, then all but the newest
# max_count (ties: the greatest key is the newest), with their logs; returns their keys.
_PRUNE = """
local drop, seen = {}, {}
local function mark(list)
  for _, k in ipairs(list) do
    if not seen[k] then seen[k] = true; drop[#drop + 1] = k end
  end
end
if ARGV[3] ~= '' then mark(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[3])) end
if ARGV[4] ~= '' then mark(redis.call('ZREVRANGE', KEYS[2], tonumber(ARGV[4]), -1)) end
for _, k in ipairs(drop) do
  redis.call('DEL', ARGV[1] .. k, ARGV[2] .. k)
  redis.call('ZREM', KEYS[1], k)
  redis.call('ZREM', KEYS[2], k)
end
return drop
"""

_FIELDS = ["v", "n", "t"]

# Query options passed on to redis-py (anything else in a URL is refused).
_REDIS_OPTIONS = {
    "db", "socket_timeout", "socket_connect_timeout", "socket_keepalive", "max_connections",
    "health_check_interval", "client_name", "protocol", "timeout",
}  # fmt: skip


def _invalid(url: str, why: str) -> StoreError:
    return StoreError(f"{_util.safe_url(url)!r}: {why}", reason="invalid_url")


def _parse(url: str) -> tuple[str, str | None]:
    """Checks a redis URL; the URL for redis-py (without our options) and the ``prefix``
    option. Raises ``StoreError(invalid_url)``."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _invalid(url, f"malformed ({exc})") from None
    if parts.scheme.lower() not in ("redis", "rediss"):
        raise _invalid(url, "a Redis URL starts redis:// or rediss://")
    if not parts.hostname:
        raise _invalid(url, "no host (redis://host:port/db)")
    if port == 0:
        raise _invalid(url, "port 0")
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise _invalid(url, f"the database is a number, not {db!r}")
    prefix: str | None = None
    passed = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "prefix":
            prefix = value
        elif name in _REDIS_OPTIONS or name.startswith("ssl_"):
            passed.append((name, value))
        else:
            raise _invalid(url, f"unknown option {name!r}")
    return urlunsplit(parts._replace(query=urlencode(passed))), prefix


def _error(exc: Exception, where: str) -> StoreError:
    text = _util.safe_url(f"{where}: {exc}")
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError | OSError):
        return StoreError(text, reason="unavailable")
    if isinstance(exc, redis.exceptions.ResponseError):
        message = str(exc)
        if message.startswith("WRONGTYPE"):
            return StoreError(f"{text} (a key under this prefix was written by something else)", reason="corrupt")
        if message.startswith(("READONLY", "LOADING", "MASTERDOWN", "OOM", "MISCONF", "BUSY", "NOAUTH", "NOPERM")):
            return StoreError(text, reason="unavailable")
    return StoreError(text, reason="unknown")


def _record(fields: Sequence[Any], where: str) -> Record | None:
    value, version, updated_at = fields
    if value is None:
        return None
    try:
        return Record(bytes(value), int(version), float(updated_at))
    except (TypeError, ValueError):
        raise StoreError(f"{where}: unreadable record fields", reason="corrupt") from None


def _lrange(start: int, stop: int | None) -> tuple[int, int] | None:
    """``[start:stop]`` as LRANGE's inclusive bounds (None: always empty)."""
    if stop is None:
        return start, -1
    if stop == 0:
        return None
    return start, stop - 1


class _AsyncSide:
    """The redis.asyncio client and scripts of one event loop."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.put = client.register_script(_PUT)
        self.prune = client.register_script(_PRUNE)


class RedisStore:
    """The :class:`~allm.stores.base.Store` interface over one Redis database.

    ``url``: ``redis://[[user]:password@]host[:port][/db][?options]`` or ``rediss://...``;
    options: ``prefix`` and redis-py's ``socket_timeout``, ``socket_connect_timeout``,
    ``max_connections``, ``ssl_*``... ``prefix``: put before every Redis key this store
    uses (stores with different prefixes share nothing). ``timeout``: seconds a command may
    take; ``connect_timeout``: seconds to connect (both then ``StoreError(unavailable)``).
    ``clock``: the time source for ``updated_at`` and ``prune(max_age=...)``.

    Nothing connects until the first operation. Raises ``StoreError(invalid_url)`` for a
    malformed URL (the message masks any password).
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str | None = None,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        client_url, url_prefix = _parse(url)
        self.prefix = prefix if prefix is not None else (url_prefix if url_prefix is not None else "allm:")
        self._where = _util.safe_url(client_url)
        self._clock = clock
        self._options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": connect_timeout}
        self._url = client_url
        try:
            # redis-py's annotations cover its sync and async clients at once: typed as Any here.
            self._sync: Any = redis.Redis.from_url(
                client_url, retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0), **self._options
            )
        except ValueError as exc:
            raise _invalid(url, str(exc)) from None
        self._put = self._sync.register_script(_PUT)
        self._prune = self._sync.register_script(_PRUNE)
        self._async: dict[asyncio.AbstractEventLoop, _AsyncSide] = {}
        self._lock = threading.Lock()
        self._pending: set[asyncio.Task[None]] = set()
        self._closed = False

    def __repr__(self) -> str:
        return f"RedisStore({self._where!r}, prefix={self.prefix!r})"

    # ------------------------------------------------------------------ plumbing

    def _ns(self, namespace: str) -> str:
        return f"{self.prefix}{len(namespace)}:{namespace}:"

    def _keys(self, namespace: str, key: str) -> tuple[str, str]:
        base = self._ns(namespace)
        return base + "r:" + key, base + "l:" + key

    @contextmanager
    def _guard(self) -> Iterator[None]:
        if self._closed:
            raise _util.closed()
        try:
            yield
        except redis.exceptions.RedisError as exc:
            raise (_util.closed() if self._closed else _error(exc, self._where)) from exc

    async def _aguard(self, make: Callable[[_AsyncSide], Awaitable[Any]]) -> Any:
        if self._closed:
            raise _util.closed()
        try:
            return await make(self._side())
        except redis.exceptions.RedisError as exc:
            raise (_util.closed() if self._closed else _error(exc, self._where)) from exc

    def _side(self) -> _AsyncSide:
        """This event loop's client (a redis.asyncio connection belongs to one loop)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            side = self._async.get(loop)
            if side is None:
                for old in [lp for lp in self._async if lp.is_closed()]:
                    del self._async[old]  # its loop is gone; its sockets close when collected
                client = redis.asyncio.Redis.from_url(
                    self._url, retry=redis.asyncio.retry.Retry(redis.backoff.NoBackoff(), 0), **self._options
                )
                side = self._async[loop] = _AsyncSide(client)
            return side

    # ------------------------------------------------------------------ records

    def get(self, namespace: str, key: str) -> Record | None:
        _util.check_name(namespace, key)
        with self._guard():
            return _record(self._sync.hmget(self._keys(namespace, key)[0], _FIELDS), self._where)

    async def aget(self, namespace: str, key: str) -> Record | None:
        _util.check_name(namespace, key)
        rk = self._keys(namespace, key)[0]
        fields = await self._aguard(lambda s: s.client.hmget(rk, _FIELDS))
        return _record(fields, self._where)

    def _put_args(self, namespace: str, key: str, value: bytes, expect: int | None) -> tuple[list[str], list[Any]]:
        _util.check_name(namespace, key)
        _util.check_expect(expect)
        value = _util.check_bytes(value)
        base = self._ns(namespace)
        keys = [base + "r:" + key, base + "k", base + "t"]
        return keys, [value, "" if expect is None else str(expect), repr(float(self._clock())), key]

    @staticmethod
    def _put_result(reply: Sequence[Any], namespace: str, key: str, expect: int | None) -> int:
        ok, version = int(reply[0]), int(reply[1])
        if not ok:
            raise _util.conflict(namespace, key, expect if expect is not None else 0, version)
        return version

    def put(self, namespace: str, key: str, value: bytes, *, expect: int | None = None) -> int:
        keys, args = self._put_args(namespace, key, value, expect)
        with self._guard():
            reply = self._put(keys=keys, args=args)
        return self._put_result(reply, namespace, key, expect)

    async def aput(self, namespace: str, key: str, value: bytes, *, expect: int | None = None) -> int:
        keys, args = self._put_args(namespace, key, value, expect)
        reply = await self._aguard(lambda s: s.put(keys=keys, args=args))
        return self._put_result(reply, namespace, key, expect)

    def delete(self, namespace: str, key: str) -> bool:
        _util.check_name(namespace, key)
        base = self._ns(namespace)
        with self._guard():
            pipe = self._sync.pipeline(transaction=True)
            pipe.delete(base + "r:" + key, base + "l:" + key).zrem(base + "k", key).zrem(base + "t", key)
            return int(pipe.execute()[0]) > 0

    async def adelete(self, namespace: str, key: str) -> bool:
        _util.check_name(namespace, key)
        base = self._ns(namespace)

        async def run(s: _AsyncSide) -> Any:
            pipe = s.client.pipeline(transaction=True)
            pipe.delete(base + "r:" + key, base + "l:" + key).zrem(base + "k", key).zrem(base + "t", key)
            return await pipe.execute()

        return int((await self._aguard(run))[0]) > 0

    def _range(self, namespace: str, prefix: str) -> tuple[str, bytes, bytes]:
        _util.check_name(namespace, prefix)
        if not prefix:
            return self._ns(namespace) + "k", b"-", b"+"
        raw = prefix.encode()
        return self._ns(namespace) + "k", b"[" + raw, b"(" + raw + b"\xff"  # no UTF-8 text holds 0xFF

    def keys(self, namespace: str, *, prefix: str = "") -> list[str]:
        index, low, high = self._range(namespace, prefix)
        with self._guard():
            return [k.decode() for k in self._sync.zrangebylex(index, low, high)]

    async def akeys(self, namespace: str, *, prefix: str = "") -> list[str]:
        index, low, high = self._range(namespace, prefix)
        return [k.decode() for k in await self._aguard(lambda s: s.client.zrangebylex(index, low, high))]

    # ------------------------------------------------------------------ logs

    def append(self, namespace: str, key: str, items: Sequence[bytes]) -> int:
        _util.check_name(namespace, key)
        values = _util.check_items(items)
        lk = self._keys(namespace, key)[1]
        with self._guard():
            return int(self._sync.rpush(lk, *values) if values else self._sync.llen(lk))

    async def aappend(self, namespace: str, key: str, items: Sequence[bytes]) -> int:
        _util.check_name(namespace, key)
        values = _util.check_items(items)
        lk = self._keys(namespace, key)[1]
        return int(await self._aguard(lambda s: s.client.rpush(lk, *values) if values else s.client.llen(lk)))

    def read(self, namespace: str, key: str, start: int = 0, stop: int | None = None) -> list[bytes]:
        _util.check_name(namespace, key)
        bounds = _lrange(start, stop)
        with self._guard():
            return [] if bounds is None else list(self._sync.lrange(self._keys(namespace, key)[1], *bounds))

    async def aread(self, namespace: str, key: str, start: int = 0, stop: int | None = None) -> list[bytes]:
        _util.check_name(namespace, key)
        bounds = _lrange(start, stop)
        lk = self._keys(namespace, key)[1]

        async def run(s: _AsyncSide) -> list[bytes]:
            return [] if bounds is None else list(await s.client.lrange(lk, *bounds))

        return list(await self._aguard(run))

    def length(self, namespace: str, key: str) -> int:
        _util.check_name(namespace, key)
        with self._guard():
            return int(self._sync.llen(self._keys(namespace, key)[1]))

    async def alength(self, namespace: str, key: str) -> int:
        _util.check_name(namespace, key)
        lk = self._keys(namespace, key)[1]
        return int(await self._aguard(lambda s: s.client.llen(lk)))

    # ------------------------------------------------------------------ retention

    def _prune_args(
        self, namespace: str, max_age: float | None, max_count: int | None
    ) -> tuple[list[str], list[str]]:
        _util.check_name(namespace, "")
        _util.check_prune(max_age, max_count)
        base = self._ns(namespace)
        cutoff = "" if max_age is None else repr(float(self._clock() - max_age))
        count = "" if max_count is None else str(max_count)
        return [base + "k", base + "t"], [base + "r:", base + "l:", cutoff, count]

    def prune(self, namespace: str, *, max_age: float | None = None, max_count: int | None = None) -> list[str]:
        keys, args = self._prune_args(namespace, max_age, max_count)
        with self._guard():
            return sorted(k.decode() for k in self._prune(keys=keys, args=args))

    async def aprune(self, namespace: str, *, max_age: float | None = None, max_count: int | None = None) -> list[str]:
        keys, args = self._prune_args(namespace, max_age, max_count)
        return sorted(k.decode() for k in await self._aguard(lambda s: s.prune(keys=keys, args=args)))

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Close the connections. Async clients of event loops that are not running are
        closed here; one of the running loop is closed by a task (``aclose`` awaits it)."""
        with self._lock:
            self._closed = True
            sides, self._async = self._async, {}
        self._sync.close()
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for loop, side in sides.items():
            if loop.is_closed():
                continue  # its sockets close when collected
            if loop is running:
                task = loop.create_task(side.client.aclose())
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)
            elif loop.is_running():  # in another thread
                asyncio.run_coroutine_threadsafe(side.client.aclose(), loop)
            elif running is None:
                with suppress(redis.exceptions.RedisError, OSError):
                    loop.run_until_complete(side.client.aclose())

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            side = self._async.pop(loop, None)
        self.close()
        if side is not None:
            await side.client.aclose()
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
