"""Fixtures for the store tests: every store kind behind one factory, sync and async calls
behind one awaitable facade, a settable clock."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from allm.stores import MemoryStore, Store
from tests.redis_server import redis_server  # noqa: F401  (the session-scoped fixture)

ROOT = Path(__file__).parent.parent.parent

KINDS = ["memory", "sqlite", "redis"]
SHARED_KINDS = ["sqlite", "redis"]
"""Kinds whose separate instances (threads, processes) see the same data."""


def run_python(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python *args`` from the checkout's root, with this checkout importable."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)


class Clock:
    """A settable time source (seconds since the epoch)."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Backend:
    """Opens stores of one kind over the same data: one SQLite file, or one Redis database
    and key prefix (memory stores share nothing). Closes them all at the end."""

    def __init__(self, kind: str, redis_url: str | None = None) -> None:
        self.kind = kind
        self.redis_url = redis_url
        self.dir = Path(tempfile.mkdtemp(prefix="allm-store-"))
        self.path = self.dir / "store.db"
        self.prefix = f"t{uuid.uuid4().hex[:12]}:"
        self.opened: list[Any] = []

    @property
    def url(self) -> str:
        if self.kind == "sqlite":
            return f"sqlite://{self.path}"
        if self.kind == "redis":
            assert self.redis_url is not None
            return f"{self.redis_url}?prefix={self.prefix}"
        return "memory://"

    def open(self, clock: Callable[[], float] | None = None) -> Any:
        kw: dict[str, Any] = {} if clock is None else {"clock": clock}
        if self.kind == "memory":
            store: Any = MemoryStore(**kw)
        elif self.kind == "sqlite":
            from allm.stores import SQLiteStore

            store = SQLiteStore(self.path, **kw)
        else:
            from allm.stores import RedisStore

            assert self.redis_url is not None
            store = RedisStore(self.redis_url, prefix=self.prefix, **kw)
        self.opened.append(store)
        return store

    def close(self) -> None:
        for s in self.opened:
            s.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def make_backend(request: pytest.FixtureRequest, kind: str) -> Backend:
    url = request.getfixturevalue("redis_server").url if kind == "redis" else None
    return Backend(kind, url)


@pytest.fixture(params=KINDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    b = make_backend(request, request.param)
    yield b
    b.close()


@pytest.fixture(params=SHARED_KINDS)
def shared_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    b = make_backend(request, request.param)
    yield b
    b.close()


class Api:
    """One store's methods as awaitables: ``sync`` calls ``put``..., ``async`` awaits ``aput``..."""

    def __init__(self, store: Store, mode: str) -> None:
        self.store = store
        self.mode = mode

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        if self.mode == "sync":
            fn = getattr(self.store, name)

            async def call(*a: Any, **kw: Any) -> Any:
                return fn(*a, **kw)
        else:
            afn = getattr(self.store, "a" + name)

            async def call(*a: Any, **kw: Any) -> Any:
                return await afn(*a, **kw)

        return call


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["sync", "async"])
async def api(request: pytest.FixtureRequest, backend: Backend, clock: Clock) -> AsyncIterator[Api]:
    """A store of each kind, called through its sync methods or its async twins. The async
    ones are closed in the test's event loop (a redis.asyncio connection belongs to one loop)."""
    store = backend.open(clock)
    yield Api(store, request.param)
    if request.param == "async":
        await store.aclose()
