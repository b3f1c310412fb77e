from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import allm
from allm.stores import MemoryStore, Store, open_store
from tests.redis_server import redis_server  # noqa: F401  (the session-scoped fixture)

KINDS = ["memory", "sqlite", "redis"]


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def convs(store: MemoryStore) -> Iterator[allm.Conversations]:
    manager = allm.Conversations(store=store)
    try:
        yield manager
    finally:
        manager.shutdown()


@pytest.fixture
def sqlite_url() -> str:
    return f"sqlite://{Path(tempfile.mkdtemp(prefix='allm-conv-')) / 'conversations.db'}"


@pytest.fixture
def redis_url(redis_server: Any) -> str:  # noqa: F811  (the fixture imported above)
    """A Redis store URL with a key prefix of its own (the server is shared)."""
    return f"{redis_server.url}?prefix=conv{uuid.uuid4().hex[:10]}:"


@pytest.fixture(params=KINDS)
def store_url(request: pytest.FixtureRequest) -> str:
    """A URL for each store kind; separate stores opened on it share the data (but memory)."""
    if request.param == "memory":
        return "memory://"
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
def any_store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
    try:
        yield s
    finally:
        s.close()
