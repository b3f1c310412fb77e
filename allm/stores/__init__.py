"""Stores: one interface (:class:`~allm.stores.base.Store`) for sessions, conversations,
stored responses and worker journals, with in-memory, SQLite and Redis implementations.

:func:`open_store` opens one from a URL: ``memory://``; ``sqlite:///abs/path.db`` or
``sqlite://relative/path.db``; ``redis://host:port/db`` (``rediss://`` for TLS).
:class:`SQLiteStore` and :class:`RedisStore` are imported on first use (``import
allm.stores`` imports neither :mod:`sqlite3` nor ``redis``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import StoreError
from ._util import safe_url
from .base import Record, Store, SyncBacked
from .memory import MemoryStore

if TYPE_CHECKING:
    from .redis import RedisStore
    from .sqlite import SQLiteStore

__all__ = ["MemoryStore", "Record", "RedisStore", "SQLiteStore", "Store", "SyncBacked", "open_store"]

_SQLITE_OPTIONS = {"synchronous", "timeout"}


def __getattr__(name: str) -> Any:
    if name == "SQLiteStore":
        from .sqlite import SQLiteStore

        return SQLiteStore
    if name == "RedisStore":
        from .redis import RedisStore

        return RedisStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _invalid(url: str, why: str) -> StoreError:
    return StoreError(f"{safe_url(url)!r}: {why}", reason="invalid_url")


def open_store(url: str) -> Store:
    """The store a URL names.

    - ``memory://``: a :class:`MemoryStore` (this process only, nothing survives it);
    - ``sqlite:///abs/path.db`` (three slashes: an absolute path) or ``sqlite://rel/path.db``
      (relative to the working directory): a :class:`SQLiteStore`; options
      ``?synchronous=full`` (flush every write to disk) and ``?timeout=<seconds>``;
    - ``redis://[[user]:password@]host:port/db`` or ``rediss://...`` (TLS): a
      :class:`RedisStore` (``pip install 'allm[redis]'``); option ``?prefix=<text>`` (the
      Redis key prefix, default ``allm:``) and redis-py's connection options.

    Raises ``StoreError(invalid_url)`` for an unknown scheme or a malformed URL (the message
    names it, any password masked), and the store's own errors (``unavailable``...).
    """
    if not isinstance(url, str):
        raise TypeError(f"a store URL is a str, not {type(url).__name__}")
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or not scheme:
        raise _invalid(url, "not a store URL (memory://, sqlite:///path.db, redis://host:port/db)")
    if scheme == "memory":
        if rest not in ("", "/"):
            raise _invalid(url, "memory:// takes no host, path or options")
        return MemoryStore()
    if scheme == "sqlite":
        path, _, query = rest.partition("?")
        if not path:
            raise _invalid(url, "no database file (sqlite:///abs/path.db or sqlite://rel/path.db)")
        if path == ":memory:":
            raise _invalid(url, "an SQLite in-memory database is not shared between threads; use memory://")
        options: dict[str, Any] = {}
        for pair in filter(None, query.split("&")):
            name, eq, value = pair.partition("=")
            if name not in _SQLITE_OPTIONS or not eq:
                raise _invalid(url, f"unknown SQLite option {name!r} (known: synchronous, timeout)")
            if name == "synchronous":
                if value.upper() not in ("NORMAL", "FULL"):
                    raise _invalid(url, f"synchronous must be normal or full, not {value!r}")
                options["synchronous"] = value.upper()
            else:
                try:
                    options["timeout"] = float(value)
                except ValueError:
                    raise _invalid(url, f"timeout must be a number of seconds, not {value!r}") from None
        from .sqlite import SQLiteStore

        return SQLiteStore(path, **options)
    if scheme in ("redis", "rediss"):
        from .redis import RedisStore

        return RedisStore(url)
    raise _invalid(url, f"unknown store scheme {scheme!r} (known: memory, sqlite, redis, rediss)")
