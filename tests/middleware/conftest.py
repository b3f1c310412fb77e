"""Fixtures for the middleware tests: a private Redis, a clean registry, a settable clock,
and the tools and scripts the tests share."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import allm
from allm import middleware as mw
from tests.redis_server import redis_server  # noqa: F401  (the session-scoped fixture)

ROOT = Path(__file__).parent.parent.parent


def child_env() -> dict[str, str]:
    """The environment of a subprocess that imports this checkout's allm."""
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def add(args: dict[str, Any]) -> int:
    return int(args["a"]) + int(args["b"])


ADD = allm.tool(
    "add",
    "Add two integers.",
    {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]},
    handler=add,
)


DRIVERS = pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])


def chat(engine: allm.Engine, prompt: Any, asynchronous: bool, **options: Any) -> allm.ChatResult:
    """``allm.chat`` or ``allm.achat``."""
    if asynchronous:
        return asyncio.run(allm.achat(engine, prompt, **options))
    return allm.chat(engine, prompt, **options)


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    """Names a test registers are gone after it (the built-in ``request_log`` stays)."""
    before = set(mw.registered())
    yield
    for name in set(mw.registered()) - before:
        mw.unregister(name)


class Clock:
    """Seconds since the epoch, moved by hand."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def redis_url(redis_server: Any) -> Iterator[str]:  # noqa: F811
    """The private server's URL, its database emptied before the test."""
    import redis

    url = redis_server.url
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    yield url
