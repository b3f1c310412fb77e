from __future__ import annotations

from collections.abc import Iterator

import pytest

import allm
from allm.stores import MemoryStore


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
