"""An in-process store: dictionaries behind a lock. For tests and single-process use; nothing
survives the process. Thread-safe; see :mod:`allm.stores.base` for the semantics."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from . import _util
from .base import Record, SyncBacked

__all__ = ["MemoryStore"]


class MemoryStore(SyncBacked):
    """The :class:`~allm.stores.base.Store` interface over dictionaries (``memory://``).

    ``clock``: the time source for ``updated_at`` and ``prune(max_age=...)`` (seconds since
    the epoch)."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._records: dict[tuple[str, str], Record] = {}
        self._logs: dict[tuple[str, str], list[bytes]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"MemoryStore({len(self._records)} records, {len(self._logs)} logs)"

    def _check(self) -> None:
        if self._closed:
            raise _util.closed()

    def get(self, namespace: str, key: str) -> Record | None:
        _util.check_name(namespace, key)
        self._check()
        return self._records.get((namespace, key))

    def put(self, namespace: str, key: str, value: bytes, *, expect: int | None = None) -> int:
        _util.check_name(namespace, key)
        _util.check_expect(expect)
        value = _util.check_bytes(value)
        with self._lock:
            self._check()
            current = self._records.get((namespace, key))
            have = current.version if current is not None else 0
            if expect is not None and expect != have:
                raise _util.conflict(namespace, key, expect, have)
            self._records[(namespace, key)] = Record(value, have + 1, self._clock())
            return have + 1

    def delete(self, namespace: str, key: str) -> bool:
        _util.check_name(namespace, key)
        with self._lock:
            self._check()
            had = self._records.pop((namespace, key), None) is not None
            return self._logs.pop((namespace, key), None) is not None or had

    def keys(self, namespace: str, *, prefix: str = "") -> list[str]:
        _util.check_name(namespace, prefix)
        self._check()
        return sorted(k for ns, k in list(self._records) if ns == namespace and k.startswith(prefix))

    def append(self, namespace: str, key: str, items: Sequence[bytes]) -> int:
        _util.check_name(namespace, key)
        values = _util.check_items(items)
        with self._lock:
            self._check()
            if not values:
                return len(self._logs.get((namespace, key), ()))
            log = self._logs.setdefault((namespace, key), [])
            log.extend(values)
            return len(log)

    def read(self, namespace: str, key: str, start: int = 0, stop: int | None = None) -> list[bytes]:
        _util.check_name(namespace, key)
        self._check()
        return list(self._logs.get((namespace, key), ())[start:stop])

    def length(self, namespace: str, key: str) -> int:
        _util.check_name(namespace, key)
        self._check()
        return len(self._logs.get((namespace, key), ()))

    def prune(self, namespace: str, *, max_age: float | None = None, max_count: int | None = None) -> list[str]:
        _util.check_name(namespace, "")
        _util.check_prune(max_age, max_count)
        with self._lock:
            self._check()
            mine = sorted(
                ((r.updated_at, k) for (ns, k), r in self._records.items() if ns == namespace), reverse=True
            )
            cutoff = self._clock() - max_age if max_age is not None else None
            drop = [k for i, (at, k) in enumerate(mine)
                    if (cutoff is not None and at < cutoff) or (max_count is not None and i >= max_count)]
            for k in drop:
                self._records.pop((namespace, k), None)
                self._logs.pop((namespace, k), None)
            return sorted(drop)

    def close(self) -> None:
        self._closed = True
