"""The one store interface: sessions, conversations, stored responses and worker journals.

A store keeps two kinds of thing under a ``(namespace, key)`` pair, both as bytes (callers
encode with :mod:`allm.codec` or orjson; a store never interprets them):

- a **record**: one value with a version number, for optimistic concurrency. ``put`` with
  ``expect=None`` writes unconditionally; ``expect=0`` creates only (the key must be absent:
  an idempotency mark); ``expect=n`` writes only if the current version is ``n``. A write
  that finds another version raises :class:`~allm.errors.StoreError` (``version_conflict``)
  and changes nothing. Versions start at 1 and grow by one per write.
- a **log**: an append-only list of items (messages, events, journal entries), read by
  index range with Python's slicing rules (``read(ns, key, -10)``: the last ten).

``delete`` removes both the record and the log of a key. ``prune`` applies a retention
limit to a namespace (by the record's age, and by count keeping the newest), removing the
records and logs of the keys it drops: a record is too old when ``updated_at < now -
max_age``; among records written at the same time the greater key counts as the newer.
Logs without a record are neither listed by ``keys`` nor pruned.

Every method has an async twin named with an ``a`` prefix (``aget``, ``aput`` ...). Stores
whose operations are local and short (memory, SQLite) implement the twins by calling the
sync method (:class:`SyncBacked`); network stores (Redis) implement both natively.

Errors: :class:`~allm.errors.StoreError` with ``version_conflict``, ``unavailable`` (the
server or file cannot be reached), ``closed`` (used after :meth:`Store.close`),
``corrupt`` or ``invalid_url`` (:func:`allm.stores.open_store`). Arguments of the wrong type
raise ``TypeError`` (values and log items are ``bytes``, ``bytearray`` or ``memoryview``;
``append`` takes a sequence of them), out of range ``ValueError`` (``expect < 0``, a
negative ``max_age`` or ``max_count``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import attrs

__all__ = ["AsyncStoreMethods", "Record", "Store", "SyncBacked"]


@attrs.frozen
class Record:
    """A stored value: ``value`` (bytes), ``version`` (1, 2, ...) and ``updated_at`` (seconds
    since the Unix epoch, of the write that made this version)."""

    value: bytes
    version: int
    updated_at: float


class AsyncStoreMethods(Protocol):
    """The async twins of :class:`Store`'s methods (same arguments, results and errors)."""

    async def aget(self, namespace: str, key: str) -> Record | None: ...
    async def aput(self, namespace: str, key: str, value: bytes, *, expect: int | None = None) -> int: ...
    async def adelete(self, namespace: str, key: str) -> bool: ...
    async def akeys(self, namespace: str, *, prefix: str = "") -> list[str]: ...
    async def aappend(self, namespace: str, key: str, items: Sequence[bytes]) -> int: ...
    async def aread(self, namespace: str, key: str, start: int = 0, stop: int | None = None) -> list[bytes]: ...
    async def alength(self, namespace: str, key: str) -> int: ...
    async def aprune(
        self, namespace: str, *, max_age: float | None = None, max_count: int | None = None
    ) -> list[str]: ...
    async def aclose(self) -> None: ...


@runtime_checkable
class Store(AsyncStoreMethods, Protocol):
    """What every store does. See the module docstring for the semantics."""

    def get(self, namespace: str, key: str) -> Record | None:
        """The record of ``key``, or ``None``."""
        ...

    def put(self, namespace: str, key: str, value: bytes, *, expect: int | None = None) -> int:
        """Write ``value``; the new version. ``expect``: ``None`` any, ``0`` absent, ``n`` that version."""
        ...

    def delete(self, namespace: str, key: str) -> bool:
        """Remove the record and log of ``key``; whether anything was there."""
        ...

    def keys(self, namespace: str, *, prefix: str = "") -> list[str]:
        """Keys of the namespace that have a record (sorted), those starting with ``prefix``."""
        ...

    def append(self, namespace: str, key: str, items: Sequence[bytes]) -> int:
        """Append ``items`` to the log of ``key`` (atomically, in order); the log's new length."""
        ...

    def read(self, namespace: str, key: str, start: int = 0, stop: int | None = None) -> list[bytes]:
        """Items ``start`` (inclusive) to ``stop`` (exclusive; ``None``: the end) of the log."""
        ...

    def length(self, namespace: str, key: str) -> int:
        """How many items the log of ``key`` holds (0 when it has none)."""
        ...

    def prune(self, namespace: str, *, max_age: float | None = None, max_count: int | None = None) -> list[str]:
        """Delete records older than ``max_age`` seconds, then all but the newest ``max_count``;
        the keys deleted (their logs go too)."""
        ...

    def close(self) -> None:
        """Release connections and files; later calls raise ``StoreError(closed)``."""
        ...


class SyncBacked:
    """The async twins for stores whose operations are local and short: each calls the sync method."""

    async def aget(self, namespace: str, key: str) -> Record | None:
        return self.get(namespace, key)  # type: ignore[attr-defined,no-any-return]

    async def aput(self, namespace: str, key: str, value: bytes, *, expect: int | None = None) -> int:
        return self.put(namespace, key, value, expect=expect)  # type: ignore[attr-defined,no-any-return]

    async def adelete(self, namespace: str, key: str) -> bool:
        return self.delete(namespace, key)  # type: ignore[attr-defined,no-any-return]

    async def akeys(self, namespace: str, *, prefix: str = "") -> list[str]:
        return self.keys(namespace, prefix=prefix)  # type: ignore[attr-defined,no-any-return]

    async def aappend(self, namespace: str, key: str, items: Sequence[bytes]) -> int:
        return self.append(namespace, key, items)  # type: ignore[attr-defined,no-any-return]

    async def aread(self, namespace: str, key: str, start: int = 0, stop: int | None = None) -> list[bytes]:
        return self.read(namespace, key, start, stop)  # type: ignore[attr-defined,no-any-return]

    async def alength(self, namespace: str, key: str) -> int:
        return self.length(namespace, key)  # type: ignore[attr-defined,no-any-return]

    async def aprune(self, namespace: str, *, max_age: float | None = None, max_count: int | None = None) -> list[str]:
        return self.prune(namespace, max_age=max_age, max_count=max_count)  # type: ignore[attr-defined,no-any-return]

    async def aclose(self) -> None:
        self.close()  # type: ignore[attr-defined]
