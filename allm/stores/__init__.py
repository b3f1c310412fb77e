"""Stores: one interface (:class:`~allm.stores.base.Store`) for sessions, conversations,
stored responses and worker journals, with in-memory, SQLite and Redis implementations.

:func:`open_store` opens one from a URL: ``memory://``; ``sqlite:///abs/path.db`` or
``sqlite://relative/path.db``; ``redis://host:port/db``.
"""

from __future__ import annotations

from .base import Record, Store, SyncBacked
from .memory import MemoryStore

__all__ = ["MemoryStore", "Record", "Store", "SyncBacked"]
