"""Every key name and value in a Redis database, for leak scans."""

from __future__ import annotations

from collections.abc import Iterator

import redis


def redis_bytes(r: redis.Redis) -> Iterator[tuple[bytes, bytes]]:
    """``(name, all its value bytes)`` for every key (strings, hashes, lists, sets, sorted sets)."""
    for name in r.scan_iter(count=1000):
        kind = r.type(name)
        if kind == b"string":
            parts = [r.get(name) or b""]
        elif kind == b"hash":
            parts = [b for kv in r.hgetall(name).items() for b in kv]
        elif kind == b"list":
            parts = r.lrange(name, 0, -1)
        elif kind == b"zset":
            parts = r.zrange(name, 0, -1)
        elif kind == b"set":
            parts = list(r.smembers(name))
        else:
            raise AssertionError(f"a Redis type this scan does not read: {kind!r}")
        yield name, b"".join(parts)
